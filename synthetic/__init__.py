"""Bag generators of the algorithmic unit tests, one module per test.

``TESTS`` maps each test's name to its :class:`AlgorithmicTest`, in report order. To add
a test, write one module here that defines ``generate`` and ``TEST``, and list it below.
"""

from mil_assert.synthetic import false_frequency, label_swap, single_concept, threshold_poisoned
from mil_assert.synthetic.bags import Bags, Splits
from mil_assert.synthetic.catalog import AlgorithmicTest

TESTS: dict[str, AlgorithmicTest] = {
    module.TEST.name: module.TEST
    for module in (single_concept, threshold_poisoned, false_frequency, label_swap)
}

__all__ = ["TESTS", "AlgorithmicTest", "Bags", "Splits"]
