"""MambaMIL: selective state-space layers with sequence reordering over a bag's instances.

Yang, Wang & Chen, "MambaMIL: Enhancing Long Sequence Modeling with Sequence Reordering in
Computational Pathology", MICCAI 2024 (arXiv 2403.06800). Written here from the paper and
from reading the authors' code (isyangshu/MambaMIL: nothing copied), with the selective
state-space layer of Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces", 2023, as its reference recurrence in plain PyTorch (no CUDA kernels).

The model: ``Linear(D, width) + ReLU`` (+ dropout); two residual layers
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
``x, z`` ``[B, N, d_inner]``, the SR sequence ``[B, rate * ceil(N / rate), d_inner]``
for its convolution, both scans ``[B, N, d_inner]`` with state ``[B, d_inner, d_state]``.

Faithful:
- the layer structure, the SR reordering with ``rate = 10`` (the default of the authors'
  SRMamba class; their four training scripts pass 5, listed below), the authors'
  ``d_state = 16``, ``d_conv = 4``, ``expand = 2``, ``dt_rank = ceil(width / 16)``, the
  S4D-real initialisation of ``A``, ``D = 1``, and the authors' final initialisation pass
  (Xavier-normal on every Linear, zero biases, which also resets the step projection's
  bias; the convolutions keep ``nn.Conv1d``'s initialisation);
- the selective scan's recurrence (the plain one, not the authors' fused CUDA kernel),
  computed as a log-depth parallel scan over the instances with a hand-written backward;
  tests/test_sequence_systems.py checks values and gradients against autograd on the
  step-by-step loop.

Simplified or changed:
- SR ``rate = 10`` where the authors' training scripts pass 5: every verdict here was
  measured at 10 (``rate=5`` builds theirs; not re-run, its four 12-seed cells took 51 min
  of cell time);
- width 32 by default (the authors: 512; at 512 a training step of one seed takes 0.43 s
  of CPU here, 23 times the 18 ms at width 32);
- ReLU after the embedding, where the authors' classification builds pass
  ``act='gelu'`` (their ``utils/core_utils.py``, the ``mamba_mil`` branch): every verdict
  here was measured with ReLU;
- no dropout by default, as the authors' three classification scripts (``--drop_out 0``;
  their parser's default 0.25 is passed by their survival script only; ``dropout=0.25``
  gives it, drawn instance by instance): without it the harness trains the seeds of a
  cell as one stacked model (the parameters that are not Linear or LayerNorm carry a
  members axis for it);
- masks (padding never changes a logit): each bag's real instances are moved to the
  front, in order, and its SR order is built from its own length ``n``; the SR
  sequence's filler places (where the authors put zero vectors when ``n`` is not a
  multiple of ``rate``) are zeros to the causal convolution, as the authors' are, and then
  skipped by the scan (the authors' scan also updates its state at them: here the state
  passes through unchanged); padded places get zero input and step;
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
from torch.autograd.function import once_differentiable

from mil_assert import Expected, MembersAxis, ModelSpec
from mil_assert.models._draws import instance_dropout
from mil_assert.models._layers import xavier_linears
from mil_assert.models._pooling import masked_softmax
from mil_assert.models.rrt_mil import real_first


def _pairs(L: int, stride: int, first: int, reverse: bool) -> tuple[slice, slice] | None:
    """The receivers ``first, first + 2 stride, ... < L`` of one round of the scan and their
    providers ``stride`` positions before them, as slices of the sequence axis; mirrored
    (``L - 1 - i``, providers after them) for a reverse scan; ``None`` when there is none."""
    count = len(range(first, L, 2 * stride))
    if count == 0:
        return None
    span = 2 * stride * (count - 1) + 1
    if not reverse:
        return slice(first, first + span, 2 * stride), slice(first - stride, first - stride + span,
                                                               2 * stride)
    last = L - 1 - (first + 2 * stride * (count - 1))
    return slice(last, last + span, 2 * stride), slice(last + stride, last + stride + span,
                                                         2 * stride)


def linear_scan_(a: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """The linear recurrence ``b_t <- a_t b_{t-1} + b_t`` along axis 0 (``reverse``:
    ``b_t <- a_t b_{t+1} + b_t``), in place on ``b``, as a log-depth parallel scan.

    Composing ``x -> a x + b`` maps is associative, so the prefix compositions come out of
    a Brent-Kung scan: about ``2 log2 L`` rounds, each one element-wise multiply-add over
    strided views of all positions at once (up-sweep: each block of ``2 s`` positions
    composes its halves; down-sweep: the remaining positions take the prefix before them),
    instead of ``L`` dependent steps. ``a`` is overwritten (with partial products) at the
    receiving positions; ``a`` at the first position (the last for ``reverse``) is never read
    for the result, but must be finite.
    """
    L = b.shape[0]
    stride = 1
    while stride < L:  # up-sweep: position i = 2 s k + 2 s - 1 composes (i - s, i]
        pair = _pairs(L, stride, 2 * stride - 1, reverse)
        if pair is not None:
            receivers, providers = pair
            b[receivers].addcmul_(a[receivers], b[providers])
            a[receivers].mul_(a[providers])
        stride *= 2
    stride //= 2
    while stride >= 1:  # down-sweep: position 2 s k + 3 s - 1 takes the full prefix at - s
        pair = _pairs(L, stride, 3 * stride - 1, reverse)
        if pair is not None:
            receivers, providers = pair
            b[receivers].addcmul_(a[receivers], b[providers])
        stride //= 2
    return b


STEP_LOOP_BLOCK = 8192
"""On a CPU, positions holding at least this many elements each are scanned step by step:
there each step is a memory-bound pass, and the parallel scan's three times as many
element operations cost more than its fewer calls save (measured here with one thread: the
loop 1.7-2.7 times faster at 32,768 elements a position, the parallel scan 2-8 times
faster at 512-2,048 for 60-1,000 positions; they cross near 8,192 at every length)."""


def steps_one_by_one(b: torch.Tensor) -> bool:
    """Whether :func:`recurrence_` scans ``b`` step by step: on a CPU, for positions of at
    least :data:`STEP_LOOP_BLOCK` elements."""
    return b.device.type == "cpu" and b[0].numel() >= STEP_LOOP_BLOCK


def recurrence_(a: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """:func:`linear_scan_`'s recurrence, in place on ``b``: the parallel scan, or one
    multiply-add per position where :func:`steps_one_by_one` (``a`` is then left as is)."""
    if not steps_one_by_one(b):
        return linear_scan_(a, b, reverse)
    L = b.shape[0]
    for t in range(L - 2, -1, -1) if reverse else range(1, L):
        b[t].addcmul_(a[t], b[t + 1 if reverse else t - 1])
    return b


def _contract_last(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_n states[..., n] weights[..., n]``: ``[L, b, d, n], [L, b, n] -> [L, b, d]``, as
    batched vector-matrix products (3-4 times faster on a CPU than matrix-vector ones)."""
    L, b, d, n = states.shape
    return torch.bmm(weights.reshape(L * b, 1, n), states.view(L * b, d, n).mT).view(L, b, d)


