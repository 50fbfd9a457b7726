"""Call a model as its authors wrote it, and read one logit per bag from what it returns.

The harness speaks one contract: ``model(X [B, N, D], mask [B, N]) -> logits [B]``.
:class:`BagLogits` wraps every model so that published code meets it unmodified:

Input (``ModelSpec.input``):
    ``"batch"``: ``forward(X [B, N, D], mask [B, N])``, padded bags with a mask (default).
    ``"bag"``: ``forward(x [N, D])``, one unpadded bag per call (CLAM's ``forward(h)``).
    ``"bag1"``: ``forward(x [1, N, D])``, one unpadded bag with a batch axis of 1 (Ilse et
    al.'s attention MIL, TransMIL, torchmil's ``TransMIL``); a ``forward`` that also takes
    a ``mask`` gets an all-True ``[1, N]`` one.
    One-bag models see each bag without padding. Bags of one size run together through
    ``torch.func.vmap`` where the model allows it, else one by one; either way a training
    step's loss is the mean over the mini-batch's bags, as for a batched model.

Output, the one rule (``ModelSpec.output``, ``positive_class``, ``output_key``):
    1. the scores: the tensor returned; of a tuple or list, item ``output_key`` (default
       0); of a dict, entry ``output_key`` (default ``"logits"``).
    2. per bag, a score vector of C classes: shape ``[B]`` or ``[B, 1]`` (one bag: ``[]``,
       ``[1]``, ``[1, 1]``) is C = 1; ``[B, C]`` (one bag: ``[1, C]``) is C classes.
    3. one logit: C = 1 is the logit; C = 2 is ``z1 - z0``, the log-odds of class 1;
       C > 2 needs ``positive_class`` c and gives ``z_c - logsumexp(z_others)``, the
       log-odds of class c against the rest (``positive_class`` also picks class 0 of two).
    4. with ``output="probability"`` the scores are probabilities: C = 1 is P(positive),
       C >= 2 gives ``p_c`` (c = 1 by default); the logit is ``log(p / (1 - p))`` with
       ``p`` clamped to [1e-6, 1 - 1e-6].
    Anything else (a shape without one score vector per bag, a missing key, more than
    two classes without ``positive_class``) raises :class:`OutputError` saying what to set.

A model's own ``loss(X, mask, y) -> [B]`` hook is kept (batch input). A torchmil-style
``compute_loss(Y, X, mask) -> (Y_pred, {name: loss})`` is the loss (see
:func:`per_bag_losses`): each bag's binary cross-entropy on the logit read from
``Y_pred``, plus every auxiliary term the model returns, so each seed's mean loss is
torchmil's total loss. A one-bag model's ``compute_loss`` is called bag by bag when it
has auxiliary terms.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mil_assert.one_bag import BagMap, OneBagSeeds, vmap_enabled

INPUTS = ("batch", "bag", "bag1")
OUTPUTS = ("logit", "probability")
PROBABILITY_CLAMP = 1e-6


class OutputError(ValueError):
    """The model's output cannot be read as one logit per bag without guessing."""


