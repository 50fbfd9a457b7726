"""Exact AUC with ties (checked against hand-computed values) and the seed statistics."""

from __future__ import annotations

import math

import pytest

from mil_assert.metrics import SeedSummary, roc_auc


@pytest.mark.parametrize(
    ("scores", "labels", "auc"),
    [
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # 3 of 4 pairs ordered
        ([1, 2, 3, 4], [0, 0, 1, 1], 1.0),
        ([1, 2, 3, 4], [1, 1, 0, 0], 0.0),
        ([5, 5, 5, 5], [0, 1, 0, 1], 0.5),  # all tied: every pair counts 1/2
        ([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1], 0.875),  # pairs: 1, 1, 1/2, 1 -> 3.5 / 4
    ],
)
def test_auc_matches_hand_computed_values(scores, labels, auc):
    assert roc_auc(scores, labels) == pytest.approx(auc)


def test_auc_hand_count_with_ties():
    # positives {3, 2}, negatives {1, 2, 2}: 3 beats all three (3); 2 beats 1 (1) and ties
    # two 2s (2 x 1/2): total 5 of 6 pairs.
    assert roc_auc([3, 1, 2, 2, 2], [1, 0, 0, 1, 0]) == pytest.approx(5 / 6)


def test_auc_is_invariant_to_monotone_transforms():
    scores = [0.3, -1.0, 2.5, 0.3, 7.0, -3.0]
    labels = [1, 0, 1, 0, 1, 0]
    assert roc_auc(scores, labels) == roc_auc([math.exp(s) for s in scores], labels)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, float("nan")], [0, 1], "finite"),
        ([0.1, 0.2], [1, 1], "both classes"),
        ([0.1, 0.2], [0, 2], "0 or 1"),
        ([0.1, 0.2, 0.3], [0, 1], "shape"),
    ],
)
def test_auc_rejects_bad_input(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        roc_auc(scores, labels)


def test_seed_summary_mean_std_and_interval():
    summary = SeedSummary.of([0.1, 0.2, 0.3])
    assert summary.mean == pytest.approx(0.2)
    assert summary.std == pytest.approx(0.1)
    half = 4.303 * 0.1 / math.sqrt(3)  # t_{0.975, 2}
    assert (summary.low, summary.high) == pytest.approx((0.2 - half, 0.2 + half))


def test_one_seed_has_no_spread():
    summary = SeedSummary.of([0.7])
    assert math.isnan(summary.std) and summary.low == -math.inf and summary.high == math.inf
