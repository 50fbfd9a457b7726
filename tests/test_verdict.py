"""The verdict rule on hand-made AUCs, one case per branch."""

from __future__ import annotations

import math

import pytest

from mil_assert.synthetic import TESTS
from mil_assert.verdict import (
    CHANCE,
    LEARNED_AUC,
    MARGIN,
    MAX_DROP,
    NEAR,
    auc_sd,
    fragile,
    judge,
    learned_nothing,
    near_threshold,
    partial_bar,
    seed_outcome,
    seed_outcomes,
)


@pytest.mark.parametrize(
    ("val", "test", "outcome"),
    [
        (1.0, 0.01, "inverted"),
        (0.6, 0.1, "inverted"),  # an inversion counts even when validation is modest
        (0.6, 0.55, "unlearned"),
        (1.0, 0.6, "lost"),
        (0.9, 0.88, "kept"),
    ],
)
def test_seed_outcomes_of_shift_tests(val, test, outcome):
    assert seed_outcome("shift", val, test) == outcome


@pytest.mark.parametrize(
    ("val", "test", "expected"),
    [
        ([1.0, 1.0, 1.0, 0.99, 1.0], [0.0, 0.01, 0.0, 0.02, 0.0], "violation"),  # shortcut
        ([0.6, 0.65, 0.62, 0.66, 0.6], [0.1, 0.12, 0.09, 0.15, 0.1], "violation"),  # inverted
        ([0.9, 0.88, 0.92, 0.85, 0.9], [0.89, 0.9, 0.9, 0.86, 0.88], "pass"),
        ([0.55, 0.5, 0.6, 0.52, 0.5], [0.5, 0.52, 0.55, 0.49, 0.5], "inconclusive"),  # unlearned
        ([1.0, 1.0, 1.0, 1.0, 1.0], [0.55, 0.6, 0.5, 0.58, 0.52], "violation"),  # lost it
        ([0.95, 0.9, 0.95, 0.9, 0.6], [0.9, 0.88, 0.88, 0.55, 0.5], "pass"),  # 1 lost only
        ([0.95, 0.9, 0.6, 0.6, 0.6], [0.9, 0.5, 0.55, 0.55, 0.5], "inconclusive"),  # 3 unlearned
        ([0.95, 0.9, 0.95, 0.6, 0.6], [0.9, 0.88, 0.88, 0.55, 0.5], "pass"),  # 3 of 5 kept
    ],
)
def test_shift_tests(val, test, expected):
    assert judge("shift", val, test)[0] == expected


def test_runs_that_generalise_do_not_hide_runs_that_learned_the_shortcut():
    # Measured (transmil on false_frequency): 3 seeds kept the ranking, 2 lost it.
    val, test = [1.0] * 5, [0.95, 0.48, 0.99, 0.96, 0.49]
    verdict, reason = judge("shift", val, test)
    assert verdict == "violation" and "2 lost, 3 kept" in reason


def test_one_run_that_generalises_does_not_hide_four_inverted_ones():
    # Measured shape (hopfield on false_frequency): the mean test AUC is 0.16, but its
    # spread is wide; four of five seeds rank the shifted bags upside down.
    val = [0.69, 0.97, 0.67, 0.62, 0.66]
    test = [0.06, 0.63, 0.03, 0.04, 0.06]
    verdict, reason = judge("shift", val, test)
    assert verdict == "violation" and "4 inverted, 1 lost" in reason


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ([0.82, 0.84, 0.8, 0.83, 0.81], "violation"),
        ([0.5, 0.47, 0.52, 0.49, 0.5], "pass"),
        ([0.5, 0.7, 0.55, 0.55, 0.55], "pass"),  # one seed alone is not a reproduced finding
        ([0.5, 0.7, 0.65, 0.55, 0.55], "violation"),  # two are
        ([0.7, 0.5], "inconclusive"),  # one of two: neither a finding nor a majority
    ],
)
def test_unlearnable_tests(test, expected):
    learned_control = [0.95] * len(test)
    assert judge("unlearnable", test, test, learned_control)[0] == expected


