"""SC-MIL: supervised contrastive learning of bag embeddings, with a curriculum to the
classifier.

Juyal, Shingi, Javed, Padigela, Shah, Sampat, Khosla, Abel & Taylor-Weiner, "SC-MIL:
Supervised Contrastive Multiple Instance Learning for Imbalanced Classification in
Pathology", WACV 2024 (arXiv 2303.13405). No public code was found.

An attention MIL (gated ABMIL: ``h_j = ReLU(W x_j)``, ``a = softmax_j(w^T (tanh(V h_j) *
sigmoid(U h_j)))``) gives each bag an embedding ``z = sum_j a_j h_j``; a linear classifier
gives the bag logit, and a projection head (two layers, L2-normalised output) gives the
vector of the supervised contrastive loss (Khosla et al., NeurIPS 2020): across the
mini-batch, each bag is pulled towards the other bags of its label and pushed from the
bags of the other label. Joint training moves from representation learning to classifier
learning: the mini-batch loss is ``alpha * SupCon + (1 - alpha) * mean BCE`` with
``alpha = 1 - (epoch / epochs)^2``, set before each epoch (``on_train_epoch_start``).

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``; bag
embeddings ``[B, width]``; projections ``[B, projection_width]`` (unit norm).

Faithful: the bag-level supervised contrastive loss over the bags of a mini-batch (a
``batch_loss``: the bags are coupled, so the suite trains the seeds one by one), joint
training with a weight that moves from the contrastive loss to cross-entropy over the
epochs, an attention MIL aggregator, inference from the classifier alone.
Simplified or chosen here (the paper text available here gives the method, not every
constant): the curriculum's form (the parabolic decay of BBN's cumulative learning,
which the paper's joint training builds on), temperature 0.1 and a 128-d projection
(SupCon's defaults), embedding and attention width 128; binary cross-entropy on one
logit; the suite's fixed budget instead of the authors' optimiser.

What its pooling can express: a softmax-weighted mean, like ABMIL; the contrastive loss
shapes the embedding space, not the pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits, normalize

from mil_assert import Expected, ModelSpec
from mil_assert.models._pooling import masked_softmax
from mil_assert.models.gated_abmil import GatedAttention


def supervised_contrastive(projections: torch.Tensor, y: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """SupCon loss (Khosla et al. 2020, ``L_out``) of unit vectors ``[B, P]`` with labels
    ``y [B]``: mean over the anchors that have another bag of their label; 0 if none has."""
    B = projections.shape[0]
    similarity = projections @ projections.T / temperature  # [B, B]
    itself = torch.eye(B, dtype=torch.bool, device=projections.device)
    log_prob = similarity - torch.logsumexp(similarity.masked_fill(itself, float("-inf")),
                                            dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~itself
    count = positives.sum(dim=1)
    per_anchor = -(log_prob * positives).sum(dim=1) / count.clamp(min=1)
    has = count > 0
    return (per_anchor * has).sum() / has.sum().clamp(min=1)


class SCMIL(nn.Module):
    def __init__(self, dim: int, width: int = 128, attention_width: int = 128,
                 projection_width: int = 128, temperature: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.attention = GatedAttention(width, attention_width)
        self.head = nn.Linear(width, 1)
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                        nn.Linear(width, projection_width))
        self.temperature = temperature
        self.contrastive_weight = 1.0  # alpha, set by the curriculum

    def bag_embeddings(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(X)
        a = masked_softmax(self.attention(h), mask)
        return torch.einsum("bn,bnf->bf", a, h)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.bag_embeddings(X, mask)).squeeze(-1)

    def batch_loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``alpha * SupCon(projections of the batch's bags) + (1 - alpha) * mean BCE``."""
        z = self.bag_embeddings(X, mask)
        bce = binary_cross_entropy_with_logits(self.head(z).squeeze(-1), y)
        contrastive = supervised_contrastive(normalize(self.projection(z), dim=-1), y,
                                             self.temperature)
        alpha = self.contrastive_weight
        return alpha * contrastive + (1.0 - alpha) * bce

    def on_train_epoch_start(self, progress) -> None:
        """The curriculum: ``alpha = 1 - (epoch / epochs)^2``."""
        self.contrastive_weight = 1.0 - (progress.epoch / progress.epochs) ** 2


SPEC = ModelSpec(
    name="sc_mil",
    factory=SCMIL,
    citation="Juyal et al., SC-MIL: Supervised Contrastive Multiple Instance Learning for "
             "Imbalanced Classification in Pathology, WACV 2024",
    respects=(),
    in_default_run=False,
    expected={
        "single_concept": Expected("violation", "the poison draws the attention: validation "
                                   "AUC 1.00, test AUC 0.00 on 5 of 5 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: validation AUC "
                                       "1.00, test AUC 0.00 on 5 of 5 seeds"),
        "false_frequency": Expected("violation", "the attention-weighted mean counts concept "
                                    "copies: test AUC 0.06-0.10, inverted, on 5 of 5 seeds"),
        "label_swap": Expected("violation", "absence becomes positive evidence, the contrastive "
                               "loss separating it further: held-out AUC 0.92-0.98 on 5 of 5 "
                               "seeds"),
    },
)
