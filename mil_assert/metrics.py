"""Exact ROC AUC with ties, and summary statistics over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Two-sided 95% quantiles of Student's t, t_{0.975, df} for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def roc_auc(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[float]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    Computed exactly from average ranks (the Mann-Whitney U statistic).

    Args:
        scores: ``[n]`` real scores, higher means more positive; must be finite.
        labels: ``[n]`` in {0, 1}; both classes must occur.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite to rank them")
    positive = y == 1
    n_pos, n_neg = int(positive.sum()), int((y == 0).sum())
    if n_pos + n_neg != y.size or n_pos == 0 or n_neg == 0:
        raise ValueError("labels must be 0 or 1, with both classes present")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    average_rank = last_rank - (counts - 1) / 2.0  # 1-based average rank of each tie group
    rank_sum = average_rank[inverse][positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass(frozen=True)
class SeedSummary:
    """Per-seed values with their mean, sample standard deviation and 95% t-interval."""

    per_seed: tuple[float, ...]
    mean: float
    std: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> SeedSummary:
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            raise ValueError("no values to summarise")
        mean = float(v.mean())
        if v.size < 2:
            return cls(tuple(map(float, v)), mean, math.nan, -math.inf, math.inf)
        std = float(v.std(ddof=1))
        df = v.size - 1
        half = (_T975[df - 1] if df <= len(_T975) else 1.96) * std / math.sqrt(v.size)
        return cls(tuple(map(float, v)), mean, std, mean - half, mean + half)

    def as_dict(self) -> dict[str, object]:
        return {"mean": self.mean, "std": None if math.isnan(self.std) else self.std,
                "per_seed": list(self.per_seed)}