@pytest.mark.parametrize(
    ("test", "control", "outcome"),
    [
        (0.5, 0.95, "not learned"),  # learned presence, could not learn absence
        (0.5, 0.6, "unlearned"),  # learned nothing: says nothing about absence
        (0.5, LEARNED_AUC, "not learned"),  # the control threshold is inclusive, as for shift
        (0.8, 0.5, "learned"),  # absence learned counts whatever the control
        (0.5, None, "not learned"),  # a report written before the control
    ],
)
def test_seed_outcomes_of_unlearnable_tests_read_the_capacity_control(test, control, outcome):
    assert seed_outcome("unlearnable", test, test, control) == outcome


def test_a_model_that_cannot_learn_the_control_does_not_pass_label_swap():
    # Measured shape (a constant model): every AUC is exactly 0.5, the control's too.
    verdict, reason = judge("unlearnable", [0.5] * 3, [0.5] * 3, [0.5] * 3)
    assert verdict == "inconclusive"
    assert "did not learn the capacity control" in reason and "3 unlearned" in reason
    verdict, reason = judge("unlearnable", [0.5] * 3, [0.5] * 3, [0.9, 0.5, 0.9])
    assert verdict == "pass" and "1 unlearned, 2 not learned" in reason
    assert judge("unlearnable", [0.5] * 3, [0.5] * 3, [0.9, 0.5, 0.5])[0] == "inconclusive"
    assert judge("unlearnable", [0.9] * 3, [0.9, 0.9, 0.5], [0.5] * 3)[0] == "violation"


def test_an_unlearnable_test_needs_its_control():
    with pytest.raises(ValueError, match="capacity control"):
        judge("unlearnable", [0.5] * 3, [0.5] * 3)
    with pytest.raises(ValueError, match="per seed"):
        seed_outcomes("unlearnable", [0.5] * 3, [0.5] * 3, [0.9] * 2)


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ([("shift", [0.5] * 3, [0.5] * 3, None), ("unlearnable", [0.5] * 3, [0.5] * 3,
                                                   [0.5] * 3)], True),  # a constant model
        ([("shift", [0.6] * 3, [0.5] * 3, None)], True),  # one test, nothing learned
        ([("shift", [0.5] * 3, [0.5] * 3, None), ("unlearnable", [0.5] * 3, [0.5] * 3,
                                                   [0.9, 0.5, 0.5])], False),  # one control
        ([("shift", [0.5, 0.5, 0.9], [0.5, 0.5, 0.9], None)], False),  # one seed kept
        ([("shift", [0.6] * 3, [0.1, 0.5, 0.5], None)], False),  # inverted: a shortcut
        ([("unlearnable", [0.5] * 3, [0.5] * 3, None)], False),  # no control recorded
        ([], False),  # nothing judged (every cell an error): the errors fail the gate
    ],
)
def test_a_model_learned_nothing_when_no_seed_of_any_cell_learned(cells, expected):
    outcomes = [o for kind, val, test, control in cells
                for o in seed_outcomes(kind, val, test, control)]
    assert learned_nothing(outcomes) is expected


def test_a_verdict_needs_two_seeds_and_paired_aucs():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        judge("shift", [0.9], [0.9])
    with pytest.raises(ValueError, match="per seed"):
        judge("shift", [0.9, 0.8], [0.9])


