"""The harness: seeds give identical results, broken models become error cells."""

from __future__ import annotations

import pytest
import torch
import toy_models

from mil_assert import harness
from mil_assert.defaults import Budget
from mil_assert.devices import resolve_device
from mil_assert.harness import run_cell
from mil_assert.registry import ModelSpec, builtin_models
from mil_assert.synthetic import TESTS

CPU = torch.device("cpu")
SMALL = Budget(n_train_bags=64, n_eval_bags=64, epochs=3)


def cell(spec: ModelSpec, test: str = "single_concept", seeds=(0, 1), budget: Budget = SMALL):
    return run_cell(spec, TESTS[test], list(seeds), budget, 8, CPU)


def test_same_seeds_give_identical_per_seed_aucs():
    spec = builtin_models()["abmil"]
    first, second = cell(spec, seeds=(3, 4)), cell(spec, seeds=(3, 4))
    assert first.val_auc.per_seed == second.val_auc.per_seed
    assert first.test_auc.per_seed == second.test_auc.per_seed
    other = cell(spec, seeds=(5, 6))
    assert other.val_auc.per_seed != first.val_auc.per_seed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (toy_models.wrong_shape, "contract broken before training: output: forward failed on "
                                 "a batch of bags of sizes 1-16: OutputError: the model returns "
                                 "3 class logits; name the positive class"),
        (toy_models.raises, "contract broken before training: output: forward failed on a "
                            "batch of bags of sizes 1-16: RuntimeError: this model is broken on "
                            "purpose"),
        (toy_models.returns_nan, "contract broken before training: output: non-finite logits "
                                 "(NaN or inf) for bags of size 1, 2, 3, 5, 8, 16"),
        (ModelSpec("not_a_module", factory=lambda dim: "model"),
         "seed 0: TypeError: the factory of 'not_a_module' returned str, not a torch.nn.Module"),
        (ModelSpec("bad_budget", factory=toy_models.InstanceMax, budget={"epoch": 2}),
         "ValueError: unknown budget field"),  # not a seed's fault: no seed named
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_broken_models_become_error_cells_with_the_message(spec, message):
    result = cell(spec)
    assert result.verdict == "error"
    assert result.message.startswith(message), result.message


def test_a_time_limit_keeps_the_seeds_that_finished(monkeypatch):
    """The clock stands still but for seed 1's model, whose every call takes 100 s: seed 0
    finishes within the limit, seed 1 passes it in its first step, seed 2 never starts."""
    now = [0.0]
    monkeypatch.setattr(harness.time, "monotonic", lambda: now[0])
    built = []

    class SlowForSeed1(toy_models.InstanceMax):
        def forward(self, X, mask):
            if self.slow:
                now[0] += 100.0
            return super().forward(X, mask)

    def factory(dim):
        model = SlowForSeed1(dim)
        model.slow = len(built) == 2  # built for the contract check, then seeds 0, 1, 2
        built.append(model)
        return model

    spec = ModelSpec("seed_by_seed", factory=factory, stackable=False)
    budget = Budget(n_train_bags=64, n_eval_bags=64, epochs=4, max_seconds=20)
    result = harness.run_cell(spec, TESTS["single_concept"], (0, 1, 2), budget, 16, CPU)
    assert result.verdict == "error"
    assert result.message == ("seed 1: the time limit of 20 s per seed (60 s for this cell) "
                              "was reached; seed 0 finished (AUCs kept); seed 1 stopped in "
                              "epoch 1 of 4; seed 2 not started (set a larger limit, or none, "
                              "to judge every seed)")
    assert len(result.val_auc.per_seed) == len(result.test_auc.per_seed) == 1


class TakesASecondPerTrainingCall(toy_models.InstanceMax):
    """Moves the fake clock by 1 s on every call in training mode."""

    now = [0.0]

    def forward(self, X, mask):
        if self.training:
            TakesASecondPerTrainingCall.now[0] += 1.0
        return super().forward(X, mask)


@pytest.fixture
def fake_clock(monkeypatch):
    TakesASecondPerTrainingCall.now[0] = 0.0
    monkeypatch.setattr(harness.time, "monotonic", lambda: TakesASecondPerTrainingCall.now[0])
    return TakesASecondPerTrainingCall.now


