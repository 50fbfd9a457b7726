"""The model contract before training, the output rule, one-bag models and torchmil models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import toy_models

import mil_assert
from mil_assert import contract
from mil_assert.adapters import OutputError, bag_logits
from mil_assert.contract import check_contract
from mil_assert.harness import build_model, run_cell
from mil_assert.loading import ModelSpecError, resolve_models
from mil_assert.synthetic import TESTS

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("spec", "prop", "message"),
    [
        (toy_models.leaks_padding, "padding", "filling masked rows with 1000 changes the logits"),
        (toy_models.mixes_bags, "bag independence",
         "in training mode, replacing the other bags of the batch by bags of the same sizes "
         "changes the logits"),
        (toy_models.remembers_last_bag, "bag independence",
         "in training mode, replacing the other bags of the batch by bags of the same sizes "
         "changes the logits"),
        (toy_models.leaks_padding_slightly, "padding",
         "filling masked rows with 1000 changes the logits"),
        (toy_models.mixes_bags_slightly, "bag independence",
         "in training mode, replacing the other bags of the batch by bags of the same sizes "
         "changes the logits"),
        (toy_models.nan_for_one, "output", "non-finite logits (NaN or inf) for bags of size 1 "),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_a_broken_contract_is_an_error_cell_without_training(spec, prop, message):
    result = run_cell(spec, TESTS["single_concept"], [0, 1], mil_assert.Budget(), 16, CPU)
    assert result.verdict == "error" and result.val_auc is None and result.training == ""
    assert result.message.startswith(f"contract broken before training: {prop}: {message}")
    assert result.contract["broken"] == prop and not result.contract["ok"]
    assert result.as_dict()["contract"] == result.contract  # in the JSON report


@pytest.mark.parametrize("spec", [toy_models.leaks_padding_slightly,
                                  toy_models.mixes_bags_slightly], ids=lambda s: s.name)
def test_the_subtle_breaks_are_caught_by_the_tolerance_alone(spec, monkeypatch):
    """The breaks above move the logits by about 1e-3: a tolerance 5,000 times looser than
    the contract's lets them through, so the test above fails if the tolerance loosens."""
    model = build_model(spec, 0, 16)
    assert not check_contract(model, 16).ok
    monkeypatch.setattr(contract, "TOLERANCE", 0.5)
    assert check_contract(model, 16).ok


def test_a_one_bag_model_with_dropout_passes_the_contract_and_gets_verdicts():
    """Published one-bag code has dropout: each bag is read alone, whatever it draws."""
    model = build_model(toy_models.one_bag_dropout, 0, 16)
    assert check_contract(model, 16).ok
    report = mil_assert.check([toy_models.one_bag_dropout], tests=["single_concept",
                                                                   "label_swap"],
                              seeds=2, progress=False)
    assert all(r.contract["ok"] for r in report.results)
    assert all(r.verdict in ("pass", "violation", "inconclusive") for r in report.results)
    assert all(len(r.test_auc.per_seed) == 2 for r in report.results)


def test_order_dependence_is_recorded_not_an_error():
    model = build_model(mil_assert.ModelSpec("transmil_like", factory=_order_dependent), 0, 8)
    outcome = check_contract(model, 8)
    assert outcome.ok and not outcome.order_invariant and outcome.order_change > 1e-3
    assert "instance order changes the logits" in outcome.summary()


class _FirstInstance(toy_models.InstanceMax):
    def forward(self, X, mask):
        return self.score(X[:, 0]).squeeze(-1) + 0.1 * super().forward(X, mask)


def _order_dependent(dim):
    return _FirstInstance(dim)


# --- the output rule -----------------------------------------------------------------

Z = torch.tensor([[0.5, 2.0, -1.0], [1.0, -1.0, 0.0]])


@pytest.mark.parametrize(
    ("out", "options", "expected"),
    [
        (torch.tensor([0.3, -2.0]), {}, [0.3, -2.0]),
        (torch.tensor([[0.3], [-2.0]]), {}, [0.3, -2.0]),
        (Z[:, :2], {}, [1.5, -2.0]),  # z1 - z0
        (Z[:, :2], {"positive_class": 0}, [-1.5, 2.0]),
        (Z, {"positive_class": 1}, [2.0 - torch.logsumexp(torch.tensor([0.5, -1.0]), 0).item(),
                                    -1.0 - torch.logsumexp(torch.tensor([1.0, 0.0]), 0).item()]),
        (torch.tensor([0.5, 0.9]), {"output": "probability"}, [0.0, 2.1972246]),
        (torch.tensor([[0.5, 0.5], [0.1, 0.9]]), {"output": "probability"}, [0.0, 2.1972246]),
        (torch.tensor([0.0, 1.0]), {"output": "probability"},  # clamped to [1e-6, 1 - 1e-6]
         torch.logit(torch.tensor([1e-6, 1 - 1e-6])).tolist()),
        ((torch.tensor([0.3, -2.0]), "attention"), {}, [0.3, -2.0]),
        (("first", torch.tensor([0.3, -2.0])), {"output_key": 1}, [0.3, -2.0]),
        ({"logits": Z[:, :2], "Y_prob": None}, {}, [1.5, -2.0]),
        ({"scores": torch.tensor([0.3, -2.0])}, {"output_key": "scores"}, [0.3, -2.0]),
    ],
)
def test_outputs_as_people_write_them(out, options, expected):
    torch.testing.assert_close(bag_logits(out, 2, **options), torch.tensor(expected))


