"""The Python API, for notebooks and scripts: judge models without pytest.

    >>> import mil_assert
    >>> report = mil_assert.check("models/my_model.py:build", seeds=5)   # doctest: +SKIP
    >>> print(report.matrix)                      # the compliance matrix
    >>> report.to_frame()                         # one row per model x test x seed
    >>> report.save("mil-report.json")            # the JSON report (mil-assert/report/v1)
    >>> report.passed                             # the CI gate

The same harness, verdict rule and gate as the pytest plugin and ``mil-assert check``:
the same model and seeds give the same per-seed AUCs and verdicts on every route.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mil_assert.defaults import (
    DEFAULT_SEEDS,
    INSTANCE_DIM,
    MIN_SEEDS,
    Budget,
    named_budget,
    seed_list,
)
from mil_assert.files import write_json_atomic
from mil_assert.interrupts import signal_name
from mil_assert.loading import select_tests
from mil_assert.report import build_report, contract_lines, format_matrix, interruption
from mil_assert.results import CellResult, untrained_lines, untrained_models
from mil_assert.runner import CellsOutcome, Model, Run, load_models, run_cells
from mil_assert.synthetic import TESTS
from mil_assert.synthetic.regime import Regime, RegimeError
from mil_assert.verdict import seed_outcome


@dataclass(frozen=True)
class ComplianceReport:
    """The cells of one run, with the settings they were run under.

    Attributes:
        results: one :class:`~mil_assert.results.CellResult` per finished cell, in
            matrix order.
        models: model names, in the order given.
        seeds, budget, dim, device: the run's settings (``budget`` before each model's
            own overrides, which each cell records).
        interrupted: the run was stopped (Ctrl-C, SIGTERM or SIGHUP) before every cell
            finished.
        cells: how many cells the run was asked for.
        tests: the tests the run was asked for, in report order.
        stopped_by: the signal that stopped an interrupted run (``"SIGINT"`` for Ctrl-C,
            ``"SIGTERM"``, ``"SIGHUP"``), else ``None``.
        regime: where the bags came from (:mod:`mil_assert.synthetic.regime`).
    """

    results: tuple[CellResult, ...]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    budget: Budget
    dim: int
    device: str
    interrupted: bool = False
    cells: int = 0
    tests: tuple[str, ...] = ()
    stopped_by: str | None = None
    regime: Regime = Regime()

    @property
    def matrix(self) -> str:
        """The compliance matrix as text (Markdown): verdict and test AUC mean ± std."""
        return format_matrix(self.results, self.models)

    @property
    def failures(self) -> list[str]:
        """One line per cell that fails the gate (see ``CellResult.gate_failure``), then
        one per model that learned nothing (``untrained``)."""
        return ([r.gate_failure for r in self.results if r.gate_failure is not None]
                + untrained_lines(self.results))

    @property
    def untrained(self) -> list[str]:
        """Models that learned none of the training distributions of their cells: each
        fails the gate (:func:`mil_assert.results.untrained_models`)."""
        return untrained_models(self.results)

    @property
    def passed(self) -> bool:
        """The gate: every cell finished and passes, is inconclusive, or matches its
        declaration."""
        return not self.interrupted and not self.failures and len(self.results) == self.cells

    def as_dict(self) -> dict[str, Any]:
        """The JSON report (schema ``mil-assert/report/v1``), as written by ``save``."""
        asked = [(model, test) for model in self.models for test in self.tests]
        return build_report(
            self.results, self.models, self.seeds, self.budget, self.dim, self.device,
            tests=self.tests or None,
            interrupted=interruption(self.stopped_by or "SIGINT", self.results,
                                     asked if self.tests else None)
            if self.interrupted else None, regime=self.regime)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON report atomically (temporary file, synced, then renamed), with
        the permissions the umask gives; a missing parent folder is created."""
        return write_json_atomic(self.as_dict(), path)

    def to_frame(self) -> Any:
        """A pandas DataFrame, one row per model x test x seed.

        Columns: ``model``, ``test``, ``seed``, ``val_auc``, ``test_auc``,
        ``seed_outcome`` (what that seed shows under the verdict rule: kept, partial,
        lost, inverted, unlearned, learned, not learned; empty where the seed did not finish),
        ``verdict`` (the cell's), ``expected`` (the declared verdict or None).
        """
        import pandas as pd

        rows = []
        for r in self.results:
            val = r.val_auc.per_seed if r.val_auc is not None else ()
            tst = r.test_auc.per_seed if r.test_auc is not None else ()
            ctl = r.control_auc.per_seed if r.control_auc is not None else ()
            for i, seed in enumerate(r.seeds):
                finished = i < len(val) and i < len(tst)
                rows.append({
                    "model": r.model, "test": r.test, "seed": seed,
                    "val_auc": val[i] if finished else float("nan"),
                    "test_auc": tst[i] if finished else float("nan"),
                    "seed_outcome": (seed_outcome(TESTS[r.test].kind, val[i], tst[i],
                                                  ctl[i] if i < len(ctl) else None,
                                                  TESTS[r.test].partial_rule_auc)
                                     if finished and r.test in TESTS else None),
                    "verdict": r.verdict, "expected": r.expected,
                })
        return pd.DataFrame(rows, columns=["model", "test", "seed", "val_auc", "test_auc",
                                           "seed_outcome", "verdict", "expected"])

    def __str__(self) -> str:
        status = "passed" if self.passed else "failed"
        if self.interrupted:
            status = f"interrupted after {len(self.results)} of {self.cells} cells"
        return "\n".join([self.matrix, *contract_lines(self.results), "", f"gate: {status}"])

    def _repr_markdown_(self) -> str:  # Jupyter shows the matrix as a table
        return str(self).replace("\ngate:", "\n**gate:**")


