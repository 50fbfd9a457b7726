"""The Python API and ``mil-assert check``; bad input on every route; GPUs per worker.

Every bad input gives one clear line and a documented exit status (pytest: 4 for a usage
error, 1 for a failing cell, 2 when interrupted; ``mil-assert check``: 2, 1, 130; the API
raises ``ValueError``), and an interrupted run still writes the finished cells' report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import toy_models

import mil_assert
import mil_assert.runner
from mil_assert.cli import main
from mil_assert.devices import resolve_device
from mil_assert.isolation import CellWorker
from mil_assert.plugin import worker_index

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "tests" / "toy_models.py"

BAD_MODELS = '''
import torch
from torch import nn

from mil_assert import ModelSpec

TINY = {"n_train_bags": 64, "n_eval_bags": 64, "epochs": 3}
CALLS = []


class Max(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, X, mask):
        return self.score(X).squeeze(-1).masked_fill(~mask, -1e9).amax(1)


def no_dim():
    return Max(16)


def raises(dim):
    raise RuntimeError("cannot build this model")


def interrupted_later(dim):
    CALLS.append(dim)
    if len(CALLS) > 3:  # once for the contract check, then once per seed and cell: the
        raise KeyboardInterrupt  # second cell's first seed
    return Max(dim)


RAISES = ModelSpec(name="raises", factory=raises, budget=TINY)
INTERRUPTED = ModelSpec(name="interrupted", factory=interrupted_later, budget=TINY)
'''


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "bad_models.py"
    path.write_text(textwrap.dedent(BAD_MODELS))
    return path


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- the API -------------------------------------------------------------------------

def test_the_api_returns_a_report_with_matrix_frame_gate_and_json(tmp_path):
    report = mil_assert.check([toy_models.tiny_max, toy_models.shortcut],
                              tests=["single_concept", "label_swap"], seeds=2, progress=False)
    # shortcut's single_concept violation is declared; its label_swap one is not
    assert not report.passed and len(report.failures) == 1
    assert report.failures[0].startswith("MIL violation: shortcut on label_swap")
    assert "| tiny_max" in report.matrix and "| shortcut" in report.matrix
    assert "gate: failed" in str(report)
    frame = report.to_frame()
    assert len(frame) == 2 * 2 * 2
    assert list(frame.columns) == ["model", "test", "seed", "val_auc", "test_auc",
                                   "seed_outcome", "verdict", "expected"]
    row = frame[(frame.model == "shortcut") & (frame.test == "single_concept")].iloc[0]
    assert row.verdict == "violation" and row.expected == "violation"
    assert row.seed_outcome in ("inverted", "lost")
    saved = json.loads(report.save(tmp_path / "r.json").read_text())
    assert saved["schema"] == "mil-assert/report/v1" and len(saved["results"]) == 4
    assert saved["results"][0]["val_auc"]["per_seed"] == list(frame.val_auc[:2])


def test_an_undeclared_violation_fails_the_gate():
    report = mil_assert.check(toy_models.shortcut_undeclared, tests="single_concept", seeds=2,
                              progress=False)
    assert not report.passed
    assert report.failures[0].startswith("MIL violation: shortcut_undeclared on single_concept")


def test_jobs_give_the_same_results_as_one_job(capsys, tmp_path):
    args = [f"{TOY}:tiny_max", "--tests", "single_concept,label_swap", "--seeds", "2",
            "--quiet"]
    code_one, _, _ = cli(capsys, *args, "--report", str(tmp_path / "one.json"))
    code_two, _, _ = cli(capsys, *args, "--jobs", "2", "--report", str(tmp_path / "two.json"))
    assert code_one == code_two == 0

    def per_seed(name: str) -> list[tuple]:
        """Each cell's verdict and its per-seed AUCs, seed by seed, unrounded."""
        cells = json.loads((tmp_path / name).read_text())["results"]
        return [(c["model"], c["test"], c["verdict"], c["seeds"],
                 *(None if c[key] is None else c[key]["per_seed"]
                   for key in ("val_auc", "test_auc", "control_auc"))) for c in cells]

    one = per_seed("one.json")
    assert one == per_seed("two.json")
    assert [cell[:2] for cell in one] == [("tiny_max", "single_concept"),
                                          ("tiny_max", "label_swap")]
    assert all(len(cell[4]) == 2 for cell in one) and one[1][6] is not None


# --- bad input: mil-assert check and the API -----------------------------------------

