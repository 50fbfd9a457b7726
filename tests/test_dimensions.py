"""The sweep over instance dimensions (``mil-assert dims``) and the positive controls at
every D.

The committed sweep (``reports/dimensions.json``, README "Verdicts at other instance
dimensions") measures the controls with 12 seeds at D = 8 ... 1024; the small version here
(3 seeds, two dimensions) runs in CI so that a change that breaks a control at some D
cannot land silently.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import toy_models

from mil_assert.api import prepare
from mil_assert.cli import main
from mil_assert.dimensions import format_sweep, needs_confirmation, sweep, sweep_passed
from mil_assert.registry import ModelSpec, builtin_models

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "reports" / "dimensions.json"


def small_sweep(models, dims, seeds=2, confirm_seeds=3, budget=None, report=None):
    loaded, tests, run = prepare(models, None, seeds, "cpu", budget=budget)
    return sweep(loaded, tests, run, dims=dims, confirm_seeds=confirm_seeds, progress=False,
                 report=report, announce=lambda line: None)


def test_positive_controls_pass_below_and_far_above_the_default_dimension():
    """A small version of the criterion the committed sweep meets with 12 seeds: the
    controls pass every test of an assumption they respect on every seed, at D = 8 and at
    D = 256, with 3 seeds and half the epochs. Without its input sketch threshold_ref
    passes 0 of 3 seeds on both threshold tests at D = 256 here: it memorises background
    instances."""
    data = small_sweep(["threshold_ref", "mi_net"], dims=(8, 256), seeds=3, confirm_seeds=3,
                       budget={"n_eval_bags": 200, "epochs": 30})
    rows = data["controls"]
    assert len(rows) == 2 * (4 + 2)
    failing = [r for r in rows if r["passing_seeds"] < r["seeds"]]
    assert not failing, failing
    assert sweep_passed(data)


def test_the_sweep_confirms_controls_and_fragile_cells_and_keeps_the_screening(tmp_path):
    learner = ModelSpec("learner", toy_models.InstanceMax, respects=("standard",),
                        budget=toy_models.TINY_BUDGET)
    path = tmp_path / "sweep.json"
    data = small_sweep([learner, toy_models.tiny_max], dims=(4, 8), report=path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(data))
    assert data["dims"] == [4, 8] and set(data["reports"]) == {"4", "8"}
    for dim, report in data["reports"].items():
        assert report["instance_dim"] == int(dim)
        for cell in report["results"]:
            control = cell["model"] == "learner" and cell["test"] in ("single_concept",
                                                                      "label_swap")
            if control:  # always confirmed, with the confirmation's seeds
                assert cell["confirmed_because"] == "positive control"
            if "screen" in cell:
                assert cell["seeds"] == [0, 1, 2] and cell["screen"]["seeds"] == [0, 1]
            else:
                assert cell["seeds"] == [0, 1] and not control
    assert [(r["model"], r["dim"]) for r in data["controls"]] == [
        ("learner", d) for d in (4, 8) for _ in range(2)]
    table = format_sweep(data)
    # a confirmed cell shows its verdict with its 3 seeds (under this tiny budget not every
    # seed learns label_swap's capacity control, so the verdict itself varies by seed)
    assert re.search(r"\| learner +\| label_swap +\| (pass \d/3|violation \d/3|inconclusive "
                     r"\(3\)) ", table), table
    assert "positive controls:" in table and "calibration:" in table


def test_a_control_below_its_criterion_fails_the_sweep():
    never = ModelSpec("never", toy_models.InstanceMax, respects=("standard",),
                      budget={**toy_models.TINY_BUDGET, "epochs": 1, "lr": 1e-9})
    data = small_sweep([never], dims=(4,))
    assert not sweep_passed(data)
    assert "below: never on single_concept at D = 4" in format_sweep(data)


def test_fragile_cells_are_rerun_but_clear_ones_are_not():
    spec = ModelSpec("m", toy_models.InstanceMax)
    from mil_assert.metrics import SeedSummary
    from mil_assert.results import CellResult

    def cell(val, test):
        return CellResult("m", "single_concept", "pass", None, None, (0, 1, 2, 3, 4),
                          SeedSummary.of(val), SeedSummary.of(test), 1.0, "")

    assert needs_confirmation(spec, cell([0.9] * 5, [0.9] * 5)) is None
    assert needs_confirmation(spec, cell([0.9] * 3 + [0.6] * 2, [0.9] * 3 + [0.5] * 2)) == \
        "fragile"


def test_dims_command_checks_its_input_before_training(capsys):
    assert main(["dims", "mi_net", "--dims", "8,8"]) == 2
    assert "distinct positive instance dimensions" in capsys.readouterr().err
    assert main(["dims", "mi_net", "--confirm-seeds", "1"]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err
    assert main(["dims", "no_such_model"]) == 2


def test_render_refuses_other_formats_of_a_sweep(tmp_path, capsys):
    if not COMMITTED.exists():
        pytest.skip("no committed sweep yet")
    assert main(["render", str(COMMITTED), "--format", "md"]) == 0
    assert capsys.readouterr().out == format_sweep(json.loads(COMMITTED.read_text()))
    assert main(["render", str(COMMITTED), "--format", "tex"]) == 2
    assert "dimension sweep; render it with --format md" in capsys.readouterr().err


def test_the_committed_sweep_covers_the_zoo_and_its_controls_hold():
    data = json.loads(COMMITTED.read_text())
    assert data["dims"] == [8, 16, 32, 64, 256, 1024] and not data["interrupted"]
    models = {c["model"] for rep in data["reports"].values() for c in rep["results"]}
    assert models == {name for name, spec in builtin_models().items() if spec.in_default_run}
    assert all(row["seeds"] == 12 and row["holds"] for row in data["controls"])


def test_declared_verdicts_hold_at_every_dimension_of_the_committed_sweep():
    """Each built-in model's declarations (measured at D = 16) are its verdicts at every D
    of the sweep; a change at some D must be declared where it happens."""
    data = json.loads(COMMITTED.read_text())
    specs = builtin_models()
    differ = [(c["model"], c["test"], dim, c["verdict"])
              for dim, rep in data["reports"].items() for c in rep["results"]
              if c["verdict"] != (specs[c["model"]].expected[c["test"]].verdict
                                  if c["test"] in specs[c["model"]].expected else "pass")]
    assert not differ


def test_a_sweep_of_models_without_controls_prints_no_control_line():
    data = small_sweep([toy_models.tiny_max], dims=(4,))
    assert data["controls"] == [] and sweep_passed(data)
    assert "positive controls" not in format_sweep(data)
