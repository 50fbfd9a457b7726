"""MambaMIL: selective state-space layers with sequence reordering over a bag's instances.

Yang, Wang & Chen, "MambaMIL: Enhancing Long Sequence Modeling with Sequence Reordering in
Computational Pathology", MICCAI 2024 (arXiv 2403.06800). Written here from the paper and
from reading the authors' code (isyangshu/MambaMIL: nothing copied), with the selective
state-space layer of Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces", 2023, as its reference recurrence in plain PyTorch (no CUDA kernels).

The model: ``Linear(D, width) + ReLU + Dropout(0.25)``; two residual layers
``h + SRMamba(LayerNorm(h))``; a LayerNorm; attention pooling (``Linear(width, 128) ->
Tanh -> Linear(128, 1)``, softmax over the bag); a linear classifier. An SR-Mamba layer
projects each instance to ``x, z`` (``2 * expand * width``), runs two selective scans and
sums them before the output projection:

- the forward branch over the instances in their order;
- the sequence-reordering (SR) branch over the instances reordered with stride ``rate``:
  the bag of ``n`` instances is read as ``K = ceil(n / rate)`` rows of ``rate``, and the SR
  sequence takes column 0 (instances 0, rate, 2 rate, ...), then column 1, and so on; its
  outputs go back to the instances' own places.

Each branch: a causal depthwise convolution (kernel ``d_conv``) and SiLU on ``x``; from it
the input-dependent step ``delta = softplus(dt_proj(.))`` and ``B_t, C_t`` (``d_state``);
then the selective scan ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t``,
``y_t = C_t h_t + D x_t``, gated by ``SiLU(z_t)``.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``. Inside:
``x, z`` ``[B, L, d_inner]``, scan state ``[B, d_inner, d_state]``, ``L = N`` (forward)
or ``rate * ceil(N / rate)`` (SR).

Faithful:
- the layer structure, the SR reordering with the authors' ``rate = 10``, the widths of
  the authors' code (width 512, ``d_state = 16``, ``d_conv = 4``, ``expand = 2``,
  ``dt_rank = ceil(width / 16)``), the S4D-real initialisation of ``A``, ``D = 1``, and the
  authors' final initialisation pass (Xavier-normal on every Linear, zero biases, which
  also resets the step projection's bias);
- the selective scan as the plain recurrence, one step per instance.

Simplified or changed, for masks (padding never changes a logit):
- each bag's real instances are moved to the front, in order, and its SR order is built
  from its own length ``n``; padded places and the SR sequence's filler places (where the
  authors put zero vectors when ``n`` is not a multiple of ``rate``) get zero input and
  zero step ``delta``, so the scan state passes through them unchanged and they add
  nothing; the causal convolution reads zeros there, as it does at the authors' fillers;
  the embedding's dropout is drawn instance by instance (``models/_draws.py``), so padding
  never changes a draw;
- one logit (the authors' two-class head gives the same log-odds ``z1 - z0``).

What its pooling can express: attention pooling over instances re-embedded by scans that
read the instances before them (and, in the SR branch, the ones ``rate`` apart): a present
instance can pull the bag negative, counts change the score, and the order matters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mil_assert.models._draws import instance_dropout
from mil_assert.models._pooling import masked_softmax
from mil_assert.models.rrt_mil import real_first
from mil_assert.registry import ModelSpec


class _Recurrence(torch.autograd.Function):
    """``states[t] = decay[t] * states[t - 1] + push[t]`` (``states[-1] = 0``) over the
    leading axis, with its backward written as the reverse recurrence: two fused
    multiply-adds per position instead of an autograd graph of a few ops per position."""

    @staticmethod
    def forward(ctx, decay: torch.Tensor, push: torch.Tensor) -> torch.Tensor:
        states = torch.empty_like(push)
        states[0] = push[0]
        for t in range(1, push.shape[0]):
            torch.addcmul(push[t], decay[t], states[t - 1], out=states[t])
        ctx.save_for_backward(decay, states)
        return states

    @staticmethod
    def backward(ctx, grad_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decay, states = ctx.saved_tensors
        grad_push = torch.empty_like(grad_states)
        grad_push[-1] = grad_states[-1]
        for t in range(grad_states.shape[0] - 2, -1, -1):
            torch.addcmul(grad_states[t], decay[t + 1], grad_push[t + 1], out=grad_push[t])
        grad_decay = torch.zeros_like(grad_push)
        grad_decay[1:] = grad_push[1:] * states[:-1]
        return grad_decay, grad_push


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """The selective state-space recurrence, one step per position.

    ``u, delta [b, L, d]``, ``A [d, n]`` (or ``[b, d, n]``), ``B, C [b, L, n]``, ``D [d]``
    (or ``[b, 1, d]``) -> ``y [b, L, d]``: ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t
    u_t`` (``h_{-1} = 0``), ``y_t = C_t h_t + D u_t``. A position with ``delta_t = 0`` and
    ``u_t = 0`` leaves the state unchanged.
    """
    # Position-major [L, b, d, n], so that each step reads contiguous memory.
    decay = torch.exp(delta.transpose(0, 1)[..., None] * A)
    push = (delta * u).transpose(0, 1)[..., None] * B.transpose(0, 1)[:, :, None, :]
    states = _Recurrence.apply(decay.contiguous(), push.contiguous())
    return torch.einsum("lbdn,bln->bld", states, C) + u * D


def sr_order(lengths: torch.Tensor, rate: int, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The SR sequence of each bag: ``source [B, L]`` (instance index at each SR position,
    clamped) and ``valid [B, L]``, ``L = rate * ceil(N / rate)``.

    A bag of ``n`` instances is ``K = ceil(n / rate)`` rows of ``rate``; SR position
    ``p = w K + k`` holds instance ``k rate + w``.
    """
    K = (lengths + rate - 1) // rate  # [B]
    p = torch.arange(rate * ((N + rate - 1) // rate), device=lengths.device)
    Kc = K.clamp(min=1)[:, None]
    source = (p % Kc) * rate + p // Kc  # [B, L]
    valid = (p < rate * K[:, None]) & (source < lengths[:, None])
    return torch.where(valid, source, 0), valid


def sr_place(lengths: torch.Tensor, rate: int, N: int) -> torch.Tensor:
    """``[B, N]``: the SR position of each instance ``i = k rate + w``, ``p = w K + k``."""
    K = ((lengths + rate - 1) // rate).clamp(min=1)[:, None]
    i = torch.arange(N, device=lengths.device)
    return (i % rate) * K + i // rate


class ScanBranch(nn.Module):
    """Convolution and input-dependent projections of one SR-Mamba branch.

    ``x [B, L, d_inner]``, ``valid [B, L]`` -> the selective scan's ``u, delta [B, L,
    d_inner]``, ``B, C [B, L, d_state]``; its ``A`` and ``D`` are parameters.
    """

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        s4d_real = torch.arange(1, d_state + 1).float().repeat(d_inner, 1)  # A = -[1..n]
        self.A_log = nn.Parameter(torch.log(s4d_real))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.dt_rank, self.d_state = dt_rank, d_state

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        L = x.shape[1]
        x = x * valid[..., None]
        u = F.silu(self.conv(x.transpose(1, 2))[..., :L].transpose(1, 2)) * valid[..., None]
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt)) * valid[..., None]
        return u, delta, B, C


class SRMamba(nn.Module):
    """One SR-Mamba layer: forward and sequence-reordered scans, summed, then projected.

    ``h [B, N, width]`` (real instances first), ``lengths [B]`` -> ``[B, N, width]``.
    """

    def __init__(self, width: int, d_state: int, d_conv: int, expand: int, rate: int) -> None:
        super().__init__()
        d_inner = expand * width
        dt_rank = math.ceil(width / 16)
        self.rate = rate
        self.in_proj = nn.Linear(width, 2 * d_inner, bias=False)
        self.forward_branch = ScanBranch(d_inner, d_state, d_conv, dt_rank)
        self.sr_branch = ScanBranch(d_inner, d_state, d_conv, dt_rank)
        self.out_proj = nn.Linear(d_inner, width, bias=False)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        Bags, N = h.shape[:2]
        real = torch.arange(N, device=h.device) < lengths[:, None]
        x, z = self.in_proj(h).chunk(2, dim=-1)
        source, valid = sr_order(lengths, self.rate, N)
        L = source.shape[1]  # >= N: the forward branch is padded to it, state passing
        gather = source[..., None].expand(-1, -1, x.shape[-1])
        pad = [0, 0, 0, L - N]
        forward_in = self.forward_branch(F.pad(x, pad), F.pad(real, [0, L - N]))
        sr_in = self.sr_branch(x.gather(1, gather), valid)
        # Both branches in one scan: their bags stacked, each with its own A and D.
        u, delta, B, C = (torch.cat(pair) for pair in zip(forward_in, sr_in, strict=True))
        A = torch.stack([-torch.exp(b.A_log) for b in (self.forward_branch, self.sr_branch)])
        D = torch.stack([self.forward_branch.D, self.sr_branch.D])
        y = selective_scan(u, delta, A.repeat_interleave(Bags, 0),
                           B, C, D.repeat_interleave(Bags, 0)[:, None])
        forward_out = y[:Bags, :N] * F.silu(z)
        sr_out = y[Bags:] * F.silu(z.gather(1, gather))
        back = sr_place(lengths, self.rate, N)[..., None].expand(-1, -1, x.shape[-1])
        return self.out_proj(forward_out + sr_out.gather(1, back)) * real[..., None]


class MambaMIL(nn.Module):
    def __init__(self, dim: int, width: int = 64, layers: int = 2, rate: int = 10,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.dropout = dropout
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.layers = nn.ModuleList(SRMamba(width, d_state, d_conv, expand, rate)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.attention = nn.Sequential(nn.Linear(width, 128), nn.Tanh(), nn.Linear(128, 1))
        self.head = nn.Linear(width, 1)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        X, lengths = real_first(X, mask)
        real = torch.arange(X.shape[1], device=X.device) < lengths[:, None]
        h = instance_dropout(self.embed(X), self.dropout, self.training) * real[..., None]
        for norm, layer in zip(self.norms, self.layers, strict=True):
            h = h + layer(norm(h), lengths)
        h = self.norm(h)
        a = masked_softmax(self.attention(h).squeeze(-1), real)
        return self.head(torch.einsum("bn,bnc->bc", a, h)).squeeze(-1)


SPEC = ModelSpec(
    name="mamba_mil",
    factory=MambaMIL,
    citation="Yang, Wang & Chen, MambaMIL: Enhancing Long Sequence Modeling with Sequence "
             "Reordering in Computational Pathology, MICCAI 2024",
    respects=(),
    stackable=False,
    in_default_run=False,
)
