"""Files a run writes (JSON reports, rendered tables, figures): whole or not at all.

Every file is written to a temporary file beside it, synced to disk, then renamed over the
target, so a reader never sees a partial file and an interrupted write leaves the old file
(or none). New files get the permissions the user's umask gives (as ``open`` would), and a
missing parent folder is created, on every route.

This module imports no torch, so the pytest plugin can check a report path at start-up.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO[Any]]:
    """A stream whose content replaces ``path`` when the ``with`` block ends without error.

    The temporary file is created with mode ``0o666`` less the umask (``tempfile.mkstemp``
    would make it ``0o600``, and a rename keeps that), flushed and synced before the rename;
    the folder is synced after it. On any exception, or an interrupt, the temporary file is
    removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb" if binary else "w",
                       **({} if binary else {"encoding": "utf-8"})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (see :func:`atomic_file`)."""
    with atomic_file(path) as stream:
        stream.write(text)
    return Path(path)


def write_json_atomic(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as JSON to ``path`` whole or not at all (see :func:`atomic_file`)."""
    with atomic_file(path) as stream:
        json.dump(data, stream, indent=2, allow_nan=False)
        stream.write("\n")
    return Path(path)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Raise ``ValueError`` naming the problem unless a report can be written to ``path``.

    Checked before any training, so a run never ends with results it cannot save. A
    missing folder is not created here (the write creates it), but the nearest existing
    one must let it be created.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"report path {target} is a folder; give a file name such as "
                         f"{target / 'mil-report.json'}")
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file, not a folder")
        probe = existing / f".{target.name}.{secrets.token_hex(6)}.probe"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"cannot write the report to {target}: "
                         f"{error.strerror or error}; choose a writable path") from None
    return target
