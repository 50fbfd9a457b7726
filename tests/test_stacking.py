"""Training a cell's seeds as one stacked model equals training them one by one."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import toy_models
from torch import nn
from torch.nn import functional as F

from mil_assert.defaults import Budget
from mil_assert.harness import plan_groups, predict, run_cell, train_group
from mil_assert.registry import ModelSpec, builtin_models
from mil_assert.stacking import NotStackable, check_stacked, stack_models
from mil_assert.synthetic import TESTS

CPU = torch.device("cpu")
SMALL = Budget(n_train_bags=64, n_eval_bags=64, epochs=3)
SEEDS = (0, 1, 2)
DIM = 8


def trained_logits(spec: ModelSpec, test: str, budget: Budget):
    """Validation logits ``[seeds, bags]`` and how the seeds were trained."""
    splits = [TESTS[test].generate(seed, dim=DIM, n_train=budget.n_train_bags,
                                   n_eval=budget.n_eval_bags) for seed in SEEDS]
    groups, how = plan_groups(spec, SEEDS, splits, DIM, budget, CPU)
    for group in groups:
        train_group(group, budget)
    return torch.cat([predict(group.model, group.val) for group in groups]), how


DEFAULT_RUN = sorted(name for name, spec in builtin_models().items() if spec.in_default_run)
"""The zoo's default run, all stackable; the recent systems with dropout or a batch loss
train seed by seed by design (docs/recent-systems.md)."""


@pytest.mark.parametrize("name", DEFAULT_RUN)
@pytest.mark.parametrize("test", ["single_concept", "false_frequency"])
def test_stacked_training_equals_seed_by_seed_training(name, test):
    spec = builtin_models()[name]
    stacked, how = trained_logits(spec, test, SMALL)
    assert how.startswith("stacked"), how
    one_by_one, how = trained_logits(dataclasses.replace(spec, stackable=False), test, SMALL)
    assert how.startswith("seed by seed")
    torch.testing.assert_close(stacked, one_by_one, rtol=1e-3, atol=1e-4)


def test_stacked_and_seed_by_seed_cells_agree_after_longer_training():
    spec = builtin_models()["abmil"]
    budget = Budget(n_train_bags=96, n_eval_bags=200, epochs=40)
    stacked = run_cell(spec, TESTS["single_concept"], SEEDS, budget, DIM, CPU)
    one_by_one = run_cell(dataclasses.replace(spec, stackable=False), TESTS["single_concept"],
                          SEEDS, budget, DIM, CPU)
    assert stacked.training.startswith("stacked")
    assert stacked.val_auc.per_seed == pytest.approx(one_by_one.val_auc.per_seed, abs=1e-3)
    assert stacked.test_auc.per_seed == pytest.approx(one_by_one.test_auc.per_seed, abs=1e-3)
    assert stacked.verdict == one_by_one.verdict


class WithDropout(toy_models.InstanceMax):
    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.drop = nn.Dropout(0.5)


class BagMixing(toy_models.InstanceMax):
    """Applies a layer to a tensor with no bag axis: stacking would give each seed a
    different slice of it, which only the first-batch check can see."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.gain = nn.Linear(1, 1)

    def forward(self, X, mask):
        return super().forward(X, mask) * self.gain(torch.ones(6, 1)).mean()


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        (toy_models.LowestInstance, "model (LowestInstance) holds unused directly"),
        (WithDropout, "model.drop (Dropout) draws random numbers"),
        (BagMixing, "differ from the seeds' own models"),
    ],
    ids=["raw-parameter", "dropout", "bag-mixing"],
)
def test_unstackable_models_train_seed_by_seed_and_say_why(factory, reason):
    spec = ModelSpec(factory.__name__, factory=factory, budget=toy_models.TINY_BUDGET)
    result = run_cell(spec, TESTS["single_concept"], SEEDS, Budget(), DIM, CPU)
    assert result.verdict != "error", result.message
    assert result.training.startswith("seed by seed: ") and reason in result.training
    assert len(result.val_auc.per_seed) == len(SEEDS)


