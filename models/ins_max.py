"""INS scored by the maximum of its instance probabilities.

Qu et al., IEEE TCSVT 2024 (arXiv 2307.02249): the same model and training as
:mod:`mil_assert.models.ins`; only the bag score differs. The authors' CAMELYON16
script ``train_withbag_cam.py`` computes the maximum of the instances' positive-class
probabilities beside the mean it reports as its bag AUC.
The maximum is set-monotone and count-free, so what INS's verdicts owe to the mean and
what they owe to its instance classifier can be told apart.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
"""

from __future__ import annotations

from functools import partial

from mil_assert import Expected, ModelSpec
from mil_assert.models.ins import INS

SPEC = ModelSpec(
    name="ins_max",
    factory=partial(INS, bag_score="max"),
    citation="Qu et al., Rethinking Multiple Instance Learning for Whole Slide Image "
             "Classification: A Good Instance Classifier is All You Need, IEEE TCSVT 2024",
    respects=(),
    expected={
        "single_concept": Expected("pass", "the maximum of instance probabilities keeps its "
                                   "ranking: test AUC 0.86-0.97 on 12 of 12 seeds"),
        "threshold_poisoned": Expected("inconclusive", "an instance classifier cannot learn "
                                       "'A and B': validation AUC 0.53-0.64 on 12 of 12 seeds"),
        "false_frequency": Expected("inconclusive", "an instance classifier cannot learn 'A "
                                    "and B': validation AUC 0.49-0.54 on 12 of 12 seeds"),
        "label_swap": Expected("pass", "the maximum cannot use absence: held-out AUC "
                               "0.44-0.55 on 12 of 12 seeds, the control learned (0.88-0.99)"),
    },
    stackable=False,
    in_default_run=False,
)
