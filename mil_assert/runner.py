"""Run many (model, test) cells outside pytest: serially or in worker processes, with progress.

Used by the Python API (:func:`mil_assert.check`) and ``mil-assert check``. Every cell is
one :func:`mil_assert.harness.run_cell`, the same as under pytest, so the routes give the
same per-seed AUCs. With ``jobs > 1`` the cells run in that many spawned processes; each
loads the model again from its reference (a ``--mil-model`` string, or a picklable
``ModelSpec``), so results equal ``jobs = 1``. A KeyboardInterrupt stops the run and
keeps the cells that finished.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mil_assert.defaults import Budget
from mil_assert.harness import resolve_device, run_cell
from mil_assert.loading import as_spec, as_specs, model_items
from mil_assert.registry import ModelSpec
from mil_assert.results import CellResult
from mil_assert.synthetic import TESTS


@dataclass(frozen=True)
class Model:
    """A model to judge and how a worker process finds it again.

    ``ref`` is the ``--mil-model`` item string it was loaded from (resolved against
    ``base_dir``), or the :class:`ModelSpec` itself (it must then pickle).
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


@dataclass
class CellsOutcome:
    results: list[CellResult]
    interrupted: bool
    total: int


def run_cells(models: Sequence[Model], tests: Sequence[str], run: Run, jobs: int = 1,
              progress: bool = True, executor: str = "processes",
              address: str | None = None) -> CellsOutcome:
    """Train and judge every (model, test) cell; model-major, tests in the given order.

    Args:
        jobs: worker processes (1: in this process).
        progress: show a progress bar over the cells (tqdm, on standard error) with its
            ETA; in this process it advances after every training epoch.
        executor: ``"processes"`` (this machine, ``jobs`` processes) or ``"ray"``: one
            Ray task per cell on the cluster at ``address`` (:mod:`mil_assert.ray_executor`;
            ``jobs`` is then unused).
    """
    return run_cell_list([(model, test) for model in models for test in tests], run, jobs,
                         progress, executor, address)


def run_cell_list(cells: Sequence[tuple[Model, str]], run: Run, jobs: int = 1,
                  progress: bool = True, executor: str = "processes",
                  address: str | None = None) -> CellsOutcome:
    """Train and judge the given ``(model, test)`` cells; see :func:`run_cells`."""
    cells = list(cells)
    bar = tqdm(total=len(cells), unit="cell", disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.1f}/{total} cells [{elapsed}<{remaining}]{postfix}")
    results: list[CellResult] = []
    try:
        if executor == "ray":
            from mil_assert.ray_executor import run_on_ray

            run_on_ray(cells, run, bar, results, address)
        elif jobs <= 1 or len(cells) <= 1:
            _run_here(cells, run, bar, results)
        else:
            _run_in_processes(cells, run, jobs, bar, results)
    except KeyboardInterrupt:
        return CellsOutcome(results, True, len(cells))
    finally:
        bar.close()
    return CellsOutcome(results, False, len(cells))


def _run_here(cells: list[tuple[Model, str]], run: Run, bar: tqdm,
              results: list[CellResult]) -> None:
    device = resolve_device(run.device)
    for done, (model, test) in enumerate(cells):
        bar.set_postfix_str(f"{model.spec.name} on {test}")
        result = run_cell(model.spec, TESTS[test], run.seeds, run.budget, run.dim, device,
                          progress=_within_cell(bar, done))
        _advance_to(bar, done + 1)  # whole cell, also when it stopped early with an error
        results.append(result)


def _within_cell(bar: tqdm, done: int) -> Callable[[float], None]:
    """``progress(fraction)`` for the cell after ``done`` finished ones: the bar moves by
    the fraction, never past the cell's end (fractions may sum to a little over 1 in
    floating point, which made tqdm warn and show a negative ETA)."""
    def advance(fraction: float) -> None:
        _advance_to(bar, min(bar.n + fraction, done + 1))

    return advance


def _advance_to(bar: tqdm, position: float) -> None:
    bar.n = position  # set, not added, so the last cell ends exactly at the total
    bar.update(0)  # redraws at tqdm's usual rate


def _run_in_processes(cells: list[tuple[Model, str]], run: Run, jobs: int, bar: tqdm,
                      results: list[CellResult]) -> None:
    for model, _ in cells:
        if not isinstance(model.ref, str):
            try:
                pickle.dumps(model.ref)
            except Exception as error:  # noqa: BLE001 - any pickling failure means the same
                raise ValueError(f"jobs > 1 sends each model to a worker process, and model "
                                 f"{model.spec.name!r} cannot be pickled ({error}); give it "
                                 f"as 'pkg.module:factory' or 'path/to/file.py:factory', or "
                                 f"use jobs=1") from None
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(cells))
    numbers = context.Queue()
    for number in range(workers):
        numbers.put(number)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(numbers, threads, run.device)) as pool:
        pending: dict[Future, str] = {
            pool.submit(_worker_cell, model.ref, model.base_dir, test, run): model.spec.name
            for model, test in cells}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    pending.pop(future)
                    results.append(future.result())
                    bar.set_postfix_str(f"{results[-1].model} on {results[-1].test}")
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


_WORKER_DEVICE: torch.device | None = None


def _start_worker(numbers: Any, threads: int, device: str) -> None:
    """A worker process takes its number (for its GPU, round robin) and its share of cores."""
    global _WORKER_DEVICE
    torch.set_num_threads(threads)
    _WORKER_DEVICE = resolve_device(device, numbers.get())


def _worker_cell(ref: str | ModelSpec, base_dir: Path, test: str, run: Run) -> CellResult:
    spec = as_spec(ref, base_dir)
    return run_cell(spec, TESTS[test], run.seeds, run.budget, run.dim, _WORKER_DEVICE)
