"""A saved report judged again by this version's verdict rule, without training.

    mil-assert rejudge reports/old.json -o reports/old-rejudged.json

A verdict is a function of a cell's per-seed AUCs (validation, test, and the capacity
control's): :func:`mil_assert.harness.finished_verdict`, the function every trained cell
goes through. When the rule changes (a partial-rule floor, a new outcome), a report's
trained AUCs can be judged again and nothing is retrained. The report records the rule
and test definitions it was judged by before, under ``"rejudged"``; cells that did not
finish (``error``) are left as they were. A test whose generator parameters changed
refuses (its bags are not the ones judged); a parameter added since keeps the earlier
bags at its default (as ``min_background = 1``, the lower bound the generators used
before it existed, does).

What cannot be judged again is what the report never measured: a capacity control that
was not trained stays untrained (its cells are judged as the run would have judged them
without it).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from mil_assert.harness import finished_verdict
from mil_assert.registry import builtin_models
from mil_assert.report import ReportError, environment, test_definitions, verdict_rule
from mil_assert.synthetic import TESTS


def rejudge_report(report: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``report`` with every finished cell's verdict, message and
    ``control_skipped`` from this version's rule, the built-in models' declarations of
    this version, and this version's verdict rule and test definitions; the earlier rule
    and definitions, the verdicts that changed and the version that judged are kept under
    ``"rejudged"``."""
    data = copy.deepcopy(report)
    # tuples as a report stores them: lists
    tests = json.loads(json.dumps(test_definitions(data.get("tests") or ())))
    for name, before in (data.get("tests") or {}).items():
        now = tests.get(name, {}).get("generator_parameters", {})
        moved = {key: (value, now.get(key))
                 for key, value in before.get("generator_parameters", {}).items()
                 if now.get(key) != value}
        if moved:
            raise ReportError(f"test {name}'s bags changed since this report was made "
                              f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in moved.items())}"
                              f"); its cells must be trained again, not judged again")
    changed = []
    for cell in data["results"]:
        test = TESTS.get(cell["test"])
        per_seed = {key: (cell.get(key) or {}).get("per_seed") for key in
                    ("val_auc", "test_auc", "control_auc")}
        finished = (cell["verdict"] != "error" and per_seed["val_auc"] is not None
                    and per_seed["test_auc"] is not None
                    and len(per_seed["val_auc"]) == len(per_seed["test_auc"])
                    == len(cell.get("seeds") or per_seed["val_auc"]))
        if test is None or not finished:
            continue
        verdict, message, skipped = finished_verdict(test, per_seed["val_auc"],
                                                     per_seed["test_auc"],
                                                     per_seed["control_auc"])
        if verdict != cell["verdict"]:
            changed.append({"model": cell["model"], "test": cell["test"],
                            "from": cell["verdict"], "to": verdict})
        cell.update(verdict=verdict, message=message, control_skipped=skipped)
    declared = builtin_models()
    for cell in data["results"]:
        spec = declared.get(cell["model"])
        if spec is not None:  # a built-in model: this version's declaration
            expected = spec.expected.get(cell["test"])
            cell["expected"] = None if expected is None else expected.verdict
            cell["expected_reason"] = None if expected is None else expected.reason
    here = environment("cpu")
    data["rejudged"] = {"verdict_rule": report.get("verdict_rule"),
                        "tests": report.get("tests"), "changed": changed,
                        "by": {"mil_assert": here["mil_assert"],
                               "git_commit": here["git_commit"]}}
    data["verdict_rule"] = verdict_rule()
    data["tests"] = tests
    return data
