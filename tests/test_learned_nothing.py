"""A model that learned nothing fails the gate, on every route, with its own exit status.

Two models that cannot learn anything (issue 19): one whose logit is always 0, and one
with a realistic bug, a classifier that reads a detached, zeroed feature. Every cell of
either is inconclusive (its seeds did not learn the training distribution, nor
``label_swap``'s capacity control), and the gate fails with exit status 6 and one line
naming the model and the reason; a model that learned something elsewhere keeps its
inconclusive cells (``tests/test_check.py``: ``tiny_max`` exits 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mil_assert
from mil_assert.cli import main
from mil_assert.report import load_report, report_results
from mil_assert.results import LEARNED_NOTHING_STATUS, untrained_models
from mil_assert.verdict import LEARNED_NOTHING

REPO = Path(__file__).resolve().parent.parent
TESTS = ["single_concept", "label_swap"]

UNTRAINABLE = '''
import torch
from torch import nn

from mil_assert import ModelSpec

TINY = {"n_train_bags": 64, "n_eval_bags": 64, "epochs": 3}


class Constant(nn.Module):
    """Every bag's logit is 0."""

    def __init__(self, dim):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, X, mask):
        return X.new_zeros(X.shape[0]) + 0.0 * self.unused


class DetachedFeature(nn.Module):
    """The bug: the pooled feature is detached and zeroed before the classifier reads it,
    so the encoder never trains and every bag gets the classifier's bias."""

    def __init__(self, dim):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, 16), nn.ReLU())
        self.classifier = nn.Linear(16, 1)

    def forward(self, X, mask):
        pooled = self.encoder(X).masked_fill(~mask[..., None], 0.0).amax(dim=1)
        return self.classifier(pooled.detach() * 0.0).squeeze(-1)


CONSTANT = ModelSpec(name="constant", factory=Constant, budget=TINY)
DETACHED = ModelSpec(name="detached", factory=DetachedFeature, budget=TINY)
'''

DECORATED = '''
from mil_assert import check_verdict, parametrize_with_checks


@parametrize_with_checks(["{models}:CONSTANT"], tests={tests})
def test_gate(mil_result):
    check_verdict(mil_result)
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "untrainable.py"
    path.write_text(textwrap.dedent(UNTRAINABLE))
    return path


def reason(model: str) -> str:
    return f"learned nothing: {model}: {LEARNED_NOTHING}"


def test_the_api_fails_the_gate_and_names_each_model(models, tmp_path):
    report = mil_assert.check([f"{models}:CONSTANT", f"{models}:DETACHED"], tests=TESTS,
                              seeds=2, progress=False, device="cpu")
    assert {r.verdict for r in report.results} == {"inconclusive"}
    for result in report.results:
        assert not any(o != "unlearned" for o in result.seed_outcomes()), result
    label_swap = [r for r in report.results if r.test == "label_swap"]
    assert all(r.control_auc is not None and max(r.control_auc.per_seed) < 0.75
               for r in label_swap)
    assert set(report.to_frame().seed_outcome) == {"unlearned"}  # the control read too
    assert report.untrained == ["constant", "detached"] and not report.passed
    assert report.failures == [reason("constant"), reason("detached")]
    saved = json.loads(report.save(tmp_path / "r.json").read_text())
    assert saved["learned_nothing"] == [reason("constant"), reason("detached")]


def test_mil_assert_check_exits_with_the_learned_nothing_status(capsys, models, tmp_path):
    code = main(["check", f"{models}:DETACHED", "--tests", ",".join(TESTS), "--seeds", "2",
                 "--device", "cpu", "--quiet", "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == LEARNED_NOTHING_STATUS == 6
    assert f"FAILED {reason('detached')}" in out and "gate: failed" in out
    data = load_report(tmp_path / "r.json")
    assert data["learned_nothing"] == [reason("detached")]
    assert untrained_models(report_results(data)) == ["detached"]


def run_pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "--mil-seeds=2", "--mil-device=cpu", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def test_the_pytest_plugin_exits_with_the_learned_nothing_status(models, tmp_path):
    run = run_pytest("--pyargs", "mil_assert.compliance", f"--mil-model={models}:CONSTANT",
                     "-k", " or ".join(TESTS), cwd=tmp_path)
    assert run.returncode == LEARNED_NOTHING_STATUS, run.stdout + run.stderr
    assert f"FAILED {reason('constant')}" in run.stdout
    assert "2 skipped" in run.stdout  # each cell alone is inconclusive


def test_the_decorator_exits_with_the_learned_nothing_status(models, tmp_path):
    (tmp_path / "test_mine.py").write_text(DECORATED.format(models=models, tests=TESTS))
    run = run_pytest("test_mine.py", cwd=tmp_path)
    assert run.returncode == LEARNED_NOTHING_STATUS, run.stdout + run.stderr
    assert f"FAILED {reason('constant')}" in run.stdout



def test_no_model_of_the_reference_report_learned_nothing():
    """The zoo's reference run (5 seeds, full budget): every model learned something, so
    its inconclusive cells (``mi_net`` on the threshold tests) stay inconclusive, and
    ``mi_net`` learned ``label_swap``'s control on every seed (its pass stands)."""
    results = report_results(load_report(REPO / "reports" / "compliance.json"))
    assert untrained_models(results) == []
    [mi_net] = [r for r in results if r.model == "mi_net" and r.test == "label_swap"]
    assert mi_net.verdict == "pass" and mi_net.control_auc is not None
    assert min(mi_net.control_auc.per_seed) >= 0.75


def test_a_seed_that_ranks_its_training_bags_backwards_learned_something():
    """Validation AUC 0.00 is a perfectly inverted ranking, not a model that learned
    nothing: the gate judges such a model cell by cell."""
    from mil_assert.metrics import SeedSummary
    from mil_assert.results import CellResult, untrained_models

    def cell(model: str, val: list[float]) -> CellResult:
        return CellResult(model=model, test="single_concept", verdict="inconclusive",
                          expected=None, expected_reason=None, seeds=(0, 1),
                          val_auc=SeedSummary.of(val), test_auc=SeedSummary.of([0.5, 0.5]),
                          seconds=1.0, message="")

    assert untrained_models([cell("flat", [0.5, 0.52]), cell("inverted", [0.0, 0.5])]) == [
        "flat"]
