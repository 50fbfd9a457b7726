"""The compliance matrix (models x tests) as text, and the JSON report."""

from __future__ import annotations

import inspect
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

import mil_assert
from mil_assert import verdict
from mil_assert.defaults import Budget
from mil_assert.devices import compute_environment, device_name
from mil_assert.results import CellResult, untrained_lines
from mil_assert.synthetic import TESTS
from mil_assert.synthetic.regime import Regime

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


def contract_lines(results: Sequence[CellResult]) -> list[str]:
    """The model-contract check's outcome per model, for the lines under the matrix."""
    outcomes: dict[str, dict[str, Any]] = {}
    for result in results:
        if result.contract is not None:
            outcomes.setdefault(result.model, result.contract)
    if not outcomes:
        return []
    ok = [m for m, c in outcomes.items() if c["ok"] and (c.get("order_change") or 0) <= 1e-4]
    lines = [f"contract (checked before training): ok for {', '.join(ok)}"] if ok else []
    for model, outcome in outcomes.items():
        if not outcome["ok"]:
            lines.append(f"contract: {model} broken, not trained: {outcome['message']}")
        elif model not in ok:
            lines.append(f"contract: {model} ok; instance order changes its logits by up to "
                         f"{outcome['order_change']:.2g} (allowed, recorded)")
    return lines


def training_lines(results: Sequence[CellResult]) -> list[str]:
    """One line per model whose seeds trained one by one, with the reason."""
    seed_by_seed = {r.model: r.training for r in results
                    if r.training.startswith("seed by seed") and len(r.seeds) > 1}
    return [f"{model}: trained {how}" for model, how in sorted(seed_by_seed.items())]


def git_commit() -> str | None:
    """The commit of the mil-assert checkout in use, or ``None`` outside a git checkout."""
    root = Path(mil_assert.__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def generator_parameters(test: str) -> dict[str, Any]:
    """The keyword defaults of a test's generator, besides the sizes the budget sets."""
    signature = inspect.signature(TESTS[test].generate)
    return {name: p.default for name, p in signature.parameters.items()
            if p.kind is p.KEYWORD_ONLY and name not in ("dim", "n_train", "n_eval")}


def environment(device: torch.device | str) -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mil_assert": mil_assert.__version__,
        "git_commit": git_commit(),
        "device": str(device),
        "device_name": device_name(device),
        "platform": platform.platform(),
        **compute_environment(device),
    }


def interruption(by: str, results: Sequence[CellResult],
                 cells: Sequence[tuple[str, str]] | None) -> dict[str, Any]:
    """The ``interrupted`` entry of a report stopped by ``by`` (``"SIGINT"``, ``"SIGTERM"``,
    ...) before every cell finished: how many cells were asked for, finished and missing,
    and which are missing (``cells``, the ``(model, test)`` pairs asked for; ``None`` where
    the run does not know them, as under pytest-xdist)."""
    done = {(r.model, r.test) for r in results}
    missing = None if cells is None else [cell for cell in cells if cell not in done]
    return {"by": by, "cells": None if cells is None else len(cells), "finished": len(results),
            "missing": None if missing is None else len(missing),
            "missing_cells": None if missing is None else
            [{"model": model, "test": test} for model, test in missing]}


def build_report(results: Sequence[CellResult], models: Sequence[str], seeds: Sequence[int],
                 budget: Budget, dim: int, device: torch.device | str,
                 tests: Sequence[str] | None = None,
                 interrupted: dict[str, Any] | None = None,
                 regime: Regime | None = None) -> dict[str, Any]:
    """The JSON-ready report (schema ``mil-assert/report/v1``).

    Args:
        regime: where the bags came from (bag size, digit instances, the user's own
            bags; :mod:`mil_assert.synthetic.regime`); ``None``: the tests' own bags.
        tests: the tests the run was asked for (default: those of ``results``); only
            these are described under ``"tests"``.
        interrupted: :func:`interruption` for a run stopped early; ``None`` (written as
            ``null``) for a run whose every cell finished.
    """
    ran = set(tests) if tests is not None else {r.test for r in results}
    return {
        "schema": SCHEMA,
        "interrupted": interrupted,
        "environment": environment(device),
        "budget": budget.as_dict(),
        "instance_dim": dim,
        "regime": (regime or Regime()).as_dict(),
        "seeds": [int(s) for s in seeds],
        "tests": test_definitions(ran),
        "verdict_rule": verdict_rule(),
        "learned_nothing": untrained_lines(results),
        "results": [r.as_dict() for r in order_results(results, models)],
    }


def test_definitions(names: Iterable[str]) -> dict[str, Any]:
    """What a report records of each test of ``names`` (in the suite's order): its
    assumption, kind, source, generator parameters and partial-rule AUC."""
    ran = set(names)
    return {name: {"assumption": t.assumption, "kind": t.kind, "source": t.source,
                   "generator_parameters": generator_parameters(name),
                   "partial_rule_auc": t.partial_rule_auc}
            for name, t in TESTS.items() if name in ran}


def verdict_rule() -> dict[str, Any]:
    """The verdict rule's thresholds and wording, as a report records them."""
    return {"chance": verdict.CHANCE, "margin": verdict.MARGIN,
            "learned_auc": verdict.LEARNED_AUC, "max_drop": verdict.MAX_DROP,
            "violating_seeds": verdict.VIOLATING_SEEDS, "partial_sds": verdict.PARTIAL_SDS,
            "capacity_control": verdict.CAPACITY_CONTROL,
            "rule": "each seed is judged on its own; violation if at least violating_seeds "
                    "seeds show the shortcut, pass if seeds that kept the ranking are a "
                    "strict majority; on a test with a partial_rule_auc a seed whose "
                    "validation AUC is below it plus partial_sds standard deviations "
                    "(Hanley-McNeil, 250 + 250 bags) is partial, neither kept nor lost"}

