"""The model contract, checked on small random batches before any cell trains.

A verdict means something only if the model reads each bag as a set of its real
instances. Before training, every model (built-in, file, module, torchmil) is built once
from its own seed stream and called, as the harness will call it, on a few random bags of
sizes 1 to 16 in dimension D. Each property is a difference of logits, relative to their
scale; a difference above :data:`TOLERANCE` breaks it:

    output             every bag gets one finite logit (shape [B], no NaN or inf)
    padding            masked rows filled with +-1e3, and extra padding, change no logit
    bag independence   a bag's logit does not depend on the other bags of its batch, in
                       eval mode and in training mode (a batch norm over bags breaks it)
    determinism        two calls in eval mode give the same logits
    loss               a ``loss`` hook returns one finite loss per bag (a ``batch_loss``
                       one for the batch), unchanged by padding

A broken property makes every cell of that model an ``error`` naming the property and the
difference, without training. Instance order is checked and recorded, never an error:
some architectures read order by design (TransMIL's position encoding).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mil_assert.seeding import cpu_generator, seeded_global_rngs

TOLERANCE = 1e-4
"""Largest allowed logit difference relative to max(1, the largest logit): float32
rounding of these small models is about a thousand times smaller."""

SIZES = (1, 2, 3, 5, 8, 16)
"""Bag sizes of the check batch: the smallest bags break models that index top-k
instances or divide by a count; the largest holds more instances than a model's fixed
number of groups (DTFD-MIL's 8 pseudo-bags)."""

PADDING_VALUE = 1e3

PROPERTIES = ("output", "padding", "bag independence", "determinism", "loss")


@dataclass(frozen=True)
class ContractOutcome:
    """What the check found for one model.

    Attributes:
        broken: the first broken property (one of :data:`PROPERTIES`), or ``None``.
        message: what broke and by how much, or "ok".
        order_change: the largest relative logit change when instances are permuted
            (0 for a model that ignores order); ``None`` when the check did not get there.
    """

    broken: str | None
    message: str
    order_change: float | None

    @property
    def ok(self) -> bool:
        return self.broken is None

    @property
    def order_invariant(self) -> bool:
        return self.order_change is not None and self.order_change <= TOLERANCE

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "broken": self.broken, "message": self.message,
                "order_change": self.order_change}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContractOutcome:
        return cls(data.get("broken"), data.get("message", ""), data.get("order_change"))

    def summary(self) -> str:
        """One phrase for the line under the matrix."""
        if not self.ok:
            return f"broken: {self.message}"
        if self.order_invariant:
            return "ok"
        return (f"ok; instance order changes the logits by up to {self.order_change:.2g} "
                f"(allowed, recorded)")


class ContractBroken(Exception):
    def __init__(self, prop: str, message: str) -> None:
        super().__init__(f"{prop}: {message}")
        self.prop = prop


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(1.0, float(a.abs().max()), float(b.abs().max()))
    return float((a - b).abs().max()) / scale


