"""mil-assert: algorithmic unit tests for deep Multiple Instance Learning models.

The package is imported by the pytest plugin in every pytest session of an environment
where it is installed, so it imports nothing heavy itself; the public names below load
their modules (and torch) on first use::

    import mil_assert
    report = mil_assert.check("models/my_model.py:build")   # Python API
    print(report.matrix)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "check": "mil_assert.api",
    "ComplianceReport": "mil_assert.api",
    "parametrize_with_checks": "mil_assert.checks",
    "check_verdict": "mil_assert.checks",
    "ModelSpec": "mil_assert.registry",
    "Expected": "mil_assert.registry",
    "Budget": "mil_assert.defaults",
    "MembersAxis": "mil_assert.stacking",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mil_assert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
