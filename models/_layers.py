"""Layers with parameters that are not ``nn.Linear``/``nn.LayerNorm``, written to stack.

Each keeps a leading "members" axis on its parameters (size 1 in a single model) and
handles ``M`` members' bags folded seed-major into the bag axis, so that the harness can
train every seed of a cell as one model (:mod:`mil_assert.stacking`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from mil_assert import MembersAxis


def xavier_linears(modules: Iterable[nn.Module]) -> None:
    """Xavier-normal weights and zero biases for every ``nn.Linear`` of ``modules``, in
    their order: the initialisation of the recent systems' authors' code (MHIM-MIL,
    RRT-MIL, MambaMIL, PackMIL)."""
    for module in modules:
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class BagConstant(MembersAxis, nn.Module):
    """A learned tensor given to every bag (a class token, stored patterns).

    ``forward(bags) -> [bags, *shape]``; the value is ``[M, *shape]``, drawn from
    ``N(0, 1 / shape[-1])``.
    """

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.randn(1, *shape) / math.sqrt(shape[-1]))

    def forward(self, bags: int) -> torch.Tensor:
        members, *shape = self.value.shape
        return self.value[:, None].expand(members, bags // members, *shape).reshape(bags, *shape)
