"""Verdicts across regimes: the sweep behind ``reports/regimes.json``.

    mil-assert sweep mi_net abmil --tests single_concept --bag-sizes default,1000 \\
        --instances digits --data benchmarks/musk1 --budgets default,wsi --seeds 3 \\
        --report reports/regimes.json

A sweep judges the same models on the same tests at several *points*, each a regime
(:class:`mil_assert.synthetic.regime.Regime`: bag size, digit instances, the user's
bags), an instance dimension and a named budget (:data:`mil_assert.defaults.BUDGETS`).
The axes vary one at a time from the base point (the tests' own Gaussian bags at the
first dimension): every bag size, every non-Gaussian instance kind, every data folder
and every further dimension is one regime, and each regime is judged under every
budget. A point runs as ``mil-assert check`` would with those options; on the user's
bags only the tests their regime builds run (``single_concept``).

The result holds one ``mil-assert/report/v1`` report per point, with the point's wall
time, written after every point, so an interrupted sweep keeps the points it finished.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from mil_assert.defaults import named_budget
from mil_assert.files import write_json_atomic
from mil_assert.report import build_report, environment, report_results
from mil_assert.results import untrained_models
from mil_assert.runner import Model, Run, run_cell_list
from mil_assert.synthetic.regime import Regime

SCHEMA = "mil-assert/sweep/v1"


@dataclass(frozen=True)
class Point:
    """One point of a sweep: where the bags come from, their dimension, the budget."""

    regime: Regime
    dim: int
    budget: str

    @property
    def label(self) -> str:
        """A short column name: ``"~1000 instances, D = 16, wsi"``, ``"digits, D = 16,
        default"``, ``"musk1 + poison, D = 166, default"``."""
        regime = self.regime
        if regime.data is not None:
            where = f"{Path(regime.data).name} + poison"
        elif regime.instances != "gaussian":
            where = regime.instances
        elif regime.bag_size is not None:
            where = f"~{regime.bag_size} instances"
        else:
            where = "the tests' own bags"
        return f"{where}, D = {regime.instance_dim(self.dim)}, {self.budget}"


def sweep_points(dims: Sequence[int], bag_sizes: Sequence[int | None],
                 instances: Sequence[str], data: Sequence[str],
                 budgets: Sequence[str]) -> list[Point]:
    """The points of a sweep, one axis at a time from the base point, each regime under
    every budget (see the module docstring). ``None`` in ``bag_sizes`` is the tests' own
    size; the first of ``dims`` is the dimension of every regime but the other dims'."""
    base_dim = dims[0]
    regimes = [(Regime(bag_size=size), base_dim) for size in bag_sizes]
    regimes += [(Regime(instances=kind), base_dim) for kind in instances if kind != "gaussian"]
    regimes += [(Regime(data=folder), base_dim) for folder in data]
    regimes += [(Regime(), dim) for dim in dims[1:]]
    if not regimes or "gaussian" in instances and not bag_sizes:
        regimes.insert(0, (Regime(), base_dim))
    points = [Point(regime, dim, budget) for regime, dim in regimes for budget in budgets]
    return list(dict.fromkeys(points))


def sweep(models: Sequence[Model], tests: Sequence[str], run: Run, points: Sequence[Point],
          *, jobs: int = 1, progress: bool = True,
          report: str | os.PathLike[str] | None = None,
          announce: Callable[[str], None] = print, executor: str = "processes",
          address: str | None = None) -> dict[str, Any]:
    """Judge every (model, test) cell at every point; return the sweep's JSON-ready dict.

    ``run`` gives the seeds, the device and the time limit; each point replaces its
    regime, dimension and budget. With ``report``, the result is written after every
    point; ``"interrupted"`` marks a sweep stopped before its last point.
    """
    names = [m.spec.name for m in models]
    data: dict[str, Any] = {
        "schema": SCHEMA, "models": names, "tests": list(tests), "seeds": list(run.seeds),
        "environment": environment(run.device), "points": [], "interrupted": False,
        "stopped_by": None,
    }
    started = time.monotonic()
    done_cells = 0
    all_cells = sum(len(cells_at(point, tests)) * len(models) for point in points)
    for number, point in enumerate(points, 1):
        point_tests = cells_at(point, tests)
        eta = ""
        if done_cells:
            left = (time.monotonic() - started) / done_cells * (all_cells - done_cells)
            eta = (f"; about {left:.0f} s left for the sweep" if left < 120 else
                   f"; about {left / 60:.0f} min left for the sweep")
        announce(f"point {number}/{len(points)}: {point.label}: "
                 f"{len(models) * len(point_tests)} cells{eta}")
        point_run = replace(run, dim=point.dim, regime=point.regime,
                            budget=replace(named_budget(point.budget),
                                           max_seconds=run.budget.max_seconds))
        point_started = time.monotonic()
        outcome = run_cell_list([(m, t) for m in models for t in point_tests], point_run,
                                jobs, progress, executor, address)
        done_cells += len(models) * len(point_tests)
        data["points"].append({
            "label": point.label, "budget": point.budget, "dim": point.dim,
            "regime": point.regime.as_dict(),
            "seconds": round(time.monotonic() - point_started, 1),
            "report": build_report(outcome.results, names, run.seeds, point_run.budget,
                                   point.regime.instance_dim(point.dim), run.device,
                                   tests=point_tests, regime=point.regime),
        })
        data["interrupted"] = outcome.interrupted
        data["stopped_by"] = None if outcome.signal is None else int(outcome.signal)
        if report is not None:
            write_json_atomic(data, report)
        if outcome.interrupted:
            break
    return data


def cells_at(point: Point, tests: Sequence[str]) -> list[str]:
    """The tests of ``tests`` that ``point``'s regime builds."""
    applicable = point.regime.tests()
    return [t for t in tests if applicable is None or t in applicable]


def sweep_table(data: dict[str, Any]) -> str:
    """A Markdown table: one row per point, one column per (model, test), each cell the
    verdict and the mean test AUC (empty where the point's regime does not build the
    test), then the point's wall time."""
    columns: dict[tuple[str, str], None] = {}
    rows = []
    for point in data["points"]:
        cells = {}
        for cell in point["report"]["results"]:
            key = (cell["model"], cell["test"])
            columns.setdefault(key)
            mean = (cell.get("test_auc") or {}).get("mean")
            cells[key] = cell["verdict"] + ("" if mean is None else f" {mean:.2f}")
        rows.append((point["label"], cells, f"{point['seconds']:.0f} s"))
    headers = ["point", *(f"{model} {test}" for model, test in columns), "wall time"]
    body = [[label, *(cells.get(key, "") for key in columns), wall]
            for label, cells, wall in rows]
    return tabulate(body, headers=headers, tablefmt="github")


def gate_failures(data: dict[str, Any]) -> list[str]:
    """One line per cell of any point that fails the gate, and per model that learned
    nothing at a point (as ``mil-assert check`` would fail them)."""
    lines = []
    for point in data["points"]:
        results = report_results(point["report"])
        lines += [f"{point['label']}: {r.gate_failure}" for r in results
                  if r.gate_failure is not None]
        lines += [f"{point['label']}: learned nothing: {name}"
                  for name in untrained_models(results)]
    return lines
