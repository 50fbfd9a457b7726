"""A model that ends the process loses only its own cells, on every route; SIGTERM under
``pytest -n`` leaves a report marked interrupted and no process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mil_assert
from mil_assert.cli import main

MODELS = '''
import os

import torch
from torch import nn

from mil_assert import ModelSpec

TINY = {"n_train_bags": 64, "n_eval_bags": 64, "epochs": 3}


class Max(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, X, mask):
        return self.score(X).squeeze(-1).masked_fill(~mask, -1e9).amax(1)


class EndsInTraining(Max):
    """Ends the process with status 3 on its third training step (two seeds' batches of
    32 bags; the contract check calls it with fewer bags)."""

    steps = 0

    def forward(self, X, mask):
        if self.training and X.shape[0] == 64:
            EndsInTraining.steps += 1
            if EndsInTraining.steps == 3:
                os._exit(3)
        return super().forward(X, mask)


class Sleeps(Max):
    def forward(self, X, mask):
        import time
        time.sleep(0.05)
        return super().forward(X, mask)


MAX = ModelSpec(name="max", factory=Max, budget=TINY)
ENDS = ModelSpec(name="ends", factory=EndsInTraining, budget=TINY)
SLOW = ModelSpec(name="slow", factory=Sleeps, budget={"n_train_bags": 64, "epochs": 60})
'''

ENDED = "the model ended the process with exit status 3 in training"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "dying.py"
    path.write_text(textwrap.dedent(MODELS))
    return path


def verdicts(report: Path) -> dict[str, tuple[str, str]]:
    return {r["model"]: (r["verdict"], r["message"])
            for r in json.loads(report.read_text())["results"]}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_check_keeps_the_other_cells_of_a_model_that_ends_the_process(models, tmp_path,
                                                                        jobs, capsys):
    report = tmp_path / "r.json"
    code = main(["check", f"{models}:ENDS", f"{models}:MAX", "--tests", "single_concept",
                 "--seeds", "2", "--jobs", jobs, "--quiet", "--report", str(report)])
    capsys.readouterr()
    cells = verdicts(report)
    assert code == 1
    assert cells["ends"][0] == "error" and ENDED in cells["ends"][1]
    assert cells["max"][0] != "error"


def test_the_api_keeps_the_other_cells_of_a_model_that_ends_the_process(models):
    report = mil_assert.check([f"{models}:ENDS", f"{models}:MAX"], tests="single_concept",
                              seeds=2, progress=False)
    by_model = {r.model: r for r in report.results}
    assert by_model["ends"].verdict == "error" and ENDED in by_model["ends"].message
    assert by_model["max"].verdict != "error"


def run_pytest(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "--mil-seeds=2", "--mil-device=cpu", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_pytest_keeps_the_other_cells_of_a_model_that_ends_the_process(models, tmp_path,
                                                                         workers):
    report = tmp_path / "r.json"
    run = run_pytest("--pyargs", "mil_assert.compliance", f"--mil-model={models}:ENDS,"
                     f"{models}:MAX", "-k", "single_concept", f"--mil-report={report}",
                     *workers, cwd=tmp_path)
    out, _ = run.communicate(timeout=600)
    cells = verdicts(report)
    assert run.returncode == 1, out
    assert cells["ends"][0] == "error" and ENDED in cells["ends"][1]
    assert cells["max"][0] != "error"


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_sigterm_under_xdist_writes_an_interrupted_report_and_leaves_no_process(models,
                                                                                tmp_path):
    report = tmp_path / "r.json"
    run = run_pytest("--pyargs", "mil_assert.compliance", f"--mil-model={models}:MAX,"
                     f"{models}:SLOW", "-n", "2", f"--mil-report={report}", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while len(descendants(run.pid)) < 4 and time.monotonic() < deadline:  # 2 xdist + cells
        time.sleep(0.5)
    time.sleep(3)
    tree = descendants(run.pid)
    run.send_signal(signal.SIGTERM)
    out, _ = run.communicate(timeout=120)
    time.sleep(2)  # a worker checks for its parent once a second
    assert run.returncode == 143, out
    data = json.loads(report.read_text())
    assert data["interrupted"]["by"] == "SIGTERM"
    alive = [pid for pid in tree if Path(f"/proc/{pid}").exists()
             and "Z" not in (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1])]
    assert alive == [], out


SCRIPT = '''
import mil_assert
from torch import nn


class Max(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, X, mask):
        return self.score(X).squeeze(-1).masked_fill(~mask, -1e9).amax(1)


report = mil_assert.check([Max, "{models}:MAX"], tests="single_concept", seeds=2,
                          budget={{"epochs": 2, "n_train_bags": 64, "n_eval_bags": 64}},
                          progress=False)
for r in report.results:
    print(r.model, r.verdict, "|", r.training)
'''


def test_a_script_without_a_main_guard_runs_once_and_keeps_its_own_model_here(models,
                                                                              tmp_path):
    """multiprocessing would run the calling script again in each worker; the worker
    starts without it, and a model defined in the script runs in the calling process."""
    script = tmp_path / "run_me.py"
    script.write_text(SCRIPT.format(models=models))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(" ", 1) for line in run.stdout.strip().splitlines())
    assert "error" not in lines["Max"] and "in the calling process" in lines["Max"]
    assert "error" not in lines["max"] and "in the calling process" not in lines["max"]
