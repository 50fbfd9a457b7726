"""PackMIL: several bags packed into one training sequence, with a residual branch.

Fang et al., "Revisiting Data Challenges of Computational Pathology: A Pack-based Multiple
Instance Learning Framework", 2025 (arXiv 2509.20923). Written here from the paper and
from reading the authors' code (FangHeng/PackMIL, Apache-2.0; nothing copied), with its
attention-MIL backbone (ABMIL, Ilse et al., ICML 2018).

The backbone: ``Linear(D, width) -> GELU -> Dropout(0.25)``; attention
``Linear(width, 128) -> Tanh -> Linear(128, 1)``, softmax over the bag; a two-class linear
classifier. Training (``batch_loss``, over a mini-batch):

- each bag's instances are split at random into a kept half and a dropped half
  (``token_dropout = 0.5``); bags smaller than ``min_seq_len`` go whole into both;
- the kept parts are packed, in batch order, into sequences of at most ``pack_len``
  instances; each pack runs through the backbone once, with masks so that each bag's
  attention softmax covers its own segment only: one two-class prediction per bag,
  cross-entropy against its label;
- the residual branch: the dropped parts are packed the same way, and each pack is pooled
  as one bag; its target is the mixup of its bags' labels (a class is 1 if any bag of the
  pack has it, as the authors' multi-label mixup normalised by its maximum), with the
  authors' focal loss (alpha 0.25, gamma 2) on each class; weight ``aux_alpha = 0.2``.

Inference (``forward``): each bag whole, alone, through the backbone; the logit is
``z1 - z0``. A bag's logit depends on that bag only.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``. Packs:
``[P, L, D]`` with a segment index ``[P, L]`` (the bag of each place, ``-1`` for padding).

Faithful: the ABMIL backbone of the authors' code as their BRCA run builds it (biases on:
their option parser sets ``mil_bias = not no_mil_bias``, options.py:225, over the class
default of none; GELU, dropout 0.25, Xavier-normal initialisation, zero biases), random
halves, sequential packing with per-bag masked attention, the residual branch on the
dropped instances of several bags with mixup targets and the focal loss, the loss weights
of the authors' BRCA configuration (``aux_alpha = 0.2``, focal residual loss, token
dropout 0.5), bag-level prediction at inference.

Simplified, for bags of 1-50 instances instead of thousands:
- width 64 (the authors' 512; ``pack_mil@width=512`` builds theirs);
- ``min_seq_len = 4`` and ``pack_len = 128`` instances (the authors: 128 and 2400, with
  bags far larger than both). Their values applied as written switch the method off at
  these sizes: every bag is under ``min_seq_len x r`` = 512 instances, so it goes whole
  into both branches (no token dropout), and one pack holds a step's 32 bags, so the
  residual branch pools them all as one bag (measured from their code:
  [authors' code](../docs/authors-code.md));
- no ADS down-sampling (the authors' BRCA configuration, ``pack_downsample_mode: ads``
  with ``r = 4``, pools instances 4 to 1 with a learned attention in both halves of every
  bag in training, the kept and the dropped, and the whole bag at inference; here every
  instance is seen as it is, since bags of 1-50 instances leave nothing to thin);
- the split draws are made instance by instance (``models/_draws.py``), so padding a
  batch never changes which instances are kept.

What its pooling can express: attention pooling, so a present instance can pull the bag
negative and counts change the score. The residual targets, "the pack holds a bag of this
class", are a MIL-like OR over bags for both classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mil_assert import Expected, ModelSpec
from mil_assert.models._draws import instance_dropout, instance_uniform
from mil_assert.models._layers import xavier_linears
from mil_assert.models._pooling import masked_softmax


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
               gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al., ICCV 2017), mean over all entries, as the authors'
    ``FocalLoss`` computes it: one weight ``alpha`` for every entry, whatever its class
    (not Lin et al.'s ``alpha`` for positives and ``1 - alpha`` for negatives), and the
    probability of the target ``exp(-BCE)``."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (alpha * (1 - torch.exp(-bce)) ** gamma * bce).mean()


def pack(select: torch.Tensor, pack_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequential packing of the selected instances of each bag.

    ``select [B, N]`` bool -> ``source [P, L]`` (flat index ``b * N + n`` of the instance at
    each place of each pack, 0 where empty) and ``segment [P, L]`` (its bag, ``-1`` where
    empty). Bags go in order; a pack is closed when the next bag would pass ``pack_len``
    (a bag longer than ``pack_len`` gets a pack of its own).
    """
    B, N = select.shape
    counts = select.sum(1).tolist()
    packs: list[list[int]] = [[]]
    filled = 0
    for b, count in enumerate(counts):
        if count == 0:
            continue
        if packs[-1] and filled + count > pack_len:
            packs.append([])
            filled = 0
        packs[-1].append(b)
        filled += count
    L = max(1, max(sum(counts[b] for b in bags) for bags in packs))
    source = torch.zeros(len(packs), L, dtype=torch.long, device=select.device)
    segment = torch.full((len(packs), L), -1, dtype=torch.long, device=select.device)
    flat = select.flatten().nonzero().squeeze(1)  # selected instances, bag by bag
    starts = [0, *torch.cumsum(torch.tensor(counts), 0).tolist()]
    for p, bags in enumerate(packs):
        index = torch.cat([flat[starts[b]:starts[b + 1]] for b in bags]) if bags else flat[:0]
        source[p, :len(index)] = index
        segment[p, :len(index)] = index // N
    return source, segment


