"""ACMIL's ``ACMIL_GA`` from its authors' code, unmodified, with their training objective.

The files under ``acmil/`` are copied unmodified from dazhangyu123/ACMIL at commit
e53d19c81f3892256d41962ffc4352cc91a4f834 (MIT, ``acmil/LICENSE``): ``architecture/``
(``transformer.py``, ``network.py``, ``nystrom_attention.py``) and
``modules/emb_position.py``, which ``transformer.py`` imports. They need ``einops``.

``build(dim)`` builds ``ACMIL_GA`` as the authors' ``Step3_WSI_classification_ACMIL.py``
does with their Camelyon defaults (5 attention branches, 10 masked instances, mask_drop
0.6, inner width 128, two classes) for instances of ``dim`` features. Its ``forward(x)``
takes one bag ``x [1, N, D]`` and returns ``(sub_preds [5, 2], slide_preds [1, 2],
attn [1, 5, N])``; judge it with ``@input=bag1@output_key=1`` (the slide logits).

``loss(x, y)`` is their training objective, written here from that script: cross-entropy
on every branch's logits and on the slide logits, plus the mean pairwise cosine
similarity of the branches' softmaxed attention.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent / "acmil"))

from architecture.transformer import ACMIL_GA  # noqa: E402 - the authors' package root

BRANCHES, MASKED, MASK_DROP, INNER, CLASSES = 5, 10, 0.6, 128, 2


class ACMILWithLoss(ACMIL_GA):
    """``ACMIL_GA`` unchanged, with the authors' training objective as a ``loss`` hook."""

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One bag ``x [1, N, D]``, its label ``y []`` (0. or 1.) -> the loss ``[]``."""
        sub_preds, slide_preds, attn = self(x)
        label = y.long().reshape(1)
        loss = (F.cross_entropy(sub_preds, label.repeat_interleave(BRANCHES))
                + F.cross_entropy(slide_preds, label))
        attn = torch.softmax(attn, dim=-1)
        pairs = BRANCHES * (BRANCHES - 1) / 2
        for i in range(BRANCHES):
            for j in range(i + 1, BRANCHES):
                loss = loss + torch.cosine_similarity(attn[:, i], attn[:, j], dim=-1).mean() / pairs
        return loss


def build(dim: int) -> ACMIL_GA:
    """``ACMIL_GA`` with the authors' Camelyon settings, as their script builds it."""
    conf = SimpleNamespace(D_feat=dim, D_inner=INNER, n_class=CLASSES, n_token=BRANCHES)
    return ACMIL_GA(conf, n_token=BRANCHES, n_masked_patch=MASKED, mask_drop=MASK_DROP)


def build_with_loss(dim: int) -> ACMILWithLoss:
    """:func:`build`, trained with the authors' objective."""
    conf = SimpleNamespace(D_feat=dim, D_inner=INNER, n_class=CLASSES, n_token=BRANCHES)
    return ACMILWithLoss(conf, n_token=BRANCHES, n_masked_patch=MASKED, mask_drop=MASK_DROP)
