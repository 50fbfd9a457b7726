"""Training procedures: every example of docs/training-procedures.md, run from the page.

Each example is a model file; each test trains it on a small budget through the harness
and checks that its hook does what the page says.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mil_assert import harness
from mil_assert.defaults import Budget
from mil_assert.harness import SeedBags, build_model, fit, run_cell, seed_losses
from mil_assert.procedure import Procedure, TrainingProgress
from mil_assert.seeding import cpu_generator
from mil_assert.synthetic import TESTS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "training-procedures.md"
CPU = torch.device("cpu")
DIM = 16
SMALL = Budget(n_train_bags=64, n_eval_bags=64, epochs=6)


def examples() -> dict[str, dict]:
    """Each ``## heading``'s Python block, executed: its namespace by heading."""
    text = PAGE.read_text()
    found = {}
    for heading, body in re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, re.M | re.S):
        blocks = re.findall(r"```python\n(.*?)```", body, re.S)
        assert len(blocks) == 1, heading
        namespace: dict = {"__name__": f"example_{len(found)}"}
        exec(compile(blocks[0], f"{PAGE.name}: {heading}", "exec"), namespace)  # noqa: S102
        found[heading] = namespace
    return found


EXAMPLES = examples()


def example(start: str) -> dict:
    [namespace] = [ns for heading, ns in EXAMPLES.items() if heading.startswith(start)]
    return namespace


def train(spec, budget: Budget = SMALL, seed: int = 0):
    """``spec``'s model (wrapped as the harness calls it) trained on one seed's bags."""
    model = build_model(spec, seed, DIM)
    splits = TESTS["single_concept"].generate(seed, dim=DIM, n_train=budget.n_train_bags,
                                              n_eval=budget.n_eval_bags)
    bags = SeedBags.of([splits.train], CPU)
    fit(model, bags, budget, [cpu_generator(seed, "train/shuffle")])
    return model, bags


def first_batch(bags: SeedBags, size: int = 8):
    return bags.batch(torch.arange(size)[None])


def test_the_page_has_an_example_of_each_case():
    assert len(EXAMPLES) == 8


def test_a_batched_per_bag_loss_is_what_trains():
    spec = example("A per-bag auxiliary loss (batched)")["SPEC"]
    model, bags = train(spec)
    X, mask, y = first_batch(bags)
    with torch.no_grad():
        H, A = model.model.attend(X, mask)
    bce = F.binary_cross_entropy_with_logits(model(X, mask), y, reduction="none")
    entropy_term = 0.1 * (A * A.clamp_min(1e-12).log()).sum(dim=1)
    assert float(entropy_term.abs().min()) > 1e-3  # the term is there, and trained on:
    torch.testing.assert_close(seed_losses(model, X, mask, y, 1), (bce + entropy_term).mean()[None])


def test_a_one_bag_loss_runs_through_vmap_with_dropout():
    spec = example("A per-bag auxiliary loss (one bag")["SPEC"]
    result = run_cell(spec, TESTS["single_concept"], (0, 1), SMALL, DIM, CPU)
    assert result.verdict != "error", result.message
    model, bags = train(spec)
    assert model.bag_map.fallback is None  # vmap ran the loss with dropout
    X, mask, y = first_batch(bags)
    model.eval()  # no dropout: the loss hook equals the model's own loss bag by bag
    own = torch.stack([model.model.loss(X[b, mask[b]][None], y[b]) for b in range(len(y))])
    torch.testing.assert_close(model.loss(X, mask, y), own)


def test_the_ema_teacher_follows_the_student_after_every_step():
    spec = example("An EMA teacher")["SPEC"]
    model = build_model(spec, 0, DIM)
    initial = [p.clone() for p in model.model.teacher.parameters()]
    trained, _ = train(spec)
    teacher = [p.detach() for p in trained.model.teacher.parameters()]
    student = [p.detach() for p in trained.model.student.parameters()]
    moved = sum(float((t - i).abs().sum()) for t, i in zip(teacher, initial, strict=True))
    lag = sum(float((t - s).abs().sum()) for t, s in zip(teacher, student, strict=True))
    start = sum(float((i - s).abs().sum()) for i, s in zip(initial, student, strict=True))
    assert moved > 0 and 0 < lag < start  # moved towards the student, and lags behind it
    result = run_cell(spec, TESTS["single_concept"], (0, 1), SMALL, DIM, CPU)
    assert result.verdict != "error" and result.training.startswith("stacked"), result.message