def check(
    models: Any,
    *,
    tests: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    device: str = "auto",
    budget: str | Mapping[str, Any] | None = None,
    dim: int = INSTANCE_DIM,
    jobs: int = 1,
    progress: bool = True,
    base_dir: str | os.PathLike[str] | None = None,
    executor: str = "processes",
    address: str | None = None,
    max_seconds: float | None = None,
    bag_size: int | None = None,
    instances: str = "gaussian",
    data: str | os.PathLike[str] | None = None,
) -> ComplianceReport:
    """Train and judge ``models`` on the algorithmic unit tests; return the report.

    Args:
        models: one model or a list: a :class:`~mil_assert.registry.ModelSpec`, a factory
            ``factory(dim) -> torch.nn.Module``, or a string as for ``--mil-model``
            (``"abmil"``, ``"pkg.module:factory"``, ``"path/to/file.py:factory"``;
            comma-separated for several).
        tests: test names (default all four).
        seeds: a number of seeds S (seeds 0..S-1, S >= 2) or the seeds themselves.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        budget: a named budget (``"default"``, or ``"wsi"``: one bag per step, AdamW;
            :data:`~mil_assert.defaults.BUDGETS`), or overrides of
            :class:`~mil_assert.defaults.Budget` fields for every model (``"name"`` picks
            the budget they override); a model's own ``ModelSpec.budget`` still applies on
            top.
        dim: instance dimension D of the synthetic bags.
        jobs: worker processes; results equal ``jobs=1``.
        progress: show a progress bar with ETA (tqdm).
        base_dir: where model strings' relative paths start (default: current directory).
        max_seconds: a time limit per seed of training (``Budget.max_seconds``; default
            none); a seed that exceeds it stops, the seeds that finished are kept. A
            model's own ``ModelSpec.budget`` may set its own.
        executor: ``"processes"`` (this machine) or ``"ray"``: one Ray task per cell
            (:mod:`mil_assert.ray_executor`; ``pip install "mil-assert[ray]"``), with the
            same per-seed AUCs.
        address: the Ray cluster (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:PORT"``;
            default ``$RAY_ADDRESS``, else a new local Ray instance).
        bag_size: about this many instances per bag (the witnesses unchanged; default:
            each test's own, about 13); :mod:`mil_assert.synthetic.regime`.
        instances: ``"gaussian"`` (default) or ``"digits"``: every instance a digit image
            (:mod:`mil_assert.synthetic.digits`; ``pip install "mil-assert[digits]"``).
        data: a folder of your own bags (one ``BAG.pt`` float tensor ``[N, D]`` each and a
            ``labels.csv`` with ``bag,label``), judged on the ``single_concept`` poison
            test (:mod:`mil_assert.synthetic.own_data`).

    Raises:
        ValueError: a model that cannot be loaded, an unknown test, too few seeds, a bad
            budget field or device; the message names what is wrong.

    A KeyboardInterrupt, SIGTERM or SIGHUP (handled so while the cells run) stops the
    run and its worker processes; the report of the finished cells is returned with
    ``interrupted=True`` and ``stopped_by`` naming the signal.
    """
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: give at least one worker process")
    loaded, names, run = prepare(models, tests, seeds, device, budget, dim, base_dir,
                                 executor, address, max_seconds, bag_size, instances, data)
    outcome = run_cells(loaded, names, run, jobs=jobs, progress=progress, executor=executor,
                        address=address)
    return report_of(outcome, [m.spec.name for m in loaded], run, names)


