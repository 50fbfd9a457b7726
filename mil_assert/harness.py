"""The training harness: one training loop, fixed budget, all the seeds of a cell at once.

For each seed the harness generates the test's bags and builds the model with weights
seeded from that seed. The seeds' models are then stacked into one model
(:mod:`mil_assert.stacking`) and trained together on their own training bags, in padded
mini-batches with masks, one optimizer step for all seeds; a model that cannot be stacked
is trained seed by seed with the same loop. Each seed is scored on its held-out
validation bags (training distribution: did it learn?) and test bags (shifted
distribution: did it learn the right rule?). Never the training bags: models memorise
them.

Model contract: ``model(X, mask) -> logits``, ``X`` float ``[B, N, D]``, ``mask`` bool
``[B, N]`` (True = real instance), logits float ``[B]``; a bag's logit depends on that bag
only. A model may define ``loss(X, mask, y) -> [B]``, one loss per bag, to train with its
own objective (an auxiliary instance loss, say); otherwise the harness uses binary
cross-entropy on the logits. Each seed minimises the mean of its bags' losses.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import product

import torch
from torch import nn

from mil_assert.adapters import BagLogits, adapt
from mil_assert.contract import ContractOutcome, check_contract
from mil_assert.defaults import Budget, restarts_for
from mil_assert.metrics import SeedSummary, roc_auc
from mil_assert.procedure import Procedure
from mil_assert.registry import ModelSpec
from mil_assert.results import CellResult
from mil_assert.seeding import cpu_generator, seeded_global_rngs
from mil_assert.stacking import NotStackable, check_stacked, stack_models
from mil_assert.synthetic import AlgorithmicTest, Bags, Splits
from mil_assert.synthetic.regime import Regime
from mil_assert.verdict import LEARNED_ABSENCE, LEARNED_AUC, judge, seed_outcome

DEFAULT_REGIME = Regime()

EVAL_CHUNK_BAGS = 1024
EVAL_CHUNK_BYTES = 64 * 2**20
"""Evaluation runs in chunks of at most ``EVAL_CHUNK_BAGS`` bags whose instances (all
seeds) take at most this many bytes: one chunk at D = 16, 62 bags of 53 instances for 5
seeds at D = 1024."""


class ModelMisbehaved(RuntimeError):
    """The model broke the contract: wrong output shape or non-finite values."""


class ContractFailed(RuntimeError):
    """The model broke the contract check before training (:mod:`mil_assert.contract`)."""


@dataclass(frozen=True)
class SeedBags:
    """One split of ``S`` seeds, padded to a common bag size ``N``.

    Attributes:
        X: float ``[S, bags, N, D]``.
        mask: bool ``[S, bags, N]``, True for real instances.
        y: float ``[S, bags]``.
    """

    X: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor

    @classmethod
    def of(cls, sets: list[Bags], device: torch.device) -> SeedBags:
        """Stack the seeds' sets, zero-padded to the largest bag; empties ``sets``.

        Each seed's set is released as soon as it is copied, so a cell holds its bags
        about once, not twice (730 MiB for 5 seeds of ``false_frequency`` at D = 1024).
        """
        S, count, n = len(sets), sets[0].X.shape[0], max(bags.X.shape[1] for bags in sets)
        X = sets[0].X.new_zeros(S, count, n, *sets[0].X.shape[2:])
        mask = sets[0].mask.new_zeros(S, count, n)
        y = sets[0].y.new_zeros(S, count)
        for i in reversed(range(S)):
            bags = sets.pop()
            X[i, :, :bags.X.shape[1]] = bags.X
            mask[i, :, :bags.mask.shape[1]] = bags.mask
            y[i] = bags.y
        return cls(X.to(device), mask.to(device), y.to(device))

    def seed(self, i: int, n: int) -> SeedBags:
        """Seed ``i``'s bags alone, cut to its own largest bag of ``n`` instances (views)."""
        return SeedBags(self.X[i:i + 1, :, :n], self.mask[i:i + 1, :, :n], self.y[i:i + 1])

    @property
    def seeds(self) -> int:
        return self.X.shape[0]

    def __len__(self) -> int:
        return self.X.shape[1]

    @cached_property
    def _rows(self) -> torch.Tensor:
        return torch.arange(self.seeds, device=self.X.device)[:, None]  # [S, 1]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each seed's bags ``index [S, b]``, folded seed-major: ``X [S*b, N, D]``, ``mask
        [S*b, N]``, ``y [S*b]``."""
        # index_select on the flattened bags copies a batch 2.5x faster than X[rows, index]
        flat = (self._rows * len(self) + index).flatten()
        return (self.X.flatten(0, 1).index_select(0, flat),
                self.mask.flatten(0, 1).index_select(0, flat),
                self.y.flatten(0, 1).index_select(0, flat))


def build_model(spec: ModelSpec, seed: int, dim: int, restart: int = 0) -> BagLogits:
    """``spec``'s model with its initial weights drawn from ``seed``'s own stream (restart
    ``r > 0``: another stream of the seed), wrapped so that it is called and read as
    ``spec`` says (:mod:`mil_assert.adapters`)."""
    with seeded_global_rngs(seed, "model/init" if restart == 0 else f"model/init/{restart}"):
        model = spec.factory(dim)
    if not isinstance(model, nn.Module):
        raise TypeError(f"the factory of {spec.name!r} returned {type(model).__name__}, "
                        f"not a torch.nn.Module")
    return adapt(model, spec.input, spec.output, spec.positive_class, spec.output_key)


@dataclass(frozen=True)
class Group:
    """Seeds trained as one model: a stacked model for several seeds, or a seed's own."""

    seeds: tuple[int, ...]
    model: nn.Module
    train: SeedBags
    val: SeedBags
    test: SeedBags

    def label(self) -> str:
        return seed_label(self.seeds)


