"""``label_swap``: the asymmetry of MIL labels (this project's test).

The ``single_concept`` concept without poison, with the labels swapped: a bag is
"positive" iff it holds no concept instance. Per bag:

- "positive" bag: ``background`` instances from N(0, 1) (label 0);
- "negative" bag: k ~ U{1, 2, 3} concept instances, each from N(0, 3) or N(1, 1) with
  equal chance (label 1), plus ``background`` instances from N(0, 1).

The validation and test sets are fresh draws from the same distribution. Standard MIL
says a bag is negative unless it holds a positive instance, so absence can never be
positive evidence: a set-monotone model (adding an instance never lowers its score)
cannot represent this rule and stays near chance. A model that learns it has shown it
uses absence as positive evidence.

A model that learns nothing at all also stays near chance, so staying there proves
nothing by itself. The *capacity control* (``generate_control``) holds the same bags with
the labels unswapped: a bag is positive iff it holds a concept instance, the
``single_concept`` rule without poison, which every MIL model can represent. The harness
trains it with the same model, seeds and budget; a seed that does not learn the control
says nothing about the swapped task (:mod:`mil_assert.verdict`).

At any instance dimension D the rule is unchanged; the concept is ``single_concept``'s
(see there and ``bags.py`` for how it separates from background as D grows).

Source: the asymmetry argument of Raff & Holt, NeurIPS 2023 (arXiv 2310.17867), section 1;
the concept distribution is that of their Algorithm 1.
"""

from __future__ import annotations

from dataclasses import replace

from mil_assert.defaults import EVAL_BAGS, INSTANCE_DIM, TRAIN_BAGS
from mil_assert.seeding import cpu_generator
from mil_assert.synthetic.bags import Bags, Splits, assemble_bags, balanced_labels, check_params
from mil_assert.synthetic.catalog import AlgorithmicTest, fixed_background
from mil_assert.synthetic.single_concept import concept_parts


def _split(n_bags: int, dim: int, background: int, seed: int, stream: str) -> Bags:
    generator = cpu_generator(seed, stream)
    y = balanced_labels(n_bags)
    return assemble_bags(concept_parts(y == 0, background, generator), y, dim, generator)


def generate(
    seed: int, *, dim: int = INSTANCE_DIM, n_train: int = TRAIN_BAGS, n_eval: int = EVAL_BAGS,
    background: int = 10
) -> Splits:
    """Training, validation and test bags of the ``label_swap`` test.

    Args:
        seed: the run's seed; the same seed gives bit-identical bags.
        dim: instance dimension D.
        n_train: number of training bags (half "positive").
        n_eval: number of validation bags and of test bags.
        background: B, background instances per bag (at least 1).
    """
    check_params(dim, n_train, n_eval, background=background)
    if background < 1:
        raise ValueError(f"background must be at least 1 (\"positive\" bags hold only "
                         f"background), got {background}")
    return Splits(
        train=_split(n_train, dim, background, seed, "data/label_swap/train"),
        val=_split(n_eval, dim, background, seed, "data/label_swap/val"),
        test=_split(n_eval, dim, background, seed, "data/label_swap/test"),
    )


def generate_control(
    seed: int, *, dim: int = INSTANCE_DIM, n_train: int = TRAIN_BAGS, n_eval: int = EVAL_BAGS,
    background: int = 10
) -> Splits:
    """The capacity control of ``label_swap``: the bags of ``generate`` with the same
    arguments, each label flipped, so a bag is positive iff it holds a concept instance."""
    swapped = generate(seed, dim=dim, n_train=n_train, n_eval=n_eval, background=background)
    return Splits(*(replace(bags, y=1.0 - bags.y)
                    for bags in (swapped.train, swapped.val, swapped.test)))


OTHER_INSTANCES = 1.0
"""Mean instances of a training bag besides the background: a bag holding the concept holds
2 of its instances on average, the other none."""


TEST = AlgorithmicTest(
    name="label_swap",
    generate=generate,
    assumption="standard",
    kind="unlearnable",
    source="this project, from the label asymmetry in Raff & Holt 2023, section 1",
    control=generate_control,
    sized=fixed_background(OTHER_INSTANCES),
)
