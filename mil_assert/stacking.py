"""Train the seeds of a cell together: one model whose layers hold every seed's parameters.

``S`` copies of a model, one per seed and each initialised from its own seed, become one
*stacked* module. It takes the ``S`` seeds' batches concatenated along the bag axis,
seed-major (``X [S*B, N, D]``, ``mask [S*B, N]``: rows ``s*B .. (s+1)*B - 1`` are seed
``s``'s bags) and returns ``[S*B]`` logits. Parameter-free operations (activations,
masked pooling, attention within a bag) already act bag by bag, so only the layers that
hold parameters change: each is replaced by one holding the ``S`` copies' parameters
along a new leading axis, which applies copy ``s`` to the rows of seed ``s``. One Adam
step on the stacked parameters is ``S`` independent Adam steps (Adam is element-wise),
and the summed per-seed losses give each seed its own gradient, so the seeds stay
independent: one seed's data, initialisation and batch order never reach another.

Stacking is automatic for modules built from ``nn.Linear`` and ``nn.LayerNorm``; a module
of another kind that holds parameters supports it by defining a classmethod
``stacked(members) -> nn.Module`` (the :class:`MembersAxis` mixin gives one to modules
whose parameters already carry a leading "members" axis). A module holding no tensors
itself (activations, containers, or a loss such as ``nn.BCEWithLogitsLoss()`` whose
optional buffers are None) is copied with its None entries, and a loss module
(``nn.modules.loss._Loss``, no parameters) whose constant buffers (``pos_weight``) are
equal in every seed's model is shared as is. Anything else raises
:class:`NotStackable` and the harness trains the seeds one by one. Because a wrong
stacking would be silent, :func:`check_stacked` compares the stacked model with the
seeds' own models on a real batch before training: their logits, and when the model
defines a ``loss(X, mask, y) -> [B]`` hook, their per-bag losses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

RANDOM_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)
CHECK_TOLERANCE = 1e-4
"""Largest difference, relative to the logits' scale, between the stacked model and the
seeds' own models on the check batch; float32 rounding is about a thousand times smaller."""


class NotStackable(Exception):
    """The seeds of this model cannot be trained as one stacked model; the reason says why."""


class StackedLinear(nn.Module):
    """``S`` ``nn.Linear`` layers: weight ``[S, in, out]``, bias ``[S, 1, out]``.

    ``x [S*B, ..., in]`` (seed-major) -> ``[S*B, ..., out]``.
    """

    def __init__(self, members: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach().t() for m in members]))
        self.bias = (None if members[0].bias is None else
                     nn.Parameter(torch.stack([m.bias.detach() for m in members])[:, None]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(self.weight.shape[0], -1, x.shape[-1])  # [S, B*..., in]
        if self.weight.shape[-1] == 1:
            # One output: batched matrix-vector products, which torch.bmm runs several
            # times slower on a CPU than this multiply-and-sum (forward and backward).
            out = (rows * self.weight.transpose(1, 2)).sum(-1, keepdim=True)
            out = out if self.bias is None else out + self.bias
        elif self.bias is None:
            out = torch.bmm(rows, self.weight)
        else:
            out = torch.baddbmm(self.bias, rows, self.weight)
        return out.view(*x.shape[:-1], out.shape[-1])


class StackedLayerNorm(nn.Module):
    """``S`` ``nn.LayerNorm`` layers over the last axis: affine weight and bias ``[S, 1, F]``.

    ``x [S*B, ..., F]`` (seed-major) -> the same shape.
    """

    def __init__(self, members: Sequence[nn.LayerNorm]) -> None:
        super().__init__()
        first = members[0]
        if len(first.normalized_shape) != 1:
            raise NotStackable("a LayerNorm over more than the last axis is not stackable")
        self.normalized_shape = first.normalized_shape
        self.eps = first.eps
        self.members = len(members)
        self.weight = self.bias = None
        if first.weight is not None:
            self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members])[:, None])
        if first.bias is not None:
            self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in members])[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        out = out.reshape(self.members, -1, x.shape[-1])
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out.view(x.shape)


STACKED_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: StackedLinear,
    nn.LayerNorm: StackedLayerNorm,
}