def seed_label(seeds: Sequence[int]) -> str:
    """``"seed 3"`` or ``"seeds 0, 1, 2"``."""
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(int(s)) for s in seeds)


def plan_groups(
    spec: ModelSpec, seeds: Sequence[int], splits: list[Splits], dim: int,
    budget: Budget, device: torch.device, restarts: Sequence[int] | None = None,
) -> tuple[list[Group], str]:
    """Build every seed's model and stack them when the model allows it and the stacked
    model matches the seeds' own models (logits, and the ``loss`` hook's per-bag losses)
    on each seed's first training batch. Empties ``splits``: the groups hold the bags.
    ``restarts``: each model's restart number (a seed may then appear once per restart).

    Returns the groups to train and how the seeds are trained, for the report.
    """
    models = [build_model(spec, seed, dim, restart).to(device) for seed, restart in
              zip(seeds, restarts or [0] * len(seeds), strict=True)]
    how = "seed by seed: one seed"
    if not spec.stackable:
        how = "seed by seed: the model's spec sets stackable=False"
    elif len(seeds) > 1:
        sizes = [[getattr(s, part).X.shape[1] for part in PARTS] for s in splits]
        parts = _seed_bags(splits, device)
        train = parts[0]
        first = slice(0, budget.batch_size)
        try:
            stacked = stack_models(models)
            check_stacked(stacked, models, train.X[:, first], train.mask[:, first],
                          train.y[:, first])
        except NotStackable as reason:  # each seed its own group, on views of its bags
            own = [[bags.seed(i, n) for bags, n in zip(parts, sizes[i], strict=True)]
                   for i in range(len(seeds))]
            return [Group((seed,), model, *bags) for seed, model, bags in
                    zip(seeds, models, own, strict=True)], f"seed by seed: {reason}"
        distinct = len(set(seeds))
        what = (f"{len(seeds)} seeds" if distinct == len(seeds) else
                f"{distinct} seeds x {len(seeds) // distinct} starts")
        return [Group(tuple(seeds), stacked, *parts)], f"stacked: {what} as one model"
    return [Group((seed,), model, *_seed_bags([split], device))
            for seed, model, split in zip(seeds, models, splits, strict=True)], how


