"""DSMIL: dual-stream MIL with a critical instance and distance-based attention.

Li, Li & Eliceiri, "Dual-stream Multiple Instance Learning Network for Whole Slide Image
Classification with Self-supervised Contrastive Learning", CVPR 2021. Instances are
embedded (``h_j``). Stream 1 scores every instance, ``c_j = w^T h_j``, and max-pools:
the highest-scoring real instance is the critical instance ``m``. Stream 2 attends to
all instances by their similarity to it, ``U_j = softmax_j(<q_j, q_m> / sqrt(d))`` with
``q = tanh(W_q h)``, pools the values ``b = sum_j U_j v_j`` and scores the bag with a
linear layer. The prediction averages both streams' logits; the training loss is the
paper's: per bag, the mean of the binary cross-entropies of the bag score and of the max instance
score. The critical instance is chosen among real instances only (public versions take
the max over padded rows too). Width 64, query width 32.

What its pooling can express: stream 1 is ``max_j h(x_j)`` (MIL-respecting); stream 2 is
a softmax-weighted mean, which can use a present instance as negative evidence and shifts
with counts. The averaged prediction inherits stream 2's freedoms.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from mil_assert import Expected, ModelSpec
from mil_assert.models._pooling import masked_max, masked_softmax


class DSMIL(nn.Module):
    def __init__(self, dim: int, width: int = 64, query_width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.instance_score = nn.Linear(width, 1)
        self.query = nn.Sequential(nn.Linear(width, query_width), nn.Tanh())
        self.value = nn.Linear(width, width)
        self.bag_score = nn.Linear(width, 1)
        self.scale = 1.0 / math.sqrt(query_width)

    def streams(self, X: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(max instance logit [B], bag logit [B])``."""
        h = self.embed(X)  # [B, N, width]
        scores = self.instance_score(h).squeeze(-1)  # [B, N]
        lowest = torch.finfo(scores.dtype).min
        critical = scores.masked_fill(~mask, lowest).argmax(dim=1)  # [B]
        q = self.query(h)  # [B, N, query_width]
        q_critical = q[torch.arange(q.shape[0]), critical]  # [B, query_width]
        attention = masked_softmax(self.scale * torch.einsum("bnk,bk->bn", q, q_critical), mask)
        bag = torch.einsum("bn,bnf->bf", attention, self.value(h))
        return masked_max(scores, mask), self.bag_score(bag).squeeze(-1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        max_logit, bag_logit = self.streams(X, mask)
        return 0.5 * (max_logit + bag_logit)

    def loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        max_logit, bag_logit = self.streams(X, mask)
        return 0.5 * (binary_cross_entropy_with_logits(bag_logit, y, reduction="none")
                      + binary_cross_entropy_with_logits(max_logit, y, reduction="none"))


SPEC = ModelSpec(
    name="dsmil",
    factory=DSMIL,
    citation="Li, Li & Eliceiri, Dual-stream Multiple Instance Learning Network for Whole "
             "Slide Image Classification with Self-supervised Contrastive Learning, CVPR 2021",
    respects=(),
    expected={
        "single_concept": Expected("violation", "the attention stream uses the poison: test "
                                   "AUC 0.04-0.27 on 12 of 12 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: test AUC "
                                       "0.00-0.08 on 12 of 12 seeds"),
        "false_frequency": Expected("violation", "the attention stream counts copies: test "
                                    "AUC 0.00-0.19, inverted, on 12 of 12 seeds"),
        "label_swap": Expected("violation", "the attention stream learns absence: held-out "
                               "AUC 0.94-0.98 on 12 of 12 seeds"),
    },
)
