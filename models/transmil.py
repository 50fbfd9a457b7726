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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mil_assert.models._layers import BagConstant
from mil_assert.models._pooling import masked_softmax
from mil_assert.registry import Expected, ModelSpec
from mil_assert.stacking import MembersAxis


def _iterative_pinv(A: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of each ``[m, m]`` matrix in ``A`` ``[..., m, m]``.

    The iteration of the Nystromformer paper, started from ``A^T / (||A||_1 ||A||_inf)``,
    with both norms taken per matrix so that no other bag can change the result.
    """
    shape, m = A.shape, A.shape[-1]
    A = A.reshape(-1, m, m)
    eye = torch.eye(m, dtype=A.dtype, device=A.device)
    norms = A.abs().sum(-1).amax(-1) * A.abs().sum(-2).amax(-1)  # [batch]
    Z = A.transpose(-1, -2) / norms[:, None, None]
    for _ in range(iterations):
        AZ = torch.bmm(A, Z)
        # Z (13 I - AZ (15 I - AZ (7 I - AZ))) / 4
        inner = torch.baddbmm(15 * eye, AZ, 7 * eye - AZ, alpha=-1)
        Z = torch.bmm(Z, torch.baddbmm(13 * eye, AZ, inner, alpha=-1)) * 0.25
    return Z.view(shape)


class NystromAttention(nn.Module):
    """Masked multi-head Nystrom attention, ``[B, L, C], [B, L] -> [B, L, C]``.

    ``mask`` must be compacted: each sequence's real tokens are its first ``L_b``.
    """

    def __init__(self, width: int, heads: int, landmarks: int) -> None:
        super().__init__()
        self.heads = heads
        self.landmarks = landmarks
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        m = self.landmarks
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q = q * q.shape[-1] ** -0.5  # [B, heads, L, d]

        # Landmarks: means of q and k over m contiguous segments of each sequence's real
        # tokens (position j of a sequence of length L_b is in segment j * m // L_b).
        lengths = mask.sum(1, keepdim=True).clamp(min=1)  # [B, 1]
        segment = torch.arange(L, device=x.device) * m // lengths  # [B, L]
        member = (segment[..., None] == torch.arange(m, device=x.device)) & mask[..., None]
        counts = member.sum(1)  # [B, m]
        valid = counts > 0  # [B, m]; a segment is empty when L_b < m
        means = member.to(x.dtype) / counts.clamp(min=1)[:, None, :]  # [B, L, m]
        q_land = torch.einsum("blm,bhld->bhmd", means, q)
        k_land = torch.einsum("blm,bhld->bhmd", means, k)

        keys = mask[:, None, None, :]  # [B, 1, 1, L]
        lands = valid[:, None, None, :]  # [B, 1, 1, m]
        rows = valid[:, None, :, None].to(x.dtype)  # [B, 1, m, 1]
        kernel_1 = masked_softmax(q @ k_land.transpose(-1, -2), lands)  # [B, h, L, m]
        kernel_2 = masked_softmax(q_land @ k_land.transpose(-1, -2), lands) * rows
        kernel_3 = masked_softmax(q_land @ k.transpose(-1, -2), keys) * rows  # [B, h, m, L]
        # An empty landmark gets a 1 on the diagonal of the m x m matrix, which keeps it
        # invertible and block-diagonal; its column of kernel_1 is 0, so it adds nothing.
        kernel_2 = kernel_2 + torch.diag_embed((~valid).to(x.dtype))[:, None]
        attended = kernel_1 @ (_iterative_pinv(kernel_2) @ (kernel_3 @ v))  # [B, h, L, d]
        attended = attended.transpose(1, 2).reshape(B, L, C)
        return self.out(attended) * mask[..., None]


class TransLayer(nn.Module):
    """``x + NystromAttention(LayerNorm(x))``; padded tokens come out as zeros."""

    def __init__(self, width: int, heads: int, landmarks: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attention = NystromAttention(width, heads, landmarks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (x + self.attention(self.norm(x), mask)) * mask[..., None]


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
        # and that token is real; every other cell reads the zero row appended at index N.
        j = r * side[:, None] + c  # [B, cells]
        inside = (r < side[:, None]) & (c < side[:, None]) & (j < lengths[:, None])
        source = torch.where(inside, j, N)
        padded = torch.cat([tokens, tokens.new_zeros(B, 1, C)], dim=1)
        grid = padded.gather(1, source[..., None].expand(-1, -1, C))  # [B, cells, C]
        grid = grid.view(M, B // M, cells, C)

        if cells <= self.dense_cells:
            # out[p] = bias + sum_q kernel[q_r - p_r + 3, q_c - p_c + 3] grid[q].
            dr = r[None, :] - r[:, None] + 3  # [cells (p), cells (q)]
            dc = c[None, :] - c[:, None] + 3
            near = (dr >= 0) & (dr < 7) & (dc >= 0) & (dc < 7)
            offset = (dr.clamp(0, 6) * 7 + dc.clamp(0, 6)).flatten()
            matrix = kernel.reshape(M, C, 49).index_select(2, offset).view(M, C, cells, cells)
            grid = torch.einsum("mbqc,mcpq->mbpc", grid, matrix * near) + bias[:, None, None]
        else:  # large bags: the same map as a convolution, whose cost grows linearly
            image = grid.permute(1, 0, 3, 2).reshape(B // M, M * C, canvas_side, canvas_side)
            image = F.conv2d(image, kernel.reshape(M * C, 1, 7, 7), bias.reshape(M * C),
                             padding=3, groups=M * C)
            grid = image.reshape(B // M, M, C, cells).permute(1, 0, 3, 2)
        grid = grid.reshape(B, cells, C)

        # Back from the canvas: token j of bag b is at cell (j // H_b) * side + j % H_b.
        t = torch.arange(N, device=tokens.device)
        cell = (t // side[:, None]) * canvas_side + t % side[:, None]  # [B, N]
        real = t < lengths[:, None]
        out = grid.gather(1, torch.where(real, cell, 0)[..., None].expand(-1, -1, C))
        return out * real[..., None]


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
        x = self.layer_2(x, seq_mask)
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