PARTS = ("train", "val", "test")


def _seed_bags(splits: list[Splits], device: torch.device) -> tuple[SeedBags, ...]:
    """Each part stacked over the seeds; empties ``splits`` so that every seed's bags are
    released once copied."""
    parts = {part: [getattr(s, part) for s in splits] for part in PARTS}
    splits.clear()
    return tuple(SeedBags.of(parts.pop(part), device) for part in PARTS)


def make_optimizer(model: nn.Module, budget: Budget) -> torch.optim.Optimizer:
    """The budget's optimizer; the fused implementation where torch has one for the device.

    Fused Adam makes one pass over each parameter tensor (about a quarter less training
    time for the small models here on a CPU); it computes Adam's update element by
    element, like the plain one, with its own float32 rounding.
    """
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[budget.optimizer]
    parameters = list(model.parameters())
    try:
        return optimizer(parameters, lr=budget.lr, weight_decay=budget.weight_decay, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return optimizer(parameters, lr=budget.lr, weight_decay=budget.weight_decay)


def seed_losses(model: nn.Module, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor,
                seeds: int) -> torch.Tensor:
    """``[S]``: each seed's training loss on its bags of a mini-batch.

    ``X [S*b, N, D]``, ``mask [S*b, N]``, ``y [S*b]``, seed-major. The loss is the model's
    ``batch_loss`` (one seed), else the mean of its per-bag ``loss``, else the mean binary
    cross-entropy on its logits (:mod:`mil_assert.procedure`).
    """
    batch_loss = getattr(model, "batch_loss", None)
    if callable(batch_loss):
        loss = batch_loss(X, mask, y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or seeds != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss)
            raise ModelMisbehaved(f"batch_loss must return one loss for the mini-batch, "
                                  f"shape [], got {shape}")
        return loss.reshape(1)
    own_loss = getattr(model, "loss", None)
    if callable(own_loss):
        losses = own_loss(X, mask, y)
        if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (X.shape[0],):
            shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses)
            raise ModelMisbehaved(f"loss must return one loss per bag, shape [B] = "
                                  f"({X.shape[0] // seeds},), got {shape}")
    else:
        logits = model(X, mask)
        check_logits(logits, X.shape[0], seeds)
        losses = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return losses.view(seeds, -1).mean(dim=1)


@dataclass
class Stopped:
    """How far a group's training got when the time limit stopped it."""

    epoch: int
    epochs: int


