"""RRT-MIL (R^2T-MIL): attention MIL on instances re-embedded by a regional transformer.

Tang, Zhou, Huang, Zhu, Zhang & Liu, "Feature Re-Embedding: Towards Foundation Model-Level
Performance in Computational Pathology", CVPR 2024 (arXiv 2402.17228). Written here from
the paper and from reading the authors' code (DearCaat/RRT-MIL, no licence: nothing copied).

The model: ``Linear(D, width) + ReLU + Dropout(0.25)``; then the re-embedding encoder R^2T,
two pre-norm residual layers, ``x + R-MSA(LN(x))`` and ``x + CR-MSA(LN(x))``, and a
LayerNorm; then attention pooling (``Linear(width, 128) -> ReLU -> Linear(128, 1)``,
softmax over the bag) and a linear classifier. The bag's instances, in their order, are laid
out row-major on a square grid of side ``H = ceil(sqrt(n))`` rounded up to a multiple of
``region_num``, cut into ``region_num x region_num`` regions of ``(H / region_num)^2`` cells.

- R-MSA: multi-head self-attention (``heads`` heads of width ``width / heads``) among the
  instances of one region; EPEG, the paper's embedded position encoding, adds to each
  head's attention logits a 1-D convolution (kernel ``epeg_k``) along the query axis of the
  region's logit matrix, so it reads the instances' places in the region.
- CR-MSA: ``crmsa_k`` representatives per region, each a softmax-weighted sum of the
  region's instances (weights from a learned ``[width, crmsa_k]`` map ``phi``); multi-head
  self-attention among the regions' representatives (one sequence per representative
  index); each instance gets back the attended representatives weighted by a softmax of
  its ``phi`` logits over the ``crmsa_k`` representatives times their min-max normalised
  value within its region.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.
Inside: grid slots ``[B, N]`` (region index and place in the region per instance),
attention logits ``[B, heads, N, N]`` masked to pairs in one region, representatives
``[B, crmsa_k, R, width]`` with ``R`` regions.

Faithful:
- the first Linear to the width, one R-MSA layer then one CR-MSA layer, pre-norm residuals,
  the final LayerNorm, the attention pooling and the authors' defaults (8 heads,
  ``epeg_k = 15``, ``crmsa_k = 3``, dropout 0.25 after the embedding, 0.1 after each
  attention's projection, Xavier-normal initialisation of every Linear with zero biases);
- the square grid of regions with a fixed number of regions per side (the authors' default
  mode), the EPEG convolution over the attention logits, CR-MSA's combine, attend and
  min-max-weighted dispatch.

Simplified or changed:
- width 64 by default (the authors: 512), to suit a CPU; ``rrt_mil`` at width 512 is the
  authors'-width run of ``docs/recent-systems.md``;
- no learning-rate schedule: the suite's constant-rate budget (the authors' parser
  defaults to a cosine schedule over its epochs, ``--lr_sche cosine``; the verdicts here
  were measured without it);
- the authors' parser defaults, not their README's Camelyon16 commands, which also set
  ``--da_act=tanh`` (here ReLU in the attention pooling), ``--all_shortcut`` (a residual
  around the whole encoder) and ``--crmsa_k=1`` (C16-R50; 3 for C16-PLIP). Their code
  with that command is judged in [authors' code](../docs/authors-code.md);
- ``region_num = 2`` regions per side by default (the authors: 8, which below 64 instances
  makes every region one instance, R-MSA a per-instance map and CR-MSA's min-max dispatch
  exactly zero); CR-MSA uses the same regions as R-MSA (the authors' CR-MSA layer also
  defaults to 8);
- masks instead of the authors' zero padding: the grid is built per bag from its real
  instances (moved to the front, in order); the grid cells past them are empty, never zero
  vectors that enter the attention, the EPEG convolution or the representatives, so padding
  and batching never change a logit;
- one logit (the authors' two-class head gives the same log-odds ``z1 - z0``).

What its pooling can express: attention pooling over re-embedded instances whose values
depend on the other instances of the bag, so a present instance can pull the bag negative
and counts change the score; the grid reads the instances' order. Neither set-monotone,
nor count-free, nor permutation-invariant.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mil_assert import Expected, ModelSpec
from mil_assert.models._draws import instance_dropout
from mil_assert.models._layers import xavier_linears
from mil_assert.models._pooling import masked_softmax


def real_first(X: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each bag's real instances moved to the front in their order, padded rows zeroed.

    ``X [B, N, D]``, ``mask [B, N]`` -> ``X [B, N, D]``, ``lengths [B]``.
    """
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    X = X.gather(1, order[..., None].expand(-1, -1, X.shape[-1]))
    lengths = mask.sum(1)
    real = torch.arange(X.shape[1], device=X.device) < lengths[:, None]
    return torch.where(real[..., None], X, 0.0), lengths


