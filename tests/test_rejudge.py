"""Judging a saved report again by this version's rule, and merging a model measured again."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mil_assert.cli import main
from mil_assert.rejudge import rejudge_report
from mil_assert.report import ReportError, merge_reports
from mil_assert.verdict import judge

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def recent() -> dict:
    """The committed 12-seed report as a version before the partial-rule floor wrote it:
    its rule without ``partial_sds``, and focus_mil's threshold_poisoned cell (validation
    AUC 0.70-0.84) judged a pass."""
    report = json.loads((REPORTS / "recent-systems.json").read_text())
    report.pop("rejudged", None)
    report.pop("merged_from", None)
    report["environment"]["git_commit"] = "ce114856fa" + "0" * 30
    report["verdict_rule"].pop("partial_sds")
    for definition in report["tests"].values():
        definition["partial_rule_auc"] = None
    focus = cell(report, "focus_mil", "threshold_poisoned")
    focus["verdict"] = focus["expected"] = "pass"
    return report


def cell(report: dict, model: str, test: str) -> dict:
    return next(c for c in report["results"] if (c["model"], c["test"]) == (model, test))


def test_a_partial_rule_no_longer_passes_when_judged_again():
    """focus_mil's threshold_poisoned pass came from seeds at validation AUC 0.70-0.84,
    below the partial-rule floor's bar of 0.895."""
    before = recent()
    after = rejudge_report(before)
    assert cell(before, "focus_mil", "threshold_poisoned")["verdict"] == "pass"
    rejudged = cell(after, "focus_mil", "threshold_poisoned")
    assert rejudged["verdict"] == "inconclusive" and "partial" in rejudged["message"]
    assert after["rejudged"]["changed"] == [{"model": "focus_mil", "test": "threshold_poisoned",
                                             "from": "pass", "to": "inconclusive"}]
    assert after["rejudged"]["verdict_rule"] == before["verdict_rule"]
    assert "partial_sds" in after["verdict_rule"] and "partial_sds" not in before["verdict_rule"]
    val = rejudged["val_auc"]["per_seed"]
    assert (rejudged["verdict"], rejudged["message"]) == judge(
        "shift", val, rejudged["test_auc"]["per_seed"], None,
        after["tests"]["threshold_poisoned"]["partial_rule_auc"])


def test_bags_that_changed_cannot_be_judged_again():
    report = recent()
    report["tests"]["threshold_poisoned"]["generator_parameters"]["max_background"] = 5
    with pytest.raises(ReportError, match="max_background: 5 -> 9.*trained again"):
        rejudge_report(report)


def test_a_model_measured_again_replaces_its_cells(tmp_path, capsys):
    old = rejudge_report(recent())
    again = copy.deepcopy(old)
    again["results"] = [copy.deepcopy(cell(old, "pack_mil", "label_swap"))]
    again["results"][0]["message"] = "measured again"
    again["budget"].update(restarts=None, name="default")  # fields the old one lacks
    again["environment"]["git_commit"] = "f" * 40
    with pytest.raises(ReportError, match="give --replace to keep the later one"):
        merge_reports([("old", old), ("again", again)])
    merged = merge_reports([("old", old), ("again", again)], replace=True)
    assert len(merged["results"]) == len(old["results"])
    assert cell(merged, "pack_mil", "label_swap")["message"] == "measured again"
    assert [c["model"] for c in merged["results"]] == [c["model"] for c in old["results"]]
    from mil_assert.method import method_text

    text = method_text(merged)
    assert f"# at commit {'f' * 40}\n    pytest --pyargs mil_assert.compliance " \
           f"--mil-model=pack_mil --mil-seeds=12" in text
    assert "commits ce114856fa (acmil," in text and f"{'f' * 10} (pack\\_mil)" in text
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "again.json").write_text(json.dumps(again))
    (tmp_path / "old-rule.json").write_text(json.dumps(recent()))
    assert main(["merge", str(tmp_path / "old.json"), str(tmp_path / "again.json"),
                 "--replace", "-o", str(tmp_path / "m.json")]) == 0
    assert main(["rejudge", str(tmp_path / "old-rule.json"), "-o",
                 str(tmp_path / "r.json")]) == 0
    assert "focus_mil / threshold_poisoned: pass -> inconclusive" in capsys.readouterr().out


def test_judging_again_takes_this_versions_declarations():
    report = recent()
    cell(report, "focus_mil", "threshold_poisoned")[
        "expected"] = "pass"
    after = rejudge_report(report)
    declared = cell(after, "focus_mil", "threshold_poisoned")
    assert declared["expected"] == "inconclusive" == declared["verdict"]
    assert after["rejudged"]["by"]["mil_assert"]


def test_merging_a_merged_report_keeps_each_models_commit():
    """The committed table was itself merged from runs at two commits; merging a third
    run into it must keep mhim_mil's and ins_max's commit, not credit the first input's
    commit with every model it holds."""
    old = json.loads((REPORTS / "recent-systems.json").read_text())
    commits = {model: entry["environment"]["git_commit"]
               for entry in old["merged_from"] for model in entry["models"]}
    again = copy.deepcopy(old)
    again.pop("merged_from")
    again["results"] = [copy.deepcopy(cell(old, "acmil", "label_swap"))]
    again["environment"]["git_commit"] = "f" * 40
    merged = merge_reports([("old", old), ("again", again)], replace=True)
    after = {}
    for entry in merged["merged_from"]:
        for model in entry["models"]:
            after.setdefault(model, set()).add(entry["environment"]["git_commit"])
    assert after.pop("acmil") == {commits["acmil"], "f" * 40}  # three of its cells stay
    assert after == {model: {commit} for model, commit in commits.items() if model != "acmil"}
