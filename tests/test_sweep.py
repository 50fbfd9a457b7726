"""`mil-assert sweep`: the same cells at several regimes, dimensions and budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mil_assert.cli import main
from mil_assert.sweep import Point, sweep_points
from mil_assert.synthetic.regime import Regime

TINY = str(Path(__file__).parent / "toy_models.py") + ":tiny_max"


def test_the_axes_vary_one_at_a_time_and_every_regime_meets_every_budget():
    points = sweep_points([16, 64], [None, 1000], ["gaussian", "digits"], ["/d/musk1"],
                          ["default", "wsi"])
    regimes = [(p.regime, p.dim) for p in points[::2]]
    assert regimes == [(Regime(), 16), (Regime(bag_size=1000), 16),
                       (Regime(instances="digits"), 16), (Regime(data="/d/musk1"), 16),
                       (Regime(), 64)]
    assert [p.budget for p in points] == ["default", "wsi"] * 5
    assert sweep_points([16], [1000], ["digits"], [], ["default"]) == [
        Point(Regime(bag_size=1000), 16, "default"), Point(Regime(instances="digits"), 16,
                                                           "default")]


def write_bags(folder: Path, n: int = 16, dim: int = 4) -> Path:
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    lines = ["bag,label"]
    for i in range(n):
        torch.save(torch.randn(5, dim, generator=generator), folder / f"b{i}.pt")
        lines.append(f"b{i},{i % 2}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_one_json_holds_a_report_per_point(tmp_path, capsys):
    bags = write_bags(tmp_path / "mine")
    out = tmp_path / "sweep.json"
    status = main(["sweep", TINY, "--tests", "single_concept,label_swap", "--seeds", "2",
                   "--bag-sizes", "default,60", "--data", str(bags), "--quiet",
                   "--report", str(out)])
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["schema"] == "mil-assert/sweep/v1" and not data["interrupted"]
    labels = [p["label"] for p in data["points"]]
    assert labels == ["the tests' own bags, D = 16, default", "~60 instances, D = 16, default",
                      "mine + poison, D = 4, default"]
    cells = [[(r["test"], p["report"]["regime"]["bag_size"]) for r in p["report"]["results"]]
             for p in data["points"]]
    assert cells == [[("single_concept", None), ("label_swap", None)],
                     [("single_concept", 60), ("label_swap", 60)],
                     [("single_concept", None)]]  # the user's bags build one test
    assert data["points"][2]["report"]["instance_dim"] == 4
    assert all(p["seconds"] > 0 for p in data["points"])
    assert "| point " in printed and "tiny_max label_swap" in printed
    assert "point 3/3: mine + poison" in printed
    assert status == (1 if "FAILED" in printed else 0)
    header = next(line for line in printed.splitlines() if line.startswith("| point"))
    assert main(["render", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == header


@pytest.mark.parametrize("args, message", [
    (["--bag-sizes", "default,lots"], "--bag-sizes: 'lots' is not a positive number"),
    (["--budgets", "default,slides"], "--budgets: slides: use default, wsi"),
    (["--instances", "pixels"], "--instances: pixels: use gaussian, digits"),
    (["--data", "/no/such/folder"], "/no/such/folder"),
])
def test_bad_points_stop_the_sweep_before_training(args, message, capsys, tmp_path):
    assert main(["sweep", TINY, "--seeds", "2", "--report", str(tmp_path / "s.json"),
                 *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mil-assert: error: ") and message in err
    assert not (tmp_path / "s.json").exists()
