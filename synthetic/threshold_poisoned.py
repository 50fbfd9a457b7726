"""``threshold_poisoned``: threshold MIL with a poisoned shortcut (Raff & Holt 2023, Algorithm 2).

A bag is positive iff it holds at least one instance of concept A and at least one of
concept B (threshold MIL with two concepts, both thresholds 1). Per bag (Normal
parameters per dimension, second value a standard deviation):

- positive bag: k ~ U{1, 2, 3} instances of A ~ N(2, 0.1) (label 1) and k of
  B ~ N(3, 0.1) (label 2), plus m ~ U{1, ..., max_background} background N(0, 1);
- negative bag: one instance of A or of B (equal chance) plus m background;
- poison N(-10, 0.1) (label -1): one in every negative training and validation bag, one in
  every positive test bag.

At any instance dimension D the bag rules and the poison are unchanged; A, B and the
poison lie 2, 3 and -10 times sqrt(D) along the all-ones direction, where background is
N(0, 1), so each can be told from background at every D >= 8 (see ``bags.py``).

Source: Raff & Holt, NeurIPS 2023 (arXiv 2310.17867), Algorithm 2, with defaults as in
torchmil's ``mc_standard_dataset.py``; here the seed controls every draw and bags are
shuffled.
"""

from __future__ import annotations

import torch

from mil_assert.defaults import EVAL_BAGS, INSTANCE_DIM, TRAIN_BAGS
from mil_assert.seeding import cpu_generator
from mil_assert.synthetic.bags import (
    BACKGROUND_NOISE,
    CONCEPT_A_NOISE,
    CONCEPT_B_NOISE,
    POISON_NOISE,
    Bags,
    Splits,
    assemble_bags,
    background_range,
    balanced_labels,
    check_params,
    uniform_int,
)
from mil_assert.synthetic.catalog import AlgorithmicTest, one_concept_auc, uniform_background

COPIES = (1, 2, 3)
"""A positive bag holds k instances of A and k of B, k drawn uniformly from these."""

PARTIAL_RULE_AUC = one_concept_auc(COPIES)
"""59/72 = 0.819: the validation AUC of the best rule of one concept (a maximum over the
bag's instances of a score that is high on A only), derived from this generator by
:func:`~mil_assert.synthetic.catalog.one_concept_auc`. Every positive holds A and so do
half the negatives: a constant score on A ties those and reaches 0.75; a score that
varies over A's instances ranks a positive's maximum over k copies above a negative's one
copy with probability k / (k + 1), which lifts it to 1/2 + 1/2 (1/2 + 2/3 + 3/4) / 3 =
0.819. No maximum of instance scores, of one concept or both, ranks the bags higher.
Checked on seeds 0-39 of the validation bags: the maximum over instances of A's
indicator gives 0.749 (sd 0.012), of A's Gaussian log-likelihood 0.825 (sd 0.018, max
0.864), of B's 0.825 (``tests/test_partial_rule.py``)."""


def _split(n_bags: int, dim: int, background: tuple[int, int], poison_in: int, seed: int,
           stream: str) -> Bags:
    generator = cpu_generator(seed, stream)
    y = balanced_labels(n_bags)
    positive = y == 1
    k = uniform_int(COPIES[0], COPIES[-1], n_bags, generator)
    negative_is_a = torch.rand(n_bags, generator=generator) < 0.5
    n_a = torch.where(positive, k, (~positive & negative_is_a).long())
    n_b = torch.where(positive, k, (~positive & ~negative_is_a).long())
    m = uniform_int(background[0], background[1], n_bags, generator)
    parts = [
        (CONCEPT_A_NOISE, n_a),
        (CONCEPT_B_NOISE, n_b),
        (BACKGROUND_NOISE, m),
        (POISON_NOISE, (y == poison_in).long()),
    ]
    return assemble_bags(parts, y, dim, generator)


def generate(
    seed: int, *, dim: int = INSTANCE_DIM, n_train: int = TRAIN_BAGS, n_eval: int = EVAL_BAGS,
    max_background: int = 9,
    min_background: int = 1,
) -> Splits:
    """Training, validation and test bags of the ``threshold_poisoned`` test.

    Args:
        seed: the run's seed; the same seed gives bit-identical bags.
        dim: instance dimension D.
        n_train: number of training bags (half positive).
        n_eval: number of validation bags and of test bags (half positive).
        max_background: background instances per bag are drawn from U{min_background,
            ..., this}.
        min_background: the least background instances per bag (at least 1).
    """
    check_params(dim, n_train, n_eval)
    background = background_range(min_background, max_background)
    return Splits(
        train=_split(n_train, dim, background, 0, seed, "data/threshold_poisoned/train"),
        val=_split(n_eval, dim, background, 0, seed, "data/threshold_poisoned/val"),
        test=_split(n_eval, dim, background, 1, seed, "data/threshold_poisoned/test"),
    )


OTHER_INSTANCES = 3.0
"""Mean instances of a training bag besides the background: a positive training bag holds 2
instances of A and 2 of B on average, a negative one of A or B and the poison."""


TEST = AlgorithmicTest(
    name="threshold_poisoned",
    generate=generate,
    assumption="threshold",
    kind="shift",
    source="Raff & Holt 2023, Algorithm 2",
    partial_rule_auc=PARTIAL_RULE_AUC,
    sized=uniform_background(OTHER_INSTANCES),
)
