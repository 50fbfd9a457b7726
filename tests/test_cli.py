"""The mil-assert command: render and merge saved reports; bad input, clear message."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mil_assert.benchmark import Timing, format_table
from mil_assert.cli import main
from mil_assert.render import latex_escape, render

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reports" / "compliance.json"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def small_report(models=("m1",), tests=("single_concept", "label_swap"), **changes) -> dict:
    def summary(values):
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return {"mean": mean, "std": std, "per_seed": values}

    results = [{"model": m, "test": t, "verdict": "pass", "expected": None,
                "expected_reason": None, "seeds": [0, 1], "val_auc": summary([0.9, 0.8]),
                "test_auc": summary([0.85, 0.75]), "seconds": 1.0, "message": "ok",
                "budget_overrides": {}} for m in models for t in tests]
    report = {"schema": "mil-assert/report/v1", "environment": {"device": "cpu"},
              "budget": {"epochs": 60}, "instance_dim": 16, "seeds": [0, 1],
              "tests": {}, "verdict_rule": {}, "results": results}
    report.update(changes)
    return report


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("stem", ["compliance", "recent-systems"])
@pytest.mark.parametrize("fmt", ["md", "tex", "csv"])
def test_render_of_the_reference_report_reproduces_the_committed_files(capsys, stem, fmt):
    committed = REPO / "reports" / f"{stem}.{fmt}"
    code, out, _ = run(capsys, "render", str(REPO / "reports" / f"{stem}.json"), "--format",
                       fmt)
    assert code == 0
    assert out == committed.read_text(encoding="utf-8")


def test_markdown_matches_the_matrix_pytest_prints():
    table = render(json.loads(REFERENCE.read_text()), "md")
    assert table.splitlines()[0].startswith("| model")
    assert "| mi_net        | pass 0.89 ± 0.04" in table


def test_latex_is_a_booktabs_table_with_escaped_names():
    report = small_report(models=("a_b&c%d$#{x}~^\\",))
    tex = render(report, "tex", with_validation=True)
    lines = tex.splitlines()
    assert lines[1] == r"\begin{tabular}{lcc}"
    assert [r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"] == [
        line for line in lines if line in (r"\toprule", r"\midrule", r"\bottomrule",
                                           r"\end{tabular}")]
    row = next(line for line in lines if line.startswith("a"))
    assert row.startswith(r"a\_b\&c\%d\$\#\{x\}\textasciitilde{}\textasciicircum{}"
                          r"\textbackslash{} & ")
    assert r"$\checkmark$ 0.80 $\pm$ 0.07 (0.85 $\pm$ 0.07)" in row
    assert row.endswith(r" \\") and row.count(" & ") == 2
    assert latex_escape("single_concept") == r"single\_concept"


def needs(*programs: str) -> None:
    """Skip without the LaTeX programs; where ``MIL_ASSERT_REQUIRE_LATEX`` is set (CI,
    ``.ci/run``, which installs them) fail instead, so the compile tests cannot skip there."""
    missing = [program for program in programs if shutil.which(program) is None]
    if missing and os.environ.get("MIL_ASSERT_REQUIRE_LATEX"):
        pytest.fail(f"{', '.join(missing)} not found, and MIL_ASSERT_REQUIRE_LATEX is set: "
                    f"install a LaTeX engine with booktabs (see .ci/run)")
    if missing:
        pytest.skip(f"no LaTeX engine installed ({', '.join(missing)} not found)")


def test_latex_compiles_in_a_minimal_document(tmp_path):
    needs("pdflatex")
    table = render(small_report(models=("odd_name&50%",)), "tex")
    document = (r"\documentclass{article}\usepackage{booktabs}\usepackage{amssymb}"
                r"\begin{document}" + table + r"\end{document}")
    (tmp_path / "t.tex").write_text(document)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]


def test_csv_has_one_row_per_cell():
    rows = list(csv.DictReader(io.StringIO(render(small_report(), "csv"))))
    assert [(r["model"], r["test"]) for r in rows] == [("m1", "single_concept"),
                                                      ("m1", "label_swap")]
    assert rows[0]["test_auc_mean"] == "0.8000" and rows[0]["n_seeds"] == "2"


def test_render_writes_to_a_file(capsys, tmp_path):
    report = write(tmp_path / "r.json", small_report())
    code, out, _ = run(capsys, "render", str(report), "--format", "csv", "-o",
                       str(tmp_path / "r.csv"))
    assert code == 0 and out == ""
    assert (tmp_path / "r.csv").read_text().startswith("model,test,verdict")


def test_merge_combines_models_in_matrix_order(capsys, tmp_path):
    a = write(tmp_path / "a.json", small_report(models=("m2",)))
    b = write(tmp_path / "b.json", small_report(models=("m1",), tests=("label_swap",)))
    code, out, _ = run(capsys, "merge", str(a), str(b), "-o", str(tmp_path / "c.json"))
    assert code == 0 and "3 cells" in out
    merged = json.loads((tmp_path / "c.json").read_text())
    assert [(r["model"], r["test"]) for r in merged["results"]] == [
        ("m2", "single_concept"), ("m2", "label_swap"), ("m1", "label_swap")]
    assert [m["report"] for m in merged["merged_from"]] == [str(a), str(b)]
    code, out, err = run(capsys, "render", str(tmp_path / "c.json"))  # the merged report renders
    assert code == 0 and err == "", err
    rows = [line.split("|")[1:-1] for line in out.splitlines()[2:]]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["m2", "pass 0.80 ± 0.07", "pass 0.80 ± 0.07"], ["m1", "", "pass 0.80 ± 0.07"]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budget": {"epochs": 20}}, "'budget' differ"),
        ({"seeds": [0, 1, 2]}, "'seeds' differ"),
        ({"instance_dim": 8}, "'instance_dim' differ"),
    ],
)
def test_merge_refuses_runs_of_different_settings(capsys, tmp_path, change, message):
    a = write(tmp_path / "a.json", small_report(models=("m1",)))
    b = write(tmp_path / "b.json", small_report(models=("m2",), **change))
    code, _, err = run(capsys, "merge", str(a), str(b), "-o", str(tmp_path / "c.json"))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "c.json").exists()


def test_merge_refuses_a_cell_held_twice(capsys, tmp_path):
    a = write(tmp_path / "a.json", small_report())
    code, _, err = run(capsys, "merge", str(a), str(a), "-o", str(tmp_path / "c.json"))
    assert code == 2 and "m1 / single_concept is in both" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read report"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "not a report object"),
        (json.dumps({"schema": "mil-assert/report/v0"}), "has schema 'mil-assert/report/v0'"),
        (json.dumps({"schema": "mil-assert/report/v1"}), "lacks the key(s)"),
    ],
)
def test_bad_reports_give_a_message_and_exit_2(capsys, tmp_path, content, message):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "render", str(path))
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_unknown_format_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["render", str(REFERENCE), "--format", "pdf"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pdf'" in capsys.readouterr().err


def test_the_console_script_is_installed():
    (script,) = entry_points(group="console_scripts", name="mil-assert")
    assert script.value == "mil_assert.cli:main"
    assert (Path(sys.executable).parent / "mil-assert").exists()


def test_render_all_writes_every_format(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, _ = run(capsys, "render", str(REFERENCE), "--format", "all", "-o",
                       str(tmp_path))
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["compliance-method.txt", "compliance.bib", "compliance.csv",
                     "compliance.md", "compliance.png", "compliance.tex"]
    assert (tmp_path / "compliance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    method = (tmp_path / "compliance-method.txt").read_text()
    report = json.loads(REFERENCE.read_text())
    assert f"{len(report['seeds'])} seeds" in method and "--mil-seeds=5" in method
    assert "\\citet{raff2023reproducibility}" in method
    bib = (tmp_path / "compliance.bib").read_text()
    assert "@inproceedings{raff2023reproducibility," in bib
    assert f"version = {{{report['environment']['mil_assert']}}}" in bib


def test_method_text_and_bibtex_compile(tmp_path):
    needs("pdflatex", "bibtex")
    report = json.loads(REFERENCE.read_text())
    (tmp_path / "refs.bib").write_text(render(report, "bib"))
    (tmp_path / "p.tex").write_text(
        r"\documentclass{article}\usepackage{natbib}\begin{document}"
        + render(report, "method").split("\n\nTo reproduce")[0]
        + r"\bibliographystyle{plainnat}\bibliography{refs}\end{document}")
    latex = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "p.tex"]
    for command in (latex, ["bibtex", "p"], latex, latex):  # the last run resolves \citet
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout[-2000:]
    # bibtex and pdflatex exit 0 on a citation without an entry: read their logs
    assert "Warning--" not in (tmp_path / "p.blg").read_text()
    log = (tmp_path / "p.log").read_text(errors="replace")
    assert "undefined" not in log and "\\citation" in (tmp_path / "p.aux").read_text()


class FakeClock:
    """``perf_counter`` for :mod:`mil_assert.benchmark`: repeat ``r``'s run of way ``w``
    (of ``ways``, in turn) lasts ``(w + 1) x (1 s, 3 s)[r]``."""

    def __init__(self, ways: int) -> None:
        self.ways, self.calls, self.now = ways, 0, 0.0

    def perf_counter(self) -> float:
        repeat, way = divmod(self.calls // 2, self.ways)
        if self.calls % 2:  # the end of a timed run
            self.now += (way + 1) * (1.0, 3.0)[repeat]
        self.calls += 1
        return self.now


def test_benchmark_prints_times_device_and_ratios(capsys, monkeypatch):
    import mil_assert.benchmark

    monkeypatch.chdir(Path(__file__).parent.parent)
    ways = 4 if mil_assert.benchmark.torchmil_available() else 3
    clock = FakeClock(ways)
    monkeypatch.setattr(mil_assert.benchmark, "time", clock)  # the runs train for real
    assert main(["benchmark", "--model", "tests/toy_models.py:tiny_max", "--seeds", "2",
                 "--repeats", "2", "--slow-epochs", "1"]) == 0
    assert clock.calls == 2 * 2 * ways  # each way timed once per repeat
    out = capsys.readouterr().out
    assert "tiny_max on single_concept, 2 seeds" in out and "median of 2 repeats" in out
    assert "device: CPU" in out or "(CUDA)" in out
    rows = [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in out.splitlines() if line.startswith("| (")]
    # (c) and (d) train 1 seed x 1 epoch: scaled by 2 seeds x 3 epochs (tiny_max's) = 6
    scaled = "scaled from 1 seed(s) x 1 epoch(s)"
    assert rows == [["(a) harness", "2.0", "1.0-3.0", "1.0x", ""],
                    ["(b) plain padded loop", "4.0", "2.0-6.0", "2.0x", ""],
                    ["(c) batch-size-1 loop", "36.0", "18.0-54.0", "18.0x", scaled],
                    ["(d) torchmil Trainer", "48.0", "24.0-72.0", "24.0x", scaled]][:ways]


def test_the_benchmark_ratio_is_each_way_against_the_harness():
    timings = [Timing("(a) harness", [2.0, 3.0, 1.0], 1.0, ""),
               Timing("(b) plain padded loop", [5.0, 4.0, 6.0], 1.0, ""),
               Timing("(c) batch-size-1 loop", [0.5], 10.0, "1 seed x 3 epochs, scaled")]
    rows = [line.split("|") for line in format_table(timings).splitlines()[2:]]
    assert [(row[2].strip(), row[3].strip(), row[4].strip()) for row in rows] == [
        ("2.0", "1.0-3.0", "1.0x"), ("5.0", "4.0-6.0", "2.5x"), ("5.0", "5.0-5.0", "2.5x")]


def test_benchmark_times_one_model(capsys):
    assert main(["benchmark", "--model", "abmil,mi_net"]) == 2
    assert "benchmark times one model" in capsys.readouterr().err


def test_method_text_states_the_rule_of_each_kind_of_test_it_reports():
    report = json.loads(REFERENCE.read_text())
    method = render(report, "method")
    assert "test AUC falls below 0.4" in method
    assert "On \\texttt{label\\_swap}, whose rule no MIL model can represent" in method
    assert "held-out AUC exceeds 0.6" in method and "capacity control" in method
    report["results"] = [r for r in report["results"] if r["test"] != "label_swap"]
    assert "held-out AUC" not in render(report, "method")


# --- exit status precedence: a model that learned nothing beside an undeclared violation ---

BOTH = "tests/toy_models.py:constant,tests/toy_models.py:shortcut_undeclared"
VIOLATION = ("MIL violation: shortcut_undeclared on single_concept: a shortcut ranks the "
             "shifted test bags wrongly of 2 seeds: 2 inverted")
NOTHING = ("learned nothing: constant: the model learned none of the training distributions: "
           "check that it trains")


@pytest.mark.parametrize(("models", "status"), [
    (BOTH, 6),  # 6 outranks 1: the run cannot be trusted while a model learned nothing
    ("tests/toy_models.py:shortcut_undeclared", 1),
    ("tests/toy_models.py:constant", 6),
], ids=["both", "violation", "learned_nothing"])
def test_check_exit_status_learned_nothing_over_a_violation(capsys, monkeypatch, models,
                                                             status):
    monkeypatch.chdir(REPO)
    code = main(["check", models, "--tests", "single_concept", "--seeds", "2", "--device",
                 "cpu", "--quiet"])
    out = capsys.readouterr().out
    assert code == status
    lines = {BOTH: [VIOLATION, NOTHING], "tests/toy_models.py:constant": [NOTHING]}
    assert [line.removeprefix("FAILED ") for line in out.splitlines()
            if line.startswith("FAILED ")] == lines.get(models, [VIOLATION])


def test_the_api_reports_both_failures_and_the_model_that_learned_nothing(monkeypatch):
    import mil_assert

    monkeypatch.chdir(REPO)
    report = mil_assert.check(BOTH, tests="single_concept", seeds=2, device="cpu",
                              progress=False)
    assert not report.passed and report.untrained == ["constant"]
    assert report.failures == [VIOLATION, NOTHING]


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_pytest_exit_status_learned_nothing_over_a_violation(xdist):
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "mil_assert" / "compliance.py"),
         "-p", "no:cacheprovider", "--mil-seeds=2", "--mil-device=cpu", f"--mil-model={BOTH}",
         "-k", "single_concept", *xdist],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert run.returncode == 6, run.stdout + run.stderr
    assert "1 failed, 1 skipped" in run.stdout  # the violation fails, constant's cell skips
    assert f"FAILED {NOTHING}" in run.stdout
