"""Masked pooling over the instance axis, shared by the built-in models.

All functions take ``mask`` bool ``[B, N]`` (True = real instance) and ignore padded rows
exactly, so padding a bag never changes the result. A bag with no real instance gives a
finite result (zeros) instead of NaN.
"""

from __future__ import annotations

import torch


def masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over instances. ``values`` ``[B, N]`` or ``[B, N, F]`` -> ``[B]`` or ``[B, F]``."""
    m = mask if values.dim() == 2 else mask[..., None]
    lowest = torch.finfo(values.dtype).min
    pooled = values.masked_fill(~m, lowest).amax(dim=1)
    return torch.where(mask.any(dim=1).view(-1, *([1] * (pooled.dim() - 1))), pooled,
                       torch.zeros_like(pooled))


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis of ``logits`` (instances, ``[B, N]``, or keys, ``[..., L]``).

    ``mask`` broadcasts against ``logits``; masked entries get weight 0, and a fully
    masked row is all zeros instead of NaN.
    """
    lowest = torch.finfo(logits.dtype).min
    weights = torch.softmax(logits.masked_fill(~mask, lowest), dim=-1)
    return weights * mask
