"""AEM: attention entropy maximisation on a gated attention MIL.

Zhang, Shui, Sun, Li, Li, Zhu & Yang, "AEM: Attention Entropy Maximization for Multiple
Instance Learning based Whole Slide Image Classification", 2024 (arXiv 2406.15303); the
authors' code is dazhangyu123/AEM (``main.py`` with ``--arch abmil``), read for the facts
below, none of it copied.

The model is the authors' ABMIL: ``h_j = ReLU(W x_j)`` (no bias), gated attention
``s_j = w^T (tanh(V h_j) * sigmoid(U h_j))``, ``a = softmax_j(s)`` over the bag's real
instances, a linear head on ``sum_j a_j h_j``. The regulariser is the whole method: the
loss of a bag adds ``lambda * sum_j a_j log a_j`` (the negative entropy of the attention;
minimising it spreads the attention), ``lambda = 0.1`` as in the authors' AEM command.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``;
attention ``[B, N]``.

Faithful: architecture (no-bias embedding, gated attention of width 128, linear head),
the entropy term summed over the bag's instances with weight 0.1, the authors' cosine
learning-rate decay to 0 without warm-up (``warmup_epoch: 0`` in their configs). Width
128 is the authors' ``D_inner`` for 384-d features (256 for 512-d ones).
Simplified: one logit and binary cross-entropy instead of a two-way softmax; the fixed
weight of the public code, not the cosine annealing of the weight that the paper's later
version adds; their AdamW (lr 2e-4, batch of one bag) is the suite's fixed budget.

What its pooling can express: a softmax-weighted mean, like ABMIL. The entropy term pulls
the attention towards the uniform mean, which counts instances even more directly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from mil_assert import Expected, ModelSpec
from mil_assert.models.gated_abmil import GatedAttention


class AEM(nn.Module):
    def __init__(self, dim: int, width: int = 128, attention_width: int = 128,
                 entropy_weight: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width, bias=False), nn.ReLU())
        self.attention = GatedAttention(width, attention_width)
        self.head = nn.Linear(width, 1)
        self.entropy_weight = entropy_weight

    def attend(self, X: torch.Tensor, mask: torch.Tensor):
        """``(bag logits [B], log-attention [B, N])``; padded rows hold a finite, very
        negative log-attention (attention exactly 0)."""
        h = self.embed(X)
        scores = self.attention(h).masked_fill(~mask, torch.finfo(X.dtype).min)
        log_a = torch.log_softmax(scores, dim=-1)
        a = log_a.exp() * mask
        return self.head(torch.einsum("bn,bnf->bf", a, h)).squeeze(-1), log_a

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attend(X, mask)[0]

    def negative_entropy(self, log_a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B]``: ``sum_j a_j log a_j`` over each bag's real instances (<= 0)."""
        return torch.where(mask, log_a.exp() * log_a, torch.zeros_like(log_a)).sum(dim=1)

    def loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, log_a = self.attend(X, mask)
        return (binary_cross_entropy_with_logits(logits, y, reduction="none")
                + self.entropy_weight * self.negative_entropy(log_a, mask))


SPEC = ModelSpec(
    name="aem",
    factory=AEM,
    citation="Zhang et al., AEM: Attention Entropy Maximization for Multiple Instance "
             "Learning based Whole Slide Image Classification, 2024 (arXiv 2406.15303)",
    respects=(),
    budget={"lr_schedule": "cosine", "warmup_epochs": 0},
    in_default_run=False,
    expected={
        "single_concept": Expected("violation", "the poison draws the attention: validation "
                                   "AUC 1.00, test AUC 0.00 on 5 of 5 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: validation AUC "
                                       "1.00, test AUC 0.14-0.17 on 5 of 5 seeds"),
        "false_frequency": Expected("violation", "the attention-weighted mean counts concept "
                                    "copies: test AUC 0.05-0.09, inverted, on 5 of 5 seeds"),
        "label_swap": Expected("violation", "softmax attention uses absence as positive "
                               "evidence: held-out AUC 0.83-0.85 on 5 of 5 seeds"),
    },
)