def prepare(
    models: Any, tests: str | Sequence[str] | None, seeds: int | Sequence[int], device: str,
    budget: str | Mapping[str, Any] | None = None, dim: int = INSTANCE_DIM,
    base_dir: str | os.PathLike[str] | None = None, executor: str = "processes",
    address: str | None = None, max_seconds: float | None = None,
    bag_size: int | None = None, instances: str = "gaussian",
    data: str | os.PathLike[str] | None = None,
) -> tuple[list[Model], list[str], Run]:
    """Load and check everything a run needs before any training; bad input raises
    ``ValueError`` naming it. ``"auto"`` is resolved to the device it means here (with
    ``executor="ray"``: on the cluster at ``address``, which is connected to here)."""
    from mil_assert.devices import resolve_device

    if executor not in ("processes", "ray"):
        raise ValueError(f"executor={executor!r}: use 'processes' or 'ray'")

    loaded = load_models(models, Path.cwd() if base_dir is None else Path(base_dir))
    regime = Regime(bag_size=bag_size, instances=instances,
                    data=None if data is None else str(Path(data).expanduser().resolve()))
    names = select_tests(tests if tests is not None or regime.tests() is None
                         else list(regime.tests()))
    unfit = [name for name in names if regime.tests() is not None and name not in regime.tests()]
    if unfit:
        raise RegimeError(f"data: the user's own bags build the shift test of single_concept "
                          f"only; drop {', '.join(unfit)} from --tests")
    regime.instance_dim(_dim(dim))  # the user's bags are read and checked here, once
    # a CUDA request without CUDA fails here, once (on Ray: in connect, for the cluster)
    resolved = resolve_device(device) if executor == "processes" else None
    run = Run(seeds=tuple(seed_list(seeds) if isinstance(seeds, int) else _seeds(seeds)),
              budget=with_time_limit(budget_of(budget), max_seconds),
              dim=_dim(dim),
              device=resolved.type if resolved is not None and device == "auto" else device,
              regime=regime)
    if executor == "ray":
        from mil_assert.ray_executor import connect

        run = replace(run, device=connect(address, device))
    return loaded, names, run


def budget_of(budget: str | Mapping[str, Any] | None) -> Budget:
    """The run's budget: a name in :data:`mil_assert.defaults.BUDGETS` (``"wsi"``), or
    overrides of one (``{"epochs": 30}`` on the default, ``{"name": "wsi", "epochs": 10}``
    on ``wsi``). Bad names and fields are a ``ValueError`` naming them."""
    if isinstance(budget, str):
        return named_budget(budget)
    overrides = dict(budget or {})
    return named_budget(overrides.pop("name", "default")).with_overrides(overrides)


def with_time_limit(budget: Budget, max_seconds: float | None) -> Budget:
    """``budget`` with the route's time limit per seed (``--max-seconds``,
    ``--mil-max-seconds``, ``max_seconds=``); ``None`` leaves it as it is. A bad value is
    a ``ValueError`` naming it."""
    if max_seconds is None:
        return budget
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)):
        raise ValueError(f"max_seconds={max_seconds!r}: give a time limit per seed in "
                         f"seconds, or None for no limit")
    return replace(budget, max_seconds=float(max_seconds))


def report_of(outcome: CellsOutcome, models: Sequence[str], run: Run,
              tests: Sequence[str]) -> ComplianceReport:
    from mil_assert.report import order_results

    return ComplianceReport(
        results=tuple(order_results(outcome.results, models)), models=tuple(models),
        seeds=run.seeds, budget=run.budget, dim=run.dim, device=run.device,
        interrupted=outcome.interrupted, cells=outcome.total, tests=tuple(tests),
        stopped_by=None if outcome.signal is None else signal_name(outcome.signal),
        regime=run.regime)


def _seeds(seeds: Sequence[int]) -> list[int]:
    values = [int(s) for s in seeds]
    if len(values) < MIN_SEEDS or len(set(values)) < len(values) or min(values) < 0:
        raise ValueError(f"seeds={list(seeds)}: give at least {MIN_SEEDS} distinct "
                         f"non-negative seeds, or a number of seeds")
    return values


def _dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim={dim!r}: the instance dimension must be a positive integer")
    return dim