def concatenate_members(members: Sequence[nn.Module]) -> nn.Module:
    """Stack modules whose parameters and buffers all carry a leading members axis.

    For a module that handles ``M`` members folded into the bag axis by itself (its
    parameters' first axis has size ``M``, 1 for a single model): the stacked module is a
    copy of the first whose tensors are the members' concatenated along that axis.
    """
    stacked = copy.deepcopy(members[0])
    for name, _ in members[0].named_parameters():
        owner, attribute = _owner(stacked, name)
        joined = torch.cat([m.get_parameter(name).detach() for m in members])
        setattr(owner, attribute, nn.Parameter(joined))
    for name, _ in members[0].named_buffers():
        owner, attribute = _owner(stacked, name)
        owner._buffers[attribute] = torch.cat([m.get_buffer(name) for m in members])
    return stacked


class MembersAxis:
    """Mixin for a module whose parameters and buffers all carry a leading members axis
    and whose forward handles ``M`` members folded seed-major into the bag axis: it stacks
    by :func:`concatenate_members`."""

    @classmethod
    def stacked(cls, members: Sequence[nn.Module]) -> nn.Module:
        return concatenate_members(members)


def _owner(module: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    path, _, attribute = dotted.rpartition(".")
    return (module.get_submodule(path) if path else module), attribute


def stack_models(members: Sequence[nn.Module]) -> nn.Module:
    """One stacked module computing every member on its own slice of a seed-major batch.

    Raises:
        NotStackable: a layer that holds parameters or buffers is of a kind this module
            cannot stack and defines no ``stacked`` classmethod, a layer draws random
            numbers (dropout), or the members differ in structure.
    """
    return _stack(list(members), "model")


def _stack(members: list[nn.Module], where: str) -> nn.Module:
    first = members[0]
    kind = type(first)
    if any(type(m) is not kind for m in members):
        raise NotStackable(f"{where}: the seeds' models differ in structure")
    custom = getattr(kind, "stacked", None)
    if callable(custom):
        return custom(members)
    if kind in STACKED_LAYERS:
        return STACKED_LAYERS[kind](members)
    if isinstance(first, RANDOM_LAYERS) and getattr(first, "p", 0) > 0:
        raise NotStackable(f"{where} ({kind.__name__}) draws random numbers, which one "
                           f"stacked model cannot draw per seed")
    own = [name for name, _ in first.named_parameters(recurse=False)]
    own += [name for name, _ in first.named_buffers(recurse=False)]
    if (own and isinstance(first, nn.modules.loss._Loss)
            and not any(True for _ in first.parameters())):
        return _shared_loss(members, where)
    if own:
        raise NotStackable(f"{where} ({kind.__name__}) holds {', '.join(own)} directly; only "
                           f"{', '.join(t.__name__ for t in STACKED_LAYERS)} layers, and "
                           f"modules with a stacked() classmethod, can be stacked")
    stacked = copy.copy(first)  # shares first's attributes; its module dicts are replaced
    # Only None entries are left (registered optional tensors, such as a loss's weight):
    # they stay, since the module's code reads them.
    stacked._parameters, stacked._buffers = dict(first._parameters), dict(first._buffers)
    stacked._non_persistent_buffers_set = set(first._non_persistent_buffers_set)
    stacked._modules = {
        name: None if child is None else _stack([m._modules[name] for m in members],
                                                f"{where}.{name}")
        for name, child in first._modules.items()
    }
    return stacked


def _shared_loss(members: list[nn.Module], where: str) -> nn.Module:
    """The first member's loss module, shared, when every member holds equal buffers.

    A loss applies its constant buffers (``weight``, ``pos_weight``) to each bag alike and
    never updates them, so one copy serves every seed; buffers that differ cannot.
    """
    first = members[0]
    for name, buffer in first.named_buffers():
        for member in members[1:]:
            other = member.get_buffer(name)
            if (other.shape != buffer.shape or other.dtype != buffer.dtype
                    or not torch.equal(other, buffer)):
                raise NotStackable(f"{where} ({type(first).__name__}) holds {name}, which "
                                   f"differs between the seeds' models; a stacked model "
                                   f"can share a loss's buffers only when they are equal")
    return first


def check_stacked(stacked: nn.Module, members: Sequence[nn.Module], X: torch.Tensor,
                  mask: torch.Tensor, y: torch.Tensor) -> None:
    """Raise :class:`NotStackable` unless ``stacked`` computes each member's logits, and
    each member's per-bag losses when the model defines a ``loss`` hook, in training mode
    (as it trains) and, for a model that draws random numbers in training, in eval mode.

    ``X [S, B, N, D]``, ``mask [S, B, N]``, ``y [S, B]``: one batch per member, member
    ``s`` on ``X[s]``. It runs on copies, so a model whose ``forward`` or ``loss`` updates
    its state (a running loss, a step counter) starts training as built. A model that
    draws random numbers (dropout, random instance masks: only one-bag models stack with
    them, ``compare_in_eval``) draws them in another order stacked than alone, so in
    training mode its stacked outputs are checked for shape only, and compared in eval mode.
    """
    S, B = mask.shape[:2]
    stacked, *members = copy.deepcopy((stacked, *members))  # one copy: keeps what they share
    folded = (X.reshape(S * B, *X.shape[2:]), mask.reshape(S * B, -1))
    modes = [True]
    if getattr(stacked, "compare_in_eval", False):
        modes.append(False)
    for training in modes:
        for module in (stacked, *members):
            module.train(training)
        compare = not training or not _draws_random(members[0], X[0], mask[0])
        with torch.no_grad():
            _check_outputs(stacked, members, X, mask, y, folded, compare)


def _draws_random(model: nn.Module, X: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whether two copies of ``model``, called on the same batch from different random
    states, differ (copies: a model that counts its calls is not random)."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        first = copy.deepcopy(model)(X, mask)
        torch.manual_seed(1)
        return not torch.equal(first, copy.deepcopy(model)(X, mask))


def _check_outputs(stacked: nn.Module, members: Sequence[nn.Module], X: torch.Tensor,
                   mask: torch.Tensor, y: torch.Tensor,
                   folded: tuple[torch.Tensor, torch.Tensor], compare: bool) -> None:
    S, B = mask.shape[:2]
    mode = "training" if stacked.training else "eval"
    own = _per_bag([member(X[s], mask[s]) for s, member in enumerate(members)], B, "forward")
    together = _run_stacked(lambda: stacked(*folded), "model", mode)
    _compare(together, own, "logits differ", "the model probably mixes bags "
             "or applies a layer to a tensor without a bag axis", mode, compare)
    if not callable(getattr(members[0], "loss", None)):
        return
    own = _per_bag([member.loss(X[s], mask[s], y[s]) for s, member in enumerate(members)],
                   B, "loss")
    together = _run_stacked(lambda: stacked.loss(*folded, y.reshape(S * B)), "model's loss",
                            mode)
    _compare(together, own, "loss differs", "the loss probably mixes bags (a "
             "batch-wide mean or sum) or reads a layer's parameters directly", mode, compare)


def _per_bag(values: list[object], B: int, hook: str) -> torch.Tensor:
    """The members' outputs, each ``[B]``, as ``[S, B]``; any other output leaves the seeds
    to be trained one by one, where the harness reports it."""
    for value in values:
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (B,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise NotStackable(f"the seeds' own models' {hook} returned {shape}, not one value "
                               f"per bag ({B},)")
    return torch.stack(values)


def _run_stacked(call: Callable[[], object], what: str, mode: str) -> object:
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - the members ran, so stacking broke it
        raise NotStackable(f"the stacked {what} failed where the seeds' own models ran "
                           f"({mode} mode): {type(error).__name__}: {error}") from error


def _compare(together: object, own: torch.Tensor, what: str, hint: str,
             mode: str = "training", values: bool = True) -> None:
    """Raise unless the stacked model's ``together [S*B]`` has the members' ``own [S, B]``
    shape and, with ``values``, equals it.

    ``what`` names the values with their verb ("logits differ").
    """
    S, B = own.shape
    noun = what.rsplit(" ", 1)[0]
    if not isinstance(together, torch.Tensor) or tuple(together.shape) != (S * B,):
        shape = tuple(together.shape) if isinstance(together, torch.Tensor) else type(together)
        raise NotStackable(f"the stacked model's {noun} had shape {shape}, not ({S * B},)")
    if not values:
        return
    gap = 0.0
    if own.numel():
        scale = own.abs().max().clamp(min=1.0)
        gap = float((together.view(S, B) - own).abs().max() / scale)
    if not gap <= CHECK_TOLERANCE:
        raise NotStackable(f"the stacked model's {what} from the seeds' own models by "
                           f"{gap:.2g} (relative) on the first batch in {mode} mode: {hint}")
