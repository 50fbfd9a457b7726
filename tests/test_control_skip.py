"""label_swap's capacity control is trained only where it can change the verdict.

The control tells a seed that could not learn the swapped rule from one that learned
nothing; once enough seeds learned the rule for a violation, no control outcome can change
the verdict (the harness asks the verdict rule, :func:`harness.verdict_whatever_the_control`),
and the cell skips it: about half the cell's time, the same verdict, and a report that says
so (``control_skipped``, the message).
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import toy_models
from torch import nn

from mil_assert import harness
from mil_assert.defaults import MIN_SEEDS, Budget
from mil_assert.harness import GroupOutcome, run_cell, verdict_whatever_the_control
from mil_assert.registry import ModelSpec
from mil_assert.render import to_csv
from mil_assert.report import build_report
from mil_assert.results import CellResult, untrained_models
from mil_assert.synthetic import TESTS
from mil_assert.verdict import (
    CHANCE,
    LEARNED_AUC,
    MARGIN,
    VIOLATING_SEEDS,
    judge,
    learned_nothing,
    seed_outcomes,
)

CPU = torch.device("cpu")
LABEL_SWAP = TESTS["label_swap"]
TINY = Budget(n_train_bags=64, n_eval_bags=64, epochs=2)
EPS = 1e-9

# Values on both sides of every threshold the rule compares with, and the ends of [0, 1].
LEARNED = CHANCE + MARGIN  # a test AUC above it: the seed learned the swapped rule
TEST_VALUES = (CHANCE, LEARNED, LEARNED + EPS, 0.95)
CONTROL_VALUES = (0.0, LEARNED_AUC - EPS, LEARNED_AUC, 1.0)


def every_verdict(tests: list[float], controls=CONTROL_VALUES) -> set[str]:
    """The verdicts of a label_swap cell over every assignment of control values."""
    return {judge("unlearnable", tests, tests, list(assigned))[0]
            for assigned in itertools.product(controls, repeat=len(tests))}


@pytest.mark.parametrize("seeds", range(MIN_SEEDS, 5))
def test_the_skip_holds_exactly_when_no_control_can_change_the_violation(seeds):
    """Every cell of 2-4 seeds over values on both sides of the thresholds, against every
    assignment of controls on both sides of theirs: the control is skipped iff every one
    of them judges the cell a violation."""
    for tests in itertools.product(TEST_VALUES, repeat=seeds):
        settled = verdict_whatever_the_control("unlearnable", list(tests), list(tests))
        verdicts = every_verdict(list(tests))
        assert (settled is not None) == (verdicts == {"violation"}), (tests, verdicts)
        if settled is not None:
            assert settled[0] == "violation"


def test_the_worst_control_keeps_a_skipped_cell_a_violation():
    """Exactly the violating number of seeds learned the rule, the others did not: with
    every other seed's control below the learned threshold (all unlearned), at it, or
    at 1 (all not learned), the verdict is the violation the skip reports."""
    tests = [0.9] * VIOLATING_SEEDS + [CHANCE] * 3
    settled = verdict_whatever_the_control("unlearnable", tests, tests)
    assert settled is not None and settled[0] == "violation"
    for worst in (0.0, LEARNED_AUC - EPS, LEARNED_AUC, 1.0):
        assert judge("unlearnable", tests, tests, [worst] * len(tests))[0] == "violation"
    one_short = [0.9] * (VIOLATING_SEEDS - 1) + [CHANCE] * 4
    assert verdict_whatever_the_control("unlearnable", one_short, one_short) is None


def test_larger_cells_agree_with_random_controls():
    """Seeds 5-12: random cells, each judged against 200 random controls and the ends of
    [0, 1] (with every control at 1 a cell that is no violation shows it)."""
    draw = random.Random(7)
    for _ in range(300):
        n = draw.randint(5, 12)
        tests = [draw.choice(TEST_VALUES + (draw.random(),)) for _ in range(n)]
        settled = verdict_whatever_the_control("unlearnable", tests, tests)
        controls = [[draw.random() for _ in range(n)] for _ in range(200)]
        controls += [[0.0] * n, [1.0] * n]
        verdicts = {judge("unlearnable", tests, tests, c)[0] for c in controls}
        assert (settled is not None) == (verdicts == {"violation"}), tests


def test_shift_tests_have_no_control_to_skip():
    assert verdict_whatever_the_control("shift", [0.9, 0.9], [0.1, 0.1]) is None


def test_the_reason_reads_as_a_report_without_the_control():
    """The message's tally counts the seeds that did not learn the rule as a stored cell
    without control AUCs is re-judged (:meth:`CellResult.seed_outcomes`)."""
    tests = [0.9, 0.9, 0.9, CHANCE, CHANCE]
    verdict, reason = verdict_whatever_the_control("unlearnable", tests, tests)
    outcomes = seed_outcomes("unlearnable", tests, tests, None)
    assert verdict == "violation" and "3 learned, 2 not learned" in reason
    assert outcomes.count("learned") == 3 and outcomes.count("not learned") == 2


# The harness, with the training replaced: each task's AUCs are given.


def fake_training(monkeypatch, rule: list[float], control: list[float]):
    """Seed by seed: the rule's groups score ``rule[i]`` (validation and test), the
    control's ``control[i]``; returns the list of the tasks trained, in order."""
    trained: list[str] = []
    calls = {"n": 0}

    def train_group(group, budget, on_step=None, deadline=None):
        index, seeds = calls["n"], len(rule)
        calls["n"] += 1
        task = "rule" if index < seeds else "control"
        trained.append(task)
        aucs = rule if task == "rule" else control
        for _ in range(budget.epochs * -(-budget.n_train_bags // budget.batch_size)):
            if on_step is not None:
                on_step()
        value = aucs[group.seeds[0]]
        return GroupOutcome([value], [value])

    monkeypatch.setattr(harness, "train_group", train_group)
    return trained


SEED_BY_SEED = ModelSpec("seed_by_seed", factory=toy_models.InstanceMax, stackable=False)


def fake_cell(progress=None) -> CellResult:
    return run_cell(SEED_BY_SEED, LABEL_SWAP, (0, 1, 2, 3, 4), TINY, 8, CPU,
                    progress=progress)


def test_a_cell_whose_rule_is_learned_skips_the_control_and_says_so(monkeypatch):
    trained = fake_training(monkeypatch, [0.9, 0.95, 0.9, CHANCE, CHANCE], [0.2] * 5)
    fractions: list[float] = []
    result = fake_cell(fractions.append)
    assert trained == ["rule"] * 5
    assert result.verdict == "violation" and result.control_auc is None
    assert result.control_skipped == (
        "3 of 5 seeds learned the swapped rule: a violation whatever the control shows, so it "
        "was not trained (the other seeds count as not learned, unchecked by a control)")
    assert result.message.endswith(f"; capacity control skipped: {result.control_skipped}")
    assert sum(fractions) == pytest.approx(1.0)  # the progress bar still ends at the cell
    # the report keeps it; the model learned something; the renderers read the cell
    again = CellResult.from_dict(result.as_dict())
    assert again.control_skipped == result.control_skipped and again.control_auc is None
    assert untrained_models([again]) == [] and not learned_nothing(again.seed_outcomes())
    report = build_report([again], [again.model], again.seeds, TINY, 8, CPU)
    assert report["results"][0]["control_skipped"] == result.control_skipped
    assert "capacity control skipped" in to_csv(report)


def test_every_seed_learned_needs_no_other_words(monkeypatch):
    fake_training(monkeypatch, [0.9] * 5, [0.2] * 5)
    result = fake_cell()
    assert result.control_skipped == ("5 of 5 seeds learned the swapped rule: a violation "
                                      "whatever the control shows, so it was not trained")


@pytest.mark.parametrize("rule", [[0.9, CHANCE, CHANCE, CHANCE, CHANCE],  # one learned
                                  [CHANCE] * 5,  # none learned
                                  [LEARNED] * 5])  # on the threshold: not learned
def test_a_cell_that_did_not_learn_the_rule_trains_the_control(monkeypatch, rule):
    trained = fake_training(monkeypatch, rule, [0.2] * 5)
    result = fake_cell()
    assert trained == ["rule"] * 5 + ["control"] * 5
    assert result.control_skipped is None and list(result.control_auc.per_seed) == [0.2] * 5
    assert result.verdict == judge("unlearnable", rule, rule, [0.2] * 5)[0]


@pytest.mark.parametrize("control", [0.0, 0.2, LEARNED_AUC, 1.0])
@pytest.mark.parametrize("rule", [[0.9, 0.9, CHANCE, CHANCE, CHANCE],
                                  [0.9, 0.9, 0.9, 0.9, CHANCE],
                                  [0.9, CHANCE, CHANCE, CHANCE, CHANCE],
                                  [CHANCE, 0.3, CHANCE, 0.4, CHANCE]])
def test_verdicts_are_those_of_the_cell_with_its_control(monkeypatch, rule, control):
    """Whatever the control would have shown, the cell's verdict is the one judged with it."""
    fake_training(monkeypatch, rule, [control] * 5)
    result = fake_cell()
    assert result.verdict == judge("unlearnable", rule, rule, [control] * 5)[0]


# A real model: the bag's logit is minus its largest instance norm, so a bag without the
# concept's wide instances (N(0, 3)) ranks high: absence as positive evidence, by design.


class LargestNormIsNegative(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        norms = X.square().sum(dim=-1).masked_fill(~mask, float("-inf"))
        return -norms.amax(dim=1) + 0.0 * self.unused


ABSENCE = ModelSpec("absence", factory=LargestNormIsNegative)


def test_a_model_that_learns_the_swapped_rule_keeps_its_verdict_without_the_control(
        monkeypatch):
    """The same cell with the skip and with the control forced: the same verdict and the
    same per-seed AUCs of the rule; only the control's AUCs and half the training go."""
    skipped = run_cell(ABSENCE, LABEL_SWAP, (0, 1, 2), TINY, 8, CPU)
    assert skipped.verdict == "violation" and min(skipped.test_auc.per_seed) > LEARNED
    assert skipped.control_auc is None and skipped.control_skipped.startswith("3 of 3 seeds")
    monkeypatch.setattr(harness, "verdict_whatever_the_control", lambda *args: None)
    full = run_cell(ABSENCE, LABEL_SWAP, (0, 1, 2), TINY, 8, CPU)
    assert full.control_skipped is None and len(full.control_auc.per_seed) == 3
    assert full.verdict == skipped.verdict
    assert (full.val_auc, full.test_auc) == (skipped.val_auc, skipped.test_auc)


def test_a_max_pooling_model_trains_the_control():
    """A max of instance scores cannot represent the swapped rule: the control runs."""
    result = run_cell(toy_models.tiny_max, LABEL_SWAP, (0, 1), TINY, 8, CPU)
    assert result.control_skipped is None and len(result.control_auc.per_seed) == 2
