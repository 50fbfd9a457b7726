"""TransMIL: a transformer over the bag's instances with a positional convolution.

Shao et al., "TransMIL: Transformer based Correlated Multiple Instance Learning for Whole
Slide Image Classification", NeurIPS 2021.
A linear layer with ReLU embeds every instance; a learned class token is prepended; two
transformer layers ``x + NystromAttention(LayerNorm(x))`` (Xiong et al., "Nystromformer",
AAAI 2021: attention through 8 landmarks, the means of 8 contiguous segments of the
sequence) let the instances attend to each other; between them the PPEG lays the instance
tokens out row-major on a square grid of side ``ceil(sqrt(n))`` and adds depthwise 7x7, 5x5
and 3x3 convolutions to it; a LayerNorm and a linear layer classify the class token. Width
64, 2 heads of width 32 (the paper: 512, 8 heads of 64), for a CPU.

Departures from the paper, for exact masking: real instances are first moved to the front
(in their order), the grid cells past the bag's ``n`` instances are zeros instead of copies
of its first instances, and the Nystrom landmarks and pseudo-inverse are computed per bag
over its real tokens only, so padding and batching never change a bag's logit.

What its pooling can express: the class token's softmax attention over the instances, twice,
so every instance's weight depends on every other one: a present instance can pull the bag
negative, and counts change the result. The PPEG reads each instance's position on the
grid, so the output also depends on the instances' order. Neither set-monotone, nor
count-free, nor permutation-invariant.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``.

Implementation, for time only (the function is the one above; tests/test_models.py checks
logits and gradients against it written plainly): at these sizes (a dozen tokens and 8
landmarks per bag) a step's time goes to the number of operations and the copies between
them, so the attention after the projections (:class:`_NystromCore`) and the PPEG's dense
canvas map (:class:`_DenseGrid`) have hand-written backwards, every head's bags are one
batch, the softmaxes are written out (``torch.softmax`` over 8 entries is slow on a CPU),
and the second layer computes only the class token's row, the one the head reads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from mil_assert import Expected, MembersAxis, ModelSpec
from mil_assert.models._layers import BagConstant


def _softmax_(scores: torch.Tensor, blocked: torch.Tensor,
              keep: torch.Tensor | None = None) -> torch.Tensor:
    """``masked_softmax(scores, ~blocked) * keep`` over the last axis, in place on
    ``scores``; every row must hold an unblocked entry (blocked entries come out 0).

    On a CPU ``torch.softmax`` over a last axis of 8-14 entries costs about five times
    this subtract-exp-normalise (measured on the shapes here).
    """
    scores = scores.masked_fill_(blocked, torch.finfo(scores.dtype).min)
    scores = scores.sub_(scores.amax(-1, keepdim=True)).exp_()
    scores = scores.div_(scores.sum(-1, keepdim=True))
    return scores if keep is None else scores.mul_(keep)


def _softmax_backward_(y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The gradient of the scores of ``y = _softmax_(scores, ...)`` from that of ``y``,
    in place on ``grad``: ``y * (grad - sum(grad * y))``."""
    return grad.sub_((grad * y).sum(-1, keepdim=True)).mul_(y)


