"""Edges of a run on every route: model strings, progress output, reports, signals.

Each test here names the failure it guards against (issue 17): a comma inside an option
value, bad keywords of a torchmil model, tqdm's clamping warning and negative ETA, report
permissions, interruption marks and the tests a report lists, and the environment a
report records.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
import toy_models

import mil_assert
from mil_assert.cli import main
from mil_assert.loading import ModelSpecError, resolve_models
from mil_assert.registry import ModelSpec

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "tests" / "toy_models.py"

WIDTHS = '''
from torch import nn


class Widths(nn.Module):
    def __init__(self, dim, hidden=(8,), name="x"):
        super().__init__()
        layers, width = [], dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.score = nn.Sequential(*layers, nn.Linear(width, 1))
        self.name = name

    def forward(self, X, mask):
        return self.score(X).squeeze(-1).masked_fill(~mask, -1e9).amax(1)
'''


@pytest.fixture
def widths(tmp_path) -> Path:
    path = tmp_path / "widths.py"
    path.write_text(WIDTHS)
    return path


# --- model strings -------------------------------------------------------------------

def test_option_values_may_hold_commas_in_brackets_and_quotes(widths):
    first, second = resolve_models(
        f"{widths}:Widths@hidden=(32,16)@name='a,b@c',abmil", REPO)
    assert first.name == f"{widths}:Widths@hidden=(32,16)@name='a,b@c'"
    model = first.factory(16)
    assert [layer.out_features for layer in model.score if hasattr(layer, "out_features")] == [
        32, 16, 1]
    assert model.name == "a,b@c"
    assert second.name == "abmil"
    with pytest.raises(ModelSpecError, match=r"unclosed bracket or quote \(no closing '\)'\)"):
        resolve_models(f"{widths}:Widths@hidden=(32,16", REPO)
    [listed] = mil_assert.runner.load_models(f"{widths}:Widths@hidden=[4,4]", REPO)
    assert listed.ref == f"{widths}:Widths@hidden=[4,4]"


@pytest.mark.parametrize("kind", ["torchmil", "file"])
def test_a_bad_keyword_is_exit_status_2_for_every_kind_of_model(capsys, widths, kind):
    pytest.importorskip("torchmil")
    model = "torchmil:ABMIL@no_such_keyword=3" if kind == "torchmil" else \
        f"{widths}:Widths@no_such_keyword=3"
    code = main(["check", model, "--seeds", "2", "--tests", "label_swap", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no_such_keyword" in err and err.startswith("mil-assert: error: ")


# --- progress ------------------------------------------------------------------------

class SlowMax(toy_models.InstanceMax):
    def forward(self, X, mask):
        if self.training:
            time.sleep(0.06)
        return super().forward(X, mask)


def test_progress_never_warns_nor_shows_a_negative_eta(capsys):
    # 9 epochs of 1/9 sum to 1.0000000000000002 in floating point: the bar ran past its
    # total, tqdm warned "clamping frac" and showed an ETA of <-00:00
    # (slowed down so that tqdm redraws after every epoch, also the last)
    nine_epochs = ModelSpec(name="nine_epochs", factory=SlowMax,
                            budget={**toy_models.TINY_BUDGET, "epochs": 9})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = mil_assert.check(nine_epochs, tests="label_swap", seeds=2, progress=True)
    err = capsys.readouterr().err
    assert len(report.results) == 1 and "1.0/1 cells" in err
    assert [str(w.message) for w in caught if "tqdm" in type(w.message).__name__.lower()] == []
    assert "<-" not in err
