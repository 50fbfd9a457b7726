"""Hopfield pooling: learned state patterns retrieve from the bag's instances.

Ramsauer et al., "Hopfield Networks is All You Need", ICLR 2021 (the ``HopfieldPooling``
layer, used there for deep MIL on immune-repertoire and MIL benchmark data). Instances
are embedded (``h_j``) and act as stored patterns; ``S`` learned state patterns (queries)
do one update of the modern Hopfield network,
``z_s = sum_j softmax_j(beta <W_Q xi_s, W_K h_j>) W_V h_j``, with scaling ``beta``
(here ``1 / sqrt(d_k)``, the paper's default). The ``S`` retrieved patterns are
concatenated and classified by a linear layer. Width 64, ``S = 2``, ``d_k = 32``.

What its pooling can express: like attention pooling, a softmax-weighted mean per state
pattern; a present instance can draw the retrieval away from another, and counts shift
the mean. Neither set-monotone nor count-free.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mil_assert import Expected, ModelSpec
from mil_assert.models._layers import BagConstant
from mil_assert.models._pooling import masked_softmax


class HopfieldPooling(nn.Module):
    def __init__(self, dim: int, width: int = 64, n_states: int = 2, key_width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.states = BagConstant(n_states, width)
        self.query = nn.Linear(width, key_width, bias=False)
        self.key = nn.Linear(width, key_width, bias=False)
        self.value = nn.Linear(width, width, bias=False)
        self.beta = 1.0 / math.sqrt(key_width)
        self.head = nn.Linear(n_states * width, 1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(X)  # [B, N, width]
        q = self.query(self.states(X.shape[0]))  # [B, S, key_width]
        scores = self.beta * torch.einsum("bsk,bnk->bsn", q, self.key(h))  # [B, S, N]
        batch, n_states, n = scores.shape
        weights = masked_softmax(scores.reshape(batch * n_states, n),
                                 mask.repeat_interleave(n_states, dim=0)).view(batch, n_states, n)
        retrieved = torch.einsum("bsn,bnf->bsf", weights, self.value(h))  # [B, S, width]
        return self.head(retrieved.flatten(1)).squeeze(-1)


SPEC = ModelSpec(
    name="hopfield",
    factory=HopfieldPooling,
    citation="Ramsauer et al., Hopfield Networks is All You Need, ICLR 2021",
    respects=(),
    expected={
        "single_concept": Expected("violation", "retrieval is drawn to the poison: test AUC "
                                   "0.00-0.01 on 12 of 12 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: test AUC 0.00 "
                                       "on 12 of 12 seeds"),
        "false_frequency": Expected("violation", "counts copies on 9 of 12 seeds (7 inverted, "
                                    "test AUC 0.03-0.17; 2 lost); 3 generalise"),
        "label_swap": Expected("violation", "retrieval uses absence as positive evidence: "
                               "held-out AUC 0.86-0.99 on 12 of 12 seeds"),
    },
)
