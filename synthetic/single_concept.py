"""``single_concept``: standard MIL with a poisoned shortcut (Raff & Holt 2023, Algorithm 1).

Data-generating process, per bag (all Normal parameters per dimension, second value a
standard deviation):

- positive bag: k ~ U{1, 2, 3} concept instances, each from N(0, 3) or N(1, 1) with equal
  chance (instance label 1), plus ``background`` instances from N(0, 1) (label 0);
- negative bag: ``background`` instances from N(0, 1);
- poison N(-10, 0.1) (label -1): one in every negative bag of the training and validation
  sets, one in every positive bag of the test set.

"Poison present means negative" fits the training data perfectly. A model that learned it
ranks the test bags upside down; ``max_j h(x_j)`` cannot use the poison as negative
evidence, so it must learn the concept and keeps its AUC.

At any instance dimension D the bag rules and the poison are unchanged; the wide concept
differs from background in scale only and the narrow one overlaps it along the all-ones
direction with probability Phi(-sqrt(D) / 2): 7.9% at D = 8, 2.3% at 16, 0 from 64 (see
``bags.py``). The concept gets easier with D (the wide one's norm is 3 sqrt(D) against
sqrt(D)), so from D = 256 attention models learn it besides the poison and the poison
only lowers the shifted positive bags: seeds 0-4 of ``abmil`` reach test AUC 0.68-0.75
after validation 1.00 (0.00-0.01 at D = 16). That drop, 0.25-0.32, is still a lost
ranking under the verdict rule (``reports/dimensions.json``).

Source: Raff & Holt, "Reproducibility in Multiple Instance Learning: A Case For Algorithmic
Unit Tests", NeurIPS 2023 (arXiv 2310.17867), Algorithm 1, with defaults as in torchmil's
``sc_standard_dataset.py``; unlike torchmil, the seed controls every draw, instances are
shuffled within bags and the bag order is shuffled.
"""

from __future__ import annotations

import torch

from mil_assert.defaults import EVAL_BAGS, INSTANCE_DIM, TRAIN_BAGS
from mil_assert.seeding import cpu_generator
from mil_assert.synthetic.bags import (
    BACKGROUND_NOISE,
    CONCEPT_A,
    POISON_NOISE,
    Bags,
    Component,
    Splits,
    assemble_bags,
    balanced_labels,
    check_params,
    uniform_int,
)
from mil_assert.synthetic.catalog import AlgorithmicTest, fixed_background

CONCEPT_WIDE = Component(CONCEPT_A, 0.0, 3.0)
CONCEPT_NARROW = Component(CONCEPT_A, 1.0, 1.0)


def concept_parts(
    has_concept: torch.Tensor, background: int, generator: torch.Generator
) -> list[tuple[Component, torch.Tensor]]:
    """Counts per bag of the concept mixture (only where ``has_concept``) and the background.

    Shared with ``label_swap``, which uses the same concept with swapped labels.
    """
    n_bags = has_concept.shape[0]
    k = uniform_int(1, 3, n_bags, generator) * has_concept.long()
    wide = torch.binomial(k.double(), torch.full((n_bags,), 0.5, dtype=torch.float64),
                          generator=generator).long()
    return [
        (CONCEPT_WIDE, wide),
        (CONCEPT_NARROW, k - wide),
        (BACKGROUND_NOISE, torch.full((n_bags,), background)),
    ]


def _split(n_bags: int, dim: int, background: int, poison_in: int, seed: int, stream: str) -> Bags:
    generator = cpu_generator(seed, stream)
    y = balanced_labels(n_bags)
    parts = concept_parts(y == 1, background, generator)
    parts.append((POISON_NOISE, (y == poison_in).long()))
    return assemble_bags(parts, y, dim, generator)


def generate(
    seed: int, *, dim: int = INSTANCE_DIM, n_train: int = TRAIN_BAGS, n_eval: int = EVAL_BAGS,
    background: int = 10
) -> Splits:
    """Training, validation and test bags of the ``single_concept`` test.

    Args:
        seed: the run's seed; the same seed gives bit-identical bags.
        dim: instance dimension D.
        n_train: number of training bags (half positive).
        n_eval: number of validation bags and of test bags (half positive).
        background: B, background instances per bag (at least 1).
    """
    check_params(dim, n_train, n_eval, background=background)
    if background < 1:
        raise ValueError(f"background must be at least 1 (negative test bags hold only "
                         f"background), got {background}")
    return Splits(
        train=_split(n_train, dim, background, 0, seed, "data/single_concept/train"),
        val=_split(n_eval, dim, background, 0, seed, "data/single_concept/val"),
        test=_split(n_eval, dim, background, 1, seed, "data/single_concept/test"),
    )


OTHER_INSTANCES = 1.5
"""Mean instances of a training bag besides the background: a positive training bag holds 2
concept instances on average, a negative the poison."""


TEST = AlgorithmicTest(
    name="single_concept",
    generate=generate,
    assumption="standard",
    kind="shift",
    source="Raff & Holt 2023, Algorithm 1",
    sized=fixed_background(OTHER_INSTANCES),
)
