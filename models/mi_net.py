"""mi-Net: instance-space network with max pooling of instance scores.

Wang, Yan, Tang, Bai & Liu, "Revisiting multiple instance neural networks", Pattern
Recognition 74, 2018. An MLP scores every instance on its own; the bag logit is the
maximum instance score, ``y = max_j h(x_j)``: the canonical MIL-respecting form (Raff &
Holt 2023, section 1). Width here is 64 (the paper: 256-128-64) to suit a CPU.

What its pooling can express: "positive iff some instance is positive". It is
set-monotone (an extra instance never lowers the score) and count-free (duplicates never
change it), so it cannot use absence or counts as evidence, and it cannot express "A and
B" (threshold MIL).

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
"""

from __future__ import annotations

import torch
from torch import nn

from mil_assert import Expected, ModelSpec
from mil_assert.models._pooling import masked_max


class MiNet(nn.Module):
    def __init__(self, dim: int, width: int = 64) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(dim, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, 1),
        )

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_max(self.score(X).squeeze(-1), mask)


SPEC = ModelSpec(
    name="mi_net",
    factory=MiNet,
    citation="Wang et al., Revisiting multiple instance neural networks, Pattern Recognition 2018",
    respects=("standard",),
    expected={
        "single_concept": Expected("pass", "max of instance scores cannot use the poison: "
                                   "validation and test AUC 0.81-0.95 on 12 of 12 seeds"),
        "threshold_poisoned": Expected("inconclusive", "one max-pooled score cannot express "
                                       "'A and B': validation AUC below 0.6 on 10 of 12 seeds"),
        "false_frequency": Expected("inconclusive", "one max-pooled score cannot express "
                                    "'A and B': validation AUC 0.48-0.66 on 12 of 12 seeds"),
        "label_swap": Expected("pass", "set-monotone, cannot learn absence: held-out AUC "
                               "0.42-0.52 on 12 of 12 seeds"),
    },
)