@pytest.mark.parametrize(
    ("kind", "val", "test", "expected"),
    [
        ("shift", [0.9] * 5, [0.9] * 5, False),  # 5 kept: one other seed leaves a pass
        ("shift", [0.9, 0.9, 0.9, 0.6, 0.6], [0.9, 0.9, 0.9, 0.5, 0.5], True),  # 3 of 5 kept
        ("shift", [1.0] * 5, [0.1, 0.1, 0.9, 0.9, 0.9], True),  # exactly 2 inverted
        ("shift", [1.0] * 5, [0.1, 0.1, 0.1, 0.9, 0.9], False),  # 3 inverted
        ("shift", [0.6] * 5, [0.5] * 5, False),  # 5 unlearned
        ("unlearnable", [0.5] * 5, [0.9, 0.5, 0.5, 0.5, 0.5], True),  # one more learned: violation
        ("unlearnable", [0.5] * 5, [0.5] * 5, False),
    ],
)
def test_a_cell_is_fragile_when_one_seed_could_change_its_verdict(kind, val, test, expected):
    control = [0.95] * len(test) if kind == "unlearnable" else None
    assert fragile(kind, val, test, control) is expected
    if control is not None:  # a report written before the control reads the same
        assert fragile(kind, val, test) is expected


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        ([0.9, 0.9, 0.9, 0.5, 0.5], True),  # 3 not learned: one more unlearned, inconclusive
        ([0.9, 0.9, 0.9, 0.9, 0.5], False),
        ([0.5] * 5, False),  # 5 unlearned
    ],
)
def test_a_label_swap_cell_is_fragile_on_its_control(control, expected):
    assert fragile("unlearnable", [0.5] * 5, [0.5] * 5, control) is expected


@pytest.mark.parametrize(
    ("kind", "val", "test", "expected"),
    [
        ("shift", 1.0, 0.42, True),  # test AUC near 0.4
        ("shift", 1.0, 0.0, False),  # clearly inverted
        ("shift", 0.77, 0.7, True),  # validation AUC near 0.75
        ("shift", 1.0, 0.77, True),  # drop 0.23, near 0.2
        ("shift", 1.0, 0.9, False),  # drop 0.1, kept
        ("shift", 0.5, 0.5, False),  # clearly unlearned
        ("unlearnable", 0.5, 0.63, True),
        ("unlearnable", 0.5, 0.5, False),
    ],
)
def test_a_seed_is_near_a_threshold_within_two_chance_deviations(kind, val, test, expected):
    assert near_threshold(kind, val, test) is expected


@pytest.mark.parametrize(
    ("test", "control", "expected"),
    [
        (0.5, 0.78, True),  # control near 0.75
        (0.5, 0.95, False),
        (0.5, 0.5, False),  # clearly unlearned
        (0.9, 0.74, False),  # learned the rule: the control does not decide
        (0.62, 0.95, True),  # test AUC near 0.6
    ],
)
def test_a_label_swap_seed_is_near_the_control_threshold(test, control, expected):
    assert near_threshold("unlearnable", test, test, control) is expected


# A pass means the model learned the rule: on the threshold tests a rule of one concept is
# not the rule (``partial_rule_auc``, derived from each generator).
TP = TESTS["threshold_poisoned"].partial_rule_auc  # 59/72 = 0.819, bar 0.895
FF = TESTS["false_frequency"].partial_rule_auc  # 0.75, bar 0.837


def test_each_threshold_test_declares_the_auc_of_a_rule_of_one_concept():
    assert TP == pytest.approx(59 / 72) and FF == 0.75
    assert TESTS["single_concept"].partial_rule_auc is None  # one concept: 0.75 decides
    assert TESTS["label_swap"].partial_rule_auc is None
    assert partial_bar(TP) == pytest.approx(0.8951, abs=1e-4)
    assert partial_bar(FF) == pytest.approx(0.8370, abs=1e-4)