def _pinv_forward(A: torch.Tensor, iterations: int,
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Moore-Penrose pseudo-inverse of each ``[m, m]`` matrix in ``A`` ``[n, m, m]``, and
    what :func:`_pinv_backward` needs.

    The iteration of the Nystromformer paper, started from ``A^T / (||A||_1 ||A||_inf)``,
    with both norms taken per matrix so that no other bag can change the result:
    ``Z <- Z (13 I - AZ (15 I - AZ (7 I - AZ))) / 4``, ``iterations`` times.
    """
    m = A.shape[-1]
    eye = torch.eye(m, dtype=A.dtype, device=A.device)
    magnitude = A.abs()
    row, col = magnitude.sum(-1), magnitude.sum(-2)  # [n, m]
    norm_inf, norm_1 = row.amax(-1), col.amax(-1)  # [n]
    norms = norm_inf * norm_1
    Z = A.transpose(-1, -2) / norms[:, None, None]
    saved = [A, row, col, norm_inf, norm_1, norms]
    eye_7, eye_15, eye_13 = 7 * eye, 15 * eye, 13 * eye
    for _ in range(iterations):
        AZ = torch.bmm(A, Z)
        first = eye_7 - AZ
        inner = torch.baddbmm(eye_15, AZ, first, alpha=-1)
        outer = torch.baddbmm(eye_13, AZ, inner, alpha=-1)
        saved += [Z, AZ, first, inner, outer]
        Z = torch.bmm(Z, outer) * 0.25
    return Z, saved


def _pinv_backward(grad: torch.Tensor, saved: list[torch.Tensor]) -> torch.Tensor:
    """The gradient of ``A`` from that of :func:`_pinv_forward`'s result: autograd's
    through the same steps, written out (7 matrix products per step, and one for the sum
    of the steps' ``d(AZ) Z^T``)."""
    A, row, col, norm_inf, norm_1, norms = saved[:6]
    steps = saved[6:]
    grad_AZ, Zs = [], []
    for step in reversed(range(len(steps) // 5)):
        Z, AZ, first, inner, outer = steps[5 * step:5 * step + 5]
        quarter = grad * 0.25  # Z_next = Z outer / 4
        grad_outer = torch.bmm(Z.mT, quarter)
        # outer = 13 I - AZ inner; inner = 15 I - AZ first; first = 7 I - AZ.
        through = torch.bmm(AZ.mT, grad_outer)  # -d inner
        grad_first = torch.bmm(AZ.mT, through)  # d first
        g = torch.baddbmm(grad_first, through, first.mT, beta=-1)
        g = torch.baddbmm(g, grad_outer, inner.mT, alpha=-1)  # d AZ
        grad = torch.baddbmm(torch.bmm(quarter, outer.mT), A.mT, g)  # d Z
        grad_AZ.append(g)
        Zs.append(Z)
    grad_A = torch.bmm(torch.cat(grad_AZ, -1), torch.cat(Zs, -1).mT)  # sum of d(AZ) Z^T
    # Z_0 = A^T / norms, norms = max row sum * max column sum of |A| (amax splits its
    # gradient evenly among tied maxima).
    grad_A = grad_A + grad.mT / norms[:, None, None]
    grad_norms = -(grad * Zs[-1]).sum((-1, -2)) / norms  # [n]
    rows = (row == norm_inf[:, None]).to(A.dtype)
    cols = (col == norm_1[:, None]).to(A.dtype)
    rows = rows * (grad_norms * norm_1 / rows.sum(-1))[:, None]
    cols = cols * (grad_norms * norm_inf / cols.sum(-1))[:, None]
    return grad_A + A.sgn() * (rows[:, :, None] + cols[:, None, :])


class _NystromCore(torch.autograd.Function):
    """Masked multi-head Nystrom attention from the projected tokens, with a hand-written
    backward: ``qkv [B, L, 3C]`` (q, k, v, each ``heads`` blocks of ``d = C / heads``),
    ``means [B, L, m]`` (each landmark's weights on the tokens), ``valid [B, m]`` (non-empty
    landmarks), ``mask [B, L]`` -> ``[B, R, C]``, the attended values of the first ``R``
    tokens (padded ones included: the caller masks them).

    Per head, with ``q`` scaled by ``d^-1/2`` and ``q_l = means^T q``, ``k_l = means^T k``:
    ``kernel_1 = softmax(q k_l^T)`` over the landmarks, ``kernel_2 = softmax(q_l k_l^T)``,
    ``kernel_3 = softmax(q_l k^T)`` over the tokens (rows of empty landmarks zero), and
    ``kernel_1 pinv(kernel_2 + diag(empty)) (kernel_3 v)``.

    Written out because at this model's sizes (a handful of tokens and landmarks per bag)
    the time goes to the number of operations and the copies between them, not to
    arithmetic: one permuted copy of ``qkv`` lays out every head's bags as one batch, and
    the backward is about a third of the operations autograd records for the same steps.
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, means: torch.Tensor, valid: torch.Tensor,
                mask: torch.Tensor, rows: int, heads: int, iterations: int) -> torch.Tensor:
        B, L, C = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        h, m, R = heads, means.shape[-1], rows
        d, n = C // h, B * h
        scale = d ** -0.5
        heads_qkv = qkv.view(B, L, 3, h, d).permute(2, 0, 3, 1, 4).reshape(3, n, L, d)
        q, k, v = heads_qkv  # [n, L, d] each, bag-major
        pick = means.transpose(1, 2)[:, None].expand(B, h, m, L).reshape(n, m, L)
        q_land = torch.bmm(pick, q).mul_(scale)
        k_land = torch.bmm(pick, k)
        far, keys = ~valid[:, None, None, :], ~mask[:, None, None, :]
        kept = valid[:, None, :, None].to(qkv.dtype)  # rows of empty landmarks are zero
        scores = torch.bmm(q[:, :R], k_land.mT).mul_(scale)
        kernel_1 = _softmax_(scores.view(B, h, R, m), far).view(n, R, m)
        kernel_2 = _softmax_(torch.bmm(q_land, k_land.mT).view(B, h, m, m), far, kept)
        kernel_3 = _softmax_(torch.bmm(q_land, k.mT).view(B, h, m, L), keys, kept)
        # An empty landmark gets a 1 on the diagonal of the m x m matrix, which keeps it
        # invertible and block-diagonal; its column of kernel_1 is 0, so it adds nothing.
        empty = torch.diag_embed((~valid).to(qkv.dtype))[:, None]
        kernel_2, kernel_3 = kernel_2.view(n, m, m), kernel_3.view(n, m, L)
        inverse, saved = _pinv_forward((kernel_2.view(B, h, m, m) + empty).view(n, m, m),
                                       iterations)
        values = torch.bmm(kernel_3, v)  # [n, m, d]
        context = torch.bmm(inverse, values)
        attended = torch.bmm(kernel_1, context)  # [n, R, d]
        ctx.save_for_backward(heads_qkv, pick, q_land, k_land, kernel_1, kernel_2, kernel_3,
                              values, context, inverse, *saved)
        ctx.shape = B, L, C, h, R
        return attended.view(B, h, R, d).transpose(1, 2).reshape(B, R, C)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (heads_qkv, pick, q_land, k_land, kernel_1, kernel_2, kernel_3, values, context,
         inverse, *saved) = ctx.saved_tensors
        B, L, C, h, R = ctx.shape
        d, n = C // h, B * h
        scale = d ** -0.5
        q, k, v = heads_qkv
        grad = torch.empty_like(heads_qkv)  # d q, d k, d v
        grad_attended = grad_out.view(B, R, h, d).transpose(1, 2).reshape(n, R, d)
        grad_1 = torch.bmm(grad_attended, context.mT)  # d kernel_1
        grad_context = torch.bmm(kernel_1.mT, grad_attended)
        grad_inverse = torch.bmm(grad_context, values.mT)
        grad_values = torch.bmm(inverse.mT, grad_context)
        grad_3 = torch.bmm(grad_values, v.mT)  # d kernel_3
        torch.bmm(kernel_3.mT, grad_values, out=grad[2])
        grad_2 = _pinv_backward(grad_inverse, saved)  # d kernel_2
        # Scores: s_1 = scale q k_l^T, s_2 = q_l k_l^T, s_3 = q_l k^T.
        grad_1 = _softmax_backward_(kernel_1, grad_1).mul_(scale)
        grad_2 = _softmax_backward_(kernel_2, grad_2)
        grad_3 = _softmax_backward_(kernel_3, grad_3)
        grad_k_land = torch.baddbmm(torch.bmm(grad_1.mT, q[:, :R]), grad_2.mT, q_land)
        grad_q_land = torch.baddbmm(torch.bmm(grad_2, k_land), grad_3, k)
        torch.bmm(grad_3.mT, q_land, out=grad[1])
        grad[1].baddbmm_(pick.mT, grad_k_land)  # k_l = pick k
        torch.bmm(pick.mT, grad_q_land, out=grad[0]).mul_(scale)  # q_l = scale pick q
        grad[0][:, :R].baddbmm_(grad_1, k_land)
        grad_qkv = grad.view(3, B, h, L, d).permute(1, 3, 0, 2, 4).reshape(B, L, 3 * C)
        return grad_qkv, None, None, None, None, None, None


class NystromAttention(nn.Module):
    """Masked multi-head Nystrom attention, ``[B, L, C], [B, L] -> [B, R, C]``.

    ``mask`` must be compacted: each sequence's real tokens are its first ``L_b``, at least
    one (TransMIL's class token). The output holds the first ``R`` tokens (``rows``, default
    all ``L``); padded ones are zeros.
    """

    iterations = 6  # of the pseudo-inverse

    def __init__(self, width: int, heads: int, landmarks: int) -> None:
        super().__init__()
        self.heads = heads
        self.landmarks = landmarks
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rows: int | None = None,
                ) -> torch.Tensor:
        B, L, _ = x.shape
        m = self.landmarks
        # Landmarks: means of q and k over m contiguous segments of each sequence's real
        # tokens (position j of a sequence of length L_b is in segment j * m // L_b).
        lengths = mask.sum(1, keepdim=True).clamp(min=1)  # [B, 1]
        segment = torch.arange(L, device=x.device) * m // lengths  # [B, L]
        member = (segment[..., None] == torch.arange(m, device=x.device)) & mask[..., None]
        counts = member.sum(1)  # [B, m]
        means = member.to(x.dtype) / counts.clamp(min=1)[:, None, :]  # [B, L, m]
        attended = _NystromCore.apply(self.qkv(x), means, counts > 0, mask,
                                      L if rows is None else rows, self.heads, self.iterations)
        return self.out(attended) * mask[:, :attended.shape[1], None]


class TransLayer(nn.Module):
    """``x + NystromAttention(LayerNorm(x))`` on the first ``rows`` tokens (default all);
    padded tokens come out as zeros (``x``'s padded tokens must be zeros)."""

    def __init__(self, width: int, heads: int, landmarks: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attention = NystromAttention(width, heads, landmarks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rows: int | None = None,
                ) -> torch.Tensor:
        attended = self.attention(self.norm(x), mask, rows)
        return x[:, :attended.shape[1]] + attended


class PPEG(MembersAxis, nn.Module):
    """Pyramid position encoding generator on each bag's square grid of instance tokens.

    ``tokens`` ``[B, N, C]`` with each bag's ``n_b`` real tokens first, ``lengths`` ``[B]``.
    Token ``j`` sits at row ``j // H_b``, column ``j % H_b`` of a grid of side
    ``H_b = ceil(sqrt(n_b))``; the grids share one zero canvas of side ``max_b H_b``, whose
    cells outside a bag's grid act exactly as that grid's zero padding. The grid becomes
    ``grid + conv7(grid) + conv5(grid) + conv3(grid)``, three depthwise convolutions with
    "same" padding. Their sum is one 7x7 depthwise convolution (plus 1 at the centre for the
    identity), applied as one dense matrix per channel on a small canvas: the same map as
    ``conv2d``, much cheaper to differentiate on a CPU.
    """

    dense_cells = 256  # canvases up to 16 x 16 use the dense matrix

    def __init__(self, width: int) -> None:
        super().__init__()
        self.kernels, self.biases = nn.ParameterList(), nn.ParameterList()
        for size in (7, 5, 3):  # nn.Conv2d's initialisation; [M = 1, C, size, size], [1, C]
            conv = nn.Conv2d(width, width, size, padding=size // 2, groups=width)
            self.kernels.append(nn.Parameter(conv.weight.detach()[None, :, 0]))
            self.biases.append(nn.Parameter(conv.bias.detach()[None]))

    def _kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The identity plus the three convolutions: ``[M, C, 7, 7]`` kernel, ``[M, C]`` bias."""
        kernel = sum(F.pad(k, [(7 - k.shape[-1]) // 2] * 4) for k in self.kernels)
        kernel = kernel + F.pad(kernel.new_ones(1, 1, 1, 1), [3] * 4)
        return kernel, sum(self.biases)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, N, C = tokens.shape
        kernel, bias = self._kernel()
        M = kernel.shape[0]  # members folded seed-major into the bag axis (1 unless stacked)
        side = torch.ceil(torch.sqrt(lengths.to(torch.float64))).long().clamp(min=1)  # [B]
        canvas_side = int(side.max())
        cells = canvas_side * canvas_side
        r = torch.arange(cells, device=tokens.device) // canvas_side
        c = torch.arange(cells, device=tokens.device) % canvas_side

        # Canvas cell (r, c) of bag b holds token r * H_b + c if it is inside the bag's grid
        # and that token is real; every other cell is zero.
        j = r * side[:, None] + c  # [B, cells]
        inside = (r < side[:, None]) & (c < side[:, None]) & (j < lengths[:, None])
        # Back from the canvas: token j of bag b is at cell (j // H_b) * side + j % H_b.
        t = torch.arange(N, device=tokens.device)
        cell = (t // side[:, None]) * canvas_side + t % side[:, None]  # [B, N]
        real = t < lengths[:, None]
        if cells <= self.dense_cells:
            return _DenseGrid.apply(tokens, kernel, bias, torch.where(inside, j, 0), inside,
                                    torch.where(real, cell, 0), real)

        # Large bags: the same map as a convolution, whose cost grows linearly.
        padded = torch.cat([tokens, tokens.new_zeros(B, 1, C)], dim=1)
        grid = padded.gather(1, torch.where(inside, j, N)[..., None].expand(-1, -1, C))
        image = grid.view(M, B // M, cells, C).permute(1, 0, 3, 2).reshape(
            B // M, M * C, canvas_side, canvas_side)
        image = F.conv2d(image, kernel.reshape(M * C, 1, 7, 7), bias.reshape(M * C),
                         padding=3, groups=M * C)
        grid = image.reshape(B // M, M, C, cells).permute(1, 0, 3, 2).reshape(B, cells, C)
        out = grid.gather(1, torch.where(real, cell, 0)[..., None].expand(-1, -1, C))
        return out * real[..., None]


class _DenseGrid(torch.autograd.Function):
    """The PPEG map on a small canvas as one dense matrix per member and channel, with a
    hand-written backward: ``tokens [B, N, C]``, ``kernel [M, C, 7, 7]``, ``bias [M, C]``,
    ``source, inside [B, cells]`` (the token each canvas cell holds, and whether it holds
    one), ``back, real [B, N]`` (each token's cell, and whether the token is real) ->
    ``[B, N, C]``.

    ``out[p] = bias + sum_q kernel[q_r - p_r + 3, q_c - p_c + 3] grid[q]`` (zero beyond 3),
    computed channel-major so that one batched product over (member, channel) does it.
    """

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor,
                source: torch.Tensor, inside: torch.Tensor, back: torch.Tensor,
                real: torch.Tensor) -> torch.Tensor:
        B, N, C = tokens.shape
        M, cells = kernel.shape[0], source.shape[1]
        Bm, side = B // M, math.isqrt(cells)
        rc = torch.arange(cells, device=tokens.device)
        dr = (rc // side)[None, :] - (rc // side)[:, None] + 3  # [cells (p), cells (q)]
        dc = (rc % side)[None, :] - (rc % side)[:, None] + 3
        near = ((dr >= 0) & (dr < 7) & (dc >= 0) & (dc < 7)).to(tokens.dtype).flatten()
        offset = (dr.clamp(0, 6) * 7 + dc.clamp(0, 6)).flatten()
        matrix = kernel.reshape(M, C, 49).index_select(2, offset).mul_(near)  # [M, C, p q]
        source = source.view(M, 1, Bm, cells).expand(M, C, Bm, cells)
        inside = inside.view(M, 1, Bm, cells).to(tokens.dtype)
        grid = tokens.view(M, Bm, N, C).permute(0, 3, 1, 2).gather(3, source).mul_(inside)
        out = torch.baddbmm(bias.reshape(M * C, 1, 1), grid.view(M * C, Bm, cells),
                            matrix.view(M * C, cells, cells).mT)  # [M * C, Bm, cells]
        back = back.view(M, 1, Bm, N).expand(M, C, Bm, N)
        real = real.view(M, Bm, N, 1).to(tokens.dtype)
        result = tokens.new_empty(B, N, C)
        torch.mul(out.view(M, C, Bm, cells).gather(3, back).permute(0, 2, 3, 1), real,
                  out=result.view(M, Bm, N, C))
        ctx.save_for_backward(grid, matrix, near, offset, source, inside, back, real)
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grid, matrix, near, offset, source, inside, back, real = ctx.saved_tensors
        M, C, Bm, cells = grid.shape
        N = back.shape[-1]
        grad = (grad.view(M, Bm, N, C) * real).permute(0, 3, 1, 2)  # [M, C, Bm, N]
        grad_out = grid.new_zeros(M, C, Bm, cells).scatter_add_(3, back, grad)
        grad_bias = grad_out.sum((2, 3))
        grad_out = grad_out.view(M * C, Bm, cells)
        grad_matrix = torch.bmm(grad_out.mT, grid.view(M * C, Bm, cells)).view(M, C, -1)
        grad_kernel = grid.new_zeros(M, C, 49).index_add_(2, offset, grad_matrix.mul_(near))
        grad_grid = torch.bmm(grad_out, matrix.view(M * C, cells, cells)).view(M, C, Bm, cells)
        grad_tokens = grid.new_zeros(M, C, Bm, N).scatter_add_(3, source, grad_grid.mul_(inside))
        return (grad_tokens.permute(0, 2, 3, 1).reshape(M * Bm, N, C),
                grad_kernel.view(M, C, 7, 7), grad_bias, None, None, None, None)


class TransMIL(nn.Module):
    def __init__(self, dim: int, width: int = 64, heads: int = 2, landmarks: int = 8) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.cls_token = BagConstant(1, width)
        self.layer_1 = TransLayer(width, heads, landmarks)
        self.ppeg = PPEG(width)
        self.layer_2 = TransLayer(width, heads, landmarks)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, _ = X.shape
        # Real instances to the front, in their order; padded rows become zeros.
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        X = X.gather(1, order[..., None].expand(-1, -1, X.shape[-1]))
        lengths = mask.sum(1)  # [B]
        real = torch.arange(N, device=X.device) < lengths[:, None]  # [B, N]
        h = self.embed(torch.where(real[..., None], X, 0.0)) * real[..., None]

        x = torch.cat([self.cls_token(B), h], dim=1)  # [B, 1 + N, width]
        seq_mask = torch.cat([real.new_ones(B, 1), real], dim=1)
        x = self.layer_1(x, seq_mask)
        x = torch.cat([x[:, :1], self.ppeg(x[:, 1:], lengths)], dim=1)
        x = self.layer_2(x, seq_mask, rows=1)  # only the class token is read
        return self.head(self.norm(x[:, 0])).squeeze(-1)


SPEC = ModelSpec(
    name="transmil",
    factory=TransMIL,
    citation="Shao et al., TransMIL: Transformer based Correlated Multiple Instance Learning "
             "for Whole Slide Image Classification, NeurIPS 2021",
    respects=(),
    expected={
        "single_concept": Expected("violation", "attention uses the poison: test AUC 0.00 on "
                                   "12 of 12 seeds"),
        "threshold_poisoned": Expected("violation", "the poison shortcut again: test AUC "
                                       "0.00-0.05 on 12 of 12 seeds"),
        "false_frequency": Expected("violation", "a count-dependent rule on 6 of 12 seeds: "
                                    "validation AUC 1.00, test AUC 0.09-0.52"),
        "label_swap": Expected("violation", "attention uses absence as positive evidence: "
                               "held-out AUC 1.00 on 12 of 12 seeds"),
    },
)
