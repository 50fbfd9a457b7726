"""The verdict rule: the one place where AUCs over seeds become pass / violation / inconclusive.

``error`` is decided by the harness (the model crashed or broke the contract); everything
else is decided here. Each seed is judged on its own held-out AUCs: its thresholds lie
about four standard deviations from what a model without the shortcut shows, so a single
seed's finding is already significant. A violation needs the finding reproduced, in at
least ``VIOLATING_SEEDS`` seeds; a pass needs a strict majority of seeds that learned and
kept it. Seeds, not a mean over them, because outcomes are often bimodal: a model learns
a shortcut in some runs and the right rule in others, and neither kind of run may hide
the other (measured on ``hopfield`` and ``transmil``). The thresholds and the
measurements behind them are in docs/verdict-rule.md.

A pass means the model learned the test's rule. On the threshold tests
(``threshold_poisoned``, ``false_frequency``: positive iff A and B) a rule of one concept
already ranks validation bags at an AUC of 0.75 or more, and it is the best any maximum
of instance scores can do; each such test declares that AUC (``partial_rule_auc``, derived
from its generator). A seed of such a test that learned (validation AUC at least
``LEARNED_AUC``) and is not inverted, but whose validation AUC does not clear that AUC by
``PARTIAL_SDS`` standard deviations (:func:`partial_bar`), is *partial*: it may have
learned one concept only, so it counts towards neither a pass nor a violation.

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

EVAL_BAGS_PER_CLASS = 250
"""Positive (and negative) bags of a held-out set in the default budget (500 bags)."""

PARTIAL_SDS = 4.0
"""How many standard deviations of a held-out AUC a seed's validation AUC must clear a
test's ``partial_rule_auc`` by to count as having learned more than one concept: as for
``MARGIN``, about four, so that no seed of a model that learned one concept reaches it by
chance. At 250 + 250 bags the standard deviation (:func:`auc_sd`) is 0.0217 at AUC 0.75
and 0.0189 at 0.819, so the bars are 0.837 (``false_frequency``) and 0.895
(``threshold_poisoned``)."""


def auc_sd(auc: float, n_pos: int = EVAL_BAGS_PER_CLASS,
           n_neg: int = EVAL_BAGS_PER_CLASS) -> float:
    """Standard deviation of an AUC measured on ``n_pos`` + ``n_neg`` bags, by Hanley &
    McNeil (Radiology 1982), whose ``Q1 = A / (2 - A)`` and ``Q2 = 2 A^2 / (1 + A)``
    approximate the variance of the Mann-Whitney statistic at true AUC ``A``.

    0.0258 at 0.5 with 250 + 250 bags (``MARGIN``'s 0.026), 0.0217 at 0.75, 0.0189 at
    0.819. Over seeds 0-39 of ``threshold_poisoned``'s validation bags the AUC of A's
    likelihood, maximised over each bag (true AUC 0.819), had a standard deviation of
    0.018; A's indicator, whose ties halve its spread, 0.012.
    """
    if not 0.0 <= auc <= 1.0 or n_pos < 1 or n_neg < 1:
        raise ValueError(f"an AUC in [0, 1] over at least one bag per class, got {auc!r} "
                         f"over {n_pos} + {n_neg}")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc)
                + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return variance ** 0.5


def partial_bar(partial_auc: float) -> float:
    """The validation AUC a seed must reach to count as having learned more than a rule
    of one concept: ``partial_auc + PARTIAL_SDS * auc_sd(partial_auc)`` (0.837 at 0.75,
    0.895 at 0.819)."""
    return partial_auc + PARTIAL_SDS * auc_sd(partial_auc)

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
PARTIAL = "partial"  # learned and kept a ranking no better than a rule of one concept
LEARNED_ABSENCE = "learned"  # learned a rule that uses absence as positive evidence
NOT_LEARNED = "not learned"  # could not learn it


def seed_outcome(kind: TestKind, val_auc: float, test_auc: float,
                 control_auc: float | None = None, partial_auc: float | None = None) -> str:
    """What one seed shows, from its validation and test AUCs.

    ``control_auc``: for ``unlearnable`` tests, the seed's validation AUC on the capacity
    control; ``None`` where none was recorded (reports written before the control), and
    then a seed that did not learn the rule counts as *not learned*, as it did then.
    ``partial_auc``: for ``shift`` tests of a rule of several concepts, the test's
    ``partial_rule_auc``; a seed that learned (validation AUC at least ``LEARNED_AUC``)
    and is not inverted, but whose validation AUC is below :func:`partial_bar` of it, is
    *partial*, whatever its drop: a rule of one concept that is a maximum of instance
    scores drops by the extreme-value effect on ``false_frequency``'s test bags (its
    negatives hold 35-44 copies of a concept, and the maximum over 40 draws of a score
    beats the positives' one; ``tests/toy_models.py:one_concept`` goes from 0.78 to
    0.54), so a drop from there is no evidence of a shortcut. ``None``: no such floor
    (``single_concept``), and the seed is *lost* or *kept* by its drop.
    """
    _check_partial(kind, partial_auc)
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
    if partial_auc is not None and val_auc < partial_bar(partial_auc):
        return PARTIAL
    return LOST if test_auc < val_auc - MAX_DROP else KEPT


def _check_partial(kind: TestKind, partial_auc: float | None) -> None:
    if partial_auc is not None and kind != "shift":
        raise ValueError(f"partial_auc applies to shift tests only, not {kind!r} ones")


def seed_outcomes(kind: TestKind, val_aucs: Sequence[float], test_aucs: Sequence[float],
                  control_aucs: Sequence[float] | None = None,
                  partial_auc: float | None = None) -> list[str]:
    """:func:`seed_outcome` of every seed of a cell (``control_aucs``: one per seed, or
    ``None``; ``partial_auc``: the test's ``partial_rule_auc``, or ``None``)."""
    controls = [None] * len(test_aucs) if control_aucs is None else list(control_aucs)
    if not len(val_aucs) == len(test_aucs) == len(controls):
        raise ValueError("one validation, one test (and one control) AUC per seed")
    return [seed_outcome(kind, val_aucs[i], test_aucs[i], controls[i], partial_auc)
            for i in range(len(controls))]


def judge(kind: TestKind, val_aucs: Sequence[float], test_aucs: Sequence[float],
          control_aucs: Sequence[float] | None = None,
          partial_auc: float | None = None) -> tuple[str, str]:
    """Return ``(verdict, reason)`` for one cell from its per-seed AUCs.

    ``shift`` tests (``single_concept``, ``threshold_poisoned``, ``false_frequency``):
    a seed is *inverted* if its test AUC is below 0.4 (whatever its validation AUC),
    else *unlearned* if its validation AUC is below 0.75, else, with ``partial_auc`` (the
    test's ``partial_rule_auc``: the threshold tests), *partial* if its validation AUC is
    below :func:`partial_bar` of it (0.895 on ``threshold_poisoned``, 0.837 on
    ``false_frequency``), else *lost* if its test AUC is more than 0.2 below its
    validation AUC, else *kept*. ``violation`` if at least two seeds are inverted or
    lost, else ``pass`` if kept seeds are a strict majority, else ``inconclusive`` (its
    reason names the rule of one concept when kept and partial seeds together are a
    strict majority).

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
    outcomes = seed_outcomes(kind, val_aucs, test_aucs, control_aucs, partial_auc)
    return _judge_votes(kind, Counter(outcomes), n, partial_auc)


# A seed's other possible outcomes, for :func:`fragile`. ``PARTIAL`` is left out: for the
# verdict it weighs as ``UNLEARNED`` does (neither a pass nor a violation), so a seed
# turning partial changes a verdict exactly when its turning unlearned does.
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
                   control_auc: float | None = None, partial_auc: float | None = None) -> bool:
    """Whether a value that decides this seed's outcome lies within ``NEAR`` of its
    threshold (strictly). The deciding values are those the seed's path through
    :func:`seed_outcome` compares: the test AUC with 0.4 always; then, unless inverted, the
    validation AUC with 0.75; then, on a test with ``partial_auc``, unless unlearned, the
    validation AUC with :func:`partial_bar`; then, for a kept or lost seed, the drop with
    0.2 (the test AUC with the validation AUC - 0.2). ``label_swap``: the test AUC with
    0.6, then, unless learned, the control's validation AUC with 0.75."""
    outcome = seed_outcome(kind, val_auc, test_auc, control_auc, partial_auc)
    if kind == "unlearnable":
        deciding = [(test_auc, CHANCE + MARGIN)]
        if outcome != LEARNED_ABSENCE and control_auc is not None:
            deciding.append((control_auc, LEARNED_AUC))
    else:
        deciding = [(test_auc, CHANCE - MARGIN)]
        if outcome != INVERTED:
            deciding.append((val_auc, LEARNED_AUC))
        if partial_auc is not None and outcome in (PARTIAL, LOST, KEPT):
            deciding.append((val_auc, partial_bar(partial_auc)))
        if outcome in (LOST, KEPT):
            deciding.append((test_auc, val_auc - MAX_DROP))
    return any(threshold - NEAR < value < threshold + NEAR for value, threshold in deciding)


def fragile(kind: TestKind, val_aucs: Sequence[float], test_aucs: Sequence[float],
            control_aucs: Sequence[float] | None = None,
            partial_auc: float | None = None) -> bool:
    """Whether the cell's verdict changes when any one seed shows another outcome.

    Such a cell sits on a threshold of the rule; a sweep confirms it with more seeds.
    ``control_aucs`` and ``partial_auc`` as for :func:`judge` (``None``: a report without
    the control; a test without a partial rule, whose seeds cannot be *partial*). A
    partial seed may turn any other outcome; no seed is imagined partial (for the verdict
    that is the same as unlearned).
    """
    outcomes = seed_outcomes(kind, val_aucs, test_aucs, control_aucs, partial_auc)
    n = len(outcomes)
    verdict = _judge_votes(kind, Counter(outcomes), n, partial_auc)[0]
    for i, own in enumerate(outcomes):
        for other in OUTCOMES[kind]:
            if other != own:
                changed = Counter(outcomes[:i] + [other] + outcomes[i + 1:])
                if _judge_votes(kind, changed, n, partial_auc)[0] != verdict:
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
    something (kept, partial, lost, inverted, learned or not learned) is judged cell by
    cell: a *partial* seed learned its training distribution (validation AUC at least
    0.75), if perhaps only one concept of it.
    """
    seen = False
    for outcome in outcomes:
        if outcome != UNLEARNED:
            return False
        seen = True
    return seen


def _judge_votes(kind: TestKind, votes: Counter[str], n: int,
                 partial_auc: float | None = None) -> tuple[str, str]:
    tally = ", ".join(f"{votes[o]} {o}" for o in
                      (INVERTED, LOST, KEPT, PARTIAL, UNLEARNED, LEARNED_ABSENCE, NOT_LEARNED)
                      if votes[o])
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
    if 2 * (votes[KEPT] + votes[PARTIAL]) > n:  # kept seeds alone are no majority
        return "inconclusive", (
            f"{votes[PARTIAL]} of {n} seeds reached only the one-concept rule's validation "
            f"AUC ({partial_auc:.2f}; the two-concept rule needs "
            f"{partial_bar(partial_auc):.3f}): a rule of one concept passes no threshold "
            f"test ({tally})")
    if 2 * votes[UNLEARNED] > n:
        return "inconclusive", (f"did not learn the training distribution (validation AUC "
                                f"below {LEARNED_AUC:g}) {seeds}")
    return "inconclusive", f"no outcome holds a majority {seeds}"
