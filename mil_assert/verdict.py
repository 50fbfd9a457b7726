"""The verdict rule: the one place where AUCs over seeds become pass / violation / inconclusive.

``error`` is decided by the harness (the model crashed or broke the contract); everything
else is decided here. Each seed is judged on its own held-out AUCs: its thresholds lie
about four standard deviations from what a model without the shortcut shows, so a single
seed's finding is already significant. A violation needs the finding reproduced, in at
least ``VIOLATING_SEEDS`` seeds; a pass needs a strict majority of seeds that learned and
kept it. Seeds, not a mean over them, because outcomes are often bimodal: a model learns
a shortcut in some runs and the right rule in others, and neither kind of run may hide
the other (measured on ``hopfield`` and ``transmil``). The thresholds and the
measurements behind them are in the README, "The verdict rule".

An ``unlearnable`` test (``label_swap``) comes with a *capacity control*: the same bags
with the labels unswapped, which any MIL model can learn, trained with the same model,
seeds and budget. A seed that did not learn the control (validation AUC below
``LEARNED_AUC``) cannot show that the model was unable to learn the swapped rule; it is
``unlearned`` and says nothing, like a seed of a shift test that did not learn.

The gate also judges each model as a whole (:func:`learned_nothing`): a model none of
whose seeds learned any training distribution (every seed of every judged cell
``unlearned``) fails, whatever its cells' verdicts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from mil_assert.defaults import MIN_SEEDS
from mil_assert.synthetic.catalog import TestKind

CHANCE = 0.5
MARGIN = 0.1
"""A seed's AUC is clearly below (above) chance under 0.4 (over 0.6): with 250 + 250
held-out bags an AUC's standard deviation at chance is 0.026, so 0.1 is about 4 of them."""

LEARNED_AUC = 0.75
"""Validation AUC from which a seed has learned the training distribution."""

MAX_DROP = 0.2
"""Largest validation-to-test AUC drop of a seed that did not use a shortcut."""

VIOLATING_SEEDS = 2
"""Seeds that must show the shortcut (or the forbidden rule) for a violation."""

CAPACITY_CONTROL = ("unlearnable tests: a seed that did not learn the rule and whose "
                    "validation AUC on the capacity control (the same bags, labels "
                    "unswapped) is below learned_auc is unlearned and says nothing")
"""The control's part of the rule, in words, for the report's ``verdict_rule``."""


# What one seed shows.
INVERTED = "inverted"  # test AUC clearly below chance: only a learned shortcut ranks so
LOST = "lost"  # learned, but the test AUC fell by more than MAX_DROP under the shift
KEPT = "kept"  # learned and kept it under the shift
UNLEARNED = "unlearned"  # did not learn the training distribution (or the control): says nothing
LEARNED_ABSENCE = "learned"  # learned a rule that uses absence as positive evidence
NOT_LEARNED = "not learned"  # could not learn it


def seed_outcome(kind: TestKind, val_auc: float, test_auc: float,
                 control_auc: float | None = None) -> str:
    """What one seed shows, from its validation and test AUCs.

    ``control_auc``: for ``unlearnable`` tests, the seed's validation AUC on the capacity
    control; ``None`` where none was recorded (reports written before the control), and
    then a seed that did not learn the rule counts as *not learned*, as it did then.
    """
    if kind == "unlearnable":
        if test_auc > CHANCE + MARGIN:
            return LEARNED_ABSENCE
        if control_auc is not None and control_auc < LEARNED_AUC:
            return UNLEARNED
        return NOT_LEARNED
    if kind != "shift":
        raise ValueError(f"unknown test kind {kind!r}")
    if test_auc < CHANCE - MARGIN:
        return INVERTED
    if val_auc < LEARNED_AUC:
        return UNLEARNED
    return LOST if val_auc - test_auc > MAX_DROP else KEPT


def seed_outcomes(kind: TestKind, val_aucs: Sequence[float], test_aucs: Sequence[float],
                  control_aucs: Sequence[float] | None = None) -> list[str]:
    """:func:`seed_outcome` of every seed of a cell (``control_aucs``: one per seed, or
    ``None``)."""
    controls = [None] * len(test_aucs) if control_aucs is None else list(control_aucs)
    if not len(val_aucs) == len(test_aucs) == len(controls):
        raise ValueError("one validation, one test (and one control) AUC per seed")
    return [seed_outcome(kind, v, t, c) for v, t, c in zip(val_aucs, test_aucs, controls,
                                                           strict=True)]


def judge(kind: TestKind, val_aucs: Sequence[float], test_aucs: Sequence[float],
          control_aucs: Sequence[float] | None = None) -> tuple[str, str]:
    """Return ``(verdict, reason)`` for one cell from its per-seed AUCs.

    ``shift`` tests (``single_concept``, ``threshold_poisoned``, ``false_frequency``):
    a seed is *inverted* if its test AUC is below 0.4 (whatever its validation AUC),
    else *unlearned* if its validation AUC is below 0.75, else *lost* if its test AUC
    is more than 0.2 below its validation AUC, else *kept*. ``violation`` if at least two
    seeds are inverted or lost, else ``pass`` if kept seeds are a strict majority, else
    ``inconclusive``.

    ``unlearnable`` tests (``label_swap``), with ``control_aucs``, each seed's validation
    AUC on the capacity control (required): a seed *learned* the rule if its held-out
    test AUC is above 0.6 (whatever its control), else *unlearned* if its control AUC is
    below 0.75, else *not learned*. ``violation`` if at least two seeds learned it, else
    ``pass`` if not-learned seeds are a strict majority, else ``inconclusive``.
    """
    if len(val_aucs) != len(test_aucs):
        raise ValueError("one validation and one test AUC per seed")
    if kind == "unlearnable" and control_aucs is None:
        raise ValueError("an unlearnable test needs each seed's validation AUC on its "
                         "capacity control (control_aucs)")
    n = len(test_aucs)
    if n < MIN_SEEDS:
        raise ValueError(f"a verdict needs at least {MIN_SEEDS} seeds, got {n}")
    return _judge_votes(kind, Counter(seed_outcomes(kind, val_aucs, test_aucs, control_aucs)),
                        n)


