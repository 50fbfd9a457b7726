"""The algorithmic unit tests, one function per test, run on every selected model.

``--model`` selects the models (default: every built-in one); the plugin parametrizes
each function over them, trains the model over the run's seeds and judges the cell.
"""

from mil_assert.plugin import check_verdict


def test_single_concept(mil_result):
    check_verdict(mil_result)


def test_threshold_poisoned(mil_result):
    check_verdict(mil_result)


def test_false_frequency(mil_result):
    check_verdict(mil_result)


def test_label_swap(mil_result):
    check_verdict(mil_result)
