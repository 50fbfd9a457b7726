"""ACMIL: attention-challenging MIL (multiple-branch attention, stochastic top-K masking).

Zhang, Li, Sun, Zheng, Zhu & Yang, "Attention-Challenging Multiple Instance Learning for
Whole Slide Image Classification", ECCV 2024 (arXiv 2311.07125); the authors' code is
dazhangyu123/ACMIL (``ACMIL_GA``), read for the facts below, none of it copied.

An instance embedding ``h_j = ReLU(W x_j)`` (no bias) is scored by a gated attention with
``n_token`` outputs, one attention branch each (multiple-branch attention, MBA). Branch
``k`` pools ``sum_j a_kj h_j`` with its own softmax over the bag and classifies it with its
own linear head; the slide (bag) logit classifies ``sum_j abar_j h_j``, ``abar`` the mean
of the branches' attention. In training, stochastic top-K instance masking (STKIM): per
branch, of its ``n_masked_patch`` most attended real instances a random
``floor(n_masked_patch * mask_drop)`` are removed from that branch's softmax (and so from
the slide's mean attention). The loss of a bag: cross-entropy on every branch's logit
(mean over branches) and on the slide logit, plus the mean pairwise cosine similarity of
the branches' attention (the diversity loss that pushes branches to different instances).
Inference uses the slide logit without masking.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> slide logits ``[B]``;
attention scores ``[B, n_token, N]``; branch logits ``[B, n_token]``.

Faithful: the architecture of ``ACMIL_GA`` (embedding without bias, gated attention of
width 128, one linear head per branch and one for the slide), the authors' ACMIL setting
``n_token = 5, n_masked_patch = 10, mask_drop = 0.6``, STKIM per branch in training only,
the loss (branch CE + slide CE + pairwise cosine diversity), a cosine learning-rate decay
to 0 without warm-up (their configs set ``warmup_epoch: 0``). Embedding width 128 is the
authors' ``D_inner`` for 384-d features (256 for 512-d ones).
Simplified: one logit and binary cross-entropy instead of a two-way softmax (the same
model for two classes); per bag, ``n_masked_patch`` is cut to the bag's real instances
(as the authors cut it to ``N``); their AdamW (lr 1e-4, weight decay 1e-5, one bag per
step, 50 epochs: ``config/camelyon_config.yml``) is the suite's fixed budget (Adam, lr
3e-3, 32 bags) with their cosine schedule (``--budget wsi`` is the nearest named budget).

What its pooling can express: weighted means, like ABMIL; masking the top instances in
training spreads the attention but the slide logit is still a softmax-weighted mean.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits, cosine_similarity

from mil_assert import Expected, ModelSpec
from mil_assert.models._pooling import masked_softmax


class MultiBranchGatedAttention(nn.Module):
    """``h [B, N, F] -> [B, K, N]`` scores ``w_k^T (tanh(V h) * sigmoid(U h))``, K branches."""

    def __init__(self, width: int, attention_width: int, branches: int) -> None:
        super().__init__()
        self.value = nn.Sequential(nn.Linear(width, attention_width), nn.Tanh())
        self.gate = nn.Sequential(nn.Linear(width, attention_width), nn.Sigmoid())
        self.score = nn.Linear(attention_width, branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.score(self.value(h) * self.gate(h)).transpose(1, 2)


class ACMIL(nn.Module):
    def __init__(self, dim: int, width: int = 128, attention_width: int = 128,
                 n_token: int = 5, n_masked_patch: int = 10, mask_drop: float = 0.6) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width, bias=False), nn.ReLU())
        self.attention = MultiBranchGatedAttention(width, attention_width, n_token)
        # Row k of the weight is branch k's own linear head (drawn as K separate heads).
        self.branch_heads = nn.Linear(width, n_token)
        self.slide_head = nn.Linear(width, 1)
        self.n_token = n_token
        self.n_masked_patch = n_masked_patch
        self.mask_drop = mask_drop

    def masked_top_k(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """STKIM: bool ``[B, K, N]``, True where an instance stays in a branch's softmax.

        Per branch, a random ``floor(k * mask_drop)`` of the bag's ``k = min(n_masked_patch,
        real instances)`` most attended instances are dropped; padded rows never count.
        """
        B, K, N = scores.shape
        top = min(self.n_masked_patch, N)
        lowest = torch.finfo(scores.dtype).min
        ranked = scores.detach().masked_fill(~mask[:, None, :], lowest).topk(top, dim=-1).indices
        k = mask.sum(dim=1).clamp(max=self.n_masked_patch)  # [B]
        dropped_count = torch.floor(k * self.mask_drop).long()  # [B]
        # Random priorities for the candidates; drawn [B, K, n_masked_patch] whatever N is,
        # so padding a batch never changes them. Candidates beyond a bag's k never drop.
        priority = torch.rand(B, K, self.n_masked_patch, device=scores.device)[..., :top]
        eligible = torch.arange(top, device=scores.device) < k[:, None, None]
        priority = priority.masked_fill(~eligible, 2.0)
        order = priority.argsort(dim=-1).argsort(dim=-1)  # rank of each candidate
        drop = order < dropped_count[:, None, None]  # [B, K, top]
        dropped = torch.zeros(B, K, N, dtype=torch.bool, device=scores.device)
        dropped = dropped.scatter(-1, ranked, drop)
        return mask[:, None, :] & ~dropped

    def branches(self, X: torch.Tensor, mask: torch.Tensor):
        """``(slide logits [B], branch logits [B, K], branch attention [B, K, N])``;
        STKIM applies in training mode."""
        h = self.embed(X)  # [B, N, width]
        scores = self.attention(h)  # [B, K, N]
        kept = mask[:, None, :].expand_as(scores)
        if self.training and self.n_masked_patch > 0 and self.mask_drop > 0:
            kept = self.masked_top_k(scores, mask)
        a = masked_softmax(scores, kept)  # [B, K, N]
        pooled = torch.einsum("bkn,bnf->bkf", a, h)
        branch_logits = torch.diagonal(self.branch_heads(pooled), dim1=-2, dim2=-1)  # [B, K]
        slide = torch.einsum("bn,bnf->bf", a.mean(dim=1), h)
        return self.slide_head(slide).squeeze(-1), branch_logits, a

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.branches(X, mask)[0]

    def loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per bag: slide BCE + mean branch BCE + mean pairwise cosine of branch attention."""
        slide, branch_logits, a = self.branches(X, mask)
        slide_loss = binary_cross_entropy_with_logits(slide, y, reduction="none")
        branch_loss = binary_cross_entropy_with_logits(
            branch_logits, y[:, None].expand_as(branch_logits), reduction="none").mean(dim=1)
        return slide_loss + branch_loss + self.diversity(a)

    def diversity(self, a: torch.Tensor) -> torch.Tensor:
        """``[B]``: mean cosine similarity over the branch pairs of ``a [B, K, N]``."""
        K = a.shape[1]
        if K < 2:
            return a.new_zeros(a.shape[0])
        first, second = torch.triu_indices(K, K, offset=1, device=a.device)
        return cosine_similarity(a[:, first], a[:, second], dim=-1).mean(dim=1)


SPEC = ModelSpec(
    name="acmil",
    factory=ACMIL,
    citation="Zhang et al., Attention-Challenging Multiple Instance Learning for Whole Slide "
             "Image Classification, ECCV 2024",
    respects=(),
    budget={"lr_schedule": "cosine", "warmup_epochs": 0},
    stackable=False,  # STKIM draws random numbers in every training step
    in_default_run=False,
    expected={
        "single_concept": Expected("violation", "the poison draws every branch's attention: "
                                   "validation AUC 1.00, test AUC 0.00-0.01 on 5 of 5 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: validation AUC "
                                       "1.00, test AUC 0.00 on 5 of 5 seeds"),
        "false_frequency": Expected("inconclusive", "masking 6 of the 10 most attended "
                                    "instances of these small bags hides the concepts: "
                                    "validation AUC 0.56-0.73 on 5 of 5 seeds"),
        "label_swap": Expected("violation", "softmax attention uses absence as positive "
                               "evidence: held-out AUC 0.84-0.88 on 5 of 5 seeds"),
    },
)