def _batch(bags: list[torch.Tensor], width: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bags padded to ``width`` rows filled with ``fill``: ``X [B, width, D]``, ``mask``."""
    X = torch.full((len(bags), width, bags[0].shape[1]), fill)
    mask = torch.zeros(len(bags), width, dtype=torch.bool)
    for i, bag in enumerate(bags):
        X[i, :len(bag)] = bag
        mask[i, :len(bag)] = True
    return X, mask


def _logits(model: nn.Module, X: torch.Tensor, mask: torch.Tensor, what: str) -> torch.Tensor:
    try:
        out = model(X, mask)
    except Exception as error:  # noqa: BLE001 - any failure is the model's, reported as such
        raise ContractBroken("output", f"forward failed on {what}: "
                                       f"{type(error).__name__}: {error}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (X.shape[0],):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ContractBroken("output", f"expected logits of shape ({X.shape[0]},) on {what}, "
                                       f"got {shape}")
    out = out.detach().float()
    if not torch.isfinite(out).all():
        sizes = sorted({int(n) for n in mask.sum(1)[~torch.isfinite(out)]})
        raise ContractBroken("output", f"non-finite logits (NaN or inf) for bags of size "
                                       f"{', '.join(map(str, sizes))} on {what}")
    return out


def _compare(prop: str, a: torch.Tensor, b: torch.Tensor, what: str,
             quantity: str = "logits") -> None:
    gap = _gap(a, b)
    if gap > TOLERANCE:
        raise ContractBroken(prop, f"{what} changes the {quantity} by {gap:.3g} (relative; "
                                   f"allowed {TOLERANCE:g})")


def check_contract(model: nn.Module, dim: int, seed: int = 0) -> ContractOutcome:
    """Check ``model`` (already wrapped as the harness calls it) on random bags of ``dim``.

    The model is copied first, so its weights, buffers and training state are unchanged.
    """
    model = copy.deepcopy(model).cpu()
    generator = cpu_generator(seed, "contract/bags")
    bags = [torch.randn(n, dim, generator=generator) * 2 for n in SIZES]
    others = [torch.randn(n, dim, generator=generator) * 2 for n in reversed(SIZES)]
    width = max(SIZES)
    order_change = None
    try:
        with torch.no_grad():
            model.eval()
            X, mask = _batch(bags, width, 0.0)
            base = _logits(model, X, mask, "a batch of bags of sizes 1-16")
            for fill in (PADDING_VALUE, -PADDING_VALUE):
                X_pad, mask_pad = _batch(bags, width + 4, fill)
                _compare("padding", base, _logits(model, X_pad, mask_pad, "padded bags"),
                         f"filling masked rows with {fill:g}")
            alone = torch.cat([_logits(model, *_batch([bag], len(bag), 0.0), "one bag alone")
                               for bag in bags])
            _compare("bag independence", base, alone, "a bag's batch (alone vs together)")
            _compare("determinism", base, _logits(model, X, mask, "a second eval call"),
                     "calling the model twice in eval mode")
            permuted = [bag[torch.randperm(len(bag), generator=generator)] for bag in bags]
            order_change = _gap(base, _logits(model, *_batch(permuted, width, 0.0),
                                              "permuted bags"))
        _check_training_mode(model, bags, others, width, generator)
    except ContractBroken as broken:
        return ContractOutcome(broken.prop, str(broken) + _fix(model, broken), order_change)
    return ContractOutcome(None, "ok", order_change)


_ONE_BAG_HOW = ('ModelSpec(..., input="bag1") for forward(x [1, N, D]) or input="bag" for '
                'forward(x [N, D]); on the command line, file.py:factory@input=bag1')


def _fix(model: nn.Module, broken: ContractBroken) -> str:
    """The option that judges a model written for one bag per call, where the breakage
    looks like one: a batched call it cannot take, or padding it reads."""
    if getattr(model, "input", "batch") != "batch":
        return ""
    message = str(broken)
    if broken.prop == "output" and "TypeError" in message and "argument" in message:
        return ("; if forward takes one bag per call (x [N, D] or [1, N, D]) and no mask, "
                f"judge it one bag at a time: {_ONE_BAG_HOW}")
    if broken.prop == "padding":
        return ("; a model that takes no mask, or reads every row it is given, is judged one "
                f"unpadded bag at a time: {_ONE_BAG_HOW}")
    return ""


def _check_training_mode(model: nn.Module, bags: list[torch.Tensor],
                         others: list[torch.Tensor], width: int,
                         generator: torch.Generator) -> None:
    """Bag independence in training mode, and the loss hook.

    Two training-mode batches share their first bags; their other bags are replaced by
    new bags *of the same sizes*. Both calls start from the same global random state, so
    a model that draws random numbers (dropout, random instance masking) draws the same
    ones in both, batched or one bag at a time (same shapes, same order): only the other
    bags' values differ, and a bag's logit changes only if it reads them.
    """
    model.train()
    half = len(bags) // 2
    replaced = [torch.randn(len(bag), bag.shape[1], generator=generator) * 2
                for bag in others[half:]]
    first = bags[:half] + others[half:]
    second = bags[:half] + replaced

    def seeded(fn, *args):
        with seeded_global_rngs(0, "contract/train"):
            return fn(*args)

    with torch.no_grad():
        a = seeded(_logits, model, *_batch(first, width, 0.0), "a training-mode batch")
        b = seeded(_logits, model, *_batch(second, width, 0.0), "a training-mode batch")
    _compare("bag independence", a[:half], b[:half],
             "in training mode, replacing the other bags of the batch by bags of the same "
             "sizes")
    per_bag = callable(getattr(model, "loss", None))
    name = "loss" if per_bag else "batch_loss"
    loss = getattr(model, name, None)
    if not callable(loss):
        return
    y = (torch.arange(len(bags)) % 2).float()
    try:
        plain = seeded(loss, *_batch(bags, width, 0.0), y)
        padded = seeded(loss, *_batch(bags, width + 4, PADDING_VALUE), y)
    except Exception as error:  # noqa: BLE001
        raise ContractBroken("loss", f"the {name} hook failed: {type(error).__name__}: "
                                     f"{error}") from None
    shape = (len(bags),) if per_bag else ()
    if not isinstance(plain, torch.Tensor) or tuple(plain.shape) != shape:
        got = tuple(plain.shape) if isinstance(plain, torch.Tensor) else type(plain).__name__
        what = "one loss per bag" if per_bag else "one loss for the mini-batch"
        raise ContractBroken("loss", f"the {name} hook must return {what}, shape {shape}, "
                                     f"got {got}")
    if not torch.isfinite(plain.detach()).all():
        raise ContractBroken("loss", f"the {name} hook returned non-finite losses")
    _compare("loss", plain.detach(), padded.detach(), "filling masked rows with 1e3",
             "per-bag losses" if per_bag else "mini-batch loss")
