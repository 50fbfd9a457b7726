"""The compliance matrix (models x tests) as text, and the JSON report."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

import mil_assert
from mil_assert import verdict
from mil_assert.defaults import Budget
from mil_assert.results import CellResult
from mil_assert.synthetic import TESTS

SCHEMA = "mil-assert/report/v1"


def order_results(results: Sequence[CellResult], models: Sequence[str]) -> list[CellResult]:
    """Results in matrix order (models as given, tests as in ``TESTS``), independent of
    the order in which cells finished (serial and ``pytest -n`` runs agree)."""
    model_rank = {name: i for i, name in enumerate(models)}
    test_rank = {name: i for i, name in enumerate(TESTS)}
    return sorted(results, key=lambda r: (model_rank.get(r.model, len(model_rank)), r.model,
                                          test_rank.get(r.test, len(test_rank)), r.test))


def cell_text(result: CellResult) -> str:
    """``verdict  mean ± std`` of the test AUC, and the declaration when it differs."""
    text = result.verdict
    if result.test_auc is not None and result.verdict != "error":
        std = 0.0 if np.isnan(result.test_auc.std) else result.test_auc.std
        text += f" {result.test_auc.mean:.2f} ± {std:.2f}"
    if result.expected is not None and result.expected != result.verdict:
        text += f" (declared {result.expected})"
    return text


def format_matrix(results: Sequence[CellResult], models: Sequence[str]) -> str:
    """The compliance matrix: one row per model, one column per test that was run."""
    ordered = order_results(results, models)
    tests = [t for t in TESTS if any(r.test == t for r in ordered)]
    tests += sorted({r.test for r in ordered} - set(tests))
    rows: dict[str, dict[str, str]] = {}
    for result in ordered:
        rows.setdefault(result.model, {})[result.test] = cell_text(result)
    table = [[model] + [cells.get(t, "") for t in tests] for model, cells in rows.items()]
    return tabulate(table, headers=["model"] + tests, tablefmt="github")


def environment(device: torch.device | str) -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mil_assert": mil_assert.__version__,
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(torch.device(device))
                        if torch.device(device).type == "cuda" else platform.processor()
                        or platform.machine()),
        "platform": platform.platform(),
    }


def build_report(results: Sequence[CellResult], models: Sequence[str], seeds: Sequence[int],
                 budget: Budget, dim: int, device: torch.device | str) -> dict[str, Any]:
    """The JSON-ready report (schema ``mil-assert/report/v1``)."""
    return {
        "schema": SCHEMA,
        "environment": environment(device),
        "budget": budget.as_dict(),
        "instance_dim": dim,
        "seeds": [int(s) for s in seeds],
        "tests": {name: {"assumption": t.assumption, "kind": t.kind, "source": t.source}
                  for name, t in TESTS.items()},
        "verdict_rule": {"chance": verdict.CHANCE, "margin": verdict.MARGIN,
                         "learned_auc": verdict.LEARNED_AUC, "max_drop": verdict.MAX_DROP,
                         "interval": "95% Student-t interval of the mean over seeds"},
        "results": [r.as_dict() for r in order_results(results, models)],
    }


def write_json_atomic(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
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