def test_a_time_limit_is_one_clock_for_a_stacked_cell(fake_clock):
    """Two seeds stacked: 4 steps per epoch, one call each, so 1 s per step once the
    contract check (its training-mode calls count too) is done; a limit of 5 s per seed
    is 10 s for the cell, passed in the second epoch: the group keeps no seed."""
    spec = ModelSpec("stacked", factory=TakesASecondPerTrainingCall)
    budget = Budget(n_train_bags=128, n_eval_bags=64, epochs=10, max_seconds=5)
    result = harness.run_cell(spec, TESTS["single_concept"], (0, 1), budget, 16, CPU)
    assert result.training == "stacked: 2 seeds as one model"
    assert result.verdict == "error" and result.val_auc is None
    assert result.message.startswith("seeds 0, 1: the time limit of 5 s per seed (10 s for "
                                     "this cell) was reached; seeds 0, 1 stopped in epoch ")
    assert fake_clock[0] <= 12  # stopped at the first step past the limit


def test_the_capacity_control_shares_the_cells_clock(fake_clock):
    """label_swap trains the seeds twice (the rule, then the control): twice the limit in
    all, one clock; the control, started after the rule's training, passes it."""
    spec = ModelSpec("stacked", factory=TakesASecondPerTrainingCall)
    budget = Budget(n_train_bags=64, n_eval_bags=64, epochs=12, max_seconds=10)
    result = harness.run_cell(spec, TESTS["label_swap"], (0, 1), budget, 16, CPU)
    assert result.verdict == "error"
    assert ("the time limit of 10 s per seed (40 s for this cell) was reached in the capacity "
            "control") in result.message
    assert len(result.val_auc.per_seed) == 2  # the rule's training finished: kept


def test_a_time_limit_passed_in_the_contract_check_trains_nothing(fake_clock):
    class SlowToCheck(toy_models.InstanceMax):
        def forward(self, X, mask):
            fake_clock[0] += 100.0
            return super().forward(X, mask)

    result = harness.run_cell(ModelSpec("slow", factory=SlowToCheck), TESTS["single_concept"],
                              (0, 1), Budget(n_train_bags=64, n_eval_bags=64, epochs=2,
                                             max_seconds=1), 16, CPU)
    assert result.verdict == "error" and result.val_auc is None
    assert result.message == ("seed 0: the time limit of 1 s per seed (2 s for this cell) was "
                              "reached in the contract check; no seed trained (set a "
                              "larger limit, or none, to judge every seed)")


def test_progress_moves_every_step_and_the_projection_comes_after_the_first_epoch():
    fractions, notes = [], []
    budget = Budget(n_train_bags=64, n_eval_bags=64, epochs=3)
    harness.run_cell(toy_models.tiny_max, TESTS["single_concept"], (0, 1), budget, 16, CPU,
                     progress=fractions.append, note=notes.append)
    assert len(fractions) == 3 * 2 and sum(fractions) == pytest.approx(1.0)
    assert len(notes) == 1 and "projected training time" in notes[0]


def test_a_model_can_train_with_its_own_loss():
    calls = []

    class OwnLoss(toy_models.InstanceMax):
        def loss(self, X, mask, y):
            calls.append(X.shape[0])
            return torch.nn.functional.binary_cross_entropy_with_logits(self(X, mask), y,
                                                                        reduction="none")

    result = cell(ModelSpec("own_loss", factory=OwnLoss), seeds=(0, 1))
    assert result.verdict != "error", result.message
    assert result.training.startswith("stacked")
    # the contract check (6 bags, twice: plain and padded), the stacking check (each seed's
    # model on 32 bags, then the stacked one on 64), then epochs x 2 steps of 2 seeds x 32
    assert calls == [6, 6, 32, 32, 64] + [64] * (SMALL.epochs * 2)


def test_a_loss_must_be_one_per_bag():
    class ScalarLoss(toy_models.InstanceMax):
        def loss(self, X, mask, y):
            return torch.nn.functional.binary_cross_entropy_with_logits(self(X, mask), y)

    result = cell(ModelSpec("scalar_loss", factory=ScalarLoss))
    assert result.verdict == "error"
    assert result.message == ("contract broken before training: loss: the loss hook must "
                              "return one loss per bag, shape (6,), got ()")


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.parametrize("field", ["epochs", "batch_size", "n_train_bags"])
def test_budget_rejects_non_positive_sizes(field):
    with pytest.raises(ValueError, match=field):
        Budget(**{field: 0})


def test_only_pass_violation_or_inconclusive_can_be_declared():
    from mil_assert.registry import Expected

    with pytest.raises(ValueError, match="declared verdict"):
        Expected("error", "crashes")
    with pytest.raises(ValueError, match="reason"):
        Expected("violation", " ")


def test_a_run_with_progress_prints_each_cells_projected_time(capsys):
    import mil_assert

    mil_assert.check([toy_models.tiny_max], tests="single_concept", seeds=2, progress=True)
    err = capsys.readouterr().err
    assert "tiny_max on single_concept: first epoch " in err
    assert err.count("projected training time") == 1
