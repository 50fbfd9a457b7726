"""One-bag models: the seeds' bags through vmap together, equal to each seed's own model."""

from __future__ import annotations

import statistics

import pytest
import torch
import toy_models

from mil_assert.benchmark import benchmark_one_bag
from mil_assert.defaults import Budget
from mil_assert.harness import build_model, run_cell, seed_losses
from mil_assert.one_bag import StepDown, _topped_up, without_vmap
from mil_assert.one_bag_twins import ONE_BAG
from mil_assert.registry import ModelSpec
from mil_assert.stacking import NotStackable, check_stacked, stack_models
from mil_assert.synthetic import TESTS

CPU = torch.device("cpu")
TINY = Budget(n_train_bags=64, n_eval_bags=64, epochs=2)


def batch(S: int, B: int, dim: int, seed: int = 0):
    """``S`` seeds' batches of ``B`` bags of sizes 1-6, seed-major, with labels."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 7, (S * B,), generator=g)
    X = torch.randn(S * B, 6, dim, generator=g)
    mask = torch.arange(6)[None] < sizes[:, None]
    return X * mask[..., None], mask, (torch.arange(S * B) % 2).float()


class OneBagWithLoss(toy_models.OneBagDropoutAttention):
    def loss(self, x, y):
        return torch.nn.functional.binary_cross_entropy_with_logits(self(x)[0], y) + 0.01


@pytest.mark.parametrize("factory", [toy_models.OneBagDropoutAttention, OneBagWithLoss])
def test_the_seeds_together_compute_each_seeds_own_logits_losses_and_gradients(factory):
    spec = ModelSpec("one_bag", factory=factory, input="bag1")
    members = [build_model(spec, seed, 5).eval() for seed in range(3)]
    stacked = stack_models(members).eval()
    X, mask, y = batch(3, 8, 5)
    own = torch.cat([m(X[8 * s:8 * (s + 1)], mask[8 * s:8 * (s + 1)])
                     for s, m in enumerate(members)])
    torch.testing.assert_close(stacked(X, mask), own)
    own_loss = torch.cat([seed_losses(m, X[8 * s:8 * (s + 1)], mask[8 * s:8 * (s + 1)],
                                      y[8 * s:8 * (s + 1)], 1) for s, m in enumerate(members)])
    together = seed_losses(stacked, X, mask, y, 3)
    torch.testing.assert_close(together, own_loss)
    together.sum().backward()
    own_loss.sum().backward()
    for i, name in enumerate(stacked.seeds_model.names):
        for s, member in enumerate(members):
            torch.testing.assert_close(stacked.seeds_model.stacked[i].grad[s],
                                       member.model.get_parameter(name).grad)


def test_each_bag_and_seed_draws_its_own_dropout():
    spec = ModelSpec("one_bag", factory=lambda dim: toy_models.OneBagDropoutAttention(dim),
                     input="bag1")
    stacked = stack_models([build_model(spec, 0, 5) for _ in range(2)]).train()
    X, mask, _ = batch(1, 4, 5)
    same = torch.cat([X, X]), torch.cat([mask, mask])  # two seeds, equal weights, equal bags
    logits = stacked(*same)
    assert not torch.equal(logits[:4], logits[4:])


def test_top_up_gives_every_seed_the_same_count():
    of_size = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    rows, real = _topped_up(of_size)
    # seed 1 has no bag of the size: it borrows the first one, seed 0's bag 0 (row 0)
    assert rows.tolist() == [0, 2, 0, 0, 7, 7]
    assert real.tolist() == [True, True, False, False, True, False]


def test_a_one_bag_model_trains_its_seeds_together_and_repeats():
    first = run_cell(ONE_BAG, TESTS["single_concept"], [0, 1], TINY, 8, CPU)
    again = run_cell(ONE_BAG, TESTS["single_concept"], [0, 1], TINY, 8, CPU)
    assert first.training == "stacked: 2 seeds as one model"
    assert first.test_auc.per_seed == again.test_auc.per_seed
    with without_vmap():
        alone = run_cell(ONE_BAG, TESTS["single_concept"], [0, 1], TINY, 8, CPU)
    assert alone.training.startswith("seed by seed: vmap is off")


def test_models_with_training_callbacks_keep_their_seeds_apart():
    class WithCallback(toy_models.OneBagDropoutAttention):
        def on_train_batch_end(self, progress):
            pass

    spec = ModelSpec("callback", factory=WithCallback, input="bag1")
    result = run_cell(spec, TESTS["single_concept"], [0, 1], TINY, 8, CPU)
    assert result.training == ("seed by seed: a one-bag model (input='bag1') trains its seeds "
                               "one by one: its on_train_batch_end hook(s) act on its own "
                               "parameters")


def test_the_one_bag_benchmark_times_three_ways():
    lines = []
    timings = benchmark_one_bag(TESTS["single_concept"], 2, TINY, 8, CPU, 2, 1, lines.append)
    names = ["(a) batched twin", "(b) one bag per call, vmap",
             "(c) one bag per call, bag by bag"]
    assert [t.name for t in timings] == names
    assert [t.scale for t in timings] == [1.0, 1.0, 2.0]  # (c) trained 1 of the 2 epochs
    assert [t.note for t in timings] == ["", "", "scaled from 1 epoch(s)"]
    assert [len(t.seconds) for t in timings] == [2, 2, 2]  # one time per repeat
    for t in timings:
        assert t.median == statistics.median(t.seconds) * t.scale
    # the warm-up, then the three ways in turn, each repeat; each line is the run it timed
    trained = ["(seed by seed: model.embed.2 (Dropout) draws random numbers, which one "
               "stacked model cannot draw per seed)", "(stacked: 2 seeds as one model)",
               "(seed by seed: vmap is off (mil-assert benchmark's per-bag loop))"]
    assert lines[0] == "warm-up: one untimed epoch of each"
    assert lines[1:] == [f"repeat {r + 1}/2: {name}: {t.seconds[r]:.2f} s {how}"
                         for r in range(2) for name, t, how in zip(names, timings, trained,
                                                                   strict=True)]


def test_each_bag_inside_a_seed_draws_its_own_dropout():
    spec = ModelSpec("one_bag", factory=toy_models.OneBagDropoutAttention, input="bag1")
    stacked = stack_models([build_model(spec, s, 5) for s in range(2)]).train()
    X, mask, _ = batch(1, 1, 5)
    same = X.expand(8, -1, -1), mask.expand(8, -1)  # each seed: four copies of one bag
    logits = stacked(same[0].contiguous(), same[1].contiguous()).view(2, 4)
    assert all(len(set(row.tolist())) == 4 for row in logits)


def test_an_in_place_mask_trains_stacked_after_functionalize_and_repeats():
    """ACMIL writes its random instance mask in place: vmap alone cannot run it, vmap of
    the functionalized model can; the cell says so once and repeats on the same seeds."""
    notes: list[str] = []
    first = run_cell(toy_models.random_mask_in_place, TESTS["single_concept"], [0, 1], TINY, 8,
                     CPU, note=notes.append)
    again = run_cell(toy_models.random_mask_in_place, TESTS["single_concept"], [0, 1], TINY, 8,
                     CPU)
    assert first.verdict != "error", first.message
    assert first.training.startswith("stacked: 2 seeds as one model; vmap failed (")
    assert "vmap after functionalize failed" not in first.training
    assert sum("vmap failed" in line for line in notes) == 1
    assert first.test_auc.per_seed == again.test_auc.per_seed


def test_a_model_no_vmap_can_run_steps_down_to_bag_by_bag_and_says_each_step():
    result = run_cell(toy_models.reads_a_python_number, TESTS["single_concept"], [0, 1], TINY,
                      8, CPU)
    assert result.verdict != "error", result.message
    steps = [part.split(" failed (")[0] for part in result.training.split("; ")[1:]]
    assert steps == ["vmap", "vmap after functionalize", "seed by seed"]


def test_a_failed_step_restores_the_random_state():
    ladder = StepDown()
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)

    def draws_then_fails(x):
        torch.rand(5)
        raise RuntimeError("cannot")

    got = ladder.run([draws_then_fails, None, None, lambda x: torch.rand(2)], torch.zeros(1))
    torch.testing.assert_close(got, expected)
    assert ladder.step == 3 and ladder.fallback == "vmap failed (RuntimeError: cannot)"
    assert torch.equal(ladder.run([None, None, None, torch.ones_like], torch.zeros(1)),
                       torch.ones(1))


class CountsTrainingCalls(toy_models.OneBagDropoutAttention):
    """Deterministic; in training mode each call adds how often forward ran before, so the
    seeds' stacked model (one call for all bags) and their own models differ only there."""

    def __init__(self, dim):
        super().__init__(dim)
        self.embed[2] = torch.nn.Identity()
        self.calls = 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            out = out + self.calls
        return out


def test_the_stacking_check_compares_in_training_mode_too():
    spec = ModelSpec("counts", factory=CountsTrainingCalls, input="bag1")
    members = [build_model(spec, s, 5) for s in range(2)]
    X, mask, y = batch(2, 4, 5)
    with pytest.raises(NotStackable, match="logits differ .* in training mode"):
        check_stacked(stack_models(members), members, X.view(2, 4, 6, 5), mask.view(2, 4, 6),
                      y.view(2, 4))
