"""Random draws over instances that padding never changes, for models that drop or mask
instances or sample per-instance noise while they train.

A draw made as ``torch.rand(B, N, ...)`` changes for every real instance when a batch is
padded to a larger ``N`` (row-major order shifts), and it shifts every later draw of the
step too, so a bag's training loss would depend on how wide its batch happens to be.
Each helper here takes one number from torch's global generator (the same amount
whatever the shapes), seeds a CPU generator of its own with it, and draws
instance-major, ``[N, B, ...]``, returning the ``[B, N, ...]`` view: instance ``n`` of bag
``b`` gets the same number whatever padding follows it, and later draws are unchanged.
The global generator is the one the harness seeds per seed (mil_assert/seeding.py), so a
run repeats with its seeds.
"""

from __future__ import annotations

import torch

SEED_RANGE = 2**62


def _own_generator() -> torch.Generator:
    """A CPU generator seeded by one draw from torch's global generator."""
    return torch.Generator().manual_seed(int(torch.randint(SEED_RANGE, ())))


def instance_uniform(like: torch.Tensor, *trailing: int) -> torch.Tensor:
    """``U(0, 1)`` of shape ``[B, N, *trailing]`` for ``like`` of shape ``[B, N, ...]``."""
    B, N = like.shape[:2]
    draw = torch.rand(N, B, *trailing, generator=_own_generator())
    return draw.to(like.device).transpose(0, 1)


def instance_normal(like: torch.Tensor, *trailing: int) -> torch.Tensor:
    """``N(0, 1)`` of shape ``[B, N, *trailing]`` for ``like`` of shape ``[B, N, ...]``.

    Box-Muller from uniform pairs: torch's own ``randn`` fills blocks of 16 values at a
    time on a CPU, so its values at a position depend on the tensor's size.
    """
    B, N = like.shape[:2]
    u = torch.rand(N, B, *trailing, 2, generator=_own_generator(), dtype=torch.float64)
    radius = torch.sqrt(-2.0 * torch.log1p(-u[..., 0]))  # 1 - u in (0, 1]: finite
    draw = (radius * torch.cos(2.0 * torch.pi * u[..., 1])).to(like.dtype)
    return draw.to(like.device).transpose(0, 1)


def instance_dropout(h: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout of ``h [B, N, F]`` with rate ``p`` in training (identity otherwise), as
    ``nn.Dropout`` (kept entries scaled by ``1 / (1 - p)``), drawn instance-major."""
    if not training or p <= 0.0:
        return h
    keep = instance_uniform(h, h.shape[-1]) >= p
    return h * keep.to(h.dtype) / (1.0 - p)
