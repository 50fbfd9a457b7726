"""Run a one-bag model over a padded batch: each bag unpadded, bags of one size together.

Published MIL code mostly takes one bag per call (``forward(x [N, D])`` or ``[1, N, D]``).
The harness trains on padded mini-batches (``X [B, N, D]``, ``mask [B, N]``), so
:class:`BagMap` cuts each bag to its real instances and calls a function of one bag on
every bag of the batch: the bags of each size go through ``torch.func.vmap`` together
(``randomness="different"``: each bag draws its own dropout and masking), and the values
come back in the batch's order. Where vmap cannot run the function (an in-place op on a
captured tensor, ``.item()``, data-dependent Python control flow), the bags run one by
one; the first such failure is kept as :attr:`BagMap.fallback`, a reason the report and
the progress output show once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class BagMap:
    """Calls a function of one unpadded bag on every bag of a padded batch."""

    def __init__(self) -> None:
        self.fallback: str | None = None
        """Why vmap could not run the function (then bags run one by one), or ``None``."""

    def __call__(self, fn: Callable[..., torch.Tensor], X: torch.Tensor, mask: torch.Tensor,
                 *per_bag: torch.Tensor) -> torch.Tensor:
        """``fn(x [n, D], *values) -> []`` on each bag: ``[B]``.

        ``X [B, N, D]``, ``mask [B, N]``; each tensor in ``per_bag`` has one value per bag
        on its first axis. A bag's real instances keep their order.
        """
        sizes = mask.sum(dim=1)
        values, order = [], []
        for n in sizes.unique().tolist():
            index = (sizes == n).nonzero().squeeze(1)
            bags = X[index][mask[index]].view(len(index), n, X.shape[-1])
            values.append(self.same_size(fn, bags, *(v.index_select(0, index) for v in per_bag)))
            order.append(index)
        return torch.cat(values)[torch.argsort(torch.cat(order))]

    def same_size(self, fn: Callable[..., torch.Tensor], bags: torch.Tensor,
                  *per_bag: torch.Tensor) -> torch.Tensor:
        """``fn`` on ``G`` bags of one size, ``bags [G, n, D]`` -> ``[G]``."""
        if self.fallback is None and len(bags) > 1:
            try:
                return torch.func.vmap(fn, randomness="different")(bags, *per_bag)
            except Exception as error:  # noqa: BLE001 - vmap cannot run this model; a loop can
                first_line = (str(error).strip().splitlines() or [""])[0]
                self.fallback = f"{type(error).__name__}: {first_line[:200]}"
        return torch.stack([fn(bag, *(v[i] for v in per_bag)) for i, bag in enumerate(bags)])
