"""Verdicts across instance dimensions: the sweep behind ``reports/dimensions.json``.

    mil-assert dims [MODEL ...] --dims 8,16,32,64,256,1024 --jobs 2 --report reports/dimensions.json

At each instance dimension D every (model, test) cell is first screened with ``seeds``
seeds (default 5), as ``mil-assert check --dim D`` would. Three kinds of cell are then
run again with ``confirm_seeds`` seeds (default 12), and that run is the cell's verdict:

- a *positive control*: a model on a test of an assumption it is built to respect
  (``ModelSpec.respects``). Its criterion: at least ``CONTROL_FRACTION`` of the seeds
  pass (``mil_assert.verdict.PASSING``), which shows the test can be passed at that D;
- a *fragile* cell: its verdict changes when any one seed shows another outcome
  (:func:`mil_assert.verdict.fragile`);
- a cell *near a threshold*: the AUC or drop that decides some seed's outcome lies within
  ``NEAR`` = 0.05 of its threshold (:func:`mil_assert.verdict.near_threshold`).

The result holds one ``mil-assert/report/v1`` report per D, the screening of each
confirmed cell, the positive-control criterion per cell, and the calibration figures of the
verdict rule over every seed of the sweep (:func:`calibration`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mil_assert import verdict
from mil_assert.defaults import CONFIRM_SEEDS, DIMS, seed_list
from mil_assert.files import write_json_atomic
from mil_assert.registry import ModelSpec
from mil_assert.report import ReportError, build_report, environment
from mil_assert.results import CellResult
from mil_assert.runner import Model, Run, run_cell_list
from mil_assert.synthetic import TESTS

SCHEMA = "mil-assert/dimensions/v1"
CONTROL_FRACTION = 0.9
"""Share of seeds a positive control must pass at every D (issue 11 of this project)."""


def is_control(spec: ModelSpec, test: str) -> bool:
    """A model on a test of an assumption it is built to respect."""
    return TESTS[test].assumption in spec.respects


def passing_seeds(result: CellResult, outcomes: Sequence[str] = verdict.PASSING) -> int:
    """Seeds of a cell whose outcome is one of ``outcomes`` (default: the outcomes that
    show the model passing: kept, or could not learn)."""
    return sum(outcome in outcomes for outcome in result.seed_outcomes())


def needs_confirmation(spec: ModelSpec, result: CellResult) -> str | None:
    """Why a screened cell is run again with more seeds, or ``None``."""
    if is_control(spec, result.test):
        return "positive control"
    if result.val_auc is None or result.test_auc is None:
        return None
    kind, val, test = TESTS[result.test].kind, result.val_auc.per_seed, result.test_auc.per_seed
    partial = TESTS[result.test].partial_rule_auc
    control = None if result.control_auc is None else result.control_auc.per_seed
    if verdict.fragile(kind, val, test, control, partial):
        return "fragile"
    if any(verdict.near_threshold(kind, v, t, None if control is None else control[i], partial)
           for i, (v, t) in enumerate(zip(val, test, strict=True))):
        return "near a threshold"
    return None


def sweep(
    models: Sequence[Model], tests: Sequence[str], run: Run, *, dims: Sequence[int] = DIMS,
    confirm_seeds: int = CONFIRM_SEEDS, jobs: int = 1, progress: bool = True,
    report: str | os.PathLike[str] | None = None,
    announce: Callable[[str], None] = print,
    executor: str = "processes", address: str | None = None,
) -> dict[str, Any]:
    """Screen and confirm every cell at every D; return the sweep's JSON-ready dict.

    ``run.dim`` is ignored (each D of ``dims`` is used in turn). With ``report``, the
    result is written after every D, so an interrupted sweep keeps the dimensions it
    finished; ``"interrupted": true`` marks it. ``executor`` and ``address``: where the
    cells run (:func:`mil_assert.runner.run_cells`).
    """
    more_seeds = tuple(seed_list(confirm_seeds))
    names = [m.spec.name for m in models]
    by_name = {m.spec.name: m for m in models}
    specs = {name: m.spec for name, m in by_name.items()}
    data: dict[str, Any] = {
        "schema": SCHEMA, "dims": [int(d) for d in dims], "seeds": list(run.seeds),
        "confirm_seeds": list(more_seeds), "control_fraction": CONTROL_FRACTION,
        "environment": environment(run.device), "reports": {}, "interrupted": False,
    }
    finished: list[tuple[int, CellResult]] = []
    for dim in dims:
        announce(f"D = {dim}: screening {len(models) * len(tests)} cells with "
                 f"{len(run.seeds)} seeds")
        screened = run_cell_list([(m, t) for m in models for t in tests],
                                 replace(run, dim=dim), jobs, progress,
                                 executor, address)
        reasons = {(r.model, r.test): why for r in screened.results
                   if (why := needs_confirmation(specs[r.model], r)) is not None}
        confirmed = None
        if reasons and not screened.interrupted:
            kinds = ", ".join(f"{sum(w == kind for w in reasons.values())} {kind}" for kind in
                              ("positive control", "fragile", "near a threshold"))
            announce(f"D = {dim}: confirming {len(reasons)} cells with {len(more_seeds)} "
                     f"seeds ({kinds})")
            confirmed = run_cell_list([(by_name[m], t) for m, t in reasons],
                                      replace(run, seeds=more_seeds, dim=dim), jobs,
                                      progress, executor, address)
        final = {(r.model, r.test): r for r in screened.results}
        screens = {}
        for r in confirmed.results if confirmed is not None else ():
            screens[(r.model, r.test)] = final[(r.model, r.test)]
            final[(r.model, r.test)] = r
        cells = build_report(list(final.values()), names, run.seeds, run.budget, dim,
                             run.device, regime=run.regime)
        for cell in cells["results"]:
            key = (cell["model"], cell["test"])
            if key in screens:
                first = screens[key]
                cell["confirmed_because"] = reasons[key]
                cell["screen"] = {"seeds": list(first.seeds), "verdict": first.verdict,
                                  "message": first.message}
        data["reports"][str(dim)] = cells
        finished += [(dim, r) for r in final.values()]
        interrupted = screened.interrupted or (confirmed is not None and confirmed.interrupted)
        data["interrupted"] = interrupted
        data["controls"] = control_rows(finished, specs)
        data["calibration"] = calibration(finished, specs, screens_of(data))
        if report is not None:
            write_json_atomic(data, report)
        if interrupted:
            break
    return data


def screens_of(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every confirmed cell's screening and confirmed verdicts."""
    return [{"dim": int(dim), "model": c["model"], "test": c["test"],
             "screen": c["screen"]["verdict"], "confirmed": c["verdict"]}
            for dim, rep in data["reports"].items() for c in rep["results"] if "screen" in c]