@pytest.mark.parametrize(
    ("auc", "n_pos", "n_neg", "sd"),
    [
        (0.5, 250, 250, 0.02585),  # MARGIN's 0.026 at chance
        (0.75, 250, 250, 0.02174),
        (59 / 72, 250, 250, 0.01892),
        (0.75, 100, 400, 0.02998),  # unbalanced: Q1 goes with positives, Q2 with negatives
        (0.75, 400, 100, 0.02403),
        (0.75, 1, 1, 0.43301),  # one bag per class: the A (1 - A) term alone
        (1.0, 250, 250, 0.0),
        (0.0, 250, 250, 0.0),  # both ends of [0, 1] are AUCs
    ],
)
def test_the_sd_of_an_auc_is_hanley_and_mcneils(auc, n_pos, n_neg, sd):
    assert auc_sd(auc, n_pos, n_neg) == pytest.approx(sd, abs=5e-5)


def test_the_sd_of_an_auc_defaults_to_250_bags_per_class():
    assert auc_sd(0.75) == auc_sd(0.75, 250, 250)
    assert auc_sd(0.75, 250) == auc_sd(0.75, 250, 250)


@pytest.mark.parametrize(("auc", "n_pos", "n_neg"),
                         [(-0.01, 250, 250), (1.01, 250, 250), (0.75, 0, 250), (0.75, 250, 0)])
def test_the_sd_of_an_auc_needs_an_auc_and_bags(auc, n_pos, n_neg):
    with pytest.raises(ValueError, match="an AUC in"):
        auc_sd(auc, n_pos, n_neg)


@pytest.mark.parametrize(
    ("val", "test", "partial", "outcome"),
    [
        (0.82, 0.80, TP, "partial"),  # a rule of one concept, kept under the shift
        (0.89, 0.88, TP, "partial"),  # 3.6 sd above it: still within chance of it
        (0.82, 0.80, None, "kept"),  # without a floor (single_concept) it is kept
        (0.95, 0.94, TP, "kept"),  # clears the bar
        (0.82, 0.10, TP, "inverted"),  # inversions count as before
        (0.70, 0.68, TP, "unlearned"),
        (0.78, 0.54, FF, "partial"),  # a one-concept max rule's extreme-value drop
        (0.78, 0.54, None, "lost"),
        (1.00, 0.60, FF, "lost"),  # above the bar, the drop decides as before
        (0.80, 0.79, FF, "partial"),
        (0.85, 0.84, FF, "kept"),  # above 0.837
    ],
)
def test_a_seed_that_reaches_only_a_rule_of_one_concept_is_partial(val, test, partial, outcome):
    assert seed_outcome("shift", val, test, None, partial) == outcome


def test_the_partial_bar_is_inclusive_and_the_learned_threshold_comes_first():
    bar = partial_bar(TP)
    assert seed_outcome("shift", bar, bar, None, TP) == "kept"
    assert seed_outcome("shift", bar - 1e-9, bar, None, TP) == "partial"
    assert seed_outcome("shift", LEARNED_AUC, LEARNED_AUC, None, FF) == "partial"
    assert seed_outcome("shift", LEARNED_AUC - 1e-9, 0.7, None, FF) == "unlearned"


def test_three_partial_seeds_of_five_make_an_inconclusive_cell_that_names_the_rule():
    # Measured shape (focus_mil on threshold_poisoned, seeds 0-4): validation 0.70-0.84,
    # kept under the shift; under the old rule 4 kept, 1 unlearned: a pass.
    val = [0.839, 0.806, 0.81, 0.782, 0.698]
    test = [0.806, 0.843, 0.822, 0.744, 0.669]
    assert judge("shift", val, test)[0] == "pass"
    verdict, reason = judge("shift", val, test, None, TP)
    assert verdict == "inconclusive"
    assert reason.startswith("4 of 5 seeds reached only the one-concept rule's validation "
                             "AUC (0.82; the two-concept rule needs 0.895)")
    assert reason.endswith("(4 partial, 1 unlearned)")
    assert seed_outcomes("shift", val, test, None, TP) == ["partial"] * 4 + ["unlearned"]


