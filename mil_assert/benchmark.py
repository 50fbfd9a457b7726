"""Time the harness side by side with the training loops MIL users write today.

``mil-assert benchmark`` trains one model on one test over ``S`` seeds, with the same
data, initial weights and budget, four ways, in one process and in turn:

(a) the harness (:func:`mil_assert.harness.run_cell`): data, stacked training of all
    seeds, scoring and verdict;
(b) a plain loop: seed after seed, padded mini-batches of ``budget.batch_size``, the usual
    PyTorch loop (``randperm``, forward, loss, backward, step), then scoring;
(c) a batch-size-1 loop: seed after seed, one unpadded bag per step, the norm in MIL code;
(d) torchmil's ``Trainer`` with its ``DataLoader`` padding collate at ``batch_size``, when
    torchmil is installed (Castro-Macias et al., arXiv 2509.08129).

After an untimed warm-up (the first training in a process pays for torch's lazy
initialisation), each runs ``repeats`` times, cycling (a), (b), (c), (d), so that a drift
in the machine's speed reaches all of them; the median wall time is reported with the
ratio to (a). The slow ones, (c) and (d), train ``slow_seeds`` seeds for ``slow_epochs``
epochs and their time is scaled to ``S`` seeds x ``budget.epochs`` epochs (a loop's cost
per seed and epoch is constant); the table says so.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from tabulate import tabulate
from torch import nn

from mil_assert.defaults import Budget
from mil_assert.harness import build_model, make_optimizer, run_cell, seed_losses
from mil_assert.metrics import roc_auc
from mil_assert.registry import ModelSpec
from mil_assert.seeding import cpu_generator
from mil_assert.synthetic import AlgorithmicTest, Bags, Splits


@dataclass(frozen=True)
class Timing:
    """Wall seconds of one way of training, over repeats, scaled to the full run."""

    name: str
    seconds: list[float]
    scale: float
    note: str

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) * self.scale


Loop = Callable[[ModelSpec, Splits, int, Budget, int, torch.device, int], nn.Module]
"""``loop(spec, splits, seed, budget, dim, device, epochs) -> trained model``."""


@torch.no_grad()
def score(model: nn.Module, bags: Bags) -> float:
    model.eval()
    return roc_auc(model(bags.X, bags.mask).cpu(), bags.y.cpu().numpy())


Batches = Callable[[Bags, torch.Tensor, Budget], Iterator[tuple[torch.Tensor, ...]]]


def padded_batches(train: Bags, order: torch.Tensor,
                   budget: Budget) -> Iterator[tuple[torch.Tensor, ...]]:
    """(b): mini-batches of ``budget.batch_size`` padded bags, in ``order``."""
    for batch in order.to(train.X.device).split(budget.batch_size):
        yield train.X[batch], train.mask[batch], train.y[batch]


def single_bags(train: Bags, order: torch.Tensor,
                budget: Budget) -> Iterator[tuple[torch.Tensor, ...]]:
    """(c): one unpadded bag per step, in ``order``."""
    sizes = train.sizes.tolist()  # each bag's real instances come first
    for i in order.tolist():
        yield train.X[i:i + 1, :sizes[i]], train.mask[i:i + 1, :sizes[i]], train.y[i:i + 1]


def train_alone(batches: Batches) -> Loop:
    """A loop training one seed on its own, the usual PyTorch way, over ``batches``."""

    def loop(spec: ModelSpec, splits: Splits, seed: int, budget: Budget, dim: int,
             device: torch.device, epochs: int) -> nn.Module:
        model = build_model(spec, seed, dim).to(device)
        optimizer = make_optimizer(model, budget)
        shuffle = cpu_generator(seed, "train/shuffle")
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(splits.train), generator=shuffle)
            for X, mask, y in batches(splits.train, order, budget):
                loss = seed_losses(model, X, mask, y, seeds=1).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return model

    return loop


plain_loop = train_alone(padded_batches)
batch_size_one_loop = train_alone(single_bags)


def run_loop(loop: Loop, spec: ModelSpec, test: AlgorithmicTest, seeds: list[int],
             budget: Budget, dim: int, device: torch.device, epochs: int) -> None:
    """Run ``loop`` seed after seed, each on its own freshly generated bags, and score it."""
    for seed in seeds:
        splits = test.generate(seed, dim=dim, n_train=budget.n_train_bags,
                               n_eval=budget.n_eval_bags).to(device)
        model = loop(spec, splits, seed, budget, dim, device, epochs)
        score(model, splits.val)
        score(model, splits.test)


def torchmil_available() -> bool:
    try:
        import torchmil  # noqa: F401
    except ImportError:
        return False
    return True


def benchmark(spec: ModelSpec, test: AlgorithmicTest, seeds: int, budget: Budget, dim: int,
              device: torch.device, repeats: int, slow_seeds: int, slow_epochs: int,
              log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
              ) -> list[Timing]:
    """Time (a)-(d) ``repeats`` times each, in turn; (d) only if torchmil is installed."""
    budget = budget.with_overrides(spec.budget)
    seed_list = list(range(seeds))
    slow = list(range(min(slow_seeds, seeds)))
    slow_epochs = min(slow_epochs, budget.epochs)
    slow_scale = (seeds * budget.epochs) / (len(slow) * slow_epochs)
    slow_note = f"scaled from {len(slow)} seed(s) x {slow_epochs} epoch(s)"
    warm_budget = budget.with_overrides({"epochs": 1})
    log("warm-up: one untimed epoch of (a) and (b)")
    run_cell(spec, test, seed_list[:2], warm_budget, dim, device)
    run_loop(plain_loop, spec, test, seed_list[:1], warm_budget, dim, device, 1)
    ways: list[tuple[str, Callable[[], object], float, str]] = [
        ("(a) harness", lambda: run_cell(spec, test, seed_list, budget, dim, device), 1.0, ""),
        ("(b) plain padded loop", lambda: run_loop(plain_loop, spec, test, seed_list, budget,
                                                   dim, device, budget.epochs), 1.0, ""),
        ("(c) batch-size-1 loop", lambda: run_loop(batch_size_one_loop, spec, test, slow,
                                                   budget, dim, device, slow_epochs),
         slow_scale, slow_note),
    ]
    if torchmil_available():
        from mil_assert.torchmil_baseline import torchmil_trainer

        ways.append(("(d) torchmil Trainer",
                     lambda: run_loop(torchmil_trainer, spec, test, slow, budget, dim, device,
                                      slow_epochs), slow_scale, slow_note))
    seconds: dict[str, list[float]] = {name: [] for name, *_ in ways}
    for repeat in range(repeats):
        for name, run, scale, _ in ways:
            started = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name].append(time.perf_counter() - started)
            log(f"repeat {repeat + 1}/{repeats}: {name}: {seconds[name][-1]:.2f} s"
                + (f" (x {scale:g} when scaled)" if scale != 1.0 else ""))
    return [Timing(name, seconds[name], scale, note) for name, _, scale, note in ways]


def benchmark_one_bag(test: AlgorithmicTest, seeds: int, budget: Budget, dim: int,
                      device: torch.device, repeats: int, slow_epochs: int,
                      log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
                      ) -> list[Timing]:
    """Time attention MIL with dropout (:mod:`mil_assert.one_bag_twins`) three ways through
    the harness, ``repeats`` times each, in turn: (a) written batched (its seeds train one
    by one, since it draws dropout), (b) written for one bag per call (the seeds' bags
    through vmap together), and (c) the same one-bag model bag by bag, seed by seed (no
    vmap), which trains ``slow_epochs`` epochs and is scaled to the budget's."""
    from mil_assert.one_bag import without_vmap
    from mil_assert.one_bag_twins import BATCHED, ONE_BAG

    seed_list = list(range(seeds))

    slow_epochs = min(slow_epochs, budget.epochs)
    slow_budget = budget.with_overrides({"epochs": slow_epochs})

    def per_bag() -> object:
        with without_vmap():
            return run_cell(ONE_BAG, test, seed_list, slow_budget, dim, device)

    ways: list[tuple[str, Callable[[], object]]] = [
        ("(a) batched twin", lambda: run_cell(BATCHED, test, seed_list, budget, dim, device)),
        ("(b) one bag per call, vmap", lambda: run_cell(ONE_BAG, test, seed_list, budget, dim,
                                                        device)),
        ("(c) one bag per call, bag by bag", per_bag),
    ]
    log("warm-up: one untimed epoch of each")
    warm = budget.with_overrides({"epochs": 1})
    run_cell(BATCHED, test, seed_list[:2], warm, dim, device)
    run_cell(ONE_BAG, test, seed_list[:2], warm, dim, device)
    seconds: dict[str, list[float]] = {name: [] for name, _ in ways}
    for repeat in range(repeats):
        for name, run in ways:
            started = time.perf_counter()
            result = run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name].append(time.perf_counter() - started)
            log(f"repeat {repeat + 1}/{repeats}: {name}: {seconds[name][-1]:.2f} s "
                f"({result.training})")
    scale = budget.epochs / slow_epochs
    return [Timing(name, seconds[name], 1.0 if name[1] != "c" else scale,
                   "" if name[1] != "c" else f"scaled from {slow_epochs} epoch(s)")
            for name, _ in ways]


def format_table(timings: list[Timing]) -> str:
    """Median seconds of the full run, range over repeats, and each way's time / (a)'s."""
    harness = timings[0].median
    rows = [(t.name, f"{t.median:.1f}", f"{min(t.seconds) * t.scale:.1f}-"
             f"{max(t.seconds) * t.scale:.1f}", f"{t.median / harness:.1f}x", t.note)
            for t in timings]
    return tabulate(rows, headers=("training", "median s", "range s", "vs (a)", "note"),
                    tablefmt="github", disable_numparse=True)