def control_rows(cells: Sequence[tuple[int, CellResult]],
                 specs: Mapping[str, ModelSpec]) -> list[dict[str, Any]]:
    """The positive-control criterion, one row per control cell and D."""
    rows = []
    for dim, r in cells:
        if r.model in specs and is_control(specs[r.model], r.test):
            passing = passing_seeds(r)
            rows.append({"model": r.model, "test": r.test, "dim": dim, "verdict": r.verdict,
                         "passing_seeds": passing, "seeds": len(r.seeds),
                         "holds": passing >= CONTROL_FRACTION * len(r.seeds)})
    return rows


def calibration(cells: Sequence[tuple[int, CellResult]], specs: Mapping[str, ModelSpec],
                screens: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The verdict rule's gaps over every seed of the sweep (README, "The verdict rule").

    - ``respecting_min_test_auc``: lowest test AUC of a seed of a model built to respect
      MIL (any test); the rule needs it above ``CHANCE - MARGIN`` (0.4);
    - ``respecting_val_auc_below`` / ``_above``: the highest validation AUC under, and the
      lowest at or over, ``LEARNED_AUC`` (0.75) of those seeds;
    - ``respecting_max_drop``: largest validation-to-test drop of those seeds that learned
      (validation AUC at least 0.75); the rule needs it under ``MAX_DROP`` (0.2);
    - ``inverted_min_drop``: smallest drop of a learned seed of any model whose test AUC is
      under 0.4; the rule needs it over ``MAX_DROP``;
    - ``verdict_changes``: confirmed cells whose screening verdict differs.
    """
    respecting_test, respecting_val, respecting_drop, inverted_drop = [], [], [], []
    for _, r in cells:
        if r.val_auc is None or r.test_auc is None:
            continue
        respects = r.model in specs and bool(specs[r.model].respects)
        shift = TESTS[r.test].kind == "shift"
        for v, t in zip(r.val_auc.per_seed, r.test_auc.per_seed, strict=True):
            learned = v >= verdict.LEARNED_AUC
            if respects:
                respecting_test.append(t)
                respecting_val.append(v)
                if shift and learned:
                    respecting_drop.append(v - t)
            if shift and learned and t < verdict.CHANCE - verdict.MARGIN:
                inverted_drop.append(v - t)

    def extreme(values: list[float], pick: Callable[[list[float]], float]) -> float | None:
        return round(pick(values), 4) if values else None

    figures = {
        "respecting_min_test_auc": extreme(respecting_test, min),
        "respecting_val_auc_below": extreme([v for v in respecting_val
                                             if v < verdict.LEARNED_AUC], max),
        "respecting_val_auc_above": extreme([v for v in respecting_val
                                             if v >= verdict.LEARNED_AUC], min),
        "respecting_max_drop": extreme(respecting_drop, max),
        "inverted_min_drop": extreme(inverted_drop, min),
        "verdict_changes": [s for s in screens if s["screen"] != s["confirmed"]],
    }
    figures["holds"] = {
        "chance": (figures["respecting_min_test_auc"] is None
                   or figures["respecting_min_test_auc"] > verdict.CHANCE - verdict.MARGIN),
        "drop": ((figures["respecting_max_drop"] is None
                  or figures["respecting_max_drop"] < verdict.MAX_DROP)
                 and (figures["inverted_min_drop"] is None
                      or figures["inverted_min_drop"] > verdict.MAX_DROP)),
    }
    return figures


def check_dims(dims: Sequence[int]) -> list[int]:
    values = [int(d) for d in dims]
    if not values or min(values) < 1 or len(set(values)) < len(values):
        raise ValueError(f"dims={list(dims)}: give distinct positive instance dimensions, "
                         f"e.g. 8,16,32,64,256,1024")
    return values


def load_dimensions(path: str | os.PathLike[str], data: Mapping[str, Any]) -> dict[str, Any]:
    """Check a loaded sweep result; problems are :class:`ReportError` naming them."""
    missing = [k for k in ("dims", "reports", "controls", "calibration") if k not in data]
    if missing:
        raise ReportError(f"{path} lacks the key(s) {missing} of a {SCHEMA} result")
    return dict(data)


def format_sweep(data: Mapping[str, Any]) -> str:
    """The verdict of every model and test at each D (Markdown), controls and calibration."""
    from tabulate import tabulate

    dims = [d for d in data["dims"] if str(d) in data["reports"]]
    cells: dict[tuple[str, str], dict[int, str]] = {}
    for dim in dims:
        for c in data["reports"][str(dim)]["results"]:
            text = c["verdict"]
            if c["verdict"] != "error":
                result = CellResult.from_dict(c)
                n = len(result.seeds)
                if c["verdict"] == "pass":
                    text += f" {passing_seeds(result)}/{n}"
                elif c["verdict"] == "violation":
                    text += f" {passing_seeds(result, verdict.SHORTCUT)}/{n}"
                else:
                    text += f" ({n})"
            cells.setdefault((c["model"], c["test"]), {})[dim] = text
    table = [[model, test] + [row.get(d, "") for d in dims]
             for (model, test), row in cells.items()]
    lines = [tabulate(table, headers=["model", "test"] + [f"D = {d}" for d in dims],
                      tablefmt="github"), "",
             "cells: the verdict and how many of the cell's seeds show it (pass: kept the "
             "ranking or could not learn the forbidden rule; violation: inverted, lost or "
             "learned it); inconclusive: (seeds)"]
    failing = [r for r in data["controls"] if not r["holds"]]
    total = len(data["controls"])
    if total:
        lines.append(f"positive controls: {total - len(failing)} of {total} cells pass on at "
                     f"least {data['control_fraction']:.0%} of their seeds" + (
                         "; below: " + ", ".join(f"{r['model']} on {r['test']} at D = "
                                                 f"{r['dim']} ({r['passing_seeds']}/"
                                                 f"{r['seeds']})" for r in failing)
                         if failing else ""))
    cal = data["calibration"]
    figures = [(f"lowest test AUC of a MIL-respecting seed {cal['respecting_min_test_auc']}; "
                f"their validation AUCs are at most {cal['respecting_val_auc_below']} or at "
                f"least {cal['respecting_val_auc_above']}",
                cal["respecting_min_test_auc"]),
               (f"largest drop of a learned MIL-respecting seed {cal['respecting_max_drop']}",
                cal["respecting_max_drop"]),
               (f"smallest drop of an inverted seed {cal['inverted_min_drop']}",
                cal["inverted_min_drop"])]
    shown = [text for text, value in figures if value is not None]
    if shown:
        lines.append("calibration: " + "; ".join(shown))
    changes = cal["verdict_changes"]
    lines.append(f"confirmed with {len(data['confirm_seeds'])} seeds: "
                 f"{len(screens_of(data))} cells; verdict changed from the screening in "
                 f"{len(changes)}" + ("".join(f"; {s['model']} on {s['test']} at D = "
                                                f"{s['dim']}: {s['screen']} -> {s['confirmed']}"
                                                for s in changes)))
    return "\n".join(lines) + "\n"


def sweep_passed(data: Mapping[str, Any]) -> bool:
    """Every positive control holds its criterion and no cell is an ``error``."""
    errors = any(c["verdict"] == "error" for rep in data["reports"].values()
                 for c in rep["results"])
    return not data["interrupted"] and not errors and all(r["holds"] for r in data["controls"])
