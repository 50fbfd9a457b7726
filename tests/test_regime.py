"""Regimes: bag size, digit instances and the user's own bags, on every route."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mil_assert
from mil_assert.cli import main
from mil_assert.synthetic import TESTS
from mil_assert.synthetic.bags import BACKGROUND, CONCEPT_A, POISON
from mil_assert.synthetic.own_data import DataError, load, poisoned_splits
from mil_assert.synthetic.regime import Regime, RegimeError

TINY = {"n_train_bags": 64, "n_eval_bags": 64, "epochs": 2}


@pytest.mark.parametrize("name", list(TESTS))
@pytest.mark.parametrize("size", [40, 1000])
def test_a_bag_size_sets_the_mean_and_keeps_the_witnesses(name, size):
    regime, default = Regime(bag_size=size), Regime()
    bags = regime.generate(TESTS[name], 0, dim=4, n_train=400, n_eval=20).train
    usual = default.generate(TESTS[name], 0, dim=4, n_train=400, n_eval=20).train
    assert abs(float(bags.sizes.float().mean()) / size - 1) < 0.05
    assert int(bags.sizes.max()) <= 1.15 * size + 3  # little padding: sizes stay near N
    witnesses = bags.mask & (bags.instance_labels != BACKGROUND)
    usual_witnesses = usual.mask & (usual.instance_labels != BACKGROUND)
    assert int(witnesses.sum()) == int(usual_witnesses.sum())  # same draws, more background


def test_bad_regime_options_name_the_option():
    with pytest.raises(RegimeError, match="bag size 1: give the mean number"):
        Regime(bag_size=1)
    with pytest.raises(RegimeError, match="instances 'mnist': use one of gaussian, digits"):
        Regime(instances="mnist")
    with pytest.raises(RegimeError, match="give --data without --bag-size"):
        Regime(bag_size=100, data="x")


def test_digit_instances_follow_the_instance_labels_and_hold_out_images():
    pytest.importorskip("sklearn")
    from mil_assert.synthetic.digits import DIGITS_OF_LABEL, halves, images

    training, held_out = halves(0)
    assert not (training & held_out).any() and (training | held_out).all()
    splits = Regime(instances="digits").generate(TESTS["single_concept"], 0, dim=16,
                                                 n_train=40, n_eval=40)
    assert splits.train.X.shape[-1] == 16
    pixels, classes = images()
    assert DIGITS_OF_LABEL[CONCEPT_A] == (9,) and DIGITS_OF_LABEL[POISON] == (0,)
    # the same seed and test give the same bags
    again = Regime(instances="digits").generate(TESTS["single_concept"], 0, dim=16,
                                                n_train=40, n_eval=40)
    assert torch.equal(splits.test.X, again.test.X)
    with pytest.raises(RegimeError, match="at most 64"):
        Regime(instances="digits").generate(TESTS["single_concept"], 0, dim=65, n_train=4,
                                            n_eval=4)


def write_bags(folder: Path, n: int = 24, dim: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    lines = ["bag,label"]
    for i in range(n):
        x = torch.randn(int(torch.randint(3, 9, (1,), generator=g)), dim, generator=g)
        if i % 2:
            x[0] += 4.0
        torch.save(x, folder / f"b{i}.pt")
        lines.append(f"b{i},{i % 2}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_own_bags_get_the_poison_where_single_concept_puts_it(tmp_path):
    folder = write_bags(tmp_path / "bags")
    splits = poisoned_splits(str(folder), 0)
    for bags, poisoned_label in ((splits.train, 0), (splits.val, 0), (splits.test, 1)):
        poisons = bags.count(POISON)
        assert torch.equal(poisons, (bags.y == poisoned_label).long())
    total = len(splits.train) + len(splits.val) + len(splits.test)
    assert total == 24 and len(splits.train) == 12


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda f: torch.save(torch.zeros(0, 5), f / "b3.pt"), "b3.pt: an empty bag"),
        (lambda f: torch.save(torch.full((4, 5), float("nan")), f / "b3.pt"),
         "b3.pt: holds NaN or infinite values"),
        (lambda f: torch.save(torch.zeros(4, 6), f / "b3.pt"), "b3.pt: D = 6, but the first"),
        (lambda f: (f / "b3.pt").unlink(), "b3.pt: missing, though labels.csv lists bag 'b3'"),
        (lambda f: (f / "labels.csv").write_text(
            "bag,label\n" + "".join(f"b{i},1\n" for i in range(24))),
         r"0 bag\(s\) of label 0"),
    ],
    ids=["empty", "nan", "mixed-d", "missing", "one-class"],
)
def test_bad_bags_stop_the_run_with_one_line_naming_the_file(tmp_path, capsys, spoil, message):
    folder = write_bags(tmp_path / "bags")
    spoil(folder)
    with pytest.raises(DataError, match=message):
        load.__wrapped__(str(folder))
    code = main(["check", "mi_net", "--data", str(folder), "--seeds", "2", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(folder) in err[0]


def test_the_api_judges_own_bags_and_records_the_regime(tmp_path):
    folder = write_bags(tmp_path / "bags", n=40)
    report = mil_assert.check("mi_net", data=folder, seeds=2, budget=TINY, progress=False)
    assert [r.test for r in report.results] == ["single_concept"]
    saved = json.loads(report.save(tmp_path / "r.json").read_text())
    assert saved["regime"] == {"bag_size": None, "instances": "gaussian",
                               "data": str(folder.resolve())}
    with pytest.raises(RegimeError, match="single_concept only; drop label_swap"):
        mil_assert.check("mi_net", data=folder, tests="label_swap", seeds=2, progress=False)


def test_check_takes_a_bag_size_and_records_it(tmp_path, capsys):
    report = tmp_path / "r.json"
    code = main(["check", "tests/toy_models.py:tiny_max", "--tests", "single_concept",
                 "--bag-size", "60", "--seeds", "2", "--quiet", "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 6  # tiny_max's 3 epochs learn nothing at 60 instances: the gate says so
    assert "bags of ~60 instances" in out
    assert json.loads(report.read_text())["regime"]["bag_size"] == 60


def test_pytest_takes_own_bags_and_skips_the_other_tests(tmp_path):
    folder = write_bags(tmp_path / "bags", n=40)
    report = tmp_path / "r.json"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs",
         "mil_assert.compliance", f"--mil-model={Path(__file__).parent / 'toy_models.py'}"
         ":tiny_max", "--mil-seeds=2", f"--mil-data={folder}", f"--mil-report={report}",
         "-rs"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    skipped = "--mil-data judges the user's own bags on single_concept only"
    assert run.stdout.count(skipped) == 3, run.stdout + run.stderr
    data = json.loads(report.read_text())
    assert [r["test"] for r in data["results"]] == ["single_concept"]
    assert data["regime"]["data"] == str(folder.resolve())


def test_restarts_follow_the_bag_size():
    from mil_assert.defaults import restarts_for

    assert [restarts_for(n) for n in (None, 13, 100, 101, 500, 501, 2000)] == [1, 1, 1, 3, 3,
                                                                                5, 5]


def test_each_seed_keeps_its_best_start_on_validation_auc():
    from mil_assert.defaults import Budget
    from mil_assert.harness import run_cell
    from mil_assert.registry import builtin_models

    spec = builtin_models()["mi_net"]
    one = run_cell(spec, TESTS["single_concept"], [0, 1],
                   Budget(n_train_bags=64, n_eval_bags=64, epochs=3), 16, "cpu")
    three = run_cell(spec, TESTS["single_concept"], [0, 1],
                     Budget(n_train_bags=64, n_eval_bags=64, epochs=3, restarts=3), 16, "cpu")
    assert three.training.startswith("stacked: 2 seeds x 3 starts as one model; best of 3 "
                                     "starts per seed on validation AUC (starts ")
    # start 0 is the one-start run's model: the best of three is at least as good
    assert all(b >= a - 1e-6 for a, b in zip(one.val_auc.per_seed, three.val_auc.per_seed,
                                             strict=True))


def test_a_large_bag_size_trains_more_starts(tmp_path):
    report = mil_assert.check("tests/toy_models.py:tiny_max", tests="single_concept",
                              seeds=2, bag_size=150, progress=False)
    [cell] = report.results
    assert "best of 3 starts per seed on validation AUC" in cell.training
    one = mil_assert.check("tests/toy_models.py:tiny_max", tests="single_concept", seeds=2,
                           bag_size=150, budget={"restarts": 1}, progress=False)
    assert "starts" not in one.results[0].training  # the run's own choice wins
