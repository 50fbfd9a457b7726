"""Real instances: the tests' bags with every instance an 8x8 digit image.

MNIST-bags (Ilse, Tomczak & Welling, ICML 2018) is deep MIL's standard benchmark: bags of
digit images, positive iff a chosen digit (9 there) is present. Here each test keeps its
own bag rules (which instances a bag holds, where the poison goes, how many copies a test
negative holds) and draws each instance from scikit-learn's 1,797 digit images
(``sklearn.datasets.load_digits``, shipped in its wheel, no download) by its instance
label:

- concept A: digit 9, MNIST-bags' target;
- concept B (threshold tests): digit 3, which does not resemble 9 in 8x8 scans;
- poison: digit 0, a class no positive training bag ever holds;
- background: digits 1, 2, 4, 5, 6, 7 and 8.

Each seed splits every digit's images in half: training bags draw from one half,
validation and test bags from the other, so a model is judged on images it never saw.
The instance encoder every model sits on is fixed, not trained: the 64 pixel intensities
(scaled to [0, 1]) projected onto the first D principal components of the seed's
training images and whitened (D = the run's instance dimension, 16 by default, at most
64), so any built-in model takes digit instances as it takes Gaussian ones. A per-instance
map keeps a model's MIL properties: a set-monotone model stays set-monotone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from mil_assert.seeding import cpu_generator
from mil_assert.synthetic.bags import BACKGROUND, CONCEPT_A, CONCEPT_B, POISON, Bags, Splits
from mil_assert.synthetic.catalog import AlgorithmicTest

DIGITS_OF_LABEL = {CONCEPT_A: (9,), CONCEPT_B: (3,), POISON: (0,),
                   BACKGROUND: (1, 2, 4, 5, 6, 7, 8)}
"""The digit classes each instance label draws from."""

PIXELS = 64


@functools.lru_cache(maxsize=1)
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits: float ``[1797, 64]`` in [0, 1] and int64 classes ``[1797]``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as missing:
        from mil_assert.synthetic.regime import RegimeError

        raise RegimeError("instances=digits needs scikit-learn: pip install "
                          "'mil-assert[digits]'") from missing
    data = load_digits()
    return (torch.tensor(data.data, dtype=torch.float32) / 16.0,
            torch.tensor(data.target, dtype=torch.int64))


def halves(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool ``[1797]`` masks of the seed's training images and held-out images: each
    digit's images split in half at random."""
    _, classes = images()
    generator = cpu_generator(seed, "data/digits/halves")
    training = torch.zeros(len(classes), dtype=torch.bool)
    for digit in range(10):
        index = (classes == digit).nonzero().squeeze(1)
        chosen = index[torch.randperm(len(index), generator=generator)[:len(index) // 2]]
        training[chosen] = True
    return training, ~training


def encoder(training: torch.Tensor, dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pixels ``[..., 64]`` -> whitened principal components ``[..., dim]``, fitted on the
    images where ``training`` is True."""
    if not 1 <= dim <= PIXELS:
        from mil_assert.synthetic.regime import RegimeError

        raise RegimeError(f"instances=digits: the instance dimension is at most {PIXELS} "
                          f"(8x8 pixels), got {dim}; use --dim {PIXELS} or less")
    pixels, _ = images()
    fit = pixels[training].double()
    mean = fit.mean(dim=0)
    _, singular, components = torch.linalg.svd(fit - mean, full_matrices=False)
    scale = singular[:dim] / (len(fit) - 1) ** 0.5
    projection = (components[:dim].T / scale).float()  # [64, dim]
    mean = mean.float()
    return lambda x: (x - mean) @ projection


def _draw(bags: Bags, pool: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor],
          generator: torch.Generator) -> Bags:
    """``bags`` with each real instance replaced by an encoded image of its label's digits,
    drawn from the images where ``pool`` is True."""
    pixels, classes = images()
    features = torch.zeros(*bags.mask.shape, PIXELS)
    for label, digits in DIGITS_OF_LABEL.items():
        where = bags.mask & (bags.instance_labels == label)
        count = int(where.sum())
        if not count:
            continue
        candidates = (pool & torch.isin(classes, torch.tensor(digits))).nonzero().squeeze(1)
        chosen = candidates[torch.randint(len(candidates), (count,), generator=generator)]
        features[where] = pixels[chosen]
    X = encode(features).masked_fill(~bags.mask[..., None], 0.0)
    return replace(bags, X=X.contiguous())


def digit_splits(test: AlgorithmicTest, generate: Callable[..., Splits], seed: int, *,
                 dim: int, n_train: int, n_eval: int, **params: Any) -> Splits:
    """``generate``'s bags of ``test`` (the test or its control) with digit instances."""
    training, held_out = halves(seed)
    encode = encoder(training, dim)
    layout = generate(seed, dim=1, n_train=n_train, n_eval=n_eval, **params)
    parts = []
    for part, pool in (("train", training), ("val", held_out), ("test", held_out)):
        generator = cpu_generator(seed, f"data/digits/{test.name}/{part}")
        parts.append(_draw(getattr(layout, part), pool, encode, generator))
    return Splits(*parts)