@pytest.mark.parametrize(
    ("val", "test", "expected", "says"),
    [
        ([0.95, 0.95, 0.82, 0.82, 0.82], [0.95] * 2 + [0.8] * 3, "inconclusive",
         "3 of 5 seeds reached only"),  # 2 kept, 3 partial: no pass
        ([0.95, 0.95, 0.95, 0.82, 0.82], [0.95] * 3 + [0.8] * 2, "pass",
         "3 kept, 2 partial"),  # kept seeds are still a strict majority
        ([0.95, 0.95, 0.95, 0.82, 0.82, 0.82], [0.95] * 3 + [0.8] * 3, "inconclusive",
         "3 of 6 seeds reached only"),  # 3 kept of 6 is no strict majority
        ([0.82, 0.82, 0.82, 0.82, 0.6], [0.8] * 4 + [0.1], "inconclusive",
         "4 of 5 seeds reached only"),
        ([0.82, 0.82, 0.82, 0.82, 0.82], [0.1, 0.1, 0.8, 0.8, 0.8], "violation",
         "2 inverted, 3 partial"),  # inversions still count as violations
        ([0.82, 0.6, 0.6, 0.6, 0.6], [0.8, 0.5, 0.5, 0.5, 0.5], "inconclusive",
         "did not learn the training distribution"),  # 4 unlearned, 1 partial
        ([0.82, 0.82, 0.6, 0.6], [0.8, 0.8, 0.5, 0.5], "inconclusive",
         "no outcome holds a majority"),  # 2 partial, 2 unlearned: no majority either way
    ],
)
def test_partial_seeds_count_towards_no_pass(val, test, expected, says):
    verdict, reason = judge("shift", val, test, None, TP)
    assert verdict == expected and says in reason


def test_partial_applies_to_shift_tests_only():
    with pytest.raises(ValueError, match="shift tests only"):
        judge("unlearnable", [0.5] * 3, [0.5] * 3, [0.9] * 3, 0.75)
    with pytest.raises(ValueError, match="shift tests only"):
        seed_outcome("unlearnable", 0.5, 0.5, 0.9, 0.75)
    with pytest.raises(ValueError, match="shift tests only"):
        near_threshold("unlearnable", 0.5, 0.5, 0.9, 0.75)


def test_a_partial_seed_learned_something():
    outcomes = seed_outcomes("shift", [0.82, 0.6, 0.6], [0.8, 0.5, 0.5], None, TP)
    assert outcomes == ["partial", "unlearned", "unlearned"]
    assert learned_nothing(outcomes) is False
    assert learned_nothing(["unlearned", "unlearned"]) is True


@pytest.mark.parametrize(
    ("val", "test", "expected"),
    [
        (0.86, 0.86, True),  # 0.035 below the bar 0.895
        (0.93, 0.93, True),  # 0.035 above it
        (0.82, 0.82, False),  # clearly partial
        (0.99, 0.98, False),  # clearly kept
        (0.82, 0.60, False),  # partial whatever the drop: the drop does not decide
        (0.99, 0.78, True),  # above the bar the drop (0.21) decides, near 0.2
    ],
)
def test_a_threshold_seed_is_near_the_partial_bar(val, test, expected):
    assert near_threshold("shift", val, test, None, TP) is expected


@pytest.mark.parametrize(
    ("val", "test", "expected"),
    [
        ([0.95, 0.95, 0.95, 0.82, 0.82], [0.95] * 3 + [0.8] * 2, True),  # one kept less: no pass
        ([0.95] * 5, [0.95] * 5, False),
        ([0.82] * 5, [0.8] * 5, False),  # one kept more is still no majority
        ([0.95, 0.95, 0.82, 0.82, 0.82], [0.95] * 2 + [0.8] * 3, True),  # one partial kept
    ],
)
def test_a_threshold_cell_is_fragile_on_its_partial_seeds(val, test, expected):
    assert fragile("shift", val, test, None, TP) is expected


