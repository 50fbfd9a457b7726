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
import subprocess
import sys
import textwrap
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
SPEC = ModelSpec(name="batched", factory=BagMax, budget=TINY)


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
    assert "test_label_swap[batched]" in out.stdout
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
    assert "test_mil_compliance[batched-single_concept] PASSED" in decorator.stdout or \
        "test_mil_compliance[batched-single_concept] SKIPPED" in decorator.stdout
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
