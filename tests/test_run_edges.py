"""Edges of a run on every route: model strings, progress output, reports, signals.

Each test here names the failure it guards against (issue 17): a comma inside an option
value, bad keywords of a torchmil model, tqdm's clamping warning and negative ETA, report
permissions, interruption marks and the tests a report lists, and the environment a
report records.
"""

from __future__ import annotations

import json
import os
import stat
import time
import warnings
from pathlib import Path

import pytest
import torch
import toy_models

import mil_assert
import mil_assert.isolation
import mil_assert.runner
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


# --- reports -------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_gets_the_permissions_the_umask_gives(capsys, tmp_path, umask):
    pytest.importorskip("matplotlib")
    previous = os.umask(umask)
    try:
        report = mil_assert.check(toy_models.tiny_max, tests="label_swap", seeds=2,
                                  progress=False)
        saved = report.save(tmp_path / "new" / "folder" / "r.json")  # folders created
        assert main(["render", str(saved), "--format", "md", "-o",
                     str(tmp_path / "md" / "r.md")]) == 0
        assert main(["render", str(saved), "--format", "all", "-o",
                     str(tmp_path / "all")]) == 0
        main(["check", f"{TOY}:tiny_max", "--tests", "label_swap", "--seeds", "2", "--quiet",
              "--report", str(tmp_path / "cli" / "r.json")])  # (the gate is not the point)
    finally:
        os.umask(previous)
    capsys.readouterr()
    written = [saved, tmp_path / "md" / "r.md", tmp_path / "cli" / "r.json",
               *sorted((tmp_path / "all").iterdir())]
    assert len(written) == 3 + 6 and (tmp_path / "all" / "r.png").stat().st_size > 0
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in written} == {
        path.name: 0o666 & ~umask for path in written}
    leftovers = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert leftovers == []  # no temporary file left behind


def test_an_interrupted_run_says_so_also_with_no_finished_cell(capsys, monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mil_assert.isolation.CellWorker, "run", interrupted)
    report = tmp_path / "r.json"
    code = main(["check", f"{TOY}:tiny_max", "--tests", "single_concept,label_swap",
                 "--seeds", "2", "--quiet", "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted after 0 of 2 cells (SIGINT)" in err
    data = json.loads(report.read_text())
    assert data["results"] == []
    assert data["interrupted"] == {
        "by": "SIGINT", "cells": 2, "finished": 0, "missing": 2,
        "missing_cells": [{"model": "tiny_max", "test": "single_concept"},
                          {"model": "tiny_max", "test": "label_swap"}]}
    assert list(data["tests"]) == ["single_concept", "label_swap"]


def test_a_report_lists_the_tests_that_ran_and_the_machine(tmp_path):
    report = mil_assert.check(toy_models.tiny_max, tests=["label_swap", "single_concept"],
                              seeds=2, progress=False, max_seconds=600)
    data = json.loads(report.save(tmp_path / "r.json").read_text())
    assert list(data["tests"]) == ["single_concept", "label_swap"]  # report order
    assert data["interrupted"] is None
    assert data["budget"]["max_seconds"] == 600.0
    environment = data["environment"]
    assert environment["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert environment["cpu"] and environment["gpu"] is None and environment["cuda"] is None


def test_merge_unites_reports_of_different_tests(capsys, tmp_path):
    first = mil_assert.check(toy_models.tiny_max, tests="label_swap", seeds=2, progress=False)
    second = mil_assert.check(toy_models.shortcut, tests="single_concept", seeds=2,
                              progress=False)
    a, b = first.save(tmp_path / "a.json"), second.save(tmp_path / "b.json")
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "m.json")]) == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    assert list(merged["tests"]) == ["single_concept", "label_swap"]
    assert merged["interrupted"] is None and len(merged["results"]) == 2


# --- the time limit on every route ----------------------------------------------------

