"""A pass means the model learned the rule: a rule of one concept passes no threshold test.

The floor each threshold test declares (``partial_rule_auc``) is derived from its
generator (:func:`mil_assert.synthetic.catalog.one_concept_auc`); these tests check the
derivation on the generators' real bags with an oracle rule of one concept, and that a
model built to learn exactly one concept comes out *partial* through the real harness.
"""

from __future__ import annotations

import math

import pytest
import torch
import toy_models

from mil_assert.defaults import Budget
from mil_assert.harness import run_cell
from mil_assert.metrics import roc_auc
from mil_assert.report import build_report
from mil_assert.results import CellResult
from mil_assert.synthetic import TESTS
from mil_assert.synthetic.bags import CONCEPT_A, CONCEPT_A_NOISE, CONCEPT_B_NOISE, Bags
from mil_assert.synthetic.catalog import AlgorithmicTest, one_concept_auc
from mil_assert.verdict import partial_bar

CPU = torch.device("cpu")
THRESHOLD_TESTS = ("threshold_poisoned", "false_frequency")


@pytest.mark.parametrize(
    ("copies", "expected"),
    [
        ((1,), 0.75),  # one copy against one: a tie on average
        ((1, 2, 3), 59 / 72),  # 1/2 + 1/2 (1/2 + 2/3 + 3/4) / 3
        ((3,), 0.875),
        ([2, 2], 5 / 6),
    ],
)
def test_the_auc_of_a_rule_of_one_concept(copies, expected):
    assert one_concept_auc(copies) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("copies", [(), (0,), (1, -2), (1.5,), (True,)])
def test_the_auc_of_a_rule_of_one_concept_needs_positive_counts(copies):
    with pytest.raises(ValueError, match="positive integers"):
        one_concept_auc(copies)


def test_each_threshold_test_declares_its_floor_from_its_generator():
    assert TESTS["threshold_poisoned"].partial_rule_auc == one_concept_auc((1, 2, 3))
    assert TESTS["false_frequency"].partial_rule_auc == one_concept_auc((1,))
    assert TESTS["single_concept"].partial_rule_auc is None


@pytest.mark.parametrize(("kind", "value", "message"),
                         [("unlearnable", 0.75, "shift tests only"),
                          ("shift", 1.0, r"lie in \[0.5, 1\)"),
                          ("shift", 0.4, r"lie in \[0.5, 1\)")])
def test_a_test_declares_a_floor_it_can_have(kind, value, message):
    with pytest.raises(ValueError, match=message):
        AlgorithmicTest(name="t", generate=TESTS["single_concept"].generate,
                        assumption="threshold", kind=kind, source="s",
                        control=TESTS["label_swap"].control, partial_rule_auc=value)


def oracle_scores(bags: Bags, rule: str) -> torch.Tensor:
    """A rule of one concept, maximised over each bag: A's indicator (ties), or A's or
    B's Gaussian log-likelihood (varies over the concept's instances)."""
    if rule == "indicator A":
        score = (bags.instance_labels == CONCEPT_A).double()
    else:
        concept = CONCEPT_A_NOISE if rule == "likelihood A" else CONCEPT_B_NOISE
        score = -((bags.X.double() - concept.mean) ** 2).sum(-1) / (2 * concept.std ** 2)
    return score.masked_fill(~bags.mask, -math.inf).amax(dim=1)


@pytest.mark.parametrize("name", THRESHOLD_TESTS)
@pytest.mark.parametrize("rule", ["indicator A", "likelihood A", "likelihood B"])
def test_an_oracle_rule_of_one_concept_reaches_the_floor_and_not_the_bar(name, rule):
    """Seeds 0-7 of the validation bags: a rule of one concept scores about the floor (a
    tie-making indicator of A scores 0.75 on both tests, below it on threshold_poisoned),
    and never the bar the verdict rule sets 4 standard deviations above it."""
    floor = TESTS[name].partial_rule_auc
    expected = 0.75 if rule == "indicator A" else floor
    aucs = [roc_auc(oracle_scores(bags, rule).numpy(), bags.y.numpy())
            for bags in (TESTS[name].generate(seed).val for seed in range(8))]
    mean = sum(aucs) / len(aucs)
    assert mean == pytest.approx(expected, abs=0.025), aucs  # sd of the mean ~0.007
    assert max(aucs) < partial_bar(floor), aucs


def test_a_model_that_learns_one_concept_is_partial_and_does_not_pass():
    """Through the real harness: the frozen detector of concept A keeps its ranking under
    the poison's shift (a rule of one concept is MIL-respecting), and reaches no more than
    the rule of one concept's AUC, so no seed counts as having learned A and B."""
    result = run_cell(toy_models.one_concept, TESTS["threshold_poisoned"], [0, 1, 2],
                      Budget(), 16, CPU)
    assert result.seed_outcomes() == ["partial"] * 3, result
    assert result.verdict == "inconclusive", result
    assert result.message.startswith("3 of 3 seeds reached only the one-concept rule's "
                                     "validation AUC (0.82"), result.message
    assert all(0.78 < v < partial_bar(TESTS["threshold_poisoned"].partial_rule_auc)
               for v in result.val_auc.per_seed), result
    assert all(abs(v - t) < 0.1 for v, t in zip(result.val_auc.per_seed,
                                                result.test_auc.per_seed, strict=True))


def test_a_stored_report_is_rejudged_with_its_tests_floor():
    """A report written before the floor (focus_mil on threshold_poisoned, seeds 0-4 of
    reports/recent-systems.json, stored as a pass) reads partial seeds when re-judged."""
    def cell(test: str) -> CellResult:
        return CellResult.from_dict({
            "model": "focus_mil", "test": test, "verdict": "pass", "seeds": [0, 1, 2, 3, 4],
            "val_auc": {"per_seed": [0.839, 0.806, 0.81, 0.782, 0.698]},
            "test_auc": {"per_seed": [0.806, 0.843, 0.822, 0.744, 0.669]},
            "seconds": 1.0, "message": "stored"})

    assert cell("threshold_poisoned").seed_outcomes() == ["partial"] * 4 + ["unlearned"]
    assert cell("single_concept").seed_outcomes() == ["kept"] * 4 + ["unlearned"]


def test_the_report_records_each_tests_floor_and_the_margin():
    report = build_report([], ["m"], [0, 1], Budget(), 16, "cpu", tests=list(TESTS))
    assert report["tests"]["threshold_poisoned"]["partial_rule_auc"] == pytest.approx(59 / 72)
    assert report["tests"]["false_frequency"]["partial_rule_auc"] == 0.75
    assert report["tests"]["single_concept"]["partial_rule_auc"] is None
    assert report["verdict_rule"]["partial_sds"] == 4.0