def select_scores(out: Any, output_key: str | int | None) -> torch.Tensor:
    """Step 1 of the output rule: the tensor of scores in what ``forward`` returned."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        key = "logits" if output_key is None else output_key
        if key not in out:
            raise OutputError(f"forward returned a dict with keys {sorted(map(str, out))} and "
                              f"no {key!r}; name the entry holding the scores with output_key")
        scores = out[key]
    elif isinstance(out, Sequence) and not isinstance(out, str):
        index = 0 if output_key is None else output_key
        if not isinstance(index, int) or not -len(out) <= index < len(out):
            raise OutputError(f"forward returned a {type(out).__name__} of {len(out)} items; "
                              f"output_key={index!r} is not an index of it")
        scores = out[index]
    else:
        raise OutputError(f"forward returned a {type(out).__name__}; return bag logits [B], or "
                          f"a tuple or dict holding them")
    if not isinstance(scores, torch.Tensor):
        raise OutputError(f"the scores selected from forward's output (output_key="
                          f"{output_key!r}) are a {type(scores).__name__}, not a tensor; name "
                          f"the item holding them with output_key")
    return scores


def class_scores(scores: torch.Tensor, bags: int, one_bag: bool) -> torch.Tensor:
    """Step 2: ``[bags, C]`` from the shapes the rule accepts."""
    shape = tuple(scores.shape)
    if one_bag and scores.dim() <= 1 and scores.numel() == 1:
        return scores.reshape(1, 1)
    if scores.dim() == 1 and not one_bag and shape[0] == bags:
        return scores[:, None]
    if scores.dim() == 2 and shape[0] == bags:
        return scores
    if one_bag and scores.numel() > 1 and (scores.dim() == 1 or shape[-1] == 1):
        raise OutputError(f"forward returned {scores.numel()} scores for one bag (shape "
                          f"{shape}): these look like instance scores, not a bag score; "
                          f"pool them into one logit in forward (for example their "
                          f"maximum), or return [1, C] class scores")
    expected = "[], [1], [1, 1] or [1, C]" if one_bag else f"[B], [B, 1] or [B, C] with B = {bags}"
    raise OutputError(f"cannot read one score vector per bag from shape {shape}: expected "
                      f"{expected}; if forward returns several tensors, name the bag scores "
                      f"with output_key")


def bag_logits(out: Any, bags: int, *, one_bag: bool = False, output: str = "logit",
               positive_class: int | None = None, output_key: str | int | None = None,
               ) -> torch.Tensor:
    """The output rule (module docstring): one logit per bag, ``[bags]``."""
    if (isinstance(out, torch.Tensor) and output == "logit" and not one_bag
            and tuple(out.shape) == (bags,)):
        return out  # already the contract's logits: nothing to read (the training hot path)
    scores = class_scores(select_scores(out, output_key), bags, one_bag)
    classes = scores.shape[1]
    if positive_class is not None and not 0 <= positive_class < max(classes, 2):
        raise OutputError(f"positive_class={positive_class} but the model returns {classes} "
                          f"class score(s)")
    if output == "probability":
        column = 0 if classes == 1 else (1 if positive_class is None else positive_class)
        if classes > 2 and positive_class is None:
            raise OutputError(f"the model returns {classes} class probabilities; name the "
                              f"positive class with positive_class")
        p = scores[:, column].clamp(PROBABILITY_CLAMP, 1 - PROBABILITY_CLAMP)
        return torch.log(p) - torch.log1p(-p)
    if classes == 1:
        return scores[:, 0]
    if classes > 2 and positive_class is None:
        raise OutputError(f"the model returns {classes} class logits; name the positive class "
                          f"with positive_class (its log-odds against the rest is the bag "
                          f"logit); if these are not class scores, return one logit per bag")
    c = 1 if positive_class is None else positive_class
    others = torch.cat([scores[:, :c], scores[:, c + 1:]], dim=1)
    if classes == 2:
        return scores[:, c] - others[:, 0]
    return scores[:, c] - torch.logsumexp(others, dim=1)


def _takes_mask(function: Any) -> bool:
    try:
        return "mask" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def torchmil_style_loss(module: nn.Module) -> bool:
    """Whether ``module`` has a ``compute_loss(Y, X, mask)`` in torchmil's convention."""
    method = getattr(module, "compute_loss", None)
    if not callable(method):
        return False
    try:
        names = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return False
    return names[:2] == ["Y", "X"]


