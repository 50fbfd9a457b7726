"""MI-Net: embedding-space network with max pooling of instance embeddings.

Wang, Yan, Tang, Bai & Liu, "Revisiting multiple instance neural networks", Pattern
Recognition 74, 2018. An MLP embeds every instance, the bag embedding is the
element-wise maximum over instances, and a linear layer classifies it. Width 64.

What its pooling can express: the max-pooled features are set-monotone, but the linear
head may weigh a feature negatively, so "the poison's feature is high, hence negative"
(absence as positive evidence) is within reach. It is count-free.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
"""

from __future__ import annotations

import torch
from torch import nn

from mil_assert import Expected, ModelSpec
from mil_assert.models._pooling import masked_max


class MINet(nn.Module):
    def __init__(self, dim: int, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Linear(dim, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(),
        )
        self.head = nn.Linear(width, 1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(masked_max(self.embed(X), mask)).squeeze(-1)


SPEC = ModelSpec(
    name="MI_net",
    factory=MINet,
    citation="Wang et al., Revisiting multiple instance neural networks, Pattern Recognition 2018",
    respects=(),
    expected={
        "single_concept": Expected("violation", "the head weighs the max-pooled poison feature "
                                   "negatively: test AUC 0.00-0.01 on 12 of 12 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: validation "
                                       "AUC 1.00, test AUC 0.00 on 12 of 12 seeds"),
        "false_frequency": Expected("inconclusive", "does not learn 'A and B' in the budget: "
                                    "validation AUC 0.64-0.72 on 12 of 12 seeds"),
        "label_swap": Expected("violation", "a negative head weight on the concept's max "
                               "feature learns absence: held-out AUC 0.96-0.99 on 12 of 12 seeds"),
    },
)