class _SelectiveScan(torch.autograd.Function):
    """The scan's states and readout with a hand-written backward, position-major: ``delta,
    u [L, b, d]``, ``A [b, d, n]``, ``B, C [L, b, n]`` -> ``sum_n C_t h_t`` ``[L, b, d]``.

    Both directions are :func:`recurrence_` over the ``[L, b, d, n]`` states (forward:
    ``h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t``; backward: the state gradients
    ``g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}``). On a CPU the time goes to passes over
    ``[L, b, d, n]`` tensors and to the memory they take, so there are three of them: the
    states, their gradients, and one buffer that holds the decays (computed again for the
    backward scan where the forward's parallel scan overwrote them) and then the gradient
    of their exponents, taken as ``g_t (h_t - delta_t u_t B_t)``, which is
    ``g_t exp(delta_t A) h_{t-1}``.
    Contractions run as batched vector-matrix products (``torch.einsum`` copies a permuted
    ``[L, b, d, n]`` for some, and matrix-vector products are 3-4 times slower), and ``A``'s
    gradient as a sum over the positions, one multiply-add each.
    """

    @staticmethod
    def forward(ctx, delta: torch.Tensor, u: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor) -> torch.Tensor:
        L, b, d = delta.shape
        n = A.shape[-1]
        # The decays, with one spare position: the backward reuses the buffer.
        decays = delta.new_empty(L + 1, b, d, n)
        torch.mul(delta[..., None], A, out=decays[:L]).exp_()
        states = (delta * u)[..., None] * B[:, :, None, :]  # the pushes, then the states
        ctx.decays_kept = steps_one_by_one(states)  # else the parallel scan overwrites some
        recurrence_(decays[:L], states)
        ctx.save_for_backward(delta, u, A, B, C, states, decays)
        return _contract_last(states, C)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        delta, u, A, B, C, states, decays = ctx.saved_tensors
        L, b, d, n = states.shape
        grad_y, push = grad_y.contiguous(), delta * u
        # g_t = C_t dy_t + decay_{t+1} g_{t+1}: decay_{t+1} sits at t in decays[1:]
        # (computed again where the forward's parallel scan overwrote some of them).
        if not ctx.decays_kept:
            torch.mul(delta[..., None], A, out=decays[:L]).exp_()
        decays[L].zero_()
        grad_states = grad_y[..., None] * C[:, :, None, :]
        recurrence_(decays[1:], grad_states, reverse=True)
        flat_states, flat_grad = states.view(L * b, d, n), grad_states.view(L * b, d, n)
        grad_C = torch.bmm(grad_y.reshape(L * b, 1, d), flat_states).view(L, b, n)
        grad_push = _contract_last(grad_states, B)
        grad_B = torch.bmm(push.view(L * b, 1, d), flat_grad).view(L, b, n)
        # d loss / d (delta A) = g_t decay_t h_{t-1} = g_t (h_t - push_t B_t), in the
        # decays' buffer, which the reverse scan left spent.
        grad_exponent = torch.addcmul(states, push[..., None], B[:, :, None, :], value=-1,
                                      out=decays[:L]).mul_(grad_states)
        grad_A = torch.zeros_like(A)
        for t in range(L):
            grad_A.addcmul_(grad_exponent[t], delta[t, :, :, None])
        grad_delta = grad_push * u + grad_exponent.mul_(A).sum(-1)
        return grad_delta, grad_push * delta, grad_A, grad_B, grad_C


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """The selective state-space recurrence, as a parallel scan over the positions.

    ``u, delta [b, L, d]``, ``A [d, n]`` (or ``[b, d, n]``), ``B, C [b, L, n]``, ``D [d]``
    (or ``[b, 1, d]``) -> ``y [b, L, d]``: ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t
    u_t`` (``h_{-1} = 0``), ``y_t = C_t h_t + D u_t``. A position with ``delta_t = 0`` and
    ``u_t = 0`` leaves the state unchanged.
    """
    b = u.shape[0]
    A = A.expand(b, *A.shape[-2:])
    readout = _SelectiveScan.apply(delta.transpose(0, 1).contiguous(),
                                   u.transpose(0, 1).contiguous(), A.contiguous(),
                                   B.transpose(0, 1).contiguous(), C.transpose(0, 1).contiguous())
    return readout.transpose(0, 1) + u * D


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


