"""The verdict rule on hand-made AUCs, one case per branch."""

from __future__ import annotations

import pytest

from mil_assert.metrics import SeedSummary
from mil_assert.verdict import judge


def verdict(kind, val, test):
    return judge(kind, SeedSummary.of(val), SeedSummary.of(test))[0]


@pytest.mark.parametrize(
    ("val", "test", "expected"),
    [
        ([1.0, 1.0, 1.0, 0.99, 1.0], [0.0, 0.01, 0.0, 0.02, 0.0], "violation"),  # shortcut
        ([0.6, 0.65, 0.62, 0.66, 0.6], [0.1, 0.12, 0.09, 0.15, 0.1], "violation"),  # inverted
        ([0.9, 0.88, 0.92, 0.85, 0.9], [0.89, 0.9, 0.9, 0.86, 0.88], "pass"),
        ([0.55, 0.5, 0.6, 0.52, 0.5], [0.5, 0.52, 0.55, 0.49, 0.5], "inconclusive"),  # not learned
        ([1.0, 1.0, 1.0, 1.0, 1.0], [0.55, 0.6, 0.5, 0.58, 0.52], "violation"),  # lost it
        ([0.95, 0.9, 0.95, 0.9, 0.92], [0.9, 0.5, 0.88, 0.55, 0.85], "inconclusive"),  # split
    ],
)
def test_shift_tests(val, test, expected):
    assert verdict("shift", val, test) == expected


def test_an_inversion_is_a_violation_even_when_validation_is_modest():
    assert verdict("shift", [0.55] * 4 + [0.6], [0.05, 0.1, 0.08, 0.12, 0.1]) == "violation"


def test_a_noisy_inversion_is_not_a_violation():
    assert verdict("shift", [0.55] * 5, [0.1, 0.9, 0.2, 0.8, 0.3]) == "inconclusive"


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ([0.82, 0.84, 0.8, 0.83, 0.81], "violation"),
        ([0.5, 0.47, 0.52, 0.49, 0.5], "pass"),
        ([0.5, 0.7, 0.6, 0.75, 0.55], "inconclusive"),
    ],
)
def test_unlearnable_tests(test, expected):
    assert verdict("unlearnable", test, test) == expected


def test_a_verdict_needs_two_seeds():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        verdict("shift", [0.9], [0.9])
