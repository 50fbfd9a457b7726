"""Cells in a worker process, so that a model that ends the process loses only its cell.

A model may end the process that runs it at any point: ``os._exit`` in its factory or
forward, a crash in native code, a signal. Every route (``mil-assert check`` with any
``--jobs``, the Python API, pytest with or without ``-n``, the decorator) therefore runs
its cells in a :class:`CellWorker`: one spawned process that takes cells one at a time
and sends back each step's progress, each note and the result. When the process ends
during a cell, that cell becomes an ``error`` cell naming the exit status (or signal) and
how far it got, and the next cell starts a fresh process. The cost is one process start
(importing torch, about 2-3 s) per worker per run, and one more after each death.

A model is sent to the worker by its reference: the ``--mil-model`` item string, or the
:class:`~mil_assert.registry.ModelSpec` itself when it pickles. A model that can be sent
neither way (a spec holding a lambda, say) runs in the calling process, unguarded against
``os._exit``; its cells' ``training`` line says so.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import multiprocessing
import os
import pickle
import pickletools
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mil_assert.cells import Model, Run, error_cell, guarded_cell
from mil_assert.interrupts import signal_name
from mil_assert.loading import as_spec, import_model_files, user_model_files
from mil_assert.results import CellResult

PROGRESS_INTERVAL = 0.2
"""Seconds between progress messages from the worker (steps in between are summed)."""

PARENT_CHECK_SECONDS = 1.0
"""How often a worker checks that the process that started it is still there."""


def sendable(ref: Any) -> bool:
    """Whether ``ref`` (a model string or a spec) can be sent to a worker process."""
    if isinstance(ref, str):
        return True
    try:
        cell = pickle.dumps(ref)
    except Exception:  # noqa: BLE001 - any pickling failure means the same
        return False
    return "__main__" not in packages_of(cell, None, everything=True)


class CellWorker:
    """A spawned process that runs cells one at a time (see the module docstring).

    ``threads``: torch's intra-op threads in the worker; ``device``: the run's device name
    (``auto``, ``cpu``, ``cuda``); ``number``: the worker's number, for its GPU.
    """

    def __init__(self, threads: int, device: str, number: int | None = None) -> None:
        self.threads, self.device, self.number = threads, device, number
        self.process: multiprocessing.process.BaseProcess | None = None
        self.connection: Connection | None = None
        self.cell: tuple[Model, str, Run] | None = None  # running now
        self.trained = 0.0  # the running cell's fraction of training done
        self.started = 0.0

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(target=_serve, daemon=True,
                                       args=(child, self.threads, self.device, self.number))
        with _main_script_hidden():
            self.process.start()
        child.close()
        self.connection = parent

    @property
    def busy(self) -> bool:
        return self.cell is not None

    def submit(self, model: Model, test: str, run: Run) -> None:
        """Start ``model`` on ``test``; its ``ref`` must be :func:`sendable`."""
        if self.process is None or not self.process.is_alive():
            self.start()
        self.cell, self.trained, self.started = (model, test, run), 0.0, time.monotonic()
        cell = pickle.dumps((model.ref, str(model.base_dir), test, run))
        self.connection.send((user_model_files(), packages_of(cell, model.ref), cell))

    def receive(self, progress: Callable[[float], None] | None,
                note: Callable[[str], None] | None) -> CellResult | None:
        """Handle what the worker sent; the cell's result once it has one (an ``error``
        cell if the process ended), else ``None``. Blocks until the worker sent something
        or ended."""
        try:
            kind, value = self.connection.recv()
        except (EOFError, OSError):
            return self._ended()
        if kind == "progress":
            self.trained += value
            if progress is not None:
                progress(value)
            return None
        if kind == "note":
            if note is not None:
                note(value)
            return None
        if kind == "interrupted":
            self.cell = None
            raise KeyboardInterrupt
        if kind == "failed":
            model, test, run = self.cell
            self.cell = None
            return error_cell(model.spec, test, run, f"the worker process could not receive "
                              f"the model ({value}); give it as 'pkg.module:factory' or "
                              f"'path/to/file.py:factory'")
        self.cell = None
        return CellResult.from_dict(value)

    def run(self, model: Model, test: str, run: Run,
            progress: Callable[[float], None] | None = None,
            note: Callable[[str], None] | None = None) -> CellResult:
        """One cell, start to end."""
        self.submit(model, test, run)
        while True:
            result = self.receive(progress, note)
            if result is not None:
                return result

    def _ended(self) -> CellResult:
        """The error cell of the running cell, whose process ended."""
        self.process.join(5)
        status = self.process.exitcode
        how = ("with no exit status" if status is None else
               f"by {signal_name(-status)}" if status < 0 else f"with exit status {status}")
        when = (f"in training or evaluation (progress last reported: {self.trained:.0%} of "
                f"the cell's optimiser steps)" if self.trained > 0 else
                "before training (built, contract check or bags)")
        model, test, run = self.cell
        self.cell, self.process = None, None
        return error_cell(model.spec, test, run, f"the model ended the process {how} {when}; "
                          f"it was not judged (the other cells ran in a fresh process)",
                          time.monotonic() - self.started)

    def close(self) -> None:
        """End the worker: asked to stop when idle, terminated (then killed) when busy."""
        if self.process is None:
            return
        if not self.busy and self.process.is_alive():
            try:
                self.connection.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.connection.close()
        self.process, self.cell = None, None


def _serve(connection: Connection, threads: int, device_name: str, number: int | None) -> None:
    """The worker's loop: run each cell it is sent until it is sent ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends us
    threading.Thread(target=_end_with_parent, args=(os.getppid(),), daemon=True).start()
    import torch

    from mil_assert.devices import resolve_device

    torch.set_num_threads(threads)
    device = resolve_device(device_name, number)
    while True:
        try:
            message = connection.recv()
        except EOFError:
            break
        if message is None:
            break
        files, packages, cell = message
        try:
            import_model_files(files)
            import_packages(packages)
            ref, base_dir, test, run = pickle.loads(cell)
        except Exception as error:  # noqa: BLE001 - the caller waits for a result
            connection.send(("failed", f"{type(error).__name__}: {error}"))
            continue
        _serve_cell(connection, ref, base_dir, test, run, device)
    connection.close()
    os._exit(0)  # no interpreter teardown: a model's atexit hooks cannot change anything


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """While a worker starts, hide the caller's script from multiprocessing, which would
    otherwise run it again in the worker (a script calling ``mil_assert.check`` without
    an ``if __name__ == "__main__":`` guard would start workers without end). A model
    defined in the script itself is not sent to a worker (:func:`sendable`)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = main is not None and path is not None and getattr(main, "__spec__", None) is None
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = path


def packages_of(cell: bytes, ref: Any, everything: bool = False,
                ) -> dict[str, tuple[str | None, list[str] | None]]:
    """Where this process found the top-level modules the cell names (in the pickled
    classes and functions, or in a ``pkg.module:factory`` reference): ``{name: (file,
    package search path)}``. A worker started here may find another module of the same
    name first on its path (a repository's ``models/`` beside this one's, say); it
    imports these from the same places first (:func:`import_packages`). ``everything``:
    also name ``__main__`` when the cell refers to it."""
    names: set[str] = set()
    pushed: list[object] = []  # what each opcode pushed, memo lookups resolved
    memo: list[object] = []
    for opcode, argument, _ in pickletools.genops(cell):
        if opcode.name == "GLOBAL":  # protocols 0-3: "module name"
            names.add(str(argument).split(" ")[0])
        elif opcode.name == "STACK_GLOBAL" and len(pushed) >= 2:  # module, then name
            names.add(str(pushed[-2]))
        if opcode.name == "MEMOIZE":
            memo.append(pushed[-1] if pushed else None)
        elif opcode.name in ("BINGET", "LONG_BINGET") and argument < len(memo):
            pushed.append(memo[argument])
        elif opcode.name != "MEMOIZE":
            pushed.append(argument)
    if isinstance(ref, str) and ":" in ref and not ref.split(":")[0].endswith(".py"):
        names.add(ref.split(":")[0].split("@")[0])
    found = {}
    for name in {name.split(".")[0] for name in names}:
        module = sys.modules.get(name)
        if everything and name == "__main__":
            found[name] = (None, None)
        if module is None or name in ("mil_assert", "__main__") or name in sys.stdlib_module_names:
            continue
        path = getattr(module, "__path__", None)
        file = getattr(module, "__file__", None)
        if file is not None or path is not None:
            found[name] = (file, None if path is None else list(path))
    return found


def import_packages(packages: dict[str, tuple[str | None, list[str] | None]]) -> None:
    """In a worker: import each top-level module of :func:`packages_of` from where the
    caller found it, unless one of that name is imported already."""
    for name, (file, path) in packages.items():
        if name in sys.modules:
            continue
        if file is None:  # a namespace package: only its search path
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = list(path)
        else:
            spec = importlib.util.spec_from_file_location(name, file,
                                                          submodule_search_locations=path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        if spec.loader is not None:
            spec.loader.exec_module(module)


def _end_with_parent(parent: int) -> None:
    """End this worker once its parent is gone (killed, say), even in a cell's training."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _serve_cell(connection: Connection, ref: Any, base_dir: str, test: str, run: Run,
                device: Any) -> None:
    """In the worker: run one cell, sending its progress (summed over
    ``PROGRESS_INTERVAL``), its notes and its result."""
    pending = [0.0, 0.0]  # the first step is sent at once: training has begun

    def progress(fraction: float) -> None:
        pending[0] += fraction
        if time.monotonic() - pending[1] >= PROGRESS_INTERVAL:
            connection.send(("progress", pending[0]))
            pending[:] = [0.0, time.monotonic()]

    def note(line: str) -> None:
        connection.send(("note", line))

    try:
        spec = as_spec(ref, Path(base_dir))
    except Exception as error:  # noqa: BLE001 - loaded once in the caller already: rare
        connection.send(("failed", f"{type(error).__name__}: {error}"))
        return
    try:
        result = guarded_cell(spec, test, run, device, progress, note)
    except KeyboardInterrupt:  # raised by the model itself: the run stops as on Ctrl-C
        connection.send(("interrupted", None))
        return
    if pending[0]:
        connection.send(("progress", pending[0]))
    connection.send(("result", result.as_dict()))