OUTCOMES = {"shift": (INVERTED, LOST, KEPT, UNLEARNED),
            "unlearnable": (LEARNED_ABSENCE, NOT_LEARNED, UNLEARNED)}
PASSING = (KEPT, NOT_LEARNED)
"""Outcomes of a seed that shows a model passing: it learned and kept the rule, or it
learned the capacity control but could not learn a rule no MIL model can represent."""
SHORTCUT = (INVERTED, LOST, LEARNED_ABSENCE)
"""Outcomes of a seed that shows a violation: a shortcut, or a rule no MIL model can
represent."""


NEAR = 0.05
"""A seed is near a threshold when the AUC (or drop) that decides its outcome lies within
this of the threshold: about two standard deviations of a held-out AUC at chance."""


def near_threshold(kind: TestKind, val_auc: float, test_auc: float,
                   control_auc: float | None = None) -> bool:
    """Whether the value that decides this seed's outcome lies within ``NEAR`` of its
    threshold (test AUC 0.4, validation AUC 0.75, drop 0.2; ``label_swap``: test AUC 0.6,
    then the control's validation AUC 0.75)."""
    if kind == "unlearnable":
        if abs(test_auc - (CHANCE + MARGIN)) < NEAR:
            return True
        return (test_auc <= CHANCE + MARGIN and control_auc is not None
                and abs(control_auc - LEARNED_AUC) < NEAR)
    if abs(test_auc - (CHANCE - MARGIN)) < NEAR:
        return True
    if test_auc < CHANCE - MARGIN:
        return False
    if abs(val_auc - LEARNED_AUC) < NEAR:
        return True
    return val_auc >= LEARNED_AUC and abs(val_auc - test_auc - MAX_DROP) < NEAR


def fragile(kind: TestKind, val_aucs: Sequence[float], test_aucs: Sequence[float],
            control_aucs: Sequence[float] | None = None) -> bool:
    """Whether the cell's verdict changes when any one seed shows another outcome.

    Such a cell sits on a threshold of the rule; a sweep confirms it with more seeds.
    ``control_aucs`` as for :func:`judge` (``None``: a report without the control).
    """
    outcomes = seed_outcomes(kind, val_aucs, test_aucs, control_aucs)
    n = len(outcomes)
    verdict = _judge_votes(kind, Counter(outcomes), n)[0]
    for i, own in enumerate(outcomes):
        for other in OUTCOMES[kind]:
            if other != own:
                changed = Counter(outcomes[:i] + [other] + outcomes[i + 1:])
                if _judge_votes(kind, changed, n)[0] != verdict:
                    return True
    return False


LEARNED_NOTHING = "the model learned none of the training distributions: check that it trains"
"""The gate's line for a model that learned nothing (:func:`learned_nothing`)."""


def learned_nothing(outcomes: Iterable[str]) -> bool:
    """Whether a model learned nothing: the seed outcomes of all its judged cells are
    ``unlearned``, every one (and there is at least one).

    Every seed of every shift test stayed below validation AUC 0.75, and every seed of
    ``label_swap`` below 0.75 on its capacity control (and at most 0.6 on the swapped
    rule): the model did not train, so no cell could reach a verdict, and the gate fails
    (a constant model, or one whose trained part never reaches the logit, would
    otherwise pass with every cell inconclusive). A model with any seed that learned
    something (kept, lost, inverted, learned or not learned) is judged cell by cell.
    """
    seen = False
    for outcome in outcomes:
        if outcome != UNLEARNED:
            return False
        seen = True
    return seen


def _judge_votes(kind: TestKind, votes: Counter[str], n: int) -> tuple[str, str]:
    tally = ", ".join(f"{votes[o]} {o}" for o in
                      (INVERTED, LOST, KEPT, UNLEARNED, LEARNED_ABSENCE, NOT_LEARNED) if votes[o])
    seeds = f"of {n} seeds: {tally}"
    if kind == "unlearnable":
        if votes[LEARNED_ABSENCE] >= VIOLATING_SEEDS:
            return "violation", (f"learned a rule no MIL model can represent (held-out AUC "
                                 f"above {CHANCE + MARGIN:g}) {seeds}")
        if 2 * votes[NOT_LEARNED] > n:
            return "pass", (f"learned the capacity control (presence as positive evidence) "
                            f"but could not learn absence as positive evidence {seeds}")
        if 2 * votes[UNLEARNED] > n:
            return "inconclusive", (f"did not learn the capacity control (presence as "
                                    f"positive evidence, validation AUC below "
                                    f"{LEARNED_AUC:g}), so not learning absence says "
                                    f"nothing {seeds}")
        return "inconclusive", f"no outcome holds a majority {seeds}"
    if votes[INVERTED] + votes[LOST] >= VIOLATING_SEEDS:
        return "violation", f"a shortcut ranks the shifted test bags wrongly {seeds}"
    if 2 * votes[KEPT] > n:
        return "pass", f"learned the training distribution and kept it under the shift {seeds}"
    if 2 * votes[UNLEARNED] > n:
        return "inconclusive", (f"did not learn the training distribution (validation AUC "
                                f"below {LEARNED_AUC:g}) {seeds}")
    return "inconclusive", f"no outcome holds a majority {seeds}"
