"""Training procedures: what a model does while it trains, beyond one loss on its bag logit.

Published MIL systems train with more than a loss: an EMA teacher updated after every
step (MHIM-MIL), a masking ratio or loss weight that follows the epoch, prototypes
updated from some epoch on (INS), a loss over the bags of a mini-batch (SC-MIL), several
bags packed into one sequence (PackMIL), a cosine learning-rate schedule with warm-up
(ACMIL, AEM), a first stage that trains a baseline. A model says what it does
with optional methods, in the spirit of Lightning's hooks and torchmil's
``compute_loss``; the harness calls them from its one training loop
(:func:`mil_assert.harness.fit`). The fixed budget is the same for every model: a
procedure changes what happens inside it, never how many bags or epochs a model gets.

Losses (at most one of ``loss`` and ``batch_loss``; see :mod:`mil_assert.adapters`):
    ``loss(X, mask, y) -> [B]``: batched model, one loss per bag.
    ``loss(x, y) -> []``: one-bag model, the loss of one bag, ``x`` as ``forward`` takes
        it, ``y`` a 0-d float; run for the bags of a mini-batch together where
        ``torch.func.vmap`` can run it.
    ``batch_loss(X, mask, y) -> []`` (batched) or ``batch_loss(bags, y) -> []`` (one-bag,
        ``bags`` a list): one loss over the mini-batch's bags (contrastive, packed). The
        bags are then coupled in training, so the seeds train one by one; the verdict is
        still per seed.

Schedule: the budget's ``lr_schedule`` and ``warmup_epochs``
(:class:`mil_assert.defaults.Budget`), or the model's own ``lr_factor(progress) ->
float``, which multiplies the budget's learning rate for the coming step.

Callbacks, each given a :class:`TrainingProgress`:
    ``on_train_epoch_start(progress)``: before each epoch.
    ``on_train_batch_end(progress)``: after each optimiser step (an EMA teacher).
    ``on_train_epoch_end(progress)``: after each epoch (prototypes, a change of stage).
They run with gradients enabled: wrap parameter updates in ``torch.no_grad()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mil_assert.defaults import Budget

CALLBACKS = ("on_train_epoch_start", "on_train_batch_end", "on_train_epoch_end")
HOOKS = (*CALLBACKS, "lr_factor", "loss", "batch_loss")


@dataclass(frozen=True)
class TrainingProgress:
    """Where training is when a hook is called.

    Attributes:
        epoch: the current epoch, 0-based.
        epochs: the budget's epochs.
        step: the current optimiser step, 0-based over the whole training (in
            ``on_train_batch_end``, the step just taken; in an epoch hook, the epoch's
            first step).
        steps_per_epoch: optimiser steps in one epoch.
    """

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def fraction(self) -> float:
        """Share of the training's steps taken before this one, in [0, 1)."""
        return self.step / self.total_steps


def hook(model: nn.Module, name: str) -> Callable | None:
    """The model's own hook ``name``, looked up on the model as its authors wrote it (the
    module inside :class:`mil_assert.adapters.BagLogits`), or ``None``."""
    inner = getattr(model, "model", model)
    method = getattr(inner, name, None)
    return method if callable(method) else None


def defined_hooks(model: nn.Module) -> list[str]:
    """The names of the procedure's hooks the model defines, for the report."""
    return [name for name in HOOKS if hook(model, name) is not None]


class Procedure:
    """The training procedure of one model: its callbacks and its learning rate per step."""

    def __init__(self, model: nn.Module, budget: Budget, steps_per_epoch: int) -> None:
        self.budget = budget
        self.steps_per_epoch = steps_per_epoch
        self.callbacks = {name: hook(model, name) for name in CALLBACKS}
        self.lr_factor = hook(model, "lr_factor") or self.named_schedule
        self.scheduled = (self.lr_factor is not self.named_schedule
                          or budget.lr_schedule != "constant" or budget.warmup_epochs > 0)

    def progress(self, epoch: int, step: int) -> TrainingProgress:
        return TrainingProgress(epoch, self.budget.epochs, step, self.steps_per_epoch)

    def call(self, name: str, progress: TrainingProgress) -> None:
        callback = self.callbacks[name]
        if callback is not None:
            callback(progress)

    def learning_rate(self, progress: TrainingProgress) -> float:
        """The budget's learning rate times the schedule's factor for this step."""
        factor = self.lr_factor(progress)
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
            raise ValueError(f"lr_factor must return a finite number >= 0, got {factor!r} "
                             f"at step {progress.step}")
        return self.budget.lr * float(factor)

    def named_schedule(self, progress: TrainingProgress) -> float:
        """The budget's schedule: linear warm-up over ``warmup_epochs``, then constant or
        cosine decay to 0 at the last step."""
        warmup = self.budget.warmup_epochs * self.steps_per_epoch
        if progress.step < warmup:
            return (progress.step + 1) / warmup
        if self.budget.lr_schedule == "constant":
            return 1.0
        span = max(1, progress.total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * (progress.step - warmup) / span))