class RegionGrid:
    """Where each instance sits: region and place in it, for bags laid out on square grids.

    ``lengths [B]``, ``N`` slots -> ``region [B, N]`` (``-1`` for padding), ``place [B, N]``
    (row-major index inside the region), ``regions`` (regions per bag, the largest).
    """

    def __init__(self, lengths: torch.Tensor, N: int, region_num: int) -> None:
        side = torch.ceil(torch.sqrt(lengths.double())).long().clamp(min=1)
        side = side + (-side) % region_num  # a multiple of region_num, as in the paper
        size = side // region_num  # region side, per bag
        j = torch.arange(N, device=lengths.device)
        row, col = j // side[:, None], j % side[:, None]
        self.real = j < lengths[:, None]
        self.region = torch.where(self.real, (row // size[:, None]) * region_num
                                  + col // size[:, None], -1)
        self.place = (row % size[:, None]) * size[:, None] + col % size[:, None]
        self.regions = region_num * region_num

    def same_region(self) -> torch.Tensor:
        """``[B, N, N]``: both instances real and in one region."""
        return (self.region[:, :, None] == self.region[:, None, :]) & self.real[:, :, None] \
            & self.real[:, None, :]

    def membership(self) -> torch.Tensor:
        """``[B, N, R]`` bool: instance in region."""
        return self.region[..., None] == torch.arange(self.regions, device=self.region.device)


def _multi_head(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, ...]:
    """``[..., L, 3 * C]`` -> q, k, v ``[..., heads, L, C / heads]`` (q scaled)."""
    *lead, L, three_c = qkv.shape
    q, k, v = qkv.view(*lead, L, 3, heads, three_c // (3 * heads)).movedim(-3, 0).transpose(-2, -3)
    return q * q.shape[-1] ** -0.5, k, v


class RegionAttention(nn.Module):
    """R-MSA with EPEG: self-attention among the instances of each region.

    ``x [B, N, C]`` (real instances first), grid -> ``[B, N, C]``, zeros on padding.
    """

    def __init__(self, width: int, heads: int, epeg_k: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.epeg_k = heads, epeg_k
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout
        # EPEG: a depthwise Conv2d(heads, heads, (epeg_k, 1)) on the attention logits,
        # its init as nn.Conv2d's (uniform in +-1/sqrt(fan_in), fan_in = epeg_k).
        bound = 1 / math.sqrt(epeg_k)
        self.epeg_weight = nn.Parameter(torch.empty(heads, epeg_k).uniform_(-bound, bound))
        self.epeg_bias = nn.Parameter(torch.empty(heads).uniform_(-bound, bound))

    def epeg(self, logits: torch.Tensor, grid: RegionGrid, pair: torch.Tensor) -> torch.Tensor:
        """``logits [B, h, N, N]`` plus the convolution along each region's query axis:
        ``pe[i, j] = b + sum_q w[place_q - place_i + k // 2] logits[q, j]`` over the real
        instances ``q`` of ``i``'s region (the empty cells are the convolution's zeros)."""
        offset = grid.place[:, None, :] - grid.place[:, :, None] + self.epeg_k // 2  # [B, N, N]
        near = pair & (offset >= 0) & (offset < self.epeg_k)
        taps = self.epeg_weight[:, offset.clamp(0, self.epeg_k - 1)]  # [h, B, N, N]
        kernel = taps.transpose(0, 1) * near[:, None]  # [B, h, N (i), N (q)]
        return logits + kernel @ logits + self.epeg_bias[:, None, None]

    def forward(self, x: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = _multi_head(self.qkv(x), self.heads)  # [B, h, N, C / h]
        pair = grid.same_region()
        logits = self.epeg(q @ k.transpose(-1, -2), grid, pair)
        attended = masked_softmax(logits, pair[:, None]) @ v
        out = self.out(attended.transpose(1, 2).reshape(B, N, C))
        return instance_dropout(out, self.dropout, self.training) * grid.real[..., None]


class CrossRegionAttention(nn.Module):
    """CR-MSA: representatives of each region attend to the other regions' and are
    dispatched back to the region's instances. ``x [B, N, C]``, grid -> ``[B, N, C]``."""

    def __init__(self, width: int, heads: int, crmsa_k: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.phi = nn.Parameter(torch.empty(width, crmsa_k))
        nn.init.kaiming_uniform_(self.phi, a=math.sqrt(5))
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
        B, N, C = x.shape
        member = grid.membership()  # [B, N, R]
        scores = x @ self.phi  # [B, N, K]
        # Combine: per region and representative, a softmax over the region's instances.
        combine = masked_softmax(scores.transpose(1, 2)[:, None],  # [B, R, K, N]
                                 member.transpose(1, 2)[:, :, None])
        reps = torch.einsum("brkn,bnc->bkrc", combine, x)  # [B, K, R, C]
        occupied = member.any(1)  # [B, R]
        q, k, v = _multi_head(self.qkv(reps), self.heads)  # [B, K, h, R, C / h]
        attended = masked_softmax(q @ k.transpose(-1, -2), occupied[:, None, None, None]) @ v
        K, R = reps.shape[1], reps.shape[2]
        attended = self.drop(self.out(attended.transpose(2, 3).reshape(B, K, R, C)))
        # Dispatch: softmax over representatives times the min-max normalised score
        # within the instance's region.
        inside = member[..., None]  # [B, N, R, 1]
        expanded = scores[:, :, None]  # [B, N, 1, K]
        high = torch.finfo(x.dtype).max
        low = expanded.masked_fill(~inside, high).amin(1)  # [B, R, K]
        top = expanded.masked_fill(~inside, -high).amax(1)
        region = grid.region.clamp(min=0)
        low = low.gather(1, region[..., None].expand(-1, -1, K))  # [B, N, K]
        top = top.gather(1, region[..., None].expand(-1, -1, K))
        weight = (scores - low) / (top - low + 1e-8) * scores.softmax(-1)  # [B, N, K]
        back = attended.gather(2, region[:, None, :, None].expand(-1, K, -1, C))  # [B, K, N, C]
        return torch.einsum("bnk,bknc->bnc", weight, back) * grid.real[..., None]


class RRTMIL(nn.Module):
    def __init__(self, dim: int, width: int = 64, heads: int = 8, region_num: int = 2,
                 epeg_k: int = 15, crmsa_k: int = 3, crmsa_heads: int = 8,
                 dropout: float = 0.25, attention_dropout: float = 0.1) -> None:
        super().__init__()
        self.region_num = region_num
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.dropout = dropout
        self.norm_r = nn.LayerNorm(width)
        self.r_msa = RegionAttention(width, heads, epeg_k, attention_dropout)
        self.norm_cr = nn.LayerNorm(width)
        self.cr_msa = CrossRegionAttention(width, crmsa_heads, crmsa_k, attention_dropout)
        self.norm = nn.LayerNorm(width)
        self.attention = nn.Sequential(nn.Linear(width, 128, bias=False), nn.ReLU(),
                                       nn.Linear(128, 1, bias=False))
        self.head = nn.Linear(width, 1)
        xavier_linears(self.modules())

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        X, lengths = real_first(X, mask)
        grid = RegionGrid(lengths, X.shape[1], self.region_num)
        h = instance_dropout(self.embed(X), self.dropout, self.training) * grid.real[..., None]
        h = h + self.r_msa(self.norm_r(h), grid)
        h = h + self.cr_msa(self.norm_cr(h), grid)
        h = self.norm(h)
        a = masked_softmax(self.attention(h).squeeze(-1), grid.real)  # [B, N]
        return self.head(torch.einsum("bn,bnc->bc", a, h)).squeeze(-1)


SPEC = ModelSpec(
    name="rrt_mil",
    factory=RRTMIL,
    citation="Tang et al., Feature Re-Embedding: Towards Foundation Model-Level Performance "
             "in Computational Pathology, CVPR 2024",
    respects=(),
    expected={
        "single_concept": Expected("violation", "attention pooling uses the poison: test AUC "
                                   "0.00 on 5 of 5 seeds (validation 1.00)"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: test AUC 0.00 "
                                       "on 5 of 5 seeds"),
        "false_frequency": Expected("violation", "re-embedded attention pooling counts concept "
                                    "copies: test AUC 0.00 on 5 of 5 seeds (validation "
                                    "0.86-0.92)"),
        "label_swap": Expected("violation", "softmax attention uses absence as positive "
                               "evidence: held-out AUC 0.91-0.96 on 5 of 5 seeds"),
    },
    stackable=False,
    in_default_run=False,
)
