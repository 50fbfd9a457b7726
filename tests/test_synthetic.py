"""Self-tests of the bag generators: labels follow the stated assumption, statistics match."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mil_assert.synthetic import TESTS, false_frequency, label_swap
from mil_assert.synthetic.bags import BACKGROUND, CONCEPT_A, CONCEPT_B, POISON, Bags

SMALL = {"n_train": 60, "n_eval": 40, "dim": 4}


def splits(name: str, seed: int = 0, **params):
    return TESTS[name].generate(seed, **{**SMALL, **params})


def standard_mil_label(bags: Bags) -> torch.Tensor:
    return (bags.count(CONCEPT_A) > 0).float()


def threshold_mil_label(bags: Bags) -> torch.Tensor:
    return ((bags.count(CONCEPT_A) >= 1) & (bags.count(CONCEPT_B) >= 1)).float()


LABEL_RULES = {
    "single_concept": standard_mil_label,
    "threshold_poisoned": threshold_mil_label,
    "false_frequency": threshold_mil_label,
    "label_swap": lambda bags: 1.0 - standard_mil_label(bags),
}


@pytest.mark.parametrize("name", list(TESTS))
def test_labels_follow_the_assumption(name):
    for split in ("train", "val", "test"):
        bags = getattr(splits(name), split)
        assert torch.equal(bags.y, LABEL_RULES[name](bags)), split


@pytest.mark.parametrize("name", list(TESTS))
def test_shapes_balance_and_padding(name):
    data = splits(name)
    for split, n in (("train", 60), ("val", 40), ("test", 40)):
        bags = getattr(data, split)
        assert bags.X.shape[:2] == bags.mask.shape == bags.instance_labels.shape
        assert bags.X.shape == (n, bags.mask.shape[1], 4) and bags.X.dtype == torch.float32
        assert bags.y.shape == (n,) and int(bags.y.sum()) == n // 2
        padding = ~bags.mask
        assert torch.all(bags.X[padding] == 0) and torch.all(bags.instance_labels[padding] == 0)
        assert bags.mask.any(dim=1).all(), "no empty bags"
        assert bags.sizes.max() == bags.mask.shape[1], "no all-padding columns"


@pytest.mark.parametrize("name", list(TESTS))
def test_same_seed_same_bits_other_seed_other_bags(name):
    a, b, c = splits(name, seed=3), splits(name, seed=3), splits(name, seed=4)
    for split in ("train", "val", "test"):
        for field in ("X", "mask", "y", "instance_labels"):
            assert torch.equal(getattr(getattr(a, split), field), getattr(getattr(b, split), field))
    assert not torch.equal(a.train.X[:, :1], c.train.X[:, :1])
    assert not torch.equal(a.train.X[:, :1], a.val.X[:, :1]), "splits use their own streams"


@pytest.mark.parametrize("name", list(TESTS))
def test_instances_are_shuffled_within_bags(name):
    bags = splits(name, n_train=400).train
    concept = (bags.instance_labels > 0) & bags.mask
    first = concept[:, 0].float().mean()
    assert 0.02 < first < 0.6, "concept instances must not sit at a fixed position"
    has_concept = concept.any(dim=1)
    assert len(set(concept.float().argmax(dim=1)[has_concept].tolist())) > 3


def test_single_concept_statistics():
    data = splits("single_concept", n_train=600, background=7)
    for split, poisoned_class in (("train", 0), ("val", 0), ("test", 1)):
        bags = getattr(data, split)
        pos = bags.y == 1
        k = bags.count(CONCEPT_A)
        assert set(k[pos].tolist()) == {1, 2, 3} and torch.all(k[~pos] == 0)
        assert torch.all(bags.count(BACKGROUND) == 7)
        assert torch.equal(bags.count(POISON), (bags.y == poisoned_class).long()), split
        poison = bags.X[(bags.instance_labels == POISON) & bags.mask]
        assert abs(poison.mean() + 10) < 0.05 and poison.std() < 0.2
    concept = data.train.X[(data.train.instance_labels == CONCEPT_A) & data.train.mask]
    assert 0.2 < concept.mean() < 0.8 and 1.7 < concept.std() < 2.7  # mixture N(0,3), N(1,1)


def test_threshold_poisoned_statistics():
    data = splits("threshold_poisoned", n_train=800)
    for split, poisoned_class in (("train", 0), ("val", 0), ("test", 1)):
        bags = getattr(data, split)
        pos = bags.y == 1
        a, b = bags.count(CONCEPT_A), bags.count(CONCEPT_B)
        assert torch.equal(a[pos], b[pos]) and set(a[pos].tolist()) == {1, 2, 3}
        assert torch.all(a[~pos] + b[~pos] == 1)
        background = bags.count(BACKGROUND)
        assert background.min() >= 1 and background.max() <= 9
        assert torch.equal(bags.count(POISON), (bags.y == poisoned_class).long())
    a_negatives = (data.train.count(CONCEPT_A)[data.train.y == 0] == 1).float().mean()
    assert 0.4 < a_negatives < 0.6
    assert set(data.train.count(BACKGROUND).tolist()) == set(range(1, 10))


def test_false_frequency_statistics():
    data = splits("false_frequency", n_train=800)
    for split, (low, high) in (("train", (1, 1)), ("val", (1, 1)), ("test", (35, 44))):
        bags = getattr(data, split)
        pos = bags.y == 1
        a, b = bags.count(CONCEPT_A), bags.count(CONCEPT_B)
        assert torch.all(a[pos] == 1) and torch.all(b[pos] == 1)
        assert torch.all((a[~pos] == 0) | (b[~pos] == 0))
        copies = (a + b)[~pos]
        assert copies.min() >= low and copies.max() <= high
        assert torch.all(bags.count(POISON) == 0)
    negatives = data.train.y == 0
    share_a = (data.train.count(CONCEPT_A)[negatives] > 0).float().mean()
    assert 0.4 < share_a < 0.6, "negatives use concept A and concept B (torchmil used only A)"


def test_label_swap_has_no_poison_and_one_distribution():
    data = splits("label_swap")
    for bags in (data.train, data.val, data.test):
        assert torch.all(bags.count(POISON) == 0)
        assert torch.all(bags.count(CONCEPT_A)[bags.y == 1] == 0)


def test_label_swap_control_is_the_same_bags_with_the_standard_mil_labels():
    swapped = splits("label_swap", seed=3)
    control = TESTS["label_swap"].control(3, **SMALL)
    for split in ("train", "val", "test"):
        bags, unswapped = getattr(swapped, split), getattr(control, split)
        assert torch.equal(unswapped.X, bags.X) and torch.equal(unswapped.mask, bags.mask)
        assert torch.equal(unswapped.y, standard_mil_label(bags)), split
        assert 0.4 < float(unswapped.y.mean()) < 0.6


def test_an_unlearnable_test_must_have_a_capacity_control():
    with pytest.raises(ValueError, match="needs a capacity control"):
        replace(TESTS["label_swap"], control=None)


@pytest.mark.parametrize(
    ("generate", "params", "named"),
    [
        (TESTS["single_concept"].generate, {"dim": 0}, "dim"),
        (TESTS["single_concept"].generate, {"n_train": 1}, "n_train"),
        (TESTS["threshold_poisoned"].generate, {"n_eval": 0}, "n_eval"),
        (TESTS["single_concept"].generate, {"background": -1}, "background"),
        (label_swap.generate, {"background": 0}, "background"),
        (false_frequency.generate, {"max_background": -2}, "max_background"),
        (false_frequency.generate, {"test_copies": (5, 2)}, "test_copies"),
        (TESTS["single_concept"].generate, {"dim": 2.5}, "dim"),
    ],
)
def test_invalid_parameters_name_the_parameter(generate, params, named):
    with pytest.raises(ValueError, match=named):
        generate(0, **params)


def test_negative_seed_is_rejected():
    with pytest.raises(ValueError, match="seed"):
        TESTS["label_swap"].generate(-1)