def test_without_a_floor_a_seed_is_never_imagined_partial():
    # 3 kept of 5 with two unlearned: another outcome for any one seed changes the pass;
    # 5 kept: no single seed can, and "partial" is no outcome a single_concept seed has.
    assert fragile("shift", [0.95] * 5, [0.95] * 5) is False
    assert fragile("shift", [0.95] * 3 + [0.6] * 2, [0.95] * 3 + [0.5] * 2) is True


# Boundaries: which side of each threshold a value exactly on it falls (mutation testing,
# docs/verdict-rule.md). ``below(x)`` is the largest float under x.
def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def test_a_test_auc_exactly_at_0_4_is_not_inverted():
    assert CHANCE - MARGIN == 0.4
    assert seed_outcome("shift", 0.5, CHANCE - MARGIN) == "unlearned"
    assert seed_outcome("shift", 0.5, below(CHANCE - MARGIN)) == "inverted"


def test_a_validation_auc_exactly_at_0_75_has_learned():
    assert seed_outcome("shift", LEARNED_AUC, LEARNED_AUC) == "kept"
    assert seed_outcome("shift", below(LEARNED_AUC), LEARNED_AUC) == "unlearned"


def test_a_drop_of_exactly_0_2_is_kept():
    val = 0.95
    assert seed_outcome("shift", val, val - MAX_DROP) == "kept"
    assert seed_outcome("shift", val, below(val - MAX_DROP)) == "lost"


def test_a_held_out_auc_exactly_at_0_6_has_not_learned_absence():
    assert CHANCE + MARGIN == 0.6
    assert seed_outcome("unlearnable", 0.5, CHANCE + MARGIN, 0.95) == "not learned"
    assert seed_outcome("unlearnable", 0.5, above(CHANCE + MARGIN), 0.95) == "learned"
    assert seed_outcome("unlearnable", 0.5, 0.5, below(LEARNED_AUC)) == "unlearned"


@pytest.mark.parametrize(
    ("kept", "unlearned", "expected", "says"),
    [
        (3, 3, "inconclusive", "no outcome holds a majority of 6 seeds: 3 kept, 3 unlearned"),
        (4, 2, "pass", "of 6 seeds: 4 kept, 2 unlearned"),
        (6, 6, "inconclusive", "no outcome holds a majority of 12 seeds"),  # a tie is no pass
        (7, 5, "pass", "of 12 seeds: 7 kept, 5 unlearned"),
        (2, 4, "inconclusive", "did not learn the training distribution"),
        (1, 1, "inconclusive", "no outcome holds a majority of 2 seeds"),
    ],
)
def test_a_pass_needs_a_strict_majority_with_an_even_number_of_seeds(kept, unlearned,
                                                                    expected, says):
    val, test = [0.9] * kept + [0.6] * unlearned, [0.9] * kept + [0.5] * unlearned
    verdict, reason = judge("shift", val, test)
    assert verdict == expected and says in reason, reason


@pytest.mark.parametrize(
    ("not_learned", "unlearned", "expected", "says"),
    [
        (3, 3, "inconclusive", "no outcome holds a majority of 6 seeds"),
        (4, 2, "pass", "of 6 seeds: 2 unlearned, 4 not learned"),
        (2, 2, "inconclusive", "no outcome holds a majority of 4 seeds"),  # 2 of 4 unlearned
        (3, 2, "pass", "of 5 seeds: 2 unlearned, 3 not learned"),
        (1, 3, "inconclusive", "did not learn the capacity control"),
    ],
)
def test_label_swap_needs_a_strict_majority_too(not_learned, unlearned, expected, says):
    n = not_learned + unlearned
    verdict, reason = judge("unlearnable", [0.5] * n, [0.5] * n,
                            [0.95] * not_learned + [0.5] * unlearned)
    assert verdict == expected and says in reason, reason


