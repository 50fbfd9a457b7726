"""ABMIL: attention-based deep MIL pooling.

Ilse, Tomczak & Welling, "Attention-based Deep Multiple Instance Learning", ICML 2018.
An MLP embeds every instance (``h_j``), a two-layer network scores it,
``a_j = softmax_j(w^T tanh(V h_j))``, the bag embedding is ``sum_j a_j h_j`` and a linear
layer classifies it. Widths 64 (embedding) and 32 (attention), for a CPU.

What its pooling can express: a weighted mean. The softmax makes every weight depend on
every other instance, so an instance that is present (the poison) can draw the attention
away and push the bag negative, and the mean changes with counts: neither set-monotone
nor count-free.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
"""

from __future__ import annotations

import torch
from torch import nn

from mil_assert import Expected, ModelSpec
from mil_assert.models._pooling import masked_softmax


class ABMIL(nn.Module):
    def __init__(self, dim: int, width: int = 64, attention_width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.attention = nn.Sequential(
            nn.Linear(width, attention_width), nn.Tanh(), nn.Linear(attention_width, 1)
        )
        self.head = nn.Linear(width, 1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(X)  # [B, N, width]
        a = masked_softmax(self.attention(h).squeeze(-1), mask)  # [B, N]
        return self.head(torch.einsum("bn,bnf->bf", a, h)).squeeze(-1)


SPEC = ModelSpec(
    name="abmil",
    factory=ABMIL,
    citation="Ilse, Tomczak & Welling, Attention-based Deep Multiple Instance Learning, ICML 2018",
    respects=(),
    expected={
        "single_concept": Expected("violation", "the poison draws the attention and marks "
                                   "negatives: test AUC 0.00-0.01 on 12 of 12 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: validation "
                                       "AUC 1.00, test AUC 0.00 on 12 of 12 seeds"),
        "false_frequency": Expected("violation", "the attention-weighted mean counts concept "
                                    "copies: test AUC 0.09-0.17, inverted, on 12 of 12 seeds"),
        "label_swap": Expected("violation", "softmax attention uses absence as positive "
                               "evidence: held-out AUC 0.79-0.88 on 12 of 12 seeds"),
    },
)
