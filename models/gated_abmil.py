"""Gated ABMIL: attention-based MIL pooling with gated attention.

Ilse, Tomczak & Welling, "Attention-based Deep Multiple Instance Learning", ICML 2018,
section 2.4 ("gated attention"). An MLP embeds every instance (``h_j``); the attention
score is ``w^T (tanh(V h_j) * sigmoid(U h_j))``, softmax-normalised over the bag's real
instances; the bag embedding ``sum_j a_j h_j`` is classified by a linear layer. The gate
lets the attention express non-linear relations that ``tanh`` alone cannot. Widths 64
(embedding) and 32 (attention), for a CPU.

What its pooling can express: a weighted mean, like ABMIL: every weight depends on every
other instance, so a present instance can pull the bag negative and counts shift the
mean. Neither set-monotone nor count-free.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
"""

from __future__ import annotations

import torch
from torch import nn

from mil_assert import Expected, ModelSpec
from mil_assert.models._pooling import masked_softmax


class GatedAttention(nn.Module):
    """``[B, N, F] -> [B, N]`` attention scores ``w^T (tanh(V h) * sigmoid(U h))``."""

    def __init__(self, width: int, attention_width: int) -> None:
        super().__init__()
        self.value = nn.Sequential(nn.Linear(width, attention_width), nn.Tanh())
        self.gate = nn.Sequential(nn.Linear(width, attention_width), nn.Sigmoid())
        self.score = nn.Linear(attention_width, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.score(self.value(h) * self.gate(h)).squeeze(-1)


class GatedABMIL(nn.Module):
    def __init__(self, dim: int, width: int = 64, attention_width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.attention = GatedAttention(width, attention_width)
        self.head = nn.Linear(width, 1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(X)  # [B, N, width]
        a = masked_softmax(self.attention(h), mask)  # [B, N]
        return self.head(torch.einsum("bn,bnf->bf", a, h)).squeeze(-1)


SPEC = ModelSpec(
    name="gated_abmil",
    factory=GatedABMIL,
    citation="Ilse, Tomczak & Welling, Attention-based Deep Multiple Instance Learning, "
             "ICML 2018 (gated attention)",
    respects=(),
    expected={
        "single_concept": Expected("violation", "the poison draws the gated attention: test "
                                   "AUC 0.00-0.01 on 12 of 12 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: test AUC 0.00 "
                                       "on 12 of 12 seeds"),
        "false_frequency": Expected("violation", "the attention-weighted mean counts concept "
                                    "copies: test AUC 0.12-0.25, inverted, on 12 of 12 seeds"),
        "label_swap": Expected("violation", "attention uses absence as positive evidence: "
                               "held-out AUC 0.77-0.91 on 12 of 12 seeds"),
    },
)
