"""A user's own repository, outside this checkout: every route judges its model alike.

A scratch repository with its own top-level ``models/`` and ``tests/`` packages, an
unrelated test and a model file is built in a temporary folder. Its model is judged by the
installed pytest plugin (serially and with ``-n 2``), the decorator in its own test file,
the Python API and ``mil-assert check --jobs 2``; all must give the same verdicts and
per-seed AUCs. Its unrelated test must run as if mil-assert were not installed.

The routes run with ``MIL_ASSERT_USER_PYTHON`` when it is set (CI points it at a
virtual environment holding a non-editable install), else with this interpreter.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PYTHON = os.environ.get("MIL_ASSERT_USER_PYTHON", sys.executable)
TESTS = "single_concept,label_swap"

MODEL_FILE = '''
"""The user's model: instance scores, max-pooled."""
import torch
from torch import nn

from mil_assert import Expected, ModelSpec


class BagMax(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.score(X).squeeze(-1).masked_fill(~mask, -1e9).amax(dim=1)


def build(dim: int) -> nn.Module:
    return BagMax(dim)


TINY = {"n_train_bags": 64, "n_eval_bags": 64, "epochs": 3}
# enough to learn single_concept and label_swap's control on one of seeds 0, 1 (measured:
# validation AUC 0.85 and 0.80 on seed 1), so that the gate does not fail it as untrained
LEARNS = {"n_train_bags": 128, "n_eval_bags": 64, "epochs": 20}
SPEC = ModelSpec(name="batched", factory=BagMax, budget=LEARNS)


class Shortcut(nn.Module):
    """Lowest instance mean: the poison means negative (a violation by design)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, X, mask):
        return X.mean(-1).masked_fill(~mask, float("inf")).amin(1) + 0 * self.unused


SHORTCUT = ModelSpec(name="shortcut", factory=Shortcut, budget=TINY)
SHORTCUT_DECLARED = ModelSpec(
    name="shortcut_declared", factory=Shortcut, budget=TINY,
    expected={"single_concept": Expected("violation", "poison marks negatives by design")})


def no_dim() -> nn.Module:
    return BagMax(16)


def raises(dim: int) -> nn.Module:
    raise RuntimeError("cannot build this model")
'''

UNRELATED_TEST = '''
import sys


def test_arithmetic():
    assert 1 + 1 == 2


def test_mil_assert_stays_out_of_the_way():
    assert "torch" not in sys.modules
'''

GATE_TEST = f'''
from mil_assert import check_verdict, parametrize_with_checks
from models.batched import SPEC


@parametrize_with_checks([SPEC], tests={TESTS.split(",")!r})
def test_mil_compliance(mil_result):
    check_verdict(mil_result)
'''

CONFTEST_WITH_MODEL = '''
def pytest_addoption(parser):
    parser.addoption("--model", default="resnet", help="this repository's own option")


def pytest_report_header(config):
    return f"repository model: {config.getoption('model')}"
'''


def make_repository(root: Path, conftest: str | None = None) -> Path:
    files = {
        "pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
        "models/__init__.py": "",
        "models/batched.py": MODEL_FILE,
        "tests/__init__.py": "",
        "tests/test_unrelated.py": UNRELATED_TEST,
        "tests/test_gate.py": GATE_TEST,
    }
    if conftest is not None:
        files["conftest.py"] = conftest
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def run(repo: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([PYTHON, *args], cwd=repo, capture_output=True, text=True, env=env,
                          timeout=timeout)


def pytest_run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run(repo, "-m", "pytest", "-p", "no:cacheprovider", *args)


def cells(path: Path) -> list[tuple]:
    return [(r["model"], r["test"], r["verdict"], r["val_auc"]["per_seed"],
             r["test_auc"]["per_seed"]) for r in json.loads(path.read_text())["results"]]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repository(tmp_path_factory.mktemp("user-repo"))


@pytest.fixture(scope="module")
def plugin_run(repo):
    out = pytest_run(repo, "--pyargs", "mil_assert.compliance", "--mil-model=models.batched:SPEC",
                     "--mil-seeds=2", "-k", "single_concept or label_swap",
                     "--mil-report=plugin.json", "-rA")
    return out, repo / "plugin.json"


def test_the_one_command_judges_the_users_model(repo, plugin_run):
    out, report = plugin_run
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MIL compliance matrix" in out.stdout and "| batched" in out.stdout
    # both cells are inconclusive on seeds 0, 1 (skipped): -rA gives the reason, not the id
    assert ("inconclusive: batched on label_swap: no outcome holds a majority of 2 seeds"
            in out.stdout)
    assert "test_label_swap[batched]" not in out.stdout
    assert [(c[0], c[1]) for c in cells(report)] == [("batched", "single_concept"),
                                                      ("batched", "label_swap")]
    gate = pytest_run(repo, "--pyargs", "mil_assert.compliance", "-k", "single_concept",
                      "--mil-model=models.batched:SHORTCUT_DECLARED,models.batched:SHORTCUT",
                      "--mil-seeds=2", "-v")
    assert gate.returncode == 1, gate.stdout + gate.stderr  # the undeclared violation
    assert "test_single_concept[shortcut_declared] XFAIL" in gate.stdout
    assert "test_single_concept[shortcut] FAILED" in gate.stdout
    assert "MIL violation: shortcut on single_concept" in gate.stdout


def test_every_route_gives_the_same_verdicts_and_per_seed_aucs(repo, plugin_run):
    out, plugin_report = plugin_run
    assert out.returncode == 0, out.stdout + out.stderr
    reference = cells(plugin_report)
    assert len(reference) == 2

    xdist = pytest_run(repo, "--pyargs", "mil_assert.compliance", "--mil-model=models.batched:SPEC",
                       "--mil-seeds=2", "-k", "single_concept or label_swap", "-n", "2",
                       "--mil-report=xdist.json")
    assert xdist.returncode == 0, xdist.stdout + xdist.stderr
    assert cells(repo / "xdist.json") == reference

    decorator = pytest_run(repo, "tests/test_gate.py", "--mil-seeds=2", "-v",
                           "--mil-report=decorator.json")
    assert decorator.returncode == 0, decorator.stdout + decorator.stderr
    # inconclusive on seeds 0, 1 (1 kept, 1 unlearned), as in the plugin's run
    assert "test_mil_compliance[batched-single_concept] SKIPPED" in decorator.stdout
    assert "test_mil_compliance[batched-single_concept] PASSED" not in decorator.stdout
    assert "MIL compliance matrix" in decorator.stdout
    assert cells(repo / "decorator.json") == reference

    api = run(repo, "-c", "import mil_assert; r = mil_assert.check('models.batched:SPEC', "
                          f"tests={TESTS!r}, seeds=2, progress=False); r.save('api.json'); "
                          "print(r); print(len(r.to_frame()))")
    assert api.returncode == 0, api.stdout + api.stderr
    assert api.stdout.strip().endswith("4")  # 1 model x 2 tests x 2 seeds
    assert "gate: passed" in api.stdout
    assert cells(repo / "api.json") == reference

    cli = run(repo, "-m", "mil_assert.cli", "check", "models.batched:SPEC", "--tests", TESTS,
              "--seeds", "2", "--jobs", "2", "--report", "cli.json")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "gate: passed" in cli.stdout and "| batched" in cli.stdout
    assert cells(repo / "cli.json") == reference


def without_timing(text: str) -> str:
    return re.sub(r" in \d+\.\d+s", " in Ts", text)


def test_unrelated_tests_run_unchanged(repo):
    with_plugin = pytest_run(repo, "tests/test_unrelated.py", "-q")
    without = pytest_run(repo, "tests/test_unrelated.py", "-q", "-p", "no:mil_assert.plugin")
    assert with_plugin.returncode == 0, with_plugin.stdout + with_plugin.stderr
    assert without_timing(with_plugin.stdout) == without_timing(without.stdout)
    assert "mil-assert" not in with_plugin.stdout and "MIL" not in with_plugin.stdout


def test_a_repository_that_defines_its_own_model_option(tmp_path):
    repo = make_repository(tmp_path / "r", conftest=CONFTEST_WITH_MODEL)
    own = pytest_run(repo, "tests/test_unrelated.py", "--model=vit")
    assert own.returncode == 0, own.stdout + own.stderr
    assert "repository model: vit" in own.stdout
    judged = pytest_run(repo, "--pyargs", "mil_assert.compliance",
                        "--mil-model=models.batched:SPEC", "--co", "-q")
    assert judged.returncode == 0, judged.stdout + judged.stderr
    assert judged.stdout.count("[batched]") == 4
    help_text = pytest_run(repo, "--help").stdout
    assert "--mil-model" in help_text and "short for --mil-model" not in help_text


def test_the_short_model_option_where_it_is_free(repo):
    listed = pytest_run(repo, "--pyargs", "mil_assert.compliance", "--model=models.batched:SPEC",
                        "--co", "-q")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert listed.stdout.count("[batched]") == 4
    everything = pytest_run(repo, "--model=models.batched:SPEC", "--co", "-q")
    assert "deselected" in everything.stdout  # a model option makes it a compliance run


# --- stopping a run: SIGTERM (CI cancel or time-out) and SIGHUP --------------------------

SLOW_MODEL = '''
"""Trains slowly enough to be stopped mid-run."""
import time

from torch import nn

from mil_assert import ModelSpec


class Slow(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, X, mask):
        if self.training:
            time.sleep(0.3)
        return self.score(X).squeeze(-1).masked_fill(~mask, -1e9).amax(1)


SPEC = ModelSpec(name="slow", factory=Slow,
                 budget={"n_train_bags": 64, "n_eval_bags": 64, "epochs": 20})
'''

API_SCRIPT = '''
import sys

import mil_assert

if __name__ == "__main__":  # jobs > 1 spawns processes that import this script
    report = mil_assert.check("models/slow.py:SPEC", seeds=2, jobs=2, progress=False)
    report.save("stopped/api.json")
    print(report)
    sys.exit(0 if report.passed else 1)
'''


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_all(pids: set[int]) -> list[int]:
    """Kill those of ``pids`` still alive; return them."""
    left = [pid for pid in pids if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(("route", "signal_number", "status"), [
    ("check", signal.SIGTERM, 143), ("dims", signal.SIGHUP, 129), ("api", signal.SIGTERM, 1)])
def test_a_stopped_jobs_2_run_leaves_no_process_and_a_readable_report(
        tmp_path, route, signal_number, status):
    repo = make_repository(tmp_path / "r")
    (repo / "models" / "slow.py").write_text(textwrap.dedent(SLOW_MODEL).lstrip())
    (repo / "run_api.py").write_text(textwrap.dedent(API_SCRIPT).lstrip())
    report = repo / "stopped" / f"{route}.json"
    argv = {"check": ["-m", "mil_assert.cli", "check", "models/slow.py:SPEC", "--seeds", "2",
                      "--jobs", "2", "--quiet", "--report", str(report)],
            "dims": ["-m", "mil_assert.cli", "dims", "models/slow.py:SPEC", "--dims", "8,16",
                     "--seeds", "2", "--jobs", "2", "--quiet", "--report", str(report)],
            "api": ["run_api.py"]}[route]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    main = subprocess.Popen([PYTHON, *argv], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and main.poll() is None:
            workers = [p for p in descendants(main.pid) if "spawn_main" in
                       Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
            if len(workers) >= 2:  # model check done, two workers spawned
                break
            time.sleep(0.5)
        time.sleep(3)  # the workers are training
        started = descendants(main.pid)
        assert main.poll() is None and len(started) >= 3, started  # 2 workers + tracker
        main.send_signal(signal_number)
        out, err = main.communicate(timeout=60)
    except BaseException:
        main.kill()
        kill_all(started)  # a failing run must not leave its workers behind either
        raise
    deadline = time.monotonic() + 10
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = kill_all(started)
    assert not left, "processes left running after the run stopped"
    assert main.returncode == status, out + err
    data = json.loads(report.read_text())
    if route == "dims":  # the sweep's own format: marked interrupted, D = 8's cells kept
        assert data["interrupted"] is True and list(data["reports"]) == ["8"]
        assert len(data["reports"]["8"]["results"]) < 4
        return
    stopped = data["interrupted"]
    assert stopped["by"] == signal.Signals(signal_number).name
    assert stopped["finished"] == len(data["results"]) and stopped["missing"] >= 1
    assert stopped["finished"] + stopped["missing"] == stopped["cells"] == 4
    assert "Traceback" not in err


# --- the decorator recipe and a model option in a user's repository ---------------------

def documented_recipe() -> str:
    """The decorator recipe as the documentation shows it (the code block that starts
    with ``# tests/test_mil_gate.py``), verbatim."""
    root = Path(__file__).resolve().parent.parent
    for page in [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]:
        blocks = re.findall(r"```python\n(# tests/test_mil_gate\.py\n.*?)```", page.read_text(),
                            re.DOTALL)
        if blocks:
            return blocks[0]
    raise AssertionError("no page shows the decorator recipe (# tests/test_mil_gate.py)")


def test_the_documented_decorator_recipe_runs_with_plain_pytest(tmp_path):
    repo = make_repository(tmp_path / "r")
    (repo / "tests" / "__init__.py").unlink()  # a repository without one, as most are
    (repo / "tests" / "test_gate.py").unlink()
    recipe = documented_recipe()
    assert "from models.batched import SPEC" in recipe
    assert "parametrize_with_checks([SPEC]" in recipe  # one model, judged once
    (repo / "tests" / "test_mil_gate.py").write_text(recipe)
    pytest_script = Path(PYTHON).parent / "pytest"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(pytest_script), "tests/test_mil_gate.py", "-p", "no:cacheprovider",
                           "--mil-seeds=2", "-k", "batched and single_concept", "-v"],
                          cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    out = done.stdout + done.stderr
    assert "ModuleNotFoundError" not in out, out
    assert "test_mil_compliance[batched-single_concept]" in done.stdout, out
    assert "MIL compliance matrix" in done.stdout, out


def test_a_model_option_runs_only_what_it_names_in_a_users_repository(repo):
    other = pytest_run(repo, "--model=models.batched:SHORTCUT", "-v")
    # the repository's decorated tests judge "batched", not the model named: nothing of
    # theirs runs, and the run says so and how to judge the model named
    assert other.returncode == 5, other.stdout + other.stderr  # no test ran
    assert "test_mil_compliance[" not in other.stdout.replace("deselected", "")
    assert ("no compliance test ran for --mil-model=models.batched:SHORTCUT (the decorated "
            "tests collected here judge batched, not the models named") in other.stdout
    assert "pytest --pyargs mil_assert.compliance --mil-model=" in other.stdout
    same = pytest_run(repo, "--model=models.batched:SPEC", "--co", "-q")
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.count("test_mil_compliance[batched-") == 2  # the one model named


# --- pytest stopped by SIGTERM: the report says so, with the tests that ran -----------

FLAGGED_SLOW_MODEL = SLOW_MODEL.replace(
    "        if self.training:\n",
    "        if self.training:\n            open('training.flag', 'w').close()\n")


def test_pytest_stopped_by_sigterm_writes_an_interrupted_report(tmp_path):
    repo = make_repository(tmp_path / "r")
    (repo / "models" / "slow.py").write_text(textwrap.dedent(FLAGGED_SLOW_MODEL).lstrip())
    report = repo / "out" / "p.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    main = subprocess.Popen(
        [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "mil_assert.compliance",
         "--mil-model=models/slow.py:SPEC", "--mil-seeds=2", "--mil-max-seconds=600",
         "--mil-budget=wsi", "-k", "single_concept or label_swap", f"--mil-report={report}"],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (repo / "training.flag").exists() and time.monotonic() < deadline:
            assert main.poll() is None, main.communicate()
            time.sleep(0.2)
        main.send_signal(signal.SIGTERM)
        out, err = main.communicate(timeout=60)
    finally:
        if main.poll() is None:
            main.kill()
    assert main.returncode == 143, out + err
    data = json.loads(report.read_text())
    assert data["results"] == [] and data["budget"]["max_seconds"] == 600.0
    assert (data["budget"]["name"], data["budget"]["batch_size"]) == ("wsi", 1)
    assert data["interrupted"]["by"] == "SIGTERM"
    assert (data["interrupted"]["finished"], data["interrupted"]["missing"]) == (0, 2)
    assert list(data["tests"]) == ["single_concept", "label_swap"]
    assert stat.S_IMODE(report.stat().st_mode) == 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- a model that ends the process ------------------------------------------------------

def test_a_factory_that_ends_the_process_is_an_error_cell_on_every_route(repo):
    models = "models.batched:SPEC,os:_exit,sys:exit"  # os._exit(16), sys.exit(16)
    cli = run(repo, "-m", "mil_assert.cli", "check", models, "--tests", "single_concept",
              "--seeds", "2", "--quiet", "--report", "ended/cli.json")
    # 1: the error cells; batched learned single_concept on seed 0, so no status 6
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "learned nothing" not in cli.stdout
    assert ("FAILED error: os:_exit on single_concept: the model ended the process with exit "
            "status 16") in cli.stdout
    assert "FAILED error: sys:exit on single_concept: the model called sys.exit(16)" in cli.stdout
    plugin = pytest_run(repo, "--pyargs", "mil_assert.compliance", f"--mil-model={models}",
                        "--mil-seeds=2", "-k", "single_concept", "--mil-report=ended/p.json")
    assert plugin.returncode == 1, plugin.stdout + plugin.stderr
    # the failure's message; no "[id] FAILED" line, which only -v prints
    assert ("error: os:_exit on single_concept: the model ended the process with exit "
            "status 16") in plugin.stdout
    assert "test_single_concept[os:_exit] FAILED" not in plugin.stdout
    for report in ("cli.json", "p.json"):
        verdicts = {r["model"]: r["verdict"] for r in
                    json.loads((repo / "ended" / report).read_text())["results"]}
        assert verdicts["os:_exit"] == verdicts["sys:exit"] == "error"
        assert verdicts["batched"] != "error"
