"""Attention MIL with dropout written twice, for ``mil-assert benchmark --one-bag``.

``OneBagAttention`` is written as published MIL code writes it (Ilse, Tomczak & Welling,
ICML 2018, and most systems since): one bag ``x [1, N, D]`` per call, no mask, dropout on
the instance embeddings, a ``(logit [1, 1], attention [1, N])`` tuple out.
``BatchedAttention`` has the same layers, built in the same order (the same seed gives
the same initial weights), on padded batches ``X [B, N, D]`` with ``mask [B, N]`` ->
logits ``[B]``. Both draw dropout, so both train seed by seed; the benchmark times the
one-bag path against its batched twin.
"""

from __future__ import annotations

import torch
from torch import nn

from mil_assert.registry import ModelSpec

HIDDEN, ATTENTION, DROPOUT = 64, 32, 0.25


class _Layers(nn.Module):
    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_features, HIDDEN), nn.ReLU(), nn.Dropout(DROPOUT))
        self.attention = nn.Sequential(nn.Linear(HIDDEN, ATTENTION), nn.Tanh(),
                                       nn.Linear(ATTENTION, 1))
        self.head = nn.Linear(HIDDEN, 1)


class OneBagAttention(_Layers):
    """``x [1, N, D] -> (logit [1, 1], attention [1, N])``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        H = self.embed(x[0])  # [N, HIDDEN]
        A = torch.softmax(self.attention(H).transpose(0, 1), dim=1)  # [1, N]
        return self.head(A @ H), A


class BatchedAttention(_Layers):
    """``X [B, N, D], mask [B, N] -> logits [B]``."""

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        H = self.embed(X)  # [B, N, HIDDEN]
        scores = self.attention(H).squeeze(-1).masked_fill(~mask, float("-inf"))
        A = torch.softmax(scores, dim=1)  # [B, N]
        return self.head(torch.einsum("bn,bnh->bh", A, H)).squeeze(-1)


ONE_BAG = ModelSpec("one_bag_attention", factory=OneBagAttention, input="bag1",
                    citation="Ilse, Tomczak & Welling, ICML 2018 (as its code is written)")
BATCHED = ModelSpec("batched_attention", factory=BatchedAttention,
                    citation="Ilse, Tomczak & Welling, ICML 2018 (batched)")
