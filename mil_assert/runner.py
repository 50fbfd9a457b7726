"""Run many (model, test) cells outside pytest: serially or in worker processes, with progress.

Used by the Python API (:func:`mil_assert.check`) and ``mil-assert check``. Every cell is
one :func:`mil_assert.harness.run_cell`, the same as under pytest, so the routes give the
same per-seed AUCs. With ``jobs > 1`` the cells run in that many spawned processes; each
loads the model again from its reference (a ``--mil-model`` string, or a picklable
``ModelSpec``), so results equal ``jobs = 1``. A KeyboardInterrupt, SIGTERM or SIGHUP
stops the run, ends the workers and keeps the cells that finished. A user's model that
ends the process is found in a child process first and becomes ``error`` cells.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mil_assert.defaults import Budget
from mil_assert.harness import resolve_device, run_cell
from mil_assert.interrupts import signal_name, signal_of, signals_interrupt
from mil_assert.loading import TORCHMIL_PREFIX, as_spec, as_specs, model_items, split_options
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
                              "{postfix}")
        try:
            # on Ray a worker that dies is retried, then an error cell (ray_executor)
            ended = ({} if executor == "ray" else
                     models_that_end_the_process([model for model, _ in cells], run))
            for model, test in cells:
                if model.spec.name in ended:
                    results.append(error_cell(model.spec, test, run, ended[model.spec.name]))
                    bar.update(1)
            left = [(model, test) for model, test in cells if model.spec.name not in ended]
            if executor == "ray":
                from mil_assert.ray_executor import run_on_ray

                run_on_ray(left, run, bar, results, address)
            elif jobs <= 1 or len(left) <= 1:
                _run_here(left, run, bar, results)
            else:
                _run_in_processes(left, run, jobs, bar, results)
        except KeyboardInterrupt as interrupt:
            return CellsOutcome(results, True, len(cells), signal_of(interrupt))
        finally:
            bar.close()
    return CellsOutcome(results, False, len(cells))


def _runs_user_code(model: Model) -> bool:
    """A model loaded from a user's module or file (``pkg.module:factory``,
    ``path/to/file.py:factory``), as opposed to a built-in or torchmil model."""
    if not isinstance(model.ref, str):
        return False
    base = split_options(model.ref)[0]
    return ":" in base and not base.startswith(TORCHMIL_PREFIX)


def models_that_end_the_process(models: Sequence[Model], run: Run) -> dict[str, str]:
    """Models whose factory or forward pass ends the process (``os._exit``, a crash, a
    signal), each with a message; found by building each user's model and running its
    contract check in a child process first, so that such a model becomes ``error``
    cells instead of ending the run.

    Only models given by string that load user code are checked (a fresh interpreter,
    ~2 s each, started with ``-c`` so that a caller's script is not imported again); a
    model that raises an exception passes here and becomes an ``error`` cell when its
    cells run, as before.
    """
    ended: dict[str, str] = {}
    checked: set[str] = set()
    for model in models:
        if not _runs_user_code(model) or model.spec.name in checked:
            continue
        checked.add(model.spec.name)
        arguments = json.dumps([model.ref, str(model.base_dir), run.seeds[0], run.dim])
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; from mil_assert.runner import "
             "build_and_check; build_and_check(sys.argv[1])", arguments],
            cwd=model.base_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            status = child.wait()
        except BaseException:
            _end_child(child)
            raise
        if status != CHECKED:
            how = (f"with exit status {status}" if status >= 0 else
                   f"by {signal_name(-status)}")
            ended[model.spec.name] = (
                f"the model ended the process {how} when built and called (checked in a "
                f"separate process, so the other cells ran); it was not trained")
    return ended


CHECKED = 0
"""Exit status of :func:`build_and_check` that returned (the model may have raised)."""


def build_and_check(arguments: str) -> None:
    """In a child process: load, build and contract-check one model (``arguments``: JSON
    ``[ref, base_dir, seed, dim]``). Exceptions are ignored here (the cell reports them);
    only a process that ends another way tells."""
    from mil_assert.harness import contract_of

    ref, base_dir, seed, dim = json.loads(arguments)
    try:
        contract_of(as_spec(ref, Path(base_dir)), seed, dim)
    except BaseException:  # noqa: BLE001 - SystemExit too: the cell guards against it
        pass
    sys.stdout.flush()
    os._exit(CHECKED)  # no interpreter teardown: a model's atexit hooks cannot change it


def _end(process: Any) -> None:
    """Terminate a worker process and reap it; killed if it ignores SIGTERM."""
    process.terminate()
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)


def _end_child(child: subprocess.Popen) -> None:
    """Terminate a child process and reap it; killed if it ignores SIGTERM."""
    child.terminate()
    try:
        child.wait(5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def error_cell(spec: ModelSpec, test: str, run: Run, message: str) -> CellResult:
    """The ``error`` cell of a model that could not be run at all."""
    expected = spec.expected.get(test)
    return CellResult(
        model=spec.name, test=test, verdict="error",
        expected=None if expected is None else expected.verdict,
        expected_reason=None if expected is None else expected.reason,
        seeds=tuple(run.seeds), val_auc=None, test_auc=None, seconds=0.0, message=message,
        budget_overrides=dict(spec.budget))


def guarded_cell(spec: ModelSpec, test: str, run: Run, device: torch.device | None,
                 progress: Callable[[float], None] | None = None,
                 note: Callable[[str], None] | None = None) -> CellResult:
    """:func:`mil_assert.harness.run_cell`, with a model that calls ``sys.exit`` turned
    into an ``error`` cell instead of ending the run."""
    try:
        return run_cell(spec, TESTS[test], run.seeds, run.budget, run.dim, device,
                        progress=progress, note=note)
    except SystemExit as exit_:
        return error_cell(spec, test, run, f"the model called sys.exit({exit_.code!r}); it "
                                           f"was not judged")


def _run_here(cells: list[tuple[Model, str]], run: Run, bar: tqdm,
              results: list[CellResult]) -> None:
    device = resolve_device(run.device)
    for done, (model, test) in enumerate(cells, start=round(bar.n)):
        bar.set_postfix_str(f"{model.spec.name} on {test}")
        result = guarded_cell(model.spec, test, run, device, _within_cell(bar, done),
                              None if bar.disable else _note_above(bar))
        _advance_to(bar, done + 1)  # whole cell, also when it stopped early with an error
        results.append(result)


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
        try:
            pending: dict[Future, str] = {
                pool.submit(_worker_cell, model.ref, model.base_dir, test, run): model.spec.name
                for model, test in cells}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    pending.pop(future)
                    results.append(future.result())
                    bar.set_postfix_str(f"{results[-1].model} on {results[-1].test}")
                    bar.update(1)
        except BaseException:
            _stop_workers(pool)
            raise


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the cells not started and end the workers now: a worker left training
    after the run stops (on SIGTERM, only this process is told) would outlive it."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        _end(worker)


_WORKER_DEVICE: torch.device | None = None


def _start_worker(numbers: Any, threads: int, device: str) -> None:
    """A worker process takes its number (for its GPU, round robin) and its share of cores."""
    global _WORKER_DEVICE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends us
    torch.set_num_threads(threads)
    _WORKER_DEVICE = resolve_device(device, numbers.get())


def _worker_cell(ref: str | ModelSpec, base_dir: Path, test: str, run: Run) -> CellResult:
    return guarded_cell(as_spec(ref, base_dir), test, run, _WORKER_DEVICE)
