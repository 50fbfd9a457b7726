"""Report files: written whole or not at all, and checked for writability before a run.

This module imports no torch, so the pytest plugin can check a report path at start-up.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename.

    A reader never sees a partial file: an interrupted write leaves the old file (or none).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                         dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2, allow_nan=False)
            stream.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Raise ``ValueError`` naming the problem unless a report can be written to ``path``.

    Checked before any training, so a run never ends with results it cannot save. The
    folder is created if missing (as :func:`write_json_atomic` would).
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"report path {target} is a folder; give a file name such as "
                         f"{target / 'mil-report.json'}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe",
                                         dir=target.parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"cannot write the report to {target}: "
                         f"{error.strerror or error}; choose a writable path") from None
    return target
