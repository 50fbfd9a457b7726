"""The verdict rule: the one place where AUCs over seeds become pass / violation / inconclusive.

``error`` is decided by the harness (the model crashed or broke the contract); everything
else is decided here from per-seed AUCs, with 95% Student-t intervals of the mean over
seeds (``SeedSummary.low`` / ``.high``). The thresholds and the measurements behind them
are in the README, section "The verdict rule".
"""

from __future__ import annotations

import numpy as np

from mil_assert.metrics import SeedSummary
from mil_assert.synthetic.catalog import TestKind

CHANCE = 0.5
MARGIN = 0.1
"""An AUC is "clearly" below (above) chance when its 95% interval lies below 0.4 (above 0.6)."""

LEARNED_AUC = 0.75
"""Mean validation AUC from which a model has learned the training distribution."""

MAX_DROP = 0.2
"""Largest validation-to-test AUC drop (per-seed mean) a shift-free model shows."""

MIN_SEEDS = 2
"""A verdict needs a spread, so at least two seeds."""


def _fmt(summary: SeedSummary) -> str:
    return f"{summary.mean:.2f} ± {summary.std:.2f}"


def judge(kind: TestKind, val: SeedSummary, test: SeedSummary) -> tuple[str, str]:
    """Return ``(verdict, reason)`` for one cell from its validation and test AUCs.

    ``shift`` tests (``single_concept``, ``threshold_poisoned``, ``false_frequency``):

    1. ``violation`` if the test AUC is clearly below chance: an inverted ranking can only
       come from a learned shortcut, however modest the validation AUC;
    2. ``inconclusive`` if the mean validation AUC is below ``LEARNED_AUC``: the model did
       not learn the training distribution in the budget, so the test says nothing;
    3. ``violation`` if the per-seed drop from validation to test AUC is clearly above
       ``MAX_DROP`` (the model relies on the shortcut), ``pass`` if clearly below,
       ``inconclusive`` otherwise.

    ``unlearnable`` tests (``label_swap``): ``violation`` if the held-out test AUC is
    clearly above chance (the model learned to use absence as positive evidence), ``pass``
    if clearly not, ``inconclusive`` otherwise.
    """
    if len(test.per_seed) < MIN_SEEDS:
        raise ValueError(f"a verdict needs at least {MIN_SEEDS} seeds, got {len(test.per_seed)}")
    if kind == "unlearnable":
        if test.low > CHANCE + MARGIN:
            return "violation", (f"learned a rule no MIL model can represent: held-out AUC "
                                 f"{_fmt(test)}, 95% CI above {CHANCE + MARGIN:g}")
        if test.high < CHANCE + MARGIN:
            return "pass", (f"could not learn absence as positive evidence: held-out AUC "
                            f"{_fmt(test)}, 95% CI below {CHANCE + MARGIN:g}")
        return "inconclusive", (f"held-out AUC {_fmt(test)}: 95% CI straddles "
                                f"{CHANCE + MARGIN:g}; more seeds may decide")
    if kind != "shift":
        raise ValueError(f"unknown test kind {kind!r}")
    if test.high < CHANCE - MARGIN:
        return "violation", (f"inverted ranking on the test set: test AUC {_fmt(test)}, "
                             f"95% CI below {CHANCE - MARGIN:g} (validation {_fmt(val)})")
    if val.mean < LEARNED_AUC:
        return "inconclusive", (f"did not learn the training distribution: validation AUC "
                                f"{_fmt(val)} < {LEARNED_AUC:g}")
    drop = SeedSummary.of(np.subtract(val.per_seed, test.per_seed))
    if drop.low > MAX_DROP:
        return "violation", (f"learned (validation AUC {_fmt(val)}) but lost it under the "
                             f"shift: test AUC {_fmt(test)}, drop 95% CI above {MAX_DROP:g}")
    if drop.high < MAX_DROP:
        return "pass", (f"learned and kept it under the shift: validation AUC {_fmt(val)}, "
                        f"test AUC {_fmt(test)}")
    return "inconclusive", (f"validation AUC {_fmt(val)}, test AUC {_fmt(test)}: the drop's "
                            f"95% CI straddles {MAX_DROP:g}; more seeds may decide")