def per_bag(parameter: torch.Tensor, bags: int) -> torch.Tensor:
    """A parameter with a leading members axis ``[M, ...]`` repeated for ``bags`` bags folded
    member-major (``M = 1`` unless the harness stacks the seeds): ``[bags, ...]``."""
    return parameter.repeat_interleave(bags // parameter.shape[0], dim=0)


class CausalConv(MembersAxis, nn.Module):
    """Depthwise causal convolution along the sequence: ``x [B, L, d]`` -> ``[B, L, d]``,
    ``y_t = b + sum_j w_j x_{t - k + 1 + j}`` (zeros before the start); initialised as
    ``nn.Conv1d``. Weight ``[M, d, k]``, bias ``[M, d]``."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        conv = nn.Conv1d(channels, channels, kernel, groups=channels)
        self.weight = nn.Parameter(conv.weight.detach()[:, 0][None])
        self.bias = nn.Parameter(conv.bias.detach()[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L, k = x.shape[1], self.weight.shape[-1]
        weight = per_bag(self.weight, x.shape[0])  # [B, d, k]
        padded = F.pad(x, [0, 0, k - 1, 0])
        out = per_bag(self.bias, x.shape[0])[:, None, :]
        for j in range(k):
            out = out + padded[:, j:j + L] * weight[:, None, :, j]
        return out


class ScanParameters(MembersAxis, nn.Module):
    """The selective scan's ``A = -exp(A_log)`` ``[M, d, n]`` (S4D-real initialisation,
    ``A = -[1, ..., n]`` for every channel) and skip ``D`` ``[M, d]`` (ones)."""

    def __init__(self, d_inner: int, d_state: int) -> None:
        super().__init__()
        s4d_real = torch.arange(1, d_state + 1).float().repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(s4d_real)[None])
        self.D = nn.Parameter(torch.ones(1, d_inner))


class ScanBranch(nn.Module):
    """Convolution and input-dependent projections of one SR-Mamba branch.

    ``x [B, L, d_inner]``, ``valid [B, L]`` -> the selective scan's ``u, delta [B, L,
    d_inner]``, ``B, C [B, L, d_state]``; its ``A`` and ``D`` are in ``scan``.
    """

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int) -> None:
        super().__init__()
        self.conv = CausalConv(d_inner, d_conv)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        self.scan = ScanParameters(d_inner, d_state)
        self.dt_rank, self.d_state = dt_rank, d_state

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        u = F.silu(self.conv(x * valid[..., None])) * valid[..., None]
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
        forward_in = self.forward_branch(x, real)
        # SR branch: convolution and projections on the SR sequence with its fillers
        # (zeros to the convolution), then its valid places moved to the front for the
        # scan: a filler only passes the state on, so skipping it changes nothing.
        source, valid = sr_order(lengths, self.rate, N)
        sr_in = self.sr_branch(x.gather(1, source[..., None].expand(-1, -1, x.shape[-1])), valid)
        compact = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :N]
        sr_in = [t.gather(1, compact[..., None].expand(-1, -1, t.shape[-1])) for t in sr_in]
        # Both branches in one scan of length N: their bags stacked, each its own A and D.
        u, delta, B, C = (torch.cat(pair) for pair in zip(forward_in, sr_in, strict=True))
        branches = (self.forward_branch.scan, self.sr_branch.scan)
        A = torch.cat([per_bag(-torch.exp(scan.A_log), Bags) for scan in branches])
        D = torch.cat([per_bag(scan.D, Bags) for scan in branches])[:, None]
        y = selective_scan(u, delta, A, B, C, D)
        # Instance i sits at SR place p = sr_place(i), the (rank of p among valid places)-th
        # place of the compacted sequence.
        rank = valid.long().cumsum(1) - 1
        back = rank.gather(1, sr_place(lengths, self.rate, N)).clamp(0, N - 1)
        sr_out = y[Bags:].gather(1, back[..., None].expand(-1, -1, y.shape[-1]))
        return self.out_proj((y[:Bags] + sr_out) * F.silu(z)) * real[..., None]


class MambaMIL(nn.Module):
    def __init__(self, dim: int, width: int = 32, layers: int = 2, rate: int = 10,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.dropout = dropout
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.layers = nn.ModuleList(SRMamba(width, d_state, d_conv, expand, rate)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.attention = nn.Sequential(nn.Linear(width, 128), nn.Tanh(), nn.Linear(128, 1))
        self.head = nn.Linear(width, 1)
        xavier_linears(self.modules())

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
    expected={
        "single_concept": Expected("violation", "attention over scanned instances uses the "
                                   "poison: test AUC 0.00-0.33 on 4 of 5 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: test AUC 0.00 "
                                       "on 4 of 5 seeds"),
        "false_frequency": Expected("violation", "counts concept copies: test AUC 0.15 on 1 "
                                    "seed, 0.40-0.51 (lost) on 3 of 5 (validation 0.90-0.94)"),
        "label_swap": Expected("violation", "uses absence as positive evidence: held-out AUC "
                               "0.91-0.95 on 5 of 5 seeds"),
    },
    in_default_run=False,
)
