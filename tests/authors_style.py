"""Attention MIL written as papers' repositories write it, and the same model batched.

``Attention`` follows the style of Ilse et al.'s public code (ICML 2018): it takes one
bag ``x [1, N, D]`` per call, no mask, and returns ``(Y_prob, Y_hat, A)``, a probability
rather than a logit. mil-assert judges it unmodified::

    pytest --model="tests/authors_style.py:Attention@input=bag1@output=probability"

``BatchedAttention`` is the same architecture, built in the same order (so the same seed
gives the same initial weights), written for padded batches with a mask and returning
logits. The suite checks that both get the same verdicts on the same seeds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN, ATTENTION = 64, 32


class Attention(nn.Module):
    """One bag per call: ``x [1, N, D] -> (Y_prob [1, 1], Y_hat [1, 1], A [1, N])``."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.feature_extractor = nn.Sequential(nn.Linear(in_features, HIDDEN), nn.ReLU())
        self.attention = nn.Sequential(nn.Linear(HIDDEN, ATTENTION), nn.Tanh(),
                                       nn.Linear(ATTENTION, 1))
        self.classifier = nn.Sequential(nn.Linear(HIDDEN, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor):
        H = self.feature_extractor(x.squeeze(0))  # [N, HIDDEN]
        A = F.softmax(self.attention(H).transpose(1, 0), dim=1)  # [1, N]
        M = torch.mm(A, H)  # [1, HIDDEN]
        Y_prob = self.classifier(M)
        Y_hat = torch.ge(Y_prob, 0.5).float()
        return Y_prob, Y_hat, A


class BatchedAttention(nn.Module):
    """The same model on padded batches: ``X [B, N, D]``, ``mask [B, N]`` -> logits ``[B]``."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.feature_extractor = nn.Sequential(nn.Linear(in_features, HIDDEN), nn.ReLU())
        self.attention = nn.Sequential(nn.Linear(HIDDEN, ATTENTION), nn.Tanh(),
                                       nn.Linear(ATTENTION, 1))
        self.classifier = nn.Sequential(nn.Linear(HIDDEN, 1))  # logits: no sigmoid

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        H = self.feature_extractor(X)  # [B, N, HIDDEN]
        scores = self.attention(H).squeeze(-1).masked_fill(~mask, float("-inf"))
        A = torch.softmax(scores, dim=1)  # [B, N]
        M = torch.einsum("bn,bnh->bh", A, H)
        return self.classifier(M).squeeze(-1)