class ReportError(ValueError):
    """A report file that cannot be read, or reports that cannot be merged."""


REQUIRED_KEYS = ("schema", "environment", "budget", "instance_dim", "seeds", "results")
RESULT_KEYS = ("model", "test", "verdict", "val_auc", "test_auc", "message")
# What must agree for two reports' cells to stand in one matrix (and, for the tests both
# describe, the tests' definitions).
COMPARABLE_KEYS = ("budget", "instance_dim", "seeds", "verdict_rule")


def comparable(report: dict[str, Any], key: str) -> Any:
    """``report[key]`` as two reports are compared for a merge: a budget with every field,
    those an older version did not record at their defaults."""
    value = report.get(key)
    if key == "budget" and isinstance(value, dict):
        return {**Budget().as_dict(), **value}
    return value


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file's content; an unreadable or invalid file is a :class:`ReportError`."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise ReportError(f"cannot read report {source}: {error.strerror or error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"{source} is not valid JSON: {error.msg} at line {error.lineno}, "
                          f"column {error.colno}") from None


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a JSON report; every problem is a :class:`ReportError` naming it."""
    source = Path(path)
    data = read_json(source)
    if not isinstance(data, dict):
        raise ReportError(f"{source} holds a JSON {type(data).__name__}, not a report object")
    if data.get("schema") != SCHEMA:
        raise ReportError(f"{source} has schema {data.get('schema')!r}; this version of "
                          f"mil-assert reads {SCHEMA!r}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ReportError(f"{source} lacks the key(s) {missing} of a {SCHEMA} report")
    for index, result in enumerate(data["results"]):
        absent = [key for key in RESULT_KEYS if not isinstance(result, dict) or key not in result]
        if absent:
            raise ReportError(f"{source}: result {index} lacks the key(s) {absent}")
    return data


def report_results(data: dict[str, Any]) -> list[CellResult]:
    """The cells of a loaded report, in the report's order."""
    return [CellResult.from_dict(result) for result in data["results"]]


def report_models(data: dict[str, Any]) -> list[str]:
    """Model names in order of first appearance."""
    return list(dict.fromkeys(result["model"] for result in data["results"]))


def sources_kept(name: str, report: dict[str, Any], kept: list[str]) -> list[dict[str, Any]]:
    """The ``merged_from`` entries a merge takes from one input: the input itself, or,
    where the input was merged before, its own sources, so that each model keeps the
    commit and environment it was measured at; ``kept``: the input's models whose cells
    the merge keeps."""
    earlier = report.get("merged_from") or ()
    if not earlier:
        return [{"report": name, "environment": report["environment"],
                 "interrupted": report.get("interrupted"), "models": kept}]
    return [{**entry, "models": [model for model in entry.get("models") or () if model in kept]}
            for entry in earlier]


def merge_reports(reports: Sequence[tuple[str, dict[str, Any]]],
                  replace: bool = False) -> dict[str, Any]:
    """One report from several ``(name, report)`` pairs of the same budget and data.

    Refuses (``ReportError``) reports whose budget, instance dimension, seeds, test
    definitions or verdict rule differ, and cells that two reports both hold, unless
    ``replace``: then a later report's cell replaces an earlier one's (a model measured
    again), in the earlier one's place. Budgets are compared field by field, a field
    that an older report lacks read at its default.
    """
    if len(reports) < 2:
        raise ReportError("merge needs at least two reports")
    (first_name, first), *others = reports
    for name, other in others:
        for key in COMPARABLE_KEYS:
            if comparable(other, key) != comparable(first, key):
                raise ReportError(f"cannot merge {name} into {first_name}: their {key!r} "
                                  f"differ ({other.get(key)!r} vs {first.get(key)!r}); rerun "
                                  f"one of them with the other's settings")
    tests: dict[str, Any] = {}
    for name, report in reports:
        for test, definition in (report.get("tests") or {}).items():
            if test in tests and tests[test] != definition:
                raise ReportError(f"cannot merge {name} into {first_name}: their definitions "
                                  f"of test {test!r} differ ({definition!r} vs "
                                  f"{tests[test]!r}); rerun one of them with the other's "
                                  f"version of mil-assert")
            tests.setdefault(test, definition)
    seen: dict[tuple[str, str], str] = {}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for name, report in reports:
        for result in report["results"]:
            cell = (result["model"], result["test"])
            if cell in seen and not replace:
                raise ReportError(f"cell {cell[0]} / {cell[1]} is in both {seen[cell]} and "
                                  f"{name}; merge reports of different models or tests, or "
                                  f"give --replace to keep the later one")
            seen[cell] = name
            cells[cell] = result
    results = list(cells.values())
    merged = {key: value for key, value in first.items() if key != "results"}
    merged["tests"] = {test: tests[test] for test in
                       sorted(tests, key=lambda t: (list(TESTS).index(t) if t in TESTS
                                                    else len(TESTS), t))}
    stopped = [(name, report["interrupted"]) for name, report in reports
               if report.get("interrupted")]
    merged["interrupted"] = None if not stopped else {
        "reports": [name for name, _ in stopped],
        "missing": (None if any(entry.get("missing") is None for _, entry in stopped)
                    else sum(entry["missing"] for _, entry in stopped))}
    kept_from = {name: list(dict.fromkeys(model for (model, _), source in seen.items()
                                          if source == name)) for name, _ in reports}
    merged["merged_from"] = [entry for name, report in reports
                             for entry in sources_kept(name, report, kept_from[name])]
    models = list(dict.fromkeys(r["model"] for r in results))
    merged["results"] = [r.as_dict() for r in order_results(
        [CellResult.from_dict(r) for r in results], models)]
    return merged
