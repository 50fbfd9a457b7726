"""SIGTERM and SIGHUP stop a run as Ctrl-C does.

CI systems send SIGTERM when a job is cancelled or times out, and a closed terminal sends
SIGHUP; by default either ends Python at once, leaving worker processes running and no
report. Inside :func:`signals_interrupt`, they raise :class:`Stopped` (a
``KeyboardInterrupt``) in the main thread instead, so every ``except KeyboardInterrupt``
of a run (stop the workers, keep the finished cells, write their report) handles them.

Exit statuses follow the shell's convention, 128 + the signal's number: 130 for Ctrl-C
(SIGINT), 143 for SIGTERM, 129 for SIGHUP.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
"""The signals handled like Ctrl-C (SIGHUP does not exist on Windows)."""


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by ``signum`` (SIGTERM or SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal_name(signum)}")
        self.signum = signum


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for ``signal.SIGTERM``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def signal_of(interrupt: BaseException) -> int:
    """The signal behind a ``KeyboardInterrupt``: its own for :class:`Stopped`; else the
    stop signal this block received, if any (a library's compiled code may raise a plain
    ``KeyboardInterrupt`` for the :class:`Stopped` that our handler raised inside it, as
    Ray's ``ray.wait`` does); else SIGINT (Ctrl-C)."""
    return getattr(interrupt, "signum", None) or _state["received"] or signal.SIGINT


def exit_status(signum: int) -> int:
    """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + int(signum)


_state = {"depth": 0, "received": None}


def last_stop_signal() -> int | None:
    """The signal that stopped the latest :func:`signals_interrupt` block (outermost), if
    one did."""
    return _state["received"]


def _raise_stopped(signum: int, frame: object) -> None:
    _state["received"] = signum
    raise Stopped(signum)


def reclaim_stop_signals() -> None:
    """Inside a :func:`signals_interrupt` block, set its handlers again: for a library
    that installed its own while the block ran (``ray.init`` sets a SIGTERM handler)."""
    if _state["depth"] > 0 and threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _raise_stopped)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread; the
    previous handlers are restored after it. Blocks may nest; outside the main thread
    (where Python cannot set handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    if _state["depth"] == 0:
        _state["received"] = None
        previous = {signum: signal.signal(signum, _raise_stopped) for signum in STOP_SIGNALS}
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