def test_check_stacked_compares_with_each_seeds_own_model():
    members = [toy_models.InstanceMax(DIM) for _ in range(2)]
    X, mask = torch.randn(2, 5, 3, DIM), torch.ones(2, 5, 3, dtype=torch.bool)
    y = torch.ones(2, 5)
    stacked = stack_models(members)
    check_stacked(stacked, members, X, mask, y)
    with torch.no_grad():
        stacked.score.weight[1] += 1.0
    with pytest.raises(NotStackable, match="differ"):
        check_stacked(stacked, members, X, mask, y)


def test_models_of_different_structure_are_not_stacked():
    with pytest.raises(NotStackable, match="differ in structure"):
        stack_models([toy_models.InstanceMax(DIM), toy_models.LowestInstance(DIM)])


CRITERION_MODELS = {
    "criterion-none": toy_models.CriterionMax,
    "criterion-mean": toy_models.MeanCriterionMax,
    "criterion-pos-weight": functools.partial(toy_models.CriterionMax, pos_weight=2.0),
}


@pytest.mark.parametrize("name", sorted(CRITERION_MODELS))
def test_models_with_a_loss_module_train_stacked_like_seed_by_seed(name):
    spec = ModelSpec(name, factory=CRITERION_MODELS[name], budget=toy_models.TINY_BUDGET)
    stacked = run_cell(spec, TESTS["single_concept"], SEEDS, Budget(), DIM, CPU)
    one_by_one = run_cell(dataclasses.replace(spec, stackable=False), TESTS["single_concept"],
                          SEEDS, Budget(), DIM, CPU)
    assert stacked.verdict != "error", stacked.message
    assert stacked.training.startswith("stacked"), stacked.training
    assert stacked.val_auc.per_seed == pytest.approx(one_by_one.val_auc.per_seed, abs=1e-6)
    assert stacked.test_auc.per_seed == pytest.approx(one_by_one.test_auc.per_seed, abs=1e-6)


def test_stacking_keeps_a_loss_modules_none_buffers_and_shares_equal_ones():
    stacked = stack_models([toy_models.CriterionMax(DIM) for _ in range(2)])
    assert stacked.criterion.weight is None and stacked.criterion.pos_weight is None
    members = [toy_models.CriterionMax(DIM, pos_weight=2.0) for _ in range(2)]
    assert stack_models(members).criterion.pos_weight.item() == 2.0


def test_a_loss_module_whose_buffers_differ_between_seeds_is_not_stacked():
    members = [toy_models.CriterionMax(DIM, pos_weight=w) for w in (1.0, 2.0)]
    with pytest.raises(NotStackable, match=r"criterion \(BCEWithLogitsLoss\) holds pos_weight, "
                                           r"which differs between the seeds' models"):
        stack_models(members)


class BatchCentredLoss(toy_models.CriterionMax):
    """Centres the logits on the batch's mean: stacked, the mean runs over every seed's bags."""

    def loss(self, X, mask, y):
        logits = self(X, mask)
        return self.criterion(logits - logits.mean(), y)


class InstanceLevelLoss(toy_models.CriterionMax):
    """Adds an instance-level loss that reads the score layer's weight directly, which the
    stacked layer holds as ``[S, in, out]``: it fails only in the stacked model."""

    def loss(self, X, mask, y):
        instances = F.linear(X, self.score.weight, self.score.bias).squeeze(-1)  # [B, N]
        top = instances.masked_fill(~mask, -1e9).amax(dim=1)
        return self.criterion(self(X, mask), y) + self.criterion(top, y)


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        (BatchCentredLoss, "the stacked model's loss differs from the seeds' own models"),
        (InstanceLevelLoss, "the stacked model's loss failed where the seeds' own models ran"),
    ],
    ids=["loss-mixes-bags", "loss-fails-stacked"],
)
def test_a_loss_hook_that_breaks_stacking_trains_seed_by_seed_and_says_why(factory, reason):
    spec = ModelSpec(factory.__name__, factory=factory, budget=toy_models.TINY_BUDGET)
    result = run_cell(spec, TESTS["single_concept"], SEEDS, Budget(), DIM, CPU)
    one_by_one = run_cell(dataclasses.replace(spec, stackable=False), TESTS["single_concept"],
                          SEEDS, Budget(), DIM, CPU)
    assert result.verdict != "error", result.message
    assert result.training.startswith("seed by seed: ") and reason in result.training
    assert result.val_auc.per_seed == one_by_one.val_auc.per_seed
