"""The pytest plugin end to end: model selection, errors, strict declarations, reports, xdist.

Each test runs the shipped compliance tests (``mil_assert/compliance.py``) in a fresh
pytest process on the small models of ``tests/toy_models.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mil_assert.defaults import seed_list
from mil_assert.loading import ModelSpecError, resolve_models
from mil_assert.render import render

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "tests" / "toy_models.py"


def run_suite(
    *args: str, cwd: Path = REPO, report: Path | None = None
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", str(REPO / "mil_assert" / "compliance.py"),
               "-p", "no:cacheprovider", "--mil-seeds=2", "-v", "-rA", *args]
    if report is not None:
        command.append(f"--mil-report={report}")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_unknown_model_fails_with_the_list_of_models():
    run = run_suite("--model=no_such_model")
    assert run.returncode == 4, run.stdout + run.stderr
    assert "unknown model 'no_such_model'" in run.stderr
    assert "abmil" in run.stderr and "mi_net" in run.stderr
    assert "path/to/file.py:factory" in run.stderr


def test_one_seed_is_refused():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_list(1)
    assert seed_list(3) == [0, 1, 2]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests/missing_file.py:factory", "not found"),
        ("tests/toy_models.py:no_such_factory", "has no attribute 'no_such_factory'"),
        ("no_such_package.module:factory", "cannot import 'no_such_package.module'"),
        ("tests/toy_models.py:TINY_BUDGET", "not a factory"),
        ("abmil,,mi_net", "empty item"),
    ],
)
def test_unloadable_model_is_a_clear_error(spec, message):
    with pytest.raises(ModelSpecError, match=re.escape(message)) as error:
        resolve_models(spec, REPO)
    assert "built-in models: abmil" in str(error.value)


def test_a_model_selected_twice_is_a_clear_error():
    with pytest.raises(ModelSpecError, match="selected twice"):
        resolve_models("abmil,mi_net,abmil", REPO)


def test_a_file_model_outside_the_repository_and_strict_declarations(tmp_path):
    outside = tmp_path / "elsewhere" / "my_mil_model.py"
    outside.parent.mkdir()
    outside.write_text(TOY.read_text())
    report = tmp_path / "r.json"
    models = ",".join(f"{outside}:{name}" for name in
                      ("shortcut", "shortcut_undeclared", "shortcut_declared_pass"))
    run = run_suite(f"--model={models}", "-k", "single_concept", cwd=tmp_path, report=report)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "test_single_concept[shortcut] XFAIL" in out  # declared violation, measured one
    assert "test_single_concept[shortcut_undeclared] FAILED" in out
    assert "MIL violation: shortcut_undeclared on single_concept" in out
    assert "test_single_concept[shortcut_declared_pass] FAILED" in out
    assert "declared pass (a wrong declaration, to see it fail), measured violation" in out
    verdicts = {r["model"]: r["verdict"] for r in json.loads(report.read_text())["results"]}
    assert set(verdicts.values()) == {"violation"}


BROKEN = ("wrong_shape", "raises", "returns_nan")


@pytest.fixture(scope="module")
def serial_and_parallel_runs(tmp_path_factory):
    """The same selection, from the repository root, run serially and with ``-n 2``: a
    model file given by a relative path, three broken models and one that works, on a
    test of each kind."""
    folder = tmp_path_factory.mktemp("runs")
    models = ",".join(["tests/toy_models.py:tiny_max"] + [f"{TOY}:{name}" for name in BROKEN])
    tests = ("-k", "single_concept or label_swap")
    serial = run_suite(f"--model={models}", *tests, report=folder / "nested" / "serial.json")
    parallel = run_suite(f"--model={models}", *tests, "-n", "2",
                         report=folder / "parallel.json")
    return serial, folder / "nested" / "serial.json", parallel, folder / "parallel.json"


def test_broken_models_become_error_cells_and_the_report_completes(serial_and_parallel_runs):
    run, report, _, _ = serial_and_parallel_runs
    assert run.returncode == 1, run.stdout + run.stderr
    assert "test_single_concept[tiny_max]" in run.stdout  # a ModelSpec keeps its own name
    assert "MIL compliance matrix" in run.stdout
    data = json.loads(report.read_text())
    assert data["schema"] == "mil-assert/report/v1"
    assert {"python", "torch", "numpy", "mil_assert", "device"} <= set(data["environment"])
    assert data["seeds"] == [0, 1] and data["budget"]["epochs"] == 60
    by_model: dict[str, list[dict]] = {}
    for result in data["results"]:
        by_model.setdefault(result["model"], []).append(result)
    assert all(len(cells) == 2 for cells in by_model.values()), "every cell completes"
    assert all(c["verdict"] == "error" for m in BROKEN for c in by_model[m])
    assert "3 class logits" in by_model["wrong_shape"][0]["message"]
    assert "broken on purpose" in by_model["raises"][0]["message"]
    assert "non-finite" in by_model["returns_nan"][0]["message"]
    working = by_model["tiny_max"]
    assert all(c["verdict"] != "error" for c in working)
    for cell in working:
        assert set(cell) >= {"model", "test", "verdict", "expected", "val_auc", "test_auc",
                             "seconds", "message"}
        assert len(cell["test_auc"]["per_seed"]) == 2
        assert cell["budget_overrides"]["epochs"] == 3


def test_xdist_and_serial_runs_agree(serial_and_parallel_runs):
    serial, serial_report, parallel, parallel_report = serial_and_parallel_runs
    assert "2 workers" in parallel.stdout, parallel.stdout + parallel.stderr

    def matrix(run):
        lines = run.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if "MIL compliance matrix" in line)
        return [line for line in lines[start + 1:start + 8] if line.startswith("|")]

    assert matrix(serial) == matrix(parallel) and len(matrix(serial)) == 6

    def cells(path):
        return [(r["model"], r["test"], r["verdict"], r["message"], r["val_auc"],
                 r["test_auc"]) for r in json.loads(path.read_text())["results"]]

    assert cells(serial_report) == cells(parallel_report)
    serial_data = json.loads(serial_report.read_text())
    parallel_data = json.loads(parallel_report.read_text())
    for fmt in ("md", "tex", "csv"):
        assert render(serial_data, fmt) == render(parallel_data, fmt)


def test_a_model_option_runs_only_that_models_cells_in_this_repository():
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    listed = subprocess.run([sys.executable, "-m", "pytest", "--model=transmil", "--co", "-q"],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    items = [line for line in listed.stdout.splitlines() if "::" in line]
    assert items == [f"mil_assert/compliance.py::test_{test}[transmil]" for test in
                     ("single_concept", "threshold_poisoned", "false_frequency", "label_swap")]
    assert "deselected" in listed.stdout  # the self-tests