def test_two_unlearned_of_five_with_a_learned_one_make_no_majority():
    verdict, reason = judge("unlearnable", [0.5] * 5, [0.5, 0.5, 0.5, 0.5, 0.9],
                            [0.95, 0.95, 0.5, 0.5, 0.95])
    assert verdict == "inconclusive"
    assert reason == "no outcome holds a majority of 5 seeds: 2 unlearned, 1 learned, 2 not learned"


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ([0.1, 0.9, 0.9, 0.9, 0.9], "pass"),  # one inverted seed alone is no finding
        ([0.1, 0.5, 0.9, 0.9, 0.9], "violation"),  # one inverted and one lost make two
        ([0.5, 0.5, 0.9, 0.9, 0.9], "violation"),
        ([0.5, 0.9, 0.9, 0.9, 0.9], "pass"),
    ],
)
def test_a_violation_needs_two_seeds_that_show_a_shortcut(test, expected):
    assert judge("shift", [1.0] * 5, test)[0] == expected


def test_a_label_swap_violation_needs_two_seeds_that_learned_absence():
    control = [0.95] * 4
    assert judge("unlearnable", [0.5] * 4, [0.9, 0.5, 0.5, 0.5], control)[0] == "pass"
    assert judge("unlearnable", [0.5] * 4, [0.9, 0.9, 0.5, 0.5], control)[0] == "violation"


@pytest.mark.parametrize(
    ("kind", "val", "test", "control", "partial", "reason"),
    [
        ("shift", [1.0] * 3, [0.0] * 3, None, None,
         "a shortcut ranks the shifted test bags wrongly of 3 seeds: 3 inverted"),
        ("shift", [0.9] * 3, [0.9] * 3, None, None,
         "learned the training distribution and kept it under the shift of 3 seeds: 3 kept"),
        ("shift", [0.6] * 3, [0.5] * 3, None, None,
         "did not learn the training distribution (validation AUC below 0.75) of 3 seeds: "
         "3 unlearned"),
        ("shift", [0.82] * 3, [0.8] * 3, None, TP,
         "3 of 3 seeds reached only the one-concept rule's validation AUC (0.82; the "
         "two-concept rule needs 0.895): a rule of one concept passes no threshold test "
         "(3 partial)"),
        ("shift", [0.8] * 2, [0.8] * 2, None, FF,
         "2 of 2 seeds reached only the one-concept rule's validation AUC (0.75; the "
         "two-concept rule needs 0.837): a rule of one concept passes no threshold test "
         "(2 partial)"),
        ("unlearnable", [0.5] * 3, [0.9] * 3, [0.95] * 3, None,
         "learned a rule no MIL model can represent (held-out AUC above 0.6) of 3 seeds: "
         "3 learned"),
        ("unlearnable", [0.5] * 3, [0.5] * 3, [0.95] * 3, None,
         "learned the capacity control (presence as positive evidence) but could not learn "
         "absence as positive evidence of 3 seeds: 3 not learned"),
        ("unlearnable", [0.5] * 3, [0.5] * 3, [0.5] * 3, None,
         "did not learn the capacity control (presence as positive evidence, validation AUC "
         "below 0.75), so not learning absence says nothing of 3 seeds: 3 unlearned"),
    ],
)
def test_each_verdict_gives_its_reason(kind, val, test, control, partial, reason):
    assert judge(kind, val, test, control, partial)[1] == reason


def test_bad_input_is_named():
    with pytest.raises(ValueError) as error:
        seed_outcome("other", 0.9, 0.9)  # type: ignore[arg-type]
    assert str(error.value) == "unknown test kind 'other'"
    with pytest.raises(ValueError) as error:
        seed_outcomes("shift", [0.9] * 3, [0.9] * 2)
    assert str(error.value) == "one validation, one test (and one control) AUC per seed"
    with pytest.raises(ValueError) as error:
        judge("shift", [0.9] * 3, [0.9] * 2)
    assert str(error.value) == "one validation and one test AUC per seed"
    with pytest.raises(ValueError) as error:
        judge("unlearnable", [0.5] * 3, [0.5] * 3)
    assert str(error.value) == ("an unlearnable test needs each seed's validation AUC on its "
                                "capacity control (control_aucs)")
    with pytest.raises(ValueError) as error:
        judge("shift", [0.9], [0.9])
    assert str(error.value) == "a verdict needs at least 2 seeds, got 1"
    with pytest.raises(ValueError) as error:
        judge("unlearnable", [0.5] * 2, [0.5] * 2, [0.9] * 2, 0.75)
    assert str(error.value) == "partial_auc applies to shift tests only, not 'unlearnable' ones"
    with pytest.raises(ValueError) as error:
        auc_sd(1.5, 2, 3)
    assert str(error.value) == ("an AUC in [0, 1] over at least one bag per class, got 1.5 "
                                "over 2 + 3")