@pytest.mark.parametrize(
    ("out", "options", "message"),
    [
        (Z, {}, "3 class logits; name the positive class with positive_class"),
        (Z, {"output": "probability"}, "3 class probabilities; name the positive class"),
        (torch.zeros(2, 4, 1), {}, "cannot read one score vector per bag from shape (2, 4, 1)"),
        (torch.zeros(3), {}, "cannot read one score vector per bag from shape (3,)"),
        ({"Y_prob": torch.zeros(2)}, {}, "no 'logits'; name the entry holding the scores"),
        (("text", torch.zeros(2)), {}, "are a str, not a tensor"),
        (Z[:, :2], {"positive_class": 2}, "positive_class=2 but the model returns 2"),
    ],
)
def test_ambiguous_outputs_are_clear_errors(out, options, message):
    with pytest.raises(OutputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bag_logits(out, 2, **options)


def test_one_bag_outputs():
    for shape in ((), (1,), (1, 1)):
        assert bag_logits(torch.full(shape, 0.7), 1, one_bag=True).tolist() == [pytest.approx(0.7)]
    assert bag_logits(torch.tensor([[0.0, 1.0]]), 1, one_bag=True).tolist() == [1.0]
    for instance_scores in (torch.zeros(5), torch.zeros(5, 1)):
        with pytest.raises(OutputError, match="5 scores for one bag .* look like instance scores"):
            bag_logits(instance_scores, 1, one_bag=True)
    with pytest.raises(OutputError, match=r"expected \[\], \[1\], \[1, 1\] or \[1, C\]"):
        bag_logits(torch.zeros(2, 3), 1, one_bag=True)


# --- one-bag models ----------------------------------------------------------------------

def test_a_one_bag_model_in_the_authors_style_is_judged_like_its_batched_twin():
    """``tests/authors_style.py``: ``forward(x [1, N, D]) -> (Y_prob, Y_hat, A)``, judged
    unmodified, gets the verdicts of the same architecture written batched."""
    models = resolve_models("tests/authors_style.py:Attention@input=bag1@output=probability,"
                            "tests/authors_style.py:BatchedAttention", REPO)
    report = mil_assert.check(models, tests=["single_concept", "label_swap"], seeds=2,
                              budget={"epochs": 20}, progress=False)
    one_bag, batched = report.results[:2], report.results[2:]
    assert [r.verdict for r in one_bag] == [r.verdict for r in batched] == ["violation"] * 2
    for a, b in zip(one_bag, batched, strict=True):
        assert a.training.startswith("stacked")
        assert b.training.startswith("stacked")
        for x, y in zip(a.test_auc.per_seed + a.val_auc.per_seed,
                        b.test_auc.per_seed + b.val_auc.per_seed, strict=True):
            assert x == y  # the same training: float rounding moves no bag's rank


def test_one_bag_models_see_each_bag_without_padding():
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.score = torch.nn.Linear(dim, 1)

        def forward(self, x):
            seen.append(tuple(x.shape))
            return self.score(x).amax()

    spec = mil_assert.ModelSpec("recorder", factory=Recorder, input="bag")
    model = build_model(spec, 0, 4)
    X, mask = torch.full((3, 6, 4), 1e3), torch.zeros(3, 6, dtype=torch.bool)
    for b, n in enumerate((2, 5, 2)):
        X[b, :n] = torch.randn(n, 4)
        mask[b, :n] = True
    model.bag_map.ladder.step = 3  # bag by bag shows each call; vmap gives the same values
    logits = model(X, mask)
    assert sorted(seen) == [(2, 4), (2, 4), (5, 4)]
    torch.testing.assert_close(logits[1], model.model(X[1, :5]).reshape(()))
    model.bag_map.ladder.step = 0
    torch.testing.assert_close(model(X, mask), logits)


def test_model_string_options():
    [spec] = resolve_models("tests/authors_style.py:Attention@input=bag1@output=probability",
                            REPO)
    assert (spec.input, spec.output) == ("bag1", "probability")
    with pytest.raises(ModelSpecError, match="must read @key=value"):
        resolve_models("abmil@bag", REPO)
    with pytest.raises(ModelSpecError, match="input='sideways'"):
        resolve_models("abmil@input=sideways", REPO)
    with pytest.raises(ModelSpecError, match=r"does not take|cannot be called with"):
        resolve_models("tests/authors_style.py:Attention@width=3", REPO)


# --- torchmil models ----------------------------------------------------------------------

def test_torchmil_models_by_name():
    pytest.importorskip("torchmil")
    abmil, transmil = resolve_models("torchmil:ABMIL@gated=True,torchmil:TransMIL@att_dim=16",
                                     REPO)
    assert abmil.input == "batch" and transmil.input == "bag1"  # TransMIL takes no mask
    report = mil_assert.check([abmil, transmil], tests="label_swap", seeds=2,
                              budget={"n_train_bags": 64, "n_eval_bags": 64, "epochs": 3},
                              progress=False)
    assert [r.verdict != "error" for r in report.results] == [True, True], report.failures
    assert report.results[0].training.startswith("stacked")
    assert all(r.contract["ok"] for r in report.results)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("torchmil:SETMIL", "needs instance coordinates (coords)"),
        ("torchmil:SmTransformerABMIL", "needs an adjacency matrix between instances (adj)"),
        ("torchmil:NoSuchModel", "torchmil has no model 'NoSuchModel'; its models: ABMIL"),
    ],
)
def test_torchmil_models_that_cannot_be_judged_say_why(item, message):
    pytest.importorskip("torchmil")
    with pytest.raises(ValueError, match=re_escape(message)):
        resolve_models(item, REPO)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


