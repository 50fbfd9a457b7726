"""The cell vocabulary shared by every route: the models of a run, its settings, and the
cells that could not be judged.

It sits below the executors (:mod:`mil_assert.runner`, :mod:`mil_assert.isolation`,
:mod:`mil_assert.ray_executor`) and the pytest plugin, which all import it and none of
which it imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mil_assert.defaults import Budget
from mil_assert.harness import run_cell
from mil_assert.loading import as_specs, model_items
from mil_assert.registry import ModelSpec
from mil_assert.results import CellResult
from mil_assert.synthetic import TESTS
from mil_assert.synthetic.regime import Regime


@dataclass(frozen=True)
class Model:
    """A model to judge and how a worker process finds it again.

    ``ref`` is the ``--mil-model`` item string it was loaded from (resolved against
    ``base_dir``), or the :class:`ModelSpec` itself (sent to a worker when it pickles).
    """

    spec: ModelSpec
    ref: str | ModelSpec
    base_dir: Path


def load_models(models: Any, base_dir: Path) -> list[Model]:
    """The models to judge (see :func:`mil_assert.loading.as_spec`), each with its reference."""
    items = model_items(models)
    return [Model(spec, item if isinstance(item, str) else spec, base_dir)
            for item, spec in zip(items, as_specs(items, base_dir), strict=True)]


@dataclass(frozen=True)
class Run:
    """What every cell of a run shares."""

    seeds: tuple[int, ...]
    budget: Budget
    dim: int
    device: str
    regime: Regime = Regime()


def error_cell(spec: ModelSpec, test: str, run: Run, message: str,
               seconds: float = 0.0) -> CellResult:
    """The ``error`` cell of a model that could not be run, or ended its process."""
    expected = spec.expected.get(test)
    return CellResult(
        model=spec.name, test=test, verdict="error",
        expected=None if expected is None else expected.verdict,
        expected_reason=None if expected is None else expected.reason,
        seeds=tuple(run.seeds), val_auc=None, test_auc=None, seconds=seconds, message=message,
        budget_overrides=dict(spec.budget))


def guarded_cell(spec: ModelSpec, test: str, run: Run, device: torch.device | None,
                 progress: Callable[[float], None] | None = None,
                 note: Callable[[str], None] | None = None) -> CellResult:
    """:func:`mil_assert.harness.run_cell`, with a model that calls ``sys.exit`` turned
    into an ``error`` cell instead of ending the run."""
    try:
        return run_cell(spec, TESTS[test], run.seeds, run.budget, run.dim, device,
                        progress=progress, note=note, regime=run.regime)
    except SystemExit as exit_:
        return error_cell(spec, test, run, f"the model called sys.exit({exit_.code!r}); it "
                                           f"was not judged")