@pytest.mark.parametrize(
    ("val", "test", "partial", "expected"),
    [
        # the test AUC against 0.4, strictly within NEAR
        (0.5, (CHANCE - MARGIN) + NEAR, None, False),
        (0.5, below((CHANCE - MARGIN) + NEAR), None, True),
        (1.0, (CHANCE - MARGIN) - NEAR, None, False),
        (1.0, above((CHANCE - MARGIN) - NEAR), None, True),
        (0.77, 0.1, None, False),  # inverted: the validation AUC decides nothing
        (0.77, 0.5, None, True),  # not inverted, unlearned or not by 0.02
        # the validation AUC against 0.75
        (LEARNED_AUC + NEAR, LEARNED_AUC + NEAR, None, False),
        (below(LEARNED_AUC + NEAR), 0.78, None, True),
        (LEARNED_AUC - NEAR, 0.6, None, False),
        (above(LEARNED_AUC - NEAR), 0.6, None, True),
        (0.68, 0.68 - MAX_DROP, None, False),  # unlearned: its drop decides nothing
        # the validation AUC against the partial bar
        (partial_bar(TP) + NEAR, partial_bar(TP) + NEAR, TP, False),
        (below(partial_bar(TP) + NEAR), 0.9, TP, True),
        (partial_bar(TP) - NEAR, 0.8, TP, False),
        (above(partial_bar(TP) - NEAR), 0.8, TP, True),
        (0.82, 0.82 - MAX_DROP, TP, False),  # partial: its drop decides nothing
        (partial_bar(TP) - NEAR, 0.8, None, False),  # no bar without a floor
        # the drop against 0.2: the test AUC against the validation AUC - 0.2
        (1.0, (1.0 - MAX_DROP) + NEAR, None, False),
        (1.0, below((1.0 - MAX_DROP) + NEAR), None, True),
        (1.0, (1.0 - MAX_DROP) - NEAR, None, False),
        (1.0, above((1.0 - MAX_DROP) - NEAR), None, True),
        (1.0, above((1.0 - MAX_DROP) - NEAR), TP, True),  # above the bar the drop decides
    ],
)
def test_near_means_strictly_within_near_of_a_deciding_threshold(val, test, partial, expected):
    assert near_threshold("shift", val, test, None, partial) is expected


@pytest.mark.parametrize(
    ("test", "control", "expected"),
    [
        ((CHANCE + MARGIN) + NEAR, 0.95, False),
        (below((CHANCE + MARGIN) + NEAR), 0.95, True),
        ((CHANCE + MARGIN) - NEAR, 0.95, False),
        (above((CHANCE + MARGIN) - NEAR), 0.95, True),
        (CHANCE + MARGIN + 0.1, 0.76, False),  # learned absence: the control decides nothing
        (0.5, LEARNED_AUC + NEAR, False),
        (0.5, below(LEARNED_AUC + NEAR), True),
        (0.5, LEARNED_AUC - NEAR, False),
        (0.5, above(LEARNED_AUC - NEAR), True),
        (0.5, None, False),  # no control recorded: only the held-out AUC decides
    ],
)
def test_near_on_label_swap_is_strict_too(test, control, expected):
    assert near_threshold("unlearnable", test, test, control) is expected
