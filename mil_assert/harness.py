"""The training harness: one training loop, fixed budget, several seeds per cell.

For each seed the harness generates the test's bags, builds the model with weights
seeded from the run's seed, trains it on the training bags in padded mini-batches with
masks, and scores the held-out validation bags (training distribution: did it learn?)
and the test bags (shifted distribution: did it learn the right rule?). Never the
training bags: models memorise them.

Model contract: ``model(X, mask) -> logits``, ``X`` float ``[B, N, D]``, ``mask`` bool
``[B, N]`` (True = real instance), logits float ``[B]``. A model may define
``loss(X, mask, y) -> scalar tensor`` to train with its own objective (an auxiliary
instance loss, say); otherwise the harness minimises binary cross-entropy on the logits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mil_assert.defaults import Budget
from mil_assert.metrics import SeedSummary, roc_auc
from mil_assert.registry import ModelSpec
from mil_assert.results import CellResult
from mil_assert.seeding import cpu_generator, derive_seed
from mil_assert.synthetic import AlgorithmicTest, Bags
from mil_assert.verdict import judge

EVAL_CHUNK_BAGS = 1024


class ModelMisbehaved(RuntimeError):
    """The model broke the contract: wrong output shape or non-finite values."""


class BudgetExceeded(RuntimeError):
    """A seed ran past the budget's wall-clock guard."""


@dataclass(frozen=True)
class SeedScores:
    """AUCs of one trained seed."""

    seed: int
    val_auc: float
    test_auc: float
    seconds: float


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` -> ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device={name} was asked for, but torch sees no CUDA device "
                             f"(torch {torch.__version__}); use --device=cpu or auto")
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")


def train_seed(
    spec: ModelSpec, test: AlgorithmicTest, seed: int, budget: Budget, dim: int,
    device: torch.device,
) -> SeedScores:
    """Train ``spec``'s model on one seed of ``test`` and score its held-out sets."""
    started = time.monotonic()
    splits = test.generate(seed, dim=dim, n_train=budget.n_train_bags,
                           n_eval=budget.n_eval_bags).to(device)
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(derive_seed(seed, "model/init"))
        model = spec.factory(dim)
        if not isinstance(model, nn.Module):
            raise TypeError(f"the factory of {spec.name!r} returned {type(model).__name__}, "
                            f"not a torch.nn.Module")
        model = model.to(device)
        fit(model, splits.train, budget, cpu_generator(seed, "train/shuffle"),
            deadline=started + budget.max_seconds)
        val_auc = roc_auc(predict(model, splits.val), splits.val.y.cpu().numpy())
        test_auc = roc_auc(predict(model, splits.test), splits.test.y.cpu().numpy())
    return SeedScores(seed, val_auc, test_auc, time.monotonic() - started)


def make_optimizer(model: nn.Module, budget: Budget) -> torch.optim.Optimizer:
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[budget.optimizer]
    return optimizer(model.parameters(), lr=budget.lr, weight_decay=budget.weight_decay)


def bag_loss(
    model: nn.Module, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The model's own ``loss`` if it has one, else BCE on its checked logits."""
    own_loss = getattr(model, "loss", None)
    if callable(own_loss):
        return own_loss(X, mask, y)
    logits = model(X, mask)
    check_logits(logits, X.shape[0])
    return nn.functional.binary_cross_entropy_with_logits(logits, y)


def fit(model: nn.Module, bags: Bags, budget: Budget, shuffle: torch.Generator,
        deadline: float) -> None:
    """Train ``model`` for ``budget.epochs`` passes over ``bags`` in shuffled mini-batches."""
    optimizer = make_optimizer(model, budget)
    model.train()
    n_bags = len(bags)
    for epoch in range(budget.epochs):
        order = torch.randperm(n_bags, generator=shuffle).to(bags.X.device)
        finite = torch.ones((), dtype=torch.bool, device=bags.X.device)
        for start in range(0, n_bags, budget.batch_size):
            batch = order[start:start + budget.batch_size]
            loss = bag_loss(model, bags.X[batch], bags.mask[batch], bags.y[batch])
            if loss.dim() != 0:
                raise ModelMisbehaved(f"loss must be a scalar, got shape {tuple(loss.shape)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            finite &= torch.isfinite(loss.detach())
        if not bool(finite):
            raise ModelMisbehaved(f"non-finite training loss in epoch {epoch + 1}")
        if time.monotonic() > deadline:
            raise BudgetExceeded(f"training passed the wall-clock guard of "
                                 f"{budget.max_seconds:g} s in epoch {epoch + 1} of "
                                 f"{budget.epochs}")


@torch.no_grad()
def predict(model: nn.Module, bags: Bags) -> torch.Tensor:
    """Checked bag logits ``[bags]`` on the CPU, computed in chunks in eval mode."""
    model.eval()
    chunks = []
    for start in range(0, len(bags), EVAL_CHUNK_BAGS):
        X = bags.X[start:start + EVAL_CHUNK_BAGS]
        logits = model(X, bags.mask[start:start + EVAL_CHUNK_BAGS])
        check_logits(logits, X.shape[0])
        chunks.append(logits.float())
    logits = torch.cat(chunks).cpu()
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).sum())
        raise ModelMisbehaved(f"{bad} of {len(logits)} bag logits are not finite (NaN or inf)")
    return logits


def check_logits(logits: object, n_bags: int) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ModelMisbehaved(f"forward must return a tensor of bag logits [B], "
                              f"got {type(logits).__name__}")
    if tuple(logits.shape) != (n_bags,):
        raise ModelMisbehaved(f"forward must return bag logits of shape [B] = ({n_bags},), "
                              f"got {tuple(logits.shape)}")




def run_cell(
    spec: ModelSpec, test: AlgorithmicTest, seeds: Sequence[int], budget: Budget, dim: int,
    device: torch.device,
) -> CellResult:
    """Train and judge one (model, test) cell over ``seeds``.

    Any exception from the model (or its factory, or its budget overrides) becomes an
    ``error`` cell that keeps the message; it never escapes to stop the other cells.
    """
    expected = spec.expected.get(test.name)
    started = time.monotonic()
    scores: list[SeedScores] = []
    try:
        cell_budget = budget.with_overrides(spec.budget)
        for seed in seeds:
            scores.append(train_seed(spec, test, seed, cell_budget, dim, device))
        verdict, message = judge(test.kind, [s.val_auc for s in scores],
                                 [s.test_auc for s in scores])
    except Exception as error:  # noqa: BLE001 - a broken model must become an error cell
        where = f"seed {seeds[len(scores)]}: " if len(scores) < len(seeds) else ""
        verdict, message = "error", f"{where}{type(error).__name__}: {error}"
    val = SeedSummary.of([s.val_auc for s in scores]) if scores else None
    tst = SeedSummary.of([s.test_auc for s in scores]) if scores else None
    return CellResult(
        model=spec.name, test=test.name, verdict=verdict,
        expected=None if expected is None else expected.verdict,
        expected_reason=None if expected is None else expected.reason,
        seeds=tuple(int(s) for s in seeds), val_auc=val, test_auc=tst,
        seconds=time.monotonic() - started, message=message,
        budget_overrides=dict(spec.budget),
    )