def learning_rates(spec, monkeypatch) -> list[float]:
    """The learning rate of every optimiser step of a training of ``spec``."""
    seen: list[torch.optim.Optimizer] = []
    make = harness.make_optimizer
    monkeypatch.setattr(harness, "make_optimizer",
                        lambda model, budget: seen.append(make(model, budget)) or seen[-1])
    rates: list[float] = []
    model = build_model(spec, 0, DIM)
    splits = TESTS["single_concept"].generate(0, dim=DIM, n_train=64, n_eval=64)
    budget = SMALL.with_overrides(spec.budget)
    fit(model, SeedBags.of([splits.train], CPU), budget, [cpu_generator(0, "train/shuffle")],
        on_step=lambda: rates.append(seen[0].param_groups[0]["lr"]))
    return rates


def test_the_budgets_cosine_schedule_warms_up_then_decays(monkeypatch):
    spec = example("A schedule")["COSINE"]
    rates = learning_rates(spec, monkeypatch)
    budget = SMALL.with_overrides(spec.budget)
    steps = math.ceil(budget.n_train_bags / budget.batch_size)
    warmup = budget.warmup_epochs * steps
    assert len(rates) == budget.epochs * steps
    assert rates[:warmup] == pytest.approx([budget.lr * (i + 1) / warmup for i in range(warmup)])
    assert rates[warmup] == pytest.approx(budget.lr)
    decay = rates[warmup:]
    assert all(a > b for a, b in zip(decay[:-1], decay[1:], strict=True))  # towards 0


def test_the_models_own_schedule_replaces_the_budgets(monkeypatch):
    rates = learning_rates(example("A schedule")["SPEC"], monkeypatch)
    third = len(rates) // 3
    assert rates == pytest.approx([SMALL.lr] * third + [SMALL.lr * 0.1] * third
                                  + [SMALL.lr * 0.01] * third)


def test_a_masking_ratio_follows_the_epoch():
    model, _ = train(example("A masking ratio")["SPEC"])
    assert model.model.ratio == pytest.approx(0.5 * (SMALL.epochs - 1) / SMALL.epochs)


def test_a_loss_over_the_mini_batch_trains_the_seeds_one_by_one():
    spec = example("A loss over the bags")["SPEC"]
    model, bags = train(spec)
    assert model.model.weight == pytest.approx(1 / SMALL.epochs)
    X, mask, y = first_batch(bags)
    assert seed_losses(model, X, mask, y, 1).shape == (1,)
    result = run_cell(spec, TESTS["single_concept"], (0, 1), SMALL, DIM, CPU)
    assert result.verdict != "error", result.message
    assert result.training == ("seed by seed: the model's batch_loss couples the bags of a "
                               "mini-batch, so its seeds train one by one")


def test_packed_bags_give_each_bags_own_loss():
    """Packing is only a way to compute: the packed loss is the mean of the bags' own."""
    spec = example("Several bags packed")["SPEC"]
    model, bags = train(spec)
    X, mask, y = first_batch(bags)
    alone = F.binary_cross_entropy_with_logits(model(X, mask), y)
    torch.testing.assert_close(model.batch_loss(X, mask, y), alone)
    result = run_cell(spec, TESTS["single_concept"], (0, 1), SMALL, DIM, CPU)
    assert result.verdict != "error", result.message


def test_the_second_stage_starts_from_the_first():
    spec = example("Two stages")["SPEC"]
    model, _ = train(spec)
    assert model.model.stage == 2
    baseline = model.model.baseline.weight
    initial = build_model(spec, 0, DIM).model.score.weight
    current = model.model.score.weight
    assert not torch.equal(baseline, initial) and not torch.equal(baseline, current)


def test_progress_fraction_and_named_schedule_edges():
    budget = Budget(epochs=4, warmup_epochs=1, lr_schedule="cosine")
    procedure = Procedure(torch.nn.Linear(1, 1), budget, steps_per_epoch=10)
    last = procedure.progress(3, 39)
    assert last.total_steps == 40 and last.fraction == pytest.approx(39 / 40)
    assert procedure.learning_rate(TrainingProgress(0, 4, 0, 10)) == pytest.approx(budget.lr / 10)
    assert procedure.learning_rate(last) == pytest.approx(
        budget.lr * 0.5 * (1 + math.cos(math.pi * 29 / 30)))
    with pytest.raises(ValueError, match="warmup_epochs must be an integer from 0 to"):
        Budget(epochs=4, warmup_epochs=4)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        Budget(lr_schedule="step")
