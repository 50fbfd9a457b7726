"""Run a one-bag model over a padded batch: each bag unpadded, bags of one size together.

Published MIL code mostly takes one bag per call (``forward(x [N, D])`` or ``[1, N, D]``).
The harness trains on padded mini-batches (``X [B, N, D]``, ``mask [B, N]``), so
:class:`BagMap` cuts each bag to its real instances and calls a function of one bag on
every bag of the batch: the bags of each size go through ``torch.func.vmap`` together
(``randomness="different"``: each bag draws its own dropout and masking), and the values
come back in the batch's order. :class:`OneBagSeeds` does the same for the seeds of a
cell trained as one, nesting a vmap over the seeds around the vmap over their bags.

Where vmap cannot run the function as written (an in-place write into a fresh tensor,
``.item()``, data-dependent Python control flow), the run steps down
(:data:`VMAP_STEPS`): vmap of the functionalized function, then seed by seed, then bag by
bag, with torch's random state restored after each failed attempt. Each step left is
recorded once (:attr:`StepDown.reasons`), for the cell's ``training`` line and one
progress note.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

_VMAP = [True]


@contextlib.contextmanager
def without_vmap() -> Iterator[None]:
    """Within the block, one-bag models run bag by bag, seed by seed: the plain per-bag
    loop that ``mil-assert benchmark --one-bag`` times against the vmap path."""
    _VMAP[0] = False
    try:
        yield
    finally:
        _VMAP[0] = True


def vmap_enabled() -> bool:
    return _VMAP[0]


VMAP_STEPS = ("vmap", "vmap after functionalize", "seed by seed", "bag by bag")
"""How one-bag models run, fastest first. ``torch.func.functionalize`` turns in-place
writes into out-of-place ones (ACMIL writes its random instance mask with ``scatter_`` into
a fresh tensor, which vmap alone cannot run); "seed by seed" keeps vmap over one seed's
bags; "bag by bag" is the plain loop, which runs whatever the model does."""


class StepDown:
    """The way a one-bag model is run, stepped down once per failure and remembered.

    ``run(attempts)`` tries the attempt of the current step and each later one in order;
    a failed attempt restores torch's random state (it may have drawn numbers), records
    its reason once in :attr:`reasons` and moves the step down for every later call. The
    last attempt's own exception is the model's, and propagates.
    """

    def __init__(self, first: int = 0) -> None:
        self.step = first
        self.reasons: list[str] = []
        """``"<step> failed (<exception>)"`` for each step left, in order."""

    @property
    def fallback(self) -> str | None:
        """The steps left and why, for the report's ``training`` line, or ``None``."""
        return "; ".join(self.reasons) or None

    def run(self, attempts: Sequence[Callable[..., torch.Tensor] | None],
            *args: torch.Tensor) -> torch.Tensor:
        """``attempts[i](*args)`` runs the function as ``VMAP_STEPS[i]`` says (``None``
        where a step does not apply); ``args[0]`` is on the device whose random state a
        failed attempt restores."""
        for step in range(self.step, len(attempts)):
            attempt = attempts[step]
            if attempt is None:
                continue
            self.step = step
            if step == len(attempts) - 1:
                return attempt(*args)
            states = random_states(_first_tensor(args).device)
            try:
                return attempt(*args)
            except Exception as error:  # noqa: BLE001 - this step cannot run it; the next may
                restore_random_states(states)
                first_line = (str(error).strip().splitlines() or [""])[0]
                self.reasons.append(f"{VMAP_STEPS[step]} failed "
                                    f"({type(error).__name__}: {first_line[:200]})")
                self.step = step + 1
        raise AssertionError("unreachable: the last attempt returns or raises")


def _first_tensor(args: Sequence[Any]) -> torch.Tensor:
    """The first tensor among ``args`` (a state dict's first value counts)."""
    for arg in args:
        if isinstance(arg, dict):
            arg = next(iter(arg.values()))
        if isinstance(arg, torch.Tensor):
            return arg
    raise TypeError("no tensor among the arguments")


def _vmap(fn: Callable[..., torch.Tensor], functional: bool) -> Callable[..., torch.Tensor]:
    """``fn`` vmapped over its arguments' first axis, each call drawing its own random
    numbers; functionalized first when ``functional``."""
    return torch.func.vmap(torch.func.functionalize(fn) if functional else fn,
                           randomness="different")


class BagMap:
    """Calls a function of one unpadded bag on every bag of a padded batch."""

    def __init__(self) -> None:
        self.ladder = StepDown()

    @property
    def fallback(self) -> str | None:
        """Why vmap could not run the function as written, or ``None``."""
        return self.ladder.fallback

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
        def loop(bags: torch.Tensor, *per_bag: torch.Tensor) -> torch.Tensor:
            return torch.stack([fn(bag, *(v[i] for v in per_bag)) for i, bag in enumerate(bags)])

        if len(bags) == 1 or not vmap_enabled():
            return loop(bags, *per_bag)
        return self.ladder.run([_vmap(fn, False), _vmap(fn, True), None, loop], bags, *per_bag)


