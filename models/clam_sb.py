"""CLAM-SB: clustering-constrained attention MIL, single attention branch.

Lu et al., "Data-efficient and weakly supervised computational pathology on whole-slide
images", Nature Biomedical Engineering 5, 2021. Instances are embedded (``h_j``), scored
by gated attention (as gated ABMIL), softmax-normalised over the bag's real instances,
and the attention-pooled embedding is classified. Training adds the instance-level
clustering loss: for the bag's own class, the ``k`` most attended instances are pushed
to be classified as that class's evidence and the ``k`` least attended as not, by a
per-class instance classifier. Per bag, loss = 0.7 x bag loss + 0.3 x instance loss (the
paper's ``bag_weight`` default), the instance loss being the mean over the bag's chosen
instances, as in the paper, which trains on one bag at a time. Here ``k = 8`` as in the
paper, reduced per bag to ``floor(n / 2)`` real instances so that top and bottom never
overlap and bags smaller than ``2k`` work (public versions crash on bags smaller than
``k``); padded rows are never sampled. Binary cross-entropy replaces the paper's two-way
softmax (the same model for two classes), and the paper's smooth SVM instance loss is
replaced by cross-entropy (one of the options of the public code). Width 64, attention width 32.

What its pooling can express: a weighted mean, like ABMIL; the instance loss shapes the
attention but not the pooling, so it is neither set-monotone nor count-free.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from mil_assert import Expected, ModelSpec
from mil_assert.models._pooling import masked_softmax
from mil_assert.models.gated_abmil import GatedAttention


class CLAMSB(nn.Module):
    def __init__(self, dim: int, width: int = 64, attention_width: int = 32, k: int = 8,
                 bag_weight: float = 0.7) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.attention = GatedAttention(width, attention_width)
        self.head = nn.Linear(width, 1)
        self.instance_classifiers = nn.Linear(width, 2)  # one logit per class (0, 1)
        self.k = k
        self.bag_weight = bag_weight

    def pooled(self, X: torch.Tensor, mask: torch.Tensor):
        """``(bag logits [B], attention scores [B, N], embeddings [B, N, width])``."""
        h = self.embed(X)
        scores = self.attention(h)
        a = masked_softmax(scores, mask)
        return self.head(torch.einsum("bn,bnf->bf", a, h)).squeeze(-1), scores, h

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pooled(X, mask)[0]

    def loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, scores, h = self.pooled(X, mask)
        bag_loss = binary_cross_entropy_with_logits(logits, y, reduction="none")  # [B]
        k = min(self.k, X.shape[1])
        per_bag_k = torch.clamp(mask.sum(dim=1) // 2, max=k)  # [B]
        usable = torch.arange(k, device=X.device)[None, :] < per_bag_k[:, None]  # [B, k]
        extreme = torch.finfo(scores.dtype).max
        detached = scores.detach()
        top = detached.masked_fill(~mask, -extreme).topk(k, dim=1).indices  # [B, k]
        bottom = detached.masked_fill(~mask, extreme).topk(k, dim=1, largest=False).indices
        chosen = torch.cat([top, bottom], dim=1)  # [B, 2k]
        targets = torch.cat([torch.ones_like(top), torch.zeros_like(bottom)], dim=1).float()
        weights = torch.cat([usable, usable], dim=1).float()
        classifier = self.instance_classifiers(h)  # [B, N, 2]
        own_class = classifier.gather(2, y.long()[:, None, None].expand(-1, h.shape[1], 1))
        instance_logits = own_class.squeeze(-1).gather(1, chosen)  # [B, 2k]
        per_instance = binary_cross_entropy_with_logits(instance_logits, targets,
                                                        reduction="none")
        instance_loss = (per_instance * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B]
        return self.bag_weight * bag_loss + (1.0 - self.bag_weight) * instance_loss


SPEC = ModelSpec(
    name="clam_sb",
    factory=CLAMSB,
    citation="Lu et al., Data-efficient and weakly supervised computational pathology on "
             "whole-slide images, Nature Biomedical Engineering 2021",
    respects=(),
    expected={
        "single_concept": Expected("violation", "the poison draws the attention: test AUC "
                                   "0.00 on 12 of 12 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: test AUC 0.00 "
                                       "on 12 of 12 seeds"),
        "false_frequency": Expected("violation", "the attention-weighted mean counts concept "
                                    "copies: test AUC 0.12-0.27, inverted, on 12 of 12 seeds"),
        "label_swap": Expected("violation", "attention uses absence as positive evidence: "
                               "held-out AUC 0.80-0.90 on 12 of 12 seeds"),
    },
)
