"""Run many (model, test) cells outside pytest: serially or in worker processes, with progress.

Used by the Python API (:func:`mil_assert.check`) and ``mil-assert check``. Every cell is
one :func:`mil_assert.harness.run_cell`, the same as under pytest, so the routes give the
same per-seed AUCs. The cells run in worker processes (:mod:`mil_assert.isolation`):
one with ``jobs = 1``, ``jobs`` of them otherwise; each loads the model again from its
reference (a ``--mil-model`` string, or a picklable ``ModelSpec``), so results equal
``jobs = 1``, and a model that ends its process (``os._exit``, a crash) loses only that
cell, an ``error`` naming the exit status. A KeyboardInterrupt, SIGTERM or SIGHUP stops
the run, ends the workers and keeps the cells that finished.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait

import torch
from tqdm.auto import tqdm

from mil_assert.cells import Model, Run, error_cell, guarded_cell, load_models
from mil_assert.costs import longest_first, spec_cost
from mil_assert.devices import resolve_device
from mil_assert.interrupts import signal_of, signals_interrupt
from mil_assert.isolation import CellWorker, sendable
from mil_assert.results import CellResult

__all__ = ["CellsOutcome", "Model", "Run", "error_cell", "guarded_cell", "load_models",
           "run_cell_list", "run_cells"]


LOG_REDRAW_SECONDS = 30.0
"""Where standard error is not a terminal (a CI log), the bar is redrawn at most this
often within a cell, and whenever a cell finishes: each redraw is a new line there."""


@dataclass
class CellsOutcome:
    """The finished cells of a run; ``signal`` is what stopped an interrupted one (SIGINT
    for Ctrl-C, SIGTERM, SIGHUP; :mod:`mil_assert.interrupts`)."""

    results: list[CellResult]
    interrupted: bool
    total: int
    signal: int | None = None


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
    results: list[CellResult] = []
    with signals_interrupt():
        bar = tqdm(total=len(cells), unit="cell", disable=not progress, dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {n:.1f}/{total} cells [{elapsed}<{remaining}]"
                              "{postfix}",
                   mininterval=0.1 if sys.stderr.isatty() else LOG_REDRAW_SECONDS)
        try:
            if executor == "ray":  # a Ray worker that dies is retried, then an error cell
                from mil_assert.ray_executor import run_on_ray

                run_on_ray(cells, run, bar, results, address)
            elif jobs <= 1 or len(cells) <= 1:
                _run_in_one_worker(cells, run, bar, results)
            else:
                _run_in_workers(cells, run, jobs, bar, results)
        except KeyboardInterrupt as interrupt:
            return CellsOutcome(in_given_order(results, cells), True, len(cells),
                                signal_of(interrupt))
        finally:
            bar.close()
    return CellsOutcome(in_given_order(results, cells), False, len(cells))


def in_given_order(results: list[CellResult],
                   cells: Sequence[tuple[Model, str]]) -> list[CellResult]:
    """``results`` in the order of ``cells`` (model-major, tests in order for
    :func:`run_cells`), whatever the order the cells ran and finished in."""
    rank: dict[tuple[str, str], int] = {}
    for i, (model, test) in enumerate(cells):
        rank.setdefault((model.spec.name, test), i)
    return sorted(results, key=lambda r: rank.get((r.model, r.test), len(rank)))


def _run_in_one_worker(cells: list[tuple[Model, str]], run: Run, bar: tqdm,
                       results: list[CellResult]) -> None:
    """The cells one after another in one worker process (:mod:`mil_assert.isolation`),
    with the calling process's threads; a model that cannot be sent there runs here."""
    worker = CellWorker(torch.get_num_threads(), run.device)
    try:
        for done, (model, test) in enumerate(cells, start=round(bar.n)):
            bar.set_postfix_str(f"{model.spec.name} on {test}")
            progress = _within_cell(bar, done)
            note = None if bar.disable else _note_above(bar)
            if sendable(model.ref):
                result = worker.run(model, test, run, progress, note)
            else:
                result = unisolated_cell(model, test, run, resolve_device(run.device),
                                         progress, note)
            _advance_to(bar, done + 1)  # whole cell, also when it stopped early with an error
            bar.refresh()  # every finished cell is shown, whatever the redraw interval
            results.append(result)
    finally:
        worker.close()


def unisolated_cell(model: Model, test: str, run: Run, device: torch.device,
                    progress: Callable[[float], None] | None = None,
                    note: Callable[[str], None] | None = None) -> CellResult:
    """A cell run in this process, for a model that cannot be sent to a worker; its
    ``training`` line says that it was not guarded against ending the process."""
    result = guarded_cell(model.spec, test, run, device, progress, note)
    return dataclasses.replace(result, training=(
        f"{result.training}; in the calling process: the model cannot be sent to a worker "
        f"(it does not pickle, or it is defined in the calling script), so os._exit in it "
        f"would end the run"))


def _note_above(bar: tqdm) -> Callable[[str], None]:
    """A line printed above the progress bar, on the bar's stream (standard error)."""
    return lambda line: bar.write(line, file=sys.stderr)


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


def _run_in_workers(cells: list[tuple[Model, str]], run: Run, jobs: int, bar: tqdm,
                    results: list[CellResult]) -> None:
    """The cells in ``jobs`` worker processes, each taking the next cell when it is free:
    the longest first (:mod:`mil_assert.costs`), so that no worker is left with a long
    cell while the others are done."""
    for model, _ in cells:
        if not sendable(model.ref):
            raise ValueError(f"jobs > 1 sends each model to a worker process, and model "
                             f"{model.spec.name!r} cannot be pickled; give it as "
                             f"'pkg.module:factory' or 'path/to/file.py:factory', or use "
                             f"jobs=1")
    count = min(jobs, len(cells))
    threads = max(1, (os.cpu_count() or 1) // count)
    workers = [CellWorker(threads, run.device, number) for number in range(count)]
    waiting = deque(longest_first(cells, lambda cell: spec_cost(cell[0].spec, cell[1])))
    try:
        for worker in workers:
            worker.submit(*waiting.popleft(), run)
        while any(worker.busy for worker in workers):
            busy = {worker.connection: worker for worker in workers if worker.busy}
            for connection in wait(list(busy)):
                worker = busy[connection]
                result = worker.receive(bar.update, None)
                if result is None:
                    continue
                bar.update(max(0.0, 1.0 - worker.trained))
                bar.refresh()
                bar.set_postfix_str(f"{result.model} on {result.test}")
                results.append(result)
                if waiting:
                    worker.submit(*waiting.popleft(), run)
    finally:
        for worker in workers:
            worker.close()