def random_states(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """torch's global random state, and the device's where it is a GPU."""
    return (torch.get_rng_state(),
            torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def restore_random_states(states: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


class _Method(nn.Module):
    """Calls ``method`` of ``model`` as its forward, so that ``functional_call`` can run any
    of the model's methods with other parameters."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args: Any) -> Any:
        return getattr(self.model, self.method)(*args)


class OneBagSeeds(nn.Module):
    """``S`` seeds' copies of a one-bag model trained as one: each parameter ``[S, ...]``.

    :meth:`map` runs a function of one bag over a seed-major batch (``X [S*B, N, D]``,
    ``mask [S*B, N]``, as :mod:`mil_assert.stacking` folds seeds): for each bag size, the
    seeds' bags of that size go through two nested ``vmap`` calls, over the seeds (each
    with its own parameters, by ``torch.func.functional_call``) and over their bags, so one
    call serves every seed. A seed with fewer bags of that size is topped up with copies of
    one of its bags, whose values are dropped. Random draws (dropout, masking) differ per
    bag and per seed and come from the stream of the group's first seed, so a seed's
    results repeat whenever the same seeds train together.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        params, buffers = torch.func.stack_module_state(list(members))
        self.names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach()) for n in self.names])
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"stacked_buffer_{i}", buffers[name])
        self._template = [copy.deepcopy(members[0])]  # not a submodule: never trained itself
        self.seeds = len(members)
        self.ladder = StepDown()

    def train(self, mode: bool = True) -> OneBagSeeds:
        self._template[0].train(mode)
        return super().train(mode)

    def map(self, method: str, one_bag: Callable[..., torch.Tensor], X: torch.Tensor,
            mask: torch.Tensor, *per_bag: torch.Tensor) -> torch.Tensor:
        """``one_bag(call, x [n, D], *values) -> []`` on every bag of every seed: ``[S*B]``.

        ``call(*args)`` runs the model's ``method`` with the bag's seed's parameters.
        """
        S = self.seeds
        B = X.shape[0] // S
        caller = _Method(self._template[0], method)
        state = {f"model.{n}": p for n, p in zip(self.names, self.stacked, strict=True)}
        state.update({f"model.{n}": getattr(self, f"stacked_buffer_{i}")
                      for i, n in enumerate(self.buffer_names)})

        def bag_of(state_s: dict[str, torch.Tensor]) -> Callable[..., torch.Tensor]:
            def bag(x: torch.Tensor, *v: torch.Tensor) -> torch.Tensor:
                return one_bag(lambda *args: torch.func.functional_call(caller, state_s, args),
                               x, *v)
            return bag

        def seed(functional: bool) -> Callable[..., torch.Tensor]:
            def run(state_s: dict[str, torch.Tensor], bags: torch.Tensor,
                    *values: torch.Tensor) -> torch.Tensor:
                return _vmap(bag_of(state_s), functional)(bags, *values)
            return run

        def seed_by_seed(state: dict[str, torch.Tensor], bags: torch.Tensor,
                         *values: torch.Tensor) -> torch.Tensor:
            return torch.stack([_vmap(bag_of(_at(state, s)), True)(bags[s], *(v[s] for v in values))
                                for s in range(S)])

        def bag_by_bag(state: dict[str, torch.Tensor], bags: torch.Tensor,
                       *values: torch.Tensor) -> torch.Tensor:
            return torch.stack([torch.stack([bag_of(_at(state, s))(x, *(v[s, i] for v in values))
                                             for i, x in enumerate(bags[s])])
                                for s in range(S)])

        sizes = mask.sum(dim=1).view(S, B)
        out = X.new_zeros(S * B)
        for n in sizes.unique().tolist():
            rows, real = _topped_up(sizes == n)  # [S * C] rows of X, [S * C] not a copy
            bags = X[rows][mask[rows]].view(S, -1, n, X.shape[-1])
            values = [v[rows].view(S, -1, *v.shape[1:]) for v in per_bag]
            result = self.ladder.run([_vmap(seed(False), False), _vmap(seed(True), False),
                                      seed_by_seed, bag_by_bag], state, bags, *values)
            out = out.index_put((rows[real],), result.flatten()[real])
        return out


def _at(state: dict[str, torch.Tensor], s: int) -> dict[str, torch.Tensor]:
    """Seed ``s``'s parameters and buffers from the stacked ``[S, ...]`` ones."""
    return {name: tensor[s] for name, tensor in state.items()}


def _topped_up(of_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a seed-major batch holding bags of one size, the same count for each seed.

    ``of_size`` bool ``[S, B]``. Returns ``rows [S*C]`` (seed ``s``'s bags of the size, then
    copies of one of them up to ``C``, the largest count; a seed with none borrows another
    seed's bag) and ``real [S*C]``, False for the copies.
    """
    S, B = of_size.shape
    counts = of_size.sum(dim=1)
    C = int(counts.max())
    donor = int(of_size.flatten().nonzero()[0])
    rows, real = [], []
    for s in range(S):
        own = of_size[s].nonzero().squeeze(1) + s * B
        pad = own[:1] if len(own) else torch.tensor([donor], device=own.device)
        rows.append(torch.cat([own, pad.expand(C - len(own))]))
        real.append(torch.arange(C, device=own.device) < len(own))
    return torch.cat(rows), torch.cat(real)