@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_model"], "unknown model 'no_such_model'"),
        (["no_such_package.module:build"], "cannot import 'no_such_package.module'"),
        (["{bad}:no_dim"], "cannot be called as factory(dim)"),
        (["abmil", "--seeds", "1"], "a verdict needs at least 2 seeds"),
        (["abmil", "--tests", "single_concept,no_such_test"], "unknown test(s) ['no_such_test']"),
        (["abmil", "--report", "{file}/r.json"], "cannot write the report to"),
        (["abmil", "--device", "tpu"], "unknown device 'tpu'"),
    ],
    ids=["unknown", "unimportable", "signature", "one-seed", "unknown-test", "unwritable",
         "device"],
)
def test_bad_input_is_one_line_and_exit_status_2(capsys, tmp_path, bad_models, argv, message):
    (tmp_path / "file").write_text("")
    argv = [a.format(bad=bad_models, file=tmp_path / "file") for a in argv]
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert err.startswith("mil-assert: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "file" / "r.json").exists()


@pytest.mark.parametrize(
    ("models", "options", "message"),
    [
        ("no_such_model", {}, "unknown model"),
        ("{bad}:no_dim", {}, "cannot be called as factory(dim)"),
        ("abmil", {"seeds": 1}, "at least 2 seeds"),
        ("abmil", {"tests": ["nope"]}, "unknown test(s) ['nope']"),
        ("abmil", {"budget": {"epoch": 3}}, "unknown budget field"),
        (42, {}, "cannot judge a int"),
    ],
)
def test_the_api_refuses_bad_input_before_training(bad_models, models, options, message):
    if isinstance(models, str):
        models = models.format(bad=bad_models)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        mil_assert.check(models, progress=False, **options)


def test_a_factory_that_raises_fails_the_gate_with_its_message(capsys, bad_models):
    code, out, _ = cli(capsys, f"{bad_models}:RAISES", "--tests", "label_swap", "--seeds", "2",
                       "--quiet")
    assert code == 1
    assert "| raises  | error" in out
    assert ("FAILED error: raises on label_swap: seed 0: RuntimeError: cannot build this "
            "model") in out


def test_an_interrupted_check_writes_the_finished_cells(capsys, monkeypatch, tmp_path):
    real, calls = CellWorker.run, []

    def interrupted_on_the_second_cell(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(CellWorker, "run", interrupted_on_the_second_cell)
    report = tmp_path / "r.json"
    code, out, err = cli(capsys, f"{TOY}:tiny_max", "--seeds", "2", "--quiet",
                         "--report", str(report))
    assert code == 130
    assert "interrupted after 1 of 4 cells" in err
    data = json.loads(report.read_text())
    assert [r["test"] for r in data["results"]] == ["single_concept"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left

    calls.clear()
    partial = mil_assert.check(toy_models.tiny_max, seeds=2, progress=False)
    assert partial.interrupted and not partial.passed and len(partial.results) == 1


def test_the_decorator_refuses_bad_input_at_collection():
    with pytest.raises(ValueError, match="unknown test"):
        mil_assert.parametrize_with_checks([toy_models.tiny_max], tests=["nope"])
    with pytest.raises(ValueError, match="given twice"):
        mil_assert.parametrize_with_checks([toy_models.tiny_max, toy_models.tiny_max])
    mark = mil_assert.parametrize_with_checks([toy_models.shortcut], tests=["single_concept"])
    [param] = mark.args[1]
    assert param.id == "shortcut-single_concept"
    assert param.marks[0].kwargs["strict"] is True


# --- bad input: the pytest plugin -----------------------------------------------------

def run_pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs",
                           "mil_assert.compliance", "--mil-seeds=2", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mil-model={bad}:no_dim"], "cannot be called as factory(dim)"),
        (["--mil-model=abmil", "--mil-seeds=1"], "a verdict needs at least 2 seeds"),
        (["--mil-model=abmil", "--mil-report={file}/r.json"], "cannot write the report"),
    ],
    ids=["signature", "one-seed", "unwritable"],
)
def test_plugin_usage_errors_stop_at_start_with_one_line(tmp_path, bad_models, args, message):
    (tmp_path / "file").write_text("")
    run = run_pytest(*[a.format(bad=bad_models, file=tmp_path / "file") for a in args],
                     cwd=tmp_path)
    assert run.returncode == 4, run.stdout + run.stderr
    assert run.stderr.startswith("ERROR: mil-assert: ") and message in run.stderr
    assert "Traceback" not in run.stderr


def test_plugin_interrupted_run_keeps_the_finished_cells(tmp_path, bad_models):
    report = tmp_path / "r.json"
    run = run_pytest(f"--mil-model={bad_models}:INTERRUPTED,{bad_models}:RAISES",
                     f"--mil-report={report}", cwd=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr  # pytest's "interrupted"
    assert "KeyboardInterrupt" in run.stdout
    data = json.loads(report.read_text())
    # items run test by test: both models' single_concept cells finished, then the interrupt
    assert [(r["model"], r["test"]) for r in data["results"]] == [
        ("interrupted", "single_concept"), ("raises", "single_concept")]


# --- several GPUs ----------------------------------------------------------------------

def test_each_worker_takes_its_own_gpu_round_robin(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [resolve_device("cuda", w) for w in range(5)] == [
        torch.device("cuda", i) for i in (0, 1, 2, 0, 1)]
    assert resolve_device("auto", 4) == torch.device("cuda", 1)
    assert resolve_device("cuda", None) == torch.device("cuda")
    assert resolve_device("cuda:2", 0) == torch.device("cuda", 2)  # an explicit GPU stays
    assert resolve_device("cpu", 1) == torch.device("cpu")


def test_xdist_worker_numbers():
    assert worker_index(SimpleNamespace(workerinput={"workerid": "gw7"})) == 7
    assert worker_index(SimpleNamespace()) is None
