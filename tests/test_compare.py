"""`mil-assert compare`: a new report's cells against the reference report's."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from mil_assert.cli import main
from mil_assert.compare import compare_reports

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def reference() -> dict:
    return json.loads((REPORTS / "compliance.json").read_text())


def cell(report: dict, model: str, test: str) -> dict:
    return next(c for c in report["results"] if (c["model"], c["test"]) == (model, test))


def test_a_report_agrees_with_itself():
    report = reference()
    comparison = compare_reports(report, copy.deepcopy(report))
    assert len(comparison.cells) == len(report["results"])
    assert comparison.disagreements == []
    assert all(c.auc_change == 0.0 for c in comparison.cells if c.before != "error")
    assert comparison.only_before == comparison.only_after == []


def test_a_changed_verdict_and_its_auc_drift_are_reported(tmp_path, capsys):
    report = reference()
    new = copy.deepcopy(report)
    changed = cell(new, "abmil", "single_concept")
    changed["verdict"] = "pass"
    changed["test_auc"]["per_seed"][2] += 0.25
    changed["seconds"] = cell(report, "abmil", "single_concept")["seconds"] / 4
    new["results"].remove(cell(new, "mi_net", "label_swap"))
    comparison = compare_reports(report, new)
    [disagreement] = comparison.disagreements
    assert (disagreement.model, disagreement.test) == ("abmil", "single_concept")
    assert abs(disagreement.auc_change - 0.25) < 1e-9
    assert abs(disagreement.seconds_before / disagreement.seconds_after - 4) < 1e-9
    assert comparison.only_before == [("mi_net", "label_swap")]

    paths = tmp_path / "reference.json", tmp_path / "new.json"
    for path, data in zip(paths, (report, new), strict=True):
        path.write_text(json.dumps(data))
    assert main(["compare", *map(str, paths)]) == 1
    out = capsys.readouterr().out
    assert "DIFFER" in out and "4.0x" in out
    agreeing = len(new["results"]) - 1
    assert f"{agreeing} of {agreeing + 1} cells on the same seeds agree" in out
    assert "1 cell(s) only in the reference: mi_net / label_swap" in out


def test_cells_on_other_seeds_are_not_judged_as_disagreeing():
    """A GPU run with fewer seeds: its AUCs are compared on the common seeds, its
    verdicts are not."""
    report = reference()
    new = copy.deepcopy(report)
    for result in new["results"]:
        result["seeds"] = result["seeds"][:3]
        for key in ("val_auc", "test_auc"):
            result[key]["per_seed"] = result[key]["per_seed"][:3]
        result["verdict"] = "inconclusive"
    comparison = compare_reports(report, new)
    assert comparison.disagreements == []
    assert {c.common_seeds for c in comparison.cells} == {(0, 1, 2)}
    assert not any(c.same_seeds for c in comparison.cells)


def test_compare_refuses_a_file_that_is_not_a_report(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["compare", str(REPORTS / "compliance.json"), str(bad)]) == 2
    assert "not a report object" in capsys.readouterr().err


def test_the_gpu_check_script_parses():
    """`scripts/gpu-check` is bash that runs `check` and then `compare` (run on a GPU,
    docs/performance.md); here only its syntax is checked."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "compare" in script.read_text()
