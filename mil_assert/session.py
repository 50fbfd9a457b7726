"""The state of a compliance session under pytest, apart from the plugin's hooks
(:mod:`mil_assert.plugin`), as pytest-benchmark keeps its session apart from its plugin.

:class:`Suite` holds the run's settings (models, seeds, device, dimension, budget, the
bags' regime), the results gathered so far and the worker process that runs the cells;
``config.stash[STATE]`` holds it for the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mil_assert.defaults import Budget

if TYPE_CHECKING:
    import torch

    from mil_assert.registry import ModelSpec
    from mil_assert.results import CellResult

DEFAULT_REGIME_OPTIONS = {"bag_size": None, "instances": "gaussian", "data": None}


@dataclass
class Suite:
    """The run's compliance settings; models and device are resolved when first needed."""

    model_option: str | None
    seeds: list[int]
    device_name: str
    dim: int
    base_dir: Path
    report_path: Path | None
    worker: int | None
    budget: Budget = field(default_factory=Budget)
    results: list[CellResult] = field(default_factory=list)
    cells: list[tuple[str, str]] | None = None  # the compliance cells collected (not xdist)
    others_deselected: list[str] = field(default_factory=list)
    _models: list[ModelSpec] | None = None
    _device: torch.device | None = None
    regime_options: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_REGIME_OPTIONS))
    _regime: Any = None  # a mil_assert.synthetic.regime.Regime, built on first use
    _refs: dict[str, str] | None = None
    _worker: Any = None  # a mil_assert.isolation.CellWorker, started by the first cell

    @property
    def models(self) -> list[ModelSpec]:
        if self._models is None:
            from mil_assert.loading import resolve_models

            self._models = resolve_models(self.model_option, self.base_dir)
            if not (self.model_option or "").strip():  # no model named: the default run
                self._models = [spec for spec in self._models if spec.in_default_run]
        return self._models

    @property
    def device(self) -> torch.device:
        if self._device is None:
            import torch

            from mil_assert.devices import resolve_device

            self._device = resolve_device(self.device_name, self.worker)
            if self.worker is not None and self._device.type == "cpu":
                torch.set_num_threads(1)  # xdist workers share the cores; one thread each
        return self._device

    @property
    def regime(self) -> Any:
        """Where the bags come from (:mod:`mil_assert.synthetic.regime`)."""
        if self._regime is None:
            from mil_assert.synthetic.regime import Regime

            options = dict(self.regime_options)
            if options["data"] is not None:
                options["data"] = str((self.base_dir / Path(options["data"]).expanduser())
                                      .resolve())
            self._regime = Regime(**options)
        return self._regime

    def reference(self, spec: ModelSpec) -> str | ModelSpec:
        """How a worker process finds ``spec`` again: its item of the model option, else
        the spec itself (built-in and decorator models)."""
        if self._refs is None:
            from mil_assert.loading import split_top_level

            items = [item.strip() for item in split_top_level(self.model_option or "", ",")]
            self._refs = ({named.name: item for item, named in zip(items, self.models,
                                                                   strict=False)}
                          if self.model_option else {})
        return self._refs.get(spec.name, spec)

    def run_cell(self, spec: ModelSpec, test: str) -> CellResult:
        """One cell in this session's worker process (:mod:`mil_assert.isolation`), so that
        a model that ends its process becomes an ``error`` cell; a model that cannot be
        sent there runs here."""
        from mil_assert.cells import Model, Run
        from mil_assert.isolation import CellWorker, sendable
        from mil_assert.runner import unisolated_cell

        applicable = self.regime.tests()
        if applicable is not None and test not in applicable:
            pytest.skip(f"--mil-data judges the user's own bags on {', '.join(applicable)} "
                        f"only")
        run = Run(tuple(self.seeds), self.budget, self.dim, str(self.device), self.regime)
        model = Model(spec, self.reference(spec), self.base_dir)
        if not sendable(model.ref):
            return unisolated_cell(model, test, run, self.device)
        if self._worker is None:
            import torch

            self._worker = CellWorker(torch.get_num_threads(), self.device_name, self.worker)
        return self._worker.run(model, test, run)

    def close(self) -> None:
        """End the worker process, if one was started."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None


STATE = pytest.StashKey[Suite]()


def settings(suite: Suite) -> str:
    """One line with the run's seeds, device, instance dimension and default budget."""
    budget = suite.budget
    return (f"{len(suite.seeds)} seeds per cell; device {suite.device}; D = {suite.dim}; "
            f"{budget.name} budget {budget.epochs} epochs x {budget.n_train_bags} bags, "
            f"batch {budget.batch_size}, {budget.optimizer} lr {budget.lr:g}"
            + (f" weight decay {budget.weight_decay:g}" if budget.weight_decay else "")
            + ("" if budget.max_seconds is None else
               f"; time limit {budget.max_seconds:g} s per seed")
            + ("" if suite.regime_options == DEFAULT_REGIME_OPTIONS else
               f"; {suite.regime.describe()}"))
