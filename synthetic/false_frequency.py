"""``false_frequency``: threshold MIL with a count shortcut (Raff & Holt 2023, Algorithm 3).

A bag is positive iff it holds at least one instance of concept A and one of concept B.
Per bag (Normal parameters per dimension, second value a standard deviation):

- positive bag: one A ~ N(2, 0.1) (label 1), one B ~ N(3, 0.1) (label 2), plus
  m ~ U{1, ..., max_background} background N(0, 1);
- negative bag: t copies of one concept, A or B with equal chance, plus m background;
  t = 1 in the training and validation sets, t ~ U{35, ..., 44} in the test set.

"More concept instances means positive" fits the training data; on the test set the
negatives hold many more concept instances than the positives, so a counting model ranks
them upside down. A count-free model does not notice. No poison.

At any instance dimension D the bag rules and the copy counts are unchanged; A and B lie
2 and 3 times sqrt(D) along the all-ones direction, where background is N(0, 1) (see
``bags.py``).

Source: Raff & Holt, NeurIPS 2023 (arXiv 2310.17867), Algorithm 3, with defaults as in
torchmil's ``false_frequency_dataset.py``; torchmil's negatives always use concept A
(``randint(0, 1)`` is always 0): here they use A or B with equal chance, as the paper says.
"""

from __future__ import annotations

import torch

from mil_assert.defaults import EVAL_BAGS, INSTANCE_DIM, TRAIN_BAGS
from mil_assert.seeding import cpu_generator
from mil_assert.synthetic.bags import (
    BACKGROUND_NOISE,
    CONCEPT_A_NOISE,
    CONCEPT_B_NOISE,
    Bags,
    Splits,
    assemble_bags,
    background_range,
    balanced_labels,
    check_params,
    uniform_int,
)
from mil_assert.synthetic.catalog import AlgorithmicTest, one_concept_auc, uniform_background

PARTIAL_RULE_AUC = one_concept_auc((1,))
"""0.75: the validation AUC of the best rule of one concept (a maximum over the bag's
instances of a score that is high on A only), derived from this generator by
:func:`~mil_assert.synthetic.catalog.one_concept_auc`. Every positive holds one A and so
does half the negatives (validation negatives hold one copy, like training ones): the
positives outrank the negatives that hold B and, one copy against one, tie on average
with those that hold A, 1/2 + 1/2 x 1/2. No maximum of instance scores, of one concept or
both, ranks the bags higher. Checked on seeds 0-39 of the validation bags: the maximum
over instances of A's indicator gives 0.747 (sd 0.014), of A's Gaussian log-likelihood
0.747 (sd 0.020), of B's 0.756 (``tests/test_partial_rule.py``)."""


def _split(n_bags: int, dim: int, background: tuple[int, int], copies: tuple[int, int], seed: int,
           stream: str) -> Bags:
    generator = cpu_generator(seed, stream)
    y = balanced_labels(n_bags)
    positive = y == 1
    t = uniform_int(copies[0], copies[1], n_bags, generator)
    negative_is_a = torch.rand(n_bags, generator=generator) < 0.5
    n_a = torch.where(positive, 1, t * negative_is_a.long())
    n_b = torch.where(positive, 1, t * (~negative_is_a).long())
    m = uniform_int(background[0], background[1], n_bags, generator)
    parts = [(CONCEPT_A_NOISE, n_a), (CONCEPT_B_NOISE, n_b), (BACKGROUND_NOISE, m)]
    return assemble_bags(parts, y, dim, generator)


def generate(
    seed: int,
    *,
    dim: int = INSTANCE_DIM,
    n_train: int = TRAIN_BAGS,
    n_eval: int = EVAL_BAGS,
    max_background: int = 9,
    min_background: int = 1,
    test_copies: tuple[int, int] = (35, 44),
) -> Splits:
    """Training, validation and test bags of the ``false_frequency`` test.

    Args:
        seed: the run's seed; the same seed gives bit-identical bags.
        dim: instance dimension D.
        n_train: number of training bags (half positive).
        n_eval: number of validation bags and of test bags (half positive).
        max_background: background instances per bag are drawn from U{min_background,
            ..., this}.
        min_background: the least background instances per bag (at least 1).
        test_copies: ``(low, high)``: negative test bags hold U{low, ..., high} copies.
    """
    check_params(dim, n_train, n_eval)
    background = background_range(min_background, max_background)
    low, high = test_copies
    if not (isinstance(low, int) and isinstance(high, int) and 2 <= low <= high):
        raise ValueError(f"test_copies must be integers (low, high) with 2 <= low <= high "
                         f"(negative training bags hold 1 copy), got {test_copies!r}")
    return Splits(
        train=_split(n_train, dim, background, (1, 1), seed, "data/false_frequency/train"),
        val=_split(n_eval, dim, background, (1, 1), seed, "data/false_frequency/val"),
        test=_split(n_eval, dim, background, (low, high), seed, "data/false_frequency/test"),
    )


OTHER_INSTANCES = 1.5
"""Mean instances of a training bag besides the background: a positive training bag holds
one A and one B, a negative one of them."""


TEST = AlgorithmicTest(
    name="false_frequency",
    generate=generate,
    assumption="threshold",
    kind="shift",
    source="Raff & Holt 2023, Algorithm 3",
    partial_rule_auc=PARTIAL_RULE_AUC,
    sized=uniform_background(OTHER_INSTANCES),
)
