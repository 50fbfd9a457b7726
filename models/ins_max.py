"""INS scored by the maximum of its instance probabilities.

Qu et al., IEEE TCSVT 2024 (arXiv 2307.02249): the same model and training as
:mod:`mil_assert.models.ins`; only the bag score differs. The authors' feature-input
script ``train_onlybag_feat_by_bagcls.py`` scores a bag by the maximum of its instances'
positive-class probabilities, and their CAMELYON16 script computes it beside the mean.
The maximum is set-monotone and count-free, so what INS's verdicts owe to the mean and
what they owe to its instance classifier can be told apart.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
"""

from __future__ import annotations

from functools import partial

from mil_assert import ModelSpec
from mil_assert.models.ins import INS

SPEC = ModelSpec(
    name="ins_max",
    factory=partial(INS, bag_score="max"),
    citation="Qu et al., Rethinking Multiple Instance Learning for Whole Slide Image "
             "Classification: A Good Instance Classifier is All You Need, IEEE TCSVT 2024",
    respects=(),
    stackable=False,
    in_default_run=False,
)