def fit(model: nn.Module, bags: SeedBags, budget: Budget,
        shuffles: Sequence[torch.Generator], deadline: float | None = None,
        on_step: Callable[[], None] | None = None) -> Stopped | None:
    """Train ``model`` for ``budget.epochs`` passes over each seed's bags in shuffled mini-batches.

    Seed ``s`` draws its batch order from ``shuffles[s]``; one optimizer step updates all
    seeds. The model's training procedure (:mod:`mil_assert.procedure`) sets the learning
    rate of each step and is called back after each step and around each epoch.
    ``on_step`` is called after each optimizer step (progress display). Returns ``None``,
    or where training stopped when ``time.monotonic()`` passed ``deadline`` (checked after
    each step).
    """
    optimizer = make_optimizer(model, budget)
    n_bags, device = len(bags), bags.X.device
    procedure = Procedure(model, budget, steps_per_epoch=-(-n_bags // budget.batch_size))
    model.train()
    step = 0
    for epoch in range(budget.epochs):
        order = torch.stack([torch.randperm(n_bags, generator=g) for g in shuffles]).to(device)
        finite = torch.ones((), dtype=torch.bool, device=device)
        procedure.call("on_train_epoch_start", procedure.progress(epoch, step))
        for start in range(0, n_bags, budget.batch_size):
            progress = procedure.progress(epoch, step)
            if procedure.scheduled:
                for group in optimizer.param_groups:
                    group["lr"] = procedure.learning_rate(progress)
            losses = seed_losses(model, *bags.batch(order[:, start:start + budget.batch_size]),
                                 bags.seeds)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            finite &= torch.isfinite(losses.detach()).all()
            procedure.call("on_train_batch_end", progress)
            step += 1
            if on_step is not None:
                on_step()
            if deadline is not None and time.monotonic() > deadline:
                return Stopped(epoch, budget.epochs)
        if not bool(finite):
            raise ModelMisbehaved(f"non-finite training loss in epoch {epoch + 1}")
        procedure.call("on_train_epoch_end", procedure.progress(epoch, step - 1))
    return None


@torch.no_grad()
def predict(model: nn.Module, bags: SeedBags) -> torch.Tensor:
    """Checked bag logits ``[S, bags]`` on the CPU, computed in chunks in eval mode."""
    model.eval()
    chunks = []
    S = bags.seeds
    bag_bytes = S * bags.X[0, 0].numel() * bags.X.element_size()
    chunk = max(1, min(EVAL_CHUNK_BAGS, EVAL_CHUNK_BYTES // bag_bytes))
    for start in range(0, len(bags), chunk):
        index = torch.arange(start, min(start + chunk, len(bags)),
                             device=bags.X.device).expand(S, -1)
        X, mask, _ = bags.batch(index)
        logits = model(X, mask)
        check_logits(logits, X.shape[0], S)
        chunks.append(logits.float().view(S, -1))
    logits = torch.cat(chunks, dim=1).cpu()
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).sum())
        raise ModelMisbehaved(f"{bad} of {logits.numel()} bag logits are not finite (NaN or inf)")
    return logits


def check_logits(logits: object, n_bags: int, seeds: int = 1) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ModelMisbehaved(f"forward must return a tensor of bag logits [B], "
                              f"got {type(logits).__name__}")
    if tuple(logits.shape) != (n_bags,):
        raise ModelMisbehaved(f"forward must return bag logits of shape [B] = "
                              f"({n_bags // seeds},), got {tuple(logits.shape)}")


@dataclass
class GroupOutcome:
    """A trained group's seeds' AUCs, or where the time limit stopped it."""

    val_aucs: list[float]
    test_aucs: list[float]
    stopped: Stopped | None = None
    within_unit_interval: bool = False
    """Every validation logit lies in [0, 1] though a seed learned (validation AUC at
    least ``LEARNED_AUC``): read as logits, these look like probabilities (binary
    cross-entropy gives the negatives of a logit model that learned logits below 0; one
    that did not learn may stay in a narrow range anywhere)."""
    vmap_fallback: str | None = None
    """The steps down from ``torch.func.vmap`` a one-bag model took, each with its reason
    (:mod:`mil_assert.one_bag`), or ``None``."""


def train_group(group: Group, budget: Budget, on_step: Callable[[], None] | None = None,
                deadline: float | None = None) -> GroupOutcome:
    """Train one group and score its seeds on their validation and test bags.

    A group whose training passes ``deadline`` (``time.monotonic()``, checked after each
    optimiser step; see :func:`cell_deadline`) is not scored: its outcome says where it
    stopped. A group that finished training is always scored.
    """
    device = group.train.X.device
    cuda = [device] if device.type == "cuda" else []
    # Only a model drawing random numbers (dropout, trained seed by seed) reads these streams.
    with torch.random.fork_rng(devices=cuda), seeded_global_rngs(group.seeds[0], "train/random"):
        stopped = fit(group.model, group.train, budget,
                      [cpu_generator(seed, "train/shuffle") for seed in group.seeds],
                      deadline=deadline, on_step=on_step)
    if stopped is not None:
        return GroupOutcome([], [], stopped)
    with torch.random.fork_rng(devices=cuda), seeded_global_rngs(group.seeds[0], "eval/random"):
        val = predict(group.model, group.val)
        test = predict(group.model, group.test)
    val_y, test_y = group.val.y.cpu().numpy(), group.test.y.cpu().numpy()
    val_aucs = [roc_auc(val[s], val_y[s]) for s in range(len(group.seeds))]
    return GroupOutcome(val_aucs,
                        [roc_auc(test[s], test_y[s]) for s in range(len(group.seeds))],
                        within_unit_interval=bool(((val >= 0) & (val <= 1)).all()
                                                  and max(val_aucs) >= LEARNED_AUC),
                        vmap_fallback=getattr(group.model, "vmap_fallback", None))


class CellClock:
    """Counts a cell's optimiser steps: reports each step's share of the cell to
    ``progress`` and, after the cell's first epoch, its projected training time to
    ``note``. ``trainings`` is how many groups the cell trains (all tasks)."""

    def __init__(self, trainings: int, budget: Budget, progress: Callable[[float], None] | None,
                 note: Callable[[str], None] | None, label: str) -> None:
        self.steps_per_epoch = -(-budget.n_train_bags // budget.batch_size)
        self.total = trainings * budget.epochs * self.steps_per_epoch
        self.progress, self.note, self.label = progress, note, label
        self.steps, self.started = 0, time.monotonic()

    def __call__(self) -> None:
        self.steps += 1
        if self.progress is not None:
            self.progress(1.0 / self.total)
        if self.steps == self.steps_per_epoch and self.note is not None:
            epoch = time.monotonic() - self.started
            self.note(f"{self.label}: first epoch {epoch:.1f} s; projected training time "
                      f"{format_seconds(epoch * self.total / self.steps)}")

    def skip_rest(self) -> None:
        """The steps still to come will not run (a skipped capacity control): report
        their share at once, so that the cell's fractions still sum to 1."""
        if self.progress is not None and self.steps < self.total:
            self.progress((self.total - self.steps) / self.total)
        self.steps = self.total


def format_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3.5 min"`` or ``"1.2 h"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class TimeLimitReached(RuntimeError):
    """Training passed the user's time limit (``Budget.max_seconds``)."""


def keep_best_starts(val: Sequence[float], test: Sequence[float], starts: int,
                     kept_val: list[float], kept_test: list[float] | None) -> list[int]:
    """Each seed's start with the highest validation AUC: its AUCs are appended to
    ``kept_val`` (and ``kept_test``). ``val``, ``test``: per start, seed-major, ``starts``
    per seed; a seed whose starts did not all finish is left out. Returns the chosen
    starts' positions."""
    best = [max(range(i * starts, (i + 1) * starts), key=val.__getitem__)
            for i in range(len(val) // starts)]
    kept_val += [val[m] for m in best]
    if kept_test is not None:
        kept_test += [test[m] for m in best]
    return best


def cell_deadline(budget: Budget, started: float, seeds: int, kind: str) -> float | None:
    """When a cell started at ``started`` passes its time limit, or ``None`` (no limit).

    The limit is ``budget.max_seconds`` for each training of a seed: a cell of ``S`` seeds
    has ``S`` times that for everything it does (contract check, training, evaluation),
    twice as much for an ``unlearnable`` test, whose capacity control trains the seeds
    again. One clock for the cell, whatever the grouping: a stacked group's seeds finish
    together, so a group stopped by the limit keeps no seed, while groups that finished
    before keep their AUCs.
    """
    if budget.max_seconds is None:
        return None
    trainings = seeds * (2 if kind == "unlearnable" else 1)
    return started + budget.max_seconds * trainings


def limit_words(budget: Budget, seconds: float) -> str:
    """``"the time limit of 20 s per seed (60 s for this cell)"``."""
    return (f"the time limit of {budget.max_seconds:g} s per seed ({seconds:g} s for this "
            f"cell)")


def time_limit_message(budget: Budget, seconds: float, finished: Sequence[int], group: Group,
                       stopped: Stopped, waiting: Sequence[int], task: str = "") -> str:
    """What a time limit left: the seeds that finished (their AUCs are kept) and how far
    the others got; ``task`` is ``"control, "`` in the capacity control."""
    parts = [f"{limit_words(budget, seconds)} was reached"
             + (" in the capacity control" if task else "")]
    if finished:
        parts.append(f"{seed_label(finished)} finished (AUCs kept)")
    parts.append(f"{group.label()} stopped in epoch {stopped.epoch + 1} of {stopped.epochs}")
    if waiting:
        parts.append(f"{seed_label(waiting)} not started")
    return "; ".join(parts) + " (set a larger limit, or none, to judge every seed)"


CONTROL_EXTREMES = (0.0, 1.0)
"""The lowest and the highest validation AUC a capacity control can show. The verdict rule
reads a seed's control through a threshold (:func:`mil_assert.verdict.seed_outcome`), so
these two give every outcome a control can give that seed."""


def verdict_whatever_the_control(kind: str, val_aucs: Sequence[float],
                                 test_aucs: Sequence[float],
                                 partial_auc: float | None = None) -> tuple[str, str] | None:
    """``(verdict, reason)`` of an ``unlearnable`` cell that is a violation whatever its
    capacity control would show, else ``None`` (the control must be trained).

    Asked of the verdict rule itself, not of its thresholds: each seed's outcome under
    the lowest and the highest control AUC (:data:`CONTROL_EXTREMES`), then
    :func:`mil_assert.verdict.judge` of every way of mixing them. The verdict is a vote
    (it counts the seeds' outcomes), so for the seeds whose outcome the control decides
    only how many take each extreme matters, not which: ``k`` such seeds are ``k + 1``
    judgements. The reason is that of the highest control for every seed, which is how a
    seed without a control reads (:func:`mil_assert.verdict.seed_outcome` with ``None``,
    as :meth:`CellResult.seed_outcomes` reads the report).
    """
    if kind != "unlearnable":
        return None
    low, high = CONTROL_EXTREMES
    pairs = [(seed_outcome(kind, v, t, low, partial_auc),
              seed_outcome(kind, v, t, high, partial_auc))
             for v, t in zip(val_aucs, test_aucs, strict=True)]
    open_ = Counter(pair for pair in pairs if pair[0] != pair[1])
    judged = None
    for lows in product(*(range(count, -1, -1) for count in open_.values())):
        left = dict(zip(open_, lows, strict=True))
        controls = []
        for pair in pairs:
            if left.get(pair):
                left[pair] -= 1
                controls.append(low)
            else:
                controls.append(high)
        verdict, reason = judge(kind, val_aucs, test_aucs, controls, partial_auc)
        if verdict != "violation":
            return None
        judged = verdict, reason  # the last is every open seed at the highest control
    return judged


def skip_words(kind: str, val_aucs: Sequence[float], test_aucs: Sequence[float],
               partial_auc: float | None = None) -> str:
    """Why a cell's capacity control was not trained, for the report: ``"3 of 5 seeds
    learned the swapped rule: a violation whatever the control shows, so it was not
    trained (the other seeds count as not learned, unchecked by a control)"``."""
    outcomes = [seed_outcome(kind, v, t, None, partial_auc)
                for v, t in zip(val_aucs, test_aucs, strict=True)]
    learned = outcomes.count(LEARNED_ABSENCE)
    words = (f"{learned} of {len(outcomes)} seeds learned the swapped rule: a violation "
             f"whatever the control shows, so it was not trained")
    if learned < len(outcomes):
        words += " (the other seeds count as not learned, unchecked by a control)"
    return words


def finished_verdict(test: AlgorithmicTest, val_aucs: Sequence[float],
                     test_aucs: Sequence[float], control_aucs: Sequence[float] | None,
                     ) -> tuple[str, str, str | None]:
    """``(verdict, message, control_skipped)`` of a cell whose seeds all finished: the
    verdict rule on its per-seed AUCs. An ``unlearnable`` cell without control AUCs was
    settled without its control (:func:`verdict_whatever_the_control`); ``control_skipped``
    then says why, else it is ``None``."""
    if test.kind == "unlearnable" and not control_aucs:
        settled = verdict_whatever_the_control(test.kind, val_aucs, test_aucs,
                                               test.partial_rule_auc)
        if settled is not None:
            skipped = skip_words(test.kind, val_aucs, test_aucs, test.partial_rule_auc)
            return settled[0], f"{settled[1]}; capacity control skipped: {skipped}", skipped
    verdict, message = judge(test.kind, val_aucs, test_aucs,
                             control_aucs if test.kind == "unlearnable" else None,
                             test.partial_rule_auc)
    return verdict, message, None


def run_cell(
    spec: ModelSpec, test: AlgorithmicTest, seeds: Sequence[int], budget: Budget, dim: int,
    device: torch.device, progress: Callable[[float], None] | None = None,
    note: Callable[[str], None] | None = None, regime: Regime = DEFAULT_REGIME,
) -> CellResult:
    """Train and judge one (model, test) cell over ``seeds``, on the bags of ``regime``
    (:mod:`mil_assert.synthetic.regime`: bag size, digit instances, the user's own bags).

    Any exception from the model (or its factory, or its budget overrides) becomes an
    ``error`` cell that keeps the message; it never escapes to stop the other cells.
    ``progress(fraction)`` is called after each optimiser step with the fraction of the
    cell it completed (the fractions of a cell that trains to the end sum to 1);
    ``note(line)`` gets the cell's projected training time after its first epoch. With a
    time limit, the seeds that finished before it keep their AUCs in the error cell.

    An ``unlearnable`` test's capacity control is trained after the rule, unless the
    rule's seeds already make a violation that no control outcome can change
    (:func:`verdict_whatever_the_control`): then the cell's ``control_auc`` is ``None``,
    its ``control_skipped`` and message say why, and it takes about half the time.
    """
    expected = spec.expected.get(test.name)
    started = time.monotonic()
    val_aucs: list[float] = []
    test_aucs: list[float] = []
    control_aucs: list[float] = []
    where, how = "", ""
    contract: ContractOutcome | None = None
    clock: CellClock | None = None
    probabilities = False
    control_skipped: str | None = None
    try:
        cell_budget = budget.with_overrides(spec.budget)
        if cell_budget.restarts is None:
            cell_budget = replace(cell_budget, restarts=restarts_for(regime.bag_size))
        starts = cell_budget.restarts
        deadline = cell_deadline(cell_budget, started, len(seeds) * starts, test.kind)
        dim = regime.instance_dim(dim)
        where = f"seed {seeds[0]}: "
        contract = contract_of(spec, seeds[0], dim)
        if not contract.ok:
            raise ContractFailed(contract.message)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeLimitReached(f"{limit_words(cell_budget, deadline - started)} was "
                                   f"reached in the contract check; no seed trained (set a "
                                   f"larger limit, or none, to judge every seed)")
        where = ""
        splits = [regime.generate(test, seed, dim=dim, n_train=cell_budget.n_train_bags,
                                  n_eval=cell_budget.n_eval_bags) for seed in seeds]
        # An unlearnable test also trains its capacity control (the same model, seeds and
        # budget on a task every MIL model can learn); the control's validation AUCs
        # tell a seed that could not learn the rule from one that learned nothing. Unless
        # the rule's seeds already make a violation that no control outcome can change.
        tasks = [("", splits)]
        if test.kind == "unlearnable":
            tasks.append(("control, ", None))
        for label, task_splits in tasks:
            if task_splits is None:
                if verdict_whatever_the_control(test.kind, val_aucs, test_aucs,
                                                test.partial_rule_auc) is not None:
                    if clock is not None:
                        clock.skip_rest()
                    break
                task_splits = [regime.generate(test, seed, dim=dim,
                                               n_train=cell_budget.n_train_bags,
                                               n_eval=cell_budget.n_eval_bags, control=True)
                               for seed in seeds]
            where = f"{label}seed {seeds[0]}: "
            members = [seed for seed in seeds for _ in range(starts)]
            groups, task_how = plan_groups(
                spec, members, [split for split in task_splits for _ in range(starts)], dim,
                cell_budget, device, [r for _ in seeds for r in range(starts)])
            task_val: list[float] = []
            task_test: list[float] = []
            how = how or task_how
            clock = clock or CellClock(len(tasks) * len(groups), cell_budget, progress, note,
                                       f"{spec.name} on {test.name}")
            for i, group in enumerate(groups):
                where = f"{label}{group.label()}: "
                outcome = train_group(group, cell_budget, clock, deadline)
                if outcome.stopped is not None:
                    keep_best_starts(task_val, task_test, starts, control_aucs if label else
                                     val_aucs, None if label else test_aucs)
                    raise TimeLimitReached(time_limit_message(
                        cell_budget, deadline - started, seeds[:len(task_val) // starts], group,
                        outcome.stopped, [seed for later in groups[i + 1:] for seed in later.seeds],
                        label))
                val, tst = outcome.val_aucs, outcome.test_aucs
                probabilities = probabilities or (outcome.within_unit_interval and not label)
                for step in (outcome.vmap_fallback or "").split("; "):
                    if step and step not in how:
                        how += f"; {step}"
                        if note is not None:
                            note(f"{spec.name}: {step}")
                task_val += val
                task_test += tst
            del groups
            best = keep_best_starts(task_val, task_test, starts, control_aucs if label else
                                    val_aucs, None if label else test_aucs)
            if starts > 1:
                how += (f"; {label}best of {starts} starts per seed on validation AUC (starts "
                        f"{', '.join(str(m % starts) for m in best)})")
        verdict, message, control_skipped = finished_verdict(test, val_aucs, test_aucs,
                                                             control_aucs)
        if probabilities and spec.output == "logit":
            message += (" (every validation logit lies in [0, 1] after training: if forward "
                        "returns probabilities, declare output=\"probability\" in its ModelSpec, "
                        "or @output=probability after its name)")
        where = ""
    except ContractFailed as failed:
        verdict, message = "error", f"contract broken before training: {failed}"
    except TimeLimitReached as reached:
        verdict, message = "error", f"{where}{reached}"
    except Exception as error:  # noqa: BLE001 - a broken model must become an error cell
        verdict, message = "error", f"{where}{type(error).__name__}: {error}"
    val_summary = SeedSummary.of(val_aucs) if val_aucs else None
    test_summary = SeedSummary.of(test_aucs) if test_aucs else None
    return CellResult(
        model=spec.name, test=test.name, verdict=verdict,
        expected=None if expected is None else expected.verdict,
        expected_reason=None if expected is None else expected.reason,
        seeds=tuple(int(s) for s in seeds), val_auc=val_summary, test_auc=test_summary,
        seconds=time.monotonic() - started, message=message,
        budget_overrides=dict(spec.budget), training=how,
        contract=None if contract is None else contract.as_dict(),
        control_auc=SeedSummary.of(control_aucs) if control_aucs else None,
        control_skipped=control_skipped,
    )


_CONTRACTS: dict[tuple[int, int, int], tuple[ModelSpec, ContractOutcome]] = {}


def contract_of(spec: ModelSpec, seed: int, dim: int) -> ContractOutcome:
    """The contract check (:mod:`mil_assert.contract`) of ``spec``'s model built from
    ``seed``, once per process for each model, seed and dimension."""
    key = (id(spec), seed, dim)
    if key not in _CONTRACTS:
        _CONTRACTS[key] = (spec, check_contract(build_model(spec, seed, dim), dim, seed))
    return _CONTRACTS[key][1]