def test_the_time_limit_reaches_the_budget_on_every_route(capsys, tmp_path):
    main(["check", f"{TOY}:tiny_max", "--tests", "label_swap", "--seeds", "2", "--quiet",
          "--max-seconds", "120", "--report", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["budget"]["max_seconds"] == 120.0
    for bad in ("0", "-3", "soon"):
        with pytest.raises(SystemExit) as exit_info:
            main(["check", "abmil", "--max-seconds", bad])
        assert exit_info.value.code == 2
    assert "must be a positive number of seconds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dims", "abmil", "--max-seconds", "0"])
    report = mil_assert.check(toy_models.tiny_max, tests="label_swap", seeds=2,
                              progress=False, max_seconds=90)
    assert report.budget.max_seconds == 90.0
    with pytest.raises(ValueError, match="max_seconds"):
        mil_assert.check(toy_models.tiny_max, max_seconds=-1, progress=False)
    assert mil_assert.check(toy_models.tiny_max, tests="label_swap", seeds=2,
                            progress=False).budget.max_seconds is None  # no limit by default


@pytest.mark.parametrize("target", ["tests/authors_style.py:Attention", "kwargs"])
def test_a_misspelled_option_names_the_option_it_resembles(target, tmp_path):
    """Also for a factory taking **kwargs, which would swallow the typo silently."""
    if target == "kwargs":
        (tmp_path / "kw.py").write_text("from torch import nn\n\n\ndef build(dim, **kwargs):\n"
                                        "    return nn.Linear(dim, 1)\n")
        target = f"{tmp_path / 'kw.py'}:build"
    with pytest.raises(ModelSpecError, match="unknown option 'inptu' \\(did you mean input\\?\\)"):
        resolve_models(f"{target}@inptu=bag1", REPO)


# --- named budgets on every route -----------------------------------------------------------

def test_the_wsi_budget_reaches_every_route(tmp_path):
    """One bag per step, AdamW at the slide papers' lr and weight decay, named in the report
    (the model's own fields still override it)."""
    main(["check", f"{TOY}:tiny_max", "--tests", "single_concept", "--seeds", "2", "--quiet",
          "--budget", "wsi", "--report", str(tmp_path / "r.json")])
    budget = json.loads((tmp_path / "r.json").read_text())["budget"]
    assert (budget["name"], budget["batch_size"], budget["optimizer"], budget["lr"],
            budget["weight_decay"]) == ("wsi", 1, "adamw", 2e-4, 1e-5)
    [result] = mil_assert.check(toy_models.tiny_max, tests="single_concept", seeds=2,
                                progress=False, budget="wsi").results
    assert result.budget_overrides == toy_models.TINY_BUDGET  # its own epochs and bags
    assert mil_assert.check(toy_models.tiny_max, tests="single_concept", seeds=2, progress=False,
                            budget={"name": "wsi", "lr": 1e-3}).budget.lr == 1e-3
    with pytest.raises(ValueError, match="unknown budget 'slides': use one of default, wsi"):
        mil_assert.check(toy_models.tiny_max, budget="slides", progress=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "abmil", "--budget", "slides"])
    assert exit_info.value.code == 2


def test_the_wsi_budget_trains_one_bag_per_step(monkeypatch):
    steps = []
    original = torch.optim.AdamW.step

    def counted(self, *args, **kwargs):
        steps.append(self.param_groups[0]["weight_decay"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted)
    from mil_assert.defaults import named_budget
    from mil_assert.harness import run_cell
    from mil_assert.synthetic import TESTS

    budget = named_budget("wsi").with_overrides({"n_train_bags": 8, "n_eval_bags": 8,
                                                 "epochs": 2})
    spec = ModelSpec(name="max", factory=toy_models.InstanceMax)
    run_cell(spec, TESTS["single_concept"], [0, 1], budget, 8, torch.device("cpu"))
    assert steps == [1e-5] * (8 * 2)  # one step per bag per epoch, the seeds stacked