class BagLogits(nn.Module):
    """A model as its authors wrote it, seen through the harness's contract.

    ``forward(X [B, N, D], mask [B, N]) -> logits [B]``; see the module docstring for how
    the wrapped ``model`` is called and how its output is read.
    """

    def __init__(self, model: nn.Module, input: str = "batch", output: str = "logit",
                 positive_class: int | None = None, output_key: str | int | None = None,
                 ) -> None:
        super().__init__()
        if input not in INPUTS:
            raise ValueError(f"input={input!r}: use one of {INPUTS}")
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}: use one of {OUTPUTS}")
        self.model = model
        self.input, self.output = input, output
        self.positive_class, self.output_key = positive_class, output_key
        self.bag_map = BagMap()
        # a one-bag [1, N, D] model whose forward takes a mask gets an all-True one
        self._full_mask = input == "bag1" and _takes_mask(model.forward)

    @property
    def vmap_fallback(self) -> str | None:
        """The steps down from vmap its bags took (:mod:`mil_assert.one_bag`), or ``None``."""
        return self.bag_map.fallback

    def logits(self, out: Any, bags: int, one_bag: bool = False) -> torch.Tensor:
        return bag_logits(out, bags, one_bag=one_bag, output=self.output,
                          positive_class=self.positive_class, output_key=self.output_key)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.input == "batch":
            return self.logits(self.model(X, mask), X.shape[0])
        return self.bag_map(self._one_bag, X, mask)

    def one_bag_args(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """How the model takes one unpadded bag ``x [N, D]``."""
        if self.input == "bag":
            return (x,)
        if self._full_mask:
            return x[None], torch.ones(1, x.shape[0], dtype=torch.bool, device=x.device)
        return (x[None],)

    def _one_bag(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of one unpadded bag ``x [N, D]`` -> ``[]``."""
        return self.logits(self.model(*self.one_bag_args(x)), 1, one_bag=True)[0]

    @classmethod
    def stacked(cls, members: Sequence[BagLogits]) -> nn.Module:
        from mil_assert.stacking import NotStackable, stack_models

        first = members[0]
        if first.input == "batch":
            return cls(stack_models([m.model for m in members]), first.input, first.output,
                       first.positive_class, first.output_key)
        from mil_assert.procedure import CALLBACKS, defined_hooks

        own = [name for name in defined_hooks(first) if name in (*CALLBACKS, "lr_factor")]
        if not vmap_enabled():
            raise NotStackable("vmap is off (mil-assert benchmark's per-bag loop)")
        if own or isinstance(first, BagLogitsTorchmilLoss):
            why = (f"its {', '.join(own)} hook(s) act on its own parameters" if own else
                   "its compute_loss is called bag by bag")
            raise NotStackable(f"a one-bag model (input={first.input!r}) trains its seeds "
                               f"one by one: {why}")
        return OneBagSeedsLogits(members)


class OneBagSeedsLogits(nn.Module):
    """The seeds of a one-bag model trained as one (:class:`mil_assert.one_bag.OneBagSeeds`),
    seen through the harness's contract: ``forward(X [S*B, N, D], mask) -> [S*B]``, and
    ``loss(X, mask, y) -> [S*B]`` when the model has a per-bag ``loss(x, y)`` hook."""

    compare_in_eval = True
    """The stacking check also compares it with the seeds' own models in eval mode: in
    training mode they draw their random numbers in another order, so there only its
    outputs' shapes are checked when the model draws any."""

    def __init__(self, members: Sequence[BagLogits]) -> None:
        super().__init__()
        self.seeds_model = OneBagSeeds([m.model for m in members])
        self._reader = [members[0]]  # reads outputs as the members do; not trained itself

    @property
    def vmap_fallback(self) -> str | None:
        """The steps down from nested vmap its seeds' bags took, or ``None``."""
        return self.seeds_model.ladder.fallback

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        reader = self._reader[0]

        def logit(call: Any, x: torch.Tensor) -> torch.Tensor:
            return reader.logits(call(*reader.one_bag_args(x)), 1, one_bag=True)[0]

        return self.seeds_model.map("forward", logit, X, mask)

    def __getattr__(self, name: str) -> Any:
        if name == "loss" and isinstance(self._reader[0], BagLogitsWithLoss):
            return self._loss
        return super().__getattr__(name)

    def _loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reader = self._reader[0]

        def bag_loss(call: Any, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return call(*reader.one_bag_args(x), label).reshape(())

        return self.seeds_model.map("loss", bag_loss, X, mask, y)


class BagLogitsWithLoss(BagLogits):
    """:class:`BagLogits` of a model with its own per-bag ``loss`` hook: ``loss(X, mask, y)
    -> [B]`` (batched) or ``loss(x, y) -> []`` (one bag, ``x`` as ``forward`` takes it)."""

    def loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.input == "batch":
            return self.model.loss(X, mask, y)
        return self.bag_map(self._one_bag_loss, X, mask, y)

    def _one_bag_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.model.loss(*self.one_bag_args(x), y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise OutputError(f"a one-bag model's loss(x, y) must return the bag's loss, "
                              f"shape [], got {shape}")
        return loss.reshape(())


class BagLogitsBatchLoss(BagLogits):
    """:class:`BagLogits` of a model with a loss over a mini-batch's bags: ``batch_loss(X,
    mask, y) -> []`` (batched) or ``batch_loss(bags, y) -> []`` (one-bag, ``bags`` the list
    of the batch's bags as ``forward`` takes them)."""

    def batch_loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.input == "batch":
            return self.model.batch_loss(X, mask, y)
        bags = [self.one_bag_args(X[b, mask[b]])[0] for b in range(X.shape[0])]
        return self.model.batch_loss(bags, y)

    @classmethod
    def stacked(cls, members: Sequence[BagLogits]) -> nn.Module:
        from mil_assert.stacking import NotStackable

        raise NotStackable("the model's batch_loss couples the bags of a mini-batch, so its "
                           "seeds train one by one")


class BagLogitsTorchmilLoss(BagLogits):
    """:class:`BagLogits` of a model trained by its torchmil-style ``compute_loss``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._auxiliary: bool | None = None  # one-bag input: does compute_loss add terms?

    def loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.input == "batch":
            prediction, terms = self.model.compute_loss(y, X, mask)
            return per_bag_losses(self.logits(prediction, X.shape[0]), y, terms)
        if self._auxiliary is None:
            _, terms = self.model.compute_loss(y[:1], *self.one_bag_args(X[0, mask[0]]))
            self._auxiliary = len(terms) > 1
        if not self._auxiliary:  # only the classification loss: run the bags together
            return F.binary_cross_entropy_with_logits(self(X, mask), y, reduction="none")
        return self.bag_map(self._one_bag_terms, X, mask, y)

    def _one_bag_terms(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One bag's total loss, as torchmil trains one bag: the sum of its terms."""
        _, terms = self.model.compute_loss(y[None], *self.one_bag_args(x))
        return sum(terms.values()).reshape(())


MAIN_TERM_TOLERANCE = 1e-5


def per_bag_losses(logits: torch.Tensor, y: torch.Tensor,
                   terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[B]`` losses from a batch's ``compute_loss`` terms (scalars, batch means).

    The term that equals the batch mean of binary cross-entropy on ``logits`` is the
    classification loss: it is replaced by each bag's own cross-entropy. Every other term
    (an auxiliary loss) is added to every bag, so the mean over the bags is the model's
    total loss. If no term is that cross-entropy, every bag gets the total.
    """
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    mean = bce.mean().detach()
    main = next((name for name, term in terms.items()
                 if abs(float(term.detach()) - float(mean))
                 <= MAIN_TERM_TOLERANCE * max(1.0, abs(float(mean)))), None)
    if main is None:
        return sum(terms.values()) * torch.ones_like(bce)
    others = [term for name, term in terms.items() if name != main]
    return bce + sum(others) if others else bce


def adapt(model: nn.Module, input: str = "batch", output: str = "logit",
          positive_class: int | None = None, output_key: str | int | None = None) -> BagLogits:
    """``model`` wrapped in the :class:`BagLogits` that fits its loss hook, if any."""
    if callable(getattr(model, "batch_loss", None)):
        if callable(getattr(model, "loss", None)):
            raise ValueError(f"{type(model).__name__} defines both loss (per bag) and "
                             f"batch_loss (over a mini-batch); define one of them")
        kind: type[BagLogits] = BagLogitsBatchLoss
    elif callable(getattr(model, "loss", None)):
        kind = BagLogitsWithLoss
    elif torchmil_style_loss(model):
        kind = BagLogitsTorchmilLoss
    else:
        kind = BagLogits
    return kind(model, input, output, positive_class, output_key)
