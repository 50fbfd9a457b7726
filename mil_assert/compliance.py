"""The algorithmic unit tests as pytest tests, shipped in the package.

Run them on any model, from any directory (xdist's ``-n`` works too)::

    pytest --pyargs mil_assert.compliance --mil-model=my_pkg.models:build

``--mil-model`` selects the models (default: every built-in one); the plugin parametrizes
each function over them, trains the model over the run's seeds and judges the cell.
Test ids read ``test_single_concept[my_pkg.models:build]``.
"""

from mil_assert.checks import check_verdict


def test_single_concept(mil_result):
    check_verdict(mil_result)


def test_threshold_poisoned(mil_result):
    check_verdict(mil_result)


def test_false_frequency(mil_result):
    check_verdict(mil_result)


def test_label_swap(mil_result):
    check_verdict(mil_result)
