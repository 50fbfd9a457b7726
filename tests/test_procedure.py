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


def entropy_attention_loss(model, X, mask, y):
    """The page's per-bag loss, bag by bag on the real instances, from the parameters:
    BCE on the attention-pooled logit plus 0.1 x the attention's negative entropy."""
    embed, attention, head = model.embed[0], model.attention, model.head
    losses = []
    for b in range(len(y)):
        H = torch.relu(X[b, mask[b]] @ embed.weight.T + embed.bias)  # [n, width]
        A = torch.softmax(H @ attention.weight[0] + attention.bias[0], dim=0)  # [n]
        logit = (A @ H) @ head.weight[0] + head.bias[0]
        bce = F.softplus(logit) - y[b] * logit  # -log sigmoid(+-logit)
        losses.append(bce + 0.1 * (A * A.log()).sum())
    return torch.stack(losses).mean()


def test_a_batched_per_bag_loss_is_what_trains(monkeypatch):
    """``fit`` steps on the gradient of the model's ``loss`` (mean over the mini-batch's
    bags), not of binary cross-entropy on its logits."""
    spec = example("A per-bag auxiliary loss (batched)")["SPEC"]
    budget = Budget(n_train_bags=64, n_eval_bags=64, epochs=1)  # 2 steps of 32 bags
    model = build_model(spec, 0, DIM)
    initial = build_model(spec, 0, DIM).model  # the same initial weights
    splits = TESTS["single_concept"].generate(0, dim=DIM, n_train=64, n_eval=64)
    bags = SeedBags.of([splits.train], CPU)
    gradients: list[list[torch.Tensor]] = []
    make = harness.make_optimizer

    def recording(trained, budget):
        optimizer = make(trained, budget)
        optimizer.register_step_pre_hook(lambda *_: gradients.append(
            [p.grad.clone() for p in trained.parameters()]))
        return optimizer

    monkeypatch.setattr(harness, "make_optimizer", recording)
    fit(model, bags, budget, [cpu_generator(0, "train/shuffle")])
    assert len(gradients) == 2
    # the first step's mini-batch: the first 32 bags of the seed's first shuffle
    order = torch.randperm(64, generator=cpu_generator(0, "train/shuffle"))
    X, mask, y = bags.batch(order[None, :32])
    parameters = list(initial.parameters())
    expected = torch.autograd.grad(entropy_attention_loss(initial, X, mask, y), parameters)
    for got, want in zip(gradients[0], expected, strict=True):
        torch.testing.assert_close(got, want)
    # binary cross-entropy alone would give another gradient (the test can tell them apart)
    bce = F.binary_cross_entropy_with_logits(initial(X, mask), y)
    plain = torch.autograd.grad(bce, parameters)
    assert max(float((g - p).abs().max()) for g, p in zip(gradients[0], plain, strict=True)) > 1e-3


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
    """After every optimiser step the teacher moves 1 - momentum of the way to the
    student's new weights: ``teacher <- teacher + 0.01 (student - teacher)``."""
    spec = example("An EMA teacher")["SPEC"]
    model = build_model(spec, 0, DIM)
    splits = TESTS["single_concept"].generate(0, dim=DIM, n_train=SMALL.n_train_bags,
                                              n_eval=SMALL.n_eval_bags)
    teacher = [p.detach().clone() for p in model.model.teacher.parameters()]
    steps = 0

    def after_step():
        nonlocal teacher, steps
        student = [p.detach() for p in model.model.student.parameters()]
        expected = [t + 0.01 * (s - t) for t, s in zip(teacher, student, strict=True)]
        now = [p.detach().clone() for p in model.model.teacher.parameters()]
        for got, want in zip(now, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)  # float32 rounding
        assert any(not torch.equal(n, t) for n, t in zip(now, teacher, strict=True))
        teacher, steps = now, steps + 1

    fit(model, SeedBags.of([splits.train], CPU), SMALL, [cpu_generator(0, "train/shuffle")],
        on_step=after_step)
    assert steps == SMALL.epochs * math.ceil(SMALL.n_train_bags / SMALL.batch_size)
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
    # 6 epochs x 2 steps; lr_factor = 0.1 ** floor(3 * step / 12): 1, 0.1, 0.01 by thirds
    assert len(rates) == 12
    assert rates == pytest.approx([3e-3] * 4 + [3e-4] * 4 + [3e-5] * 4)


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