# --- errors that name the fix ---------------------------------------------------------------

def test_a_one_bag_model_called_batched_is_told_to_set_input():
    [spec] = resolve_models("tests/authors_style.py:Attention", REPO)
    message = check_contract(build_model(spec, 0, 8), 8).message
    assert message.startswith("output: forward failed on a batch of bags of sizes 1-16: "
                              "TypeError: ")
    assert message.endswith('judge it one bag at a time: ModelSpec(..., input="bag1") for '
                            'forward(x [1, N, D]) or input="bag" for forward(x [N, D]); on '
                            'the command line, file.py:factory@input=bag1')


class InstanceScoresOfOneBag(torch.nn.Module):
    """One bag ``x [1, N, D]`` per call, returning its instance scores ``[N]`` unpooled."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = torch.nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x[0]).squeeze(-1)


def test_a_one_bag_model_returning_instance_scores_is_told_to_pool_them():
    spec = mil_assert.ModelSpec(name="unpooled", factory=InstanceScoresOfOneBag, input="bag1")
    message = check_contract(build_model(spec, 0, 8), 8).message
    assert "look like instance scores, not a bag score; pool them into one logit" in message
    assert "output_key" not in message


def test_a_model_that_reads_padding_is_pointed_to_one_bag_input():
    message = check_contract(build_model(toy_models.leaks_padding, 0, 8), 8).message
    assert message.startswith("padding: ")
    assert 'judged one unpadded bag at a time: ModelSpec(..., input="bag1")' in message


def test_probabilities_read_as_logits_are_pointed_to_output_probability():
    [as_logits, as_probabilities] = resolve_models(
        "tests/authors_style.py:Attention@input=bag1,"
        "tests/authors_style.py:Attention@input=bag1@output=probability", REPO)
    budget = mil_assert.Budget(n_train_bags=64, n_eval_bags=64, epochs=2)
    hint = ('if forward returns probabilities, declare output="probability" in its ModelSpec, '
            'or @output=probability after its name')
    assert hint in run_cell(as_logits, TESTS["single_concept"], [0, 1], budget, 8, CPU).message
    assert hint not in run_cell(as_probabilities, TESTS["single_concept"], [0, 1], budget, 8,
                                CPU).message


def test_a_model_vmap_cannot_run_says_why_once():
    notes = []
    budget = mil_assert.Budget(n_train_bags=64, n_eval_bags=64, epochs=2)
    result = run_cell(toy_models.reads_a_python_number, TESTS["single_concept"], [0, 1],
                      budget, 8, CPU, note=notes.append)
    assert result.verdict != "error", result.message
    assert "; vmap failed (" in result.training
    assert "; vmap after functionalize failed (" in result.training
    assert sum("vmap failed" in line for line in notes) == 1


def test_a_one_bag_model_that_vmap_cannot_run_after_drawing_passes_the_contract():
    """vmap fails after the model drew its random numbers; the bag-by-bag fallback starts
    from the state before that attempt, so both training-mode calls draw the same ones."""
    assert check_contract(build_model(toy_models.random_mask_in_place, 0, 16), 16).ok
