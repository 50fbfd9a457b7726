"""The one place for the suite's defaults: training budget, seeds, data size.

This module imports no torch, so the pytest plugin can read it in every session.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_SEEDS = 5
"""Seeds per (model, test) cell; ``--mil-seeds`` changes it."""

MIN_SEEDS = 2
"""A verdict needs at least this many seeds: a violation needs the finding reproduced."""

INSTANCE_DIM = 16
"""Instance dimension D of the synthetic bags (the prototype in shared/GUIDE.md used 16)."""


TRAIN_BAGS = 500
"""Training bags per seed (half positive)."""

EVAL_BAGS = 500
"""Bags in each of the validation and test sets (250 + 250: the verdict rule's
thresholds are stated in standard deviations of an AUC over this many bags)."""

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Budget:
    """A fixed training budget, identical on CPU and GPU so verdicts never depend on hardware.

    Attributes:
        n_train_bags: training bags per seed (half positive).
        n_eval_bags: bags in each of the validation and test sets.
        epochs: passes over the training bags.
        batch_size: bags per optimizer step (padded, with masks).
        optimizer: ``"adam"`` or ``"adamw"``.
        lr: learning rate.
        weight_decay: weight decay of the optimizer.
        lr_schedule: ``"constant"`` or ``"cosine"`` (cosine decay of the learning rate to 0
            over all optimiser steps); a model's own ``lr_factor`` hook replaces it
            (:mod:`mil_assert.procedure`).
        warmup_epochs: epochs of linear learning-rate warm-up from 0 before the schedule.
        max_seconds: a time limit of this many seconds per seed of a cell, the user's
            choice (``None``: no limit, the default); one clock for the cell
            (:func:`mil_assert.harness.cell_deadline`). When the cell passes it, the cell is
            ``error``; the groups of seeds that had finished keep their AUCs in the report,
            and the message says how far the others got. It never changes a verdict
            otherwise.
        restarts: trainings per seed from independent initialisations, the one with the
            highest validation AUC kept; ``None`` (the default): by the bags' size,
            :data:`RESTARTS_BY_BAG_SIZE` (one start at the tests' own sizes).
        name: the named budget these fields started from (:data:`BUDGETS`), recorded in
            the report.
    """

    n_train_bags: int = TRAIN_BAGS
    n_eval_bags: int = EVAL_BAGS
    epochs: int = 60
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    max_seconds: float | None = None
    restarts: int | None = None
    name: str = "default"

    def __post_init__(self) -> None:
        for name in ("n_train_bags", "n_eval_bags", "epochs", "batch_size", "restarts"):
            value = getattr(self, name)
            if name == "restarts" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"budget field {name} must be a positive integer, got {value!r}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"budget field optimizer must be 'adam' or 'adamw', "
                             f"got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"budget field lr must be positive, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"budget field lr_schedule must be one of {LR_SCHEDULES}, got "
                             f"{self.lr_schedule!r}")
        if (isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int)
                or not 0 <= self.warmup_epochs < self.epochs):
            raise ValueError(f"budget field warmup_epochs must be an integer from 0 to epochs "
                             f"- 1 = {self.epochs - 1}, got {self.warmup_epochs!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"budget field max_seconds must be positive seconds or None (no "
                             f"limit), got {self.max_seconds!r}")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Budget:
        """A copy with a model's overrides applied; unknown field names raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown budget field(s) {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


BUDGETS: dict[str, Budget] = {
    "default": Budget(),
    "wsi": Budget(epochs=25, batch_size=1, optimizer="adamw", lr=2e-4, weight_decay=1e-5,
                  name="wsi"),
}
"""Named budgets (``--budget NAME``, ``--mil-budget=NAME``, ``budget="NAME"``).

``default``: 60 epochs of mini-batches of 32 padded bags, Adam at lr 3e-3 (940 optimiser
steps over 500 bags), the budget every reference verdict was measured with.

``wsi``: how whole-slide MIL is trained: one bag per optimiser step, AdamW at lr 2e-4 and
weight decay 1e-5 (CLAM: Lu et al., Nat. Biomed. Eng. 2021, Adam with these values;
TransMIL: Shao et al., NeurIPS 2021, the same values), for 25 epochs over the 500
training bags: 12,500 steps, about the 13,500 of 50 epochs over CAMELYON16's 270
training slides (Bejnordi et al., JAMA 2017), the fewest epochs of the 50-200 that slide
papers train for.
"""


def named_budget(name: str) -> Budget:
    """The budget called ``name`` in :data:`BUDGETS`; an unknown name is a ``ValueError``
    listing the names."""
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}: use one of {', '.join(BUDGETS)}")
    return BUDGETS[name]


RESTARTS_BY_BAG_SIZE = ((100, 1), (500, 3), (100_000, 5))
"""``(largest bag size, restarts)``: the restarts per seed a run with ``--bag-size N``
trains (a model's own ``restarts`` budget field wins). Up to 100 instances per bag one
start learns, as at the default size; beyond, a maximum over hundreds of instances
often never starts to train from a given initialisation (its gradient reaches one
instance per bag, at first a background one), whatever the budget: measured here at
about 1,000 instances, ``mi_net`` learned ``single_concept`` from 1 of 3 initialisations
(validation AUC 0.51, 0.70, 0.93) and its capacity control from 2 of 3. With a chance
p of learning per start, k starts learn with 1 - (1 - p)^k: 5 starts give 87% at p = 1/3,
96% at p = 1/2; 3 give 96% at the 2 of 3 seen at about 200 instances."""


def restarts_for(bag_size: int | None) -> int:
    """Restarts per seed for a run of bags of about ``bag_size`` instances (``None``:
    the tests' own bags)."""
    if bag_size is None:
        return 1
    return next(restarts for largest, restarts in RESTARTS_BY_BAG_SIZE if bag_size <= largest)


def seed_list(n_seeds: int) -> list[int]:
    """Seeds ``0 .. n_seeds - 1`` of a run; a verdict needs at least ``MIN_SEEDS``."""
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < MIN_SEEDS:
        raise ValueError(f"{n_seeds!r} seeds: a verdict needs at least {MIN_SEEDS} seeds "
                         f"(seeds 0..S-1 with S >= {MIN_SEEDS}); the default is {DEFAULT_SEEDS}")
    return list(range(n_seeds))


DIMS = (8, 16, 32, 64, 256, 1024)
"""Instance dimensions of ``mil-assert dims``: from below the default (16) to a pretrained
encoder's width (pathology encoders give 384-1536 features)."""

CONFIRM_SEEDS = 12
"""Seeds of ``mil-assert dims``'s confirmation runs (positive controls, fragile cells and
cells near a threshold)."""

BENCHMARK_SEEDS = 8
"""Seeds ``mil-assert benchmark`` trains in each way it times."""
BENCHMARK_REPEATS = 3
"""Timed runs of each way; the median is reported."""
BENCHMARK_SLOW_SEEDS = 1
"""Seeds the slow loops of the benchmark really train (the rest is scaled)."""
BENCHMARK_SLOW_EPOCHS = 3
"""Epochs the slow loops of the benchmark really train (the rest is scaled)."""