class PackMIL(nn.Module):
    def __init__(self, dim: int, width: int = 64, token_dropout: float = 0.5,
                 min_seq_len: int = 4, pack_len: int = 128, aux_alpha: float = 0.2,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.GELU())
        self.attention = nn.Sequential(nn.Linear(width, 128), nn.Tanh(), nn.Linear(128, 1))
        self.classifier = nn.Linear(width, 2)
        self.dropout, self.token_dropout, self.min_seq_len = dropout, token_dropout, min_seq_len
        self.pack_len, self.aux_alpha = pack_len, aux_alpha
        xavier_linears(self.modules())

    def segment_logits(self, X: torch.Tensor, segment: torch.Tensor,
                       segments: int) -> torch.Tensor:
        """Two-class logits ``[segments, 2]`` of the segments of sequences ``X [P, L, D]``:
        each segment pooled by its own attention softmax over its places (``segment [P,
        L]``: the segment of each place, ``-1`` where empty)."""
        h = instance_dropout(self.embed(X), self.dropout, self.training).flatten(0, 1)
        scores = self.attention(h).squeeze(-1)  # [P L]
        member = segment.flatten() == torch.arange(segments, device=X.device)[:, None]
        weights = masked_softmax(scores.expand(segments, -1), member)  # [S, P L]
        return self.classifier(weights @ h)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inference on each bag whole and alone: ``[B]`` logits ``z1 - z0``."""
        h = instance_dropout(self.embed(X), self.dropout, self.training)
        a = masked_softmax(self.attention(h).squeeze(-1), mask)
        logits = self.classifier(torch.einsum("bn,bnw->bw", a, h))
        return logits[:, 1] - logits[:, 0]

    def packed_logits(self, X: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """``[B, 2]``: each bag's selected instances, packed with the other bags' into
        sequences of at most ``pack_len`` and pooled segment by segment."""
        source, segment = pack(select, self.pack_len)
        return self.segment_logits(X.flatten(0, 1)[source], segment, X.shape[0])

    def batch_loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = mask.sum(1, keepdim=True)
        rank = instance_uniform(X).masked_fill(~mask, 2.0).argsort(1).argsort(1)  # [B, N]
        kept_count = (n * self.token_dropout).floor()
        whole = n < self.min_seq_len
        kept = mask & (whole | (rank < kept_count))
        dropped = mask & (whole | (rank >= kept_count))
        main = F.cross_entropy(self.packed_logits(X, kept), y.long())

        source, segment = pack(dropped, self.pack_len)
        in_pack = segment >= 0
        pack_index = torch.arange(segment.shape[0], device=X.device)[:, None]
        residual_logits = self.segment_logits(X.flatten(0, 1)[source],  # a pack is one bag
                                              torch.where(in_pack, pack_index, -1),
                                              segment.shape[0])  # [P, 2]
        labels = y[segment.clamp(min=0)]  # [P, L]
        has_positive = (in_pack & (labels > 0.5)).any(1)
        has_negative = (in_pack & (labels <= 0.5)).any(1)
        target = torch.stack([has_negative, has_positive], dim=1).float()
        return main + self.aux_alpha * focal_loss(residual_logits, target)


SPEC = ModelSpec(
    name="pack_mil",
    factory=PackMIL,
    citation="Fang et al., Revisiting Data Challenges of Computational Pathology: A "
             "Pack-based Multiple Instance Learning Framework, 2025",
    respects=(),
    expected={
        "single_concept": Expected("violation", "attention uses the poison: test AUC "
                                   "0.00-0.41 on 11 of 12 seeds (validation 1.00)"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: test AUC "
                                       "0.00 on 12 of 12 seeds"),
        "false_frequency": Expected("violation", "attention pooling counts concept copies: "
                                    "test AUC 0.01-0.13 on 12 of 12 seeds"),
        "label_swap": Expected("violation", "attention uses absence as positive evidence: "
                               "held-out AUC 0.98-0.99 on 12 of 12 seeds"),
    },
    stackable=False,
    in_default_run=False,
)
