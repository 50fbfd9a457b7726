"""Small models for the suite's own tests, and an example of a user's model file.

Run one from the repository root with, e.g.::

    pytest --model=tests/toy_models.py:instance_max

A factory is any callable ``factory(dim) -> nn.Module``; a ``ModelSpec`` may also carry a
budget override and declared verdicts. The specs here shrink the budget so the suite's
self-tests run in seconds; their verdicts are not measurements of anything.
"""

from __future__ import annotations

import torch
from torch import nn

from mil_assert.registry import Expected, ModelSpec

TINY_BUDGET = {"n_train_bags": 64, "n_eval_bags": 64, "epochs": 3}


class InstanceMax(nn.Module):
    """A linear instance score, max-pooled: ``[B, N, D] -> [B]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.score(X).squeeze(-1).masked_fill(~mask, -1e9).amax(dim=1)


class WrongShape(InstanceMax):
    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logit = super().forward(X, mask)
        return torch.stack([logit, -logit, logit], dim=1)  # 3 classes, none named positive


class Raises(InstanceMax):
    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this model is broken on purpose")


class ReturnsNaN(InstanceMax):
    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return super().forward(X, mask) * torch.nan


def instance_max(dim: int) -> nn.Module:
    """A plain factory: judged with the default budget and no declarations."""
    return InstanceMax(dim)


tiny_max = ModelSpec(name="tiny_max", factory=InstanceMax, budget=TINY_BUDGET)
wrong_shape = ModelSpec(name="wrong_shape", factory=WrongShape, budget=TINY_BUDGET)
raises = ModelSpec(name="raises", factory=Raises, budget=TINY_BUDGET)
returns_nan = ModelSpec(name="returns_nan", factory=ReturnsNaN, budget=TINY_BUDGET)


class LowestInstance(nn.Module):
    """A fixed shortcut: the bag logit is its lowest instance mean, so the poison
    (N(-10, 0.1)) means "negative". It has one unused parameter so it can be "trained"."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lowest = X.mean(dim=-1).masked_fill(~mask, float("inf")).amin(dim=1)
        return lowest + 0.0 * self.unused


shortcut = ModelSpec(
    name="shortcut", factory=LowestInstance, budget=TINY_BUDGET,
    expected={"single_concept": Expected("violation", "the poison marks negatives by design")},
)
shortcut_undeclared = ModelSpec(name="shortcut_undeclared", factory=LowestInstance,
                                budget=TINY_BUDGET)
shortcut_declared_pass = ModelSpec(
    name="shortcut_declared_pass", factory=LowestInstance, budget=TINY_BUDGET,
    expected={"single_concept": Expected("pass", "a wrong declaration, to see it fail")},
)


class CriterionMax(InstanceMax):
    """Like torchmil's models, keeps its loss as a submodule (``self.criterion``) and calls
    it from the ``loss`` hook, here with one loss per bag (``reduction="none"``)."""

    def __init__(self, dim: int, pos_weight: float | None = None) -> None:
        super().__init__(dim)
        weight = None if pos_weight is None else torch.tensor(pos_weight)
        self.criterion = nn.BCEWithLogitsLoss(reduction="none", pos_weight=weight)

    def loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(self(X, mask), y)


class MeanCriterionMax(InstanceMax):
    """A torchmil-style model with the default (mean) criterion and torchmil's
    ``compute_loss``; its ``loss`` hook applies the criterion bag by bag, as torchmil's
    one-bag batches do, to return one loss per bag."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.criterion = nn.BCEWithLogitsLoss()

    def compute_loss(self, Y: torch.Tensor, X: torch.Tensor,
                     mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        Y_pred = self(X, mask)
        return Y_pred, {"BCEWithLogitsLoss": self.criterion(Y_pred.float(), Y.float())}

    def loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self(X, mask)
        return torch.stack([self.criterion(logit, target)
                            for logit, target in zip(logits, y, strict=True)])


class LeaksPadding(InstanceMax):
    """Mean pooling over every row, padding included: the mask is ignored."""

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.score(X).squeeze(-1).mean(dim=1)


class BatchNormOverBags(nn.Module):
    """Max-pooled embeddings normalised over the bags of the batch: bags mix in training."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, 8)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 1)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = self.embed(X).masked_fill(~mask[..., None], -1e9).amax(dim=1)  # [B, 8]
        return self.head(self.norm(pooled)).squeeze(-1)


class NaNForOneInstance(InstanceMax):
    """Pools with a standard deviation over the instances: NaN for a bag of one."""

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(X).squeeze(-1)
        n = mask.sum(dim=1)
        mean = (scores * mask).sum(dim=1) / n
        variance = (((scores - mean[:, None]) * mask) ** 2).sum(dim=1) / (n - 1)
        return mean + 0.1 * variance.sqrt()


leaks_padding = ModelSpec(name="leaks_padding", factory=LeaksPadding, budget=TINY_BUDGET)
mixes_bags = ModelSpec(name="mixes_bags", factory=BatchNormOverBags, budget=TINY_BUDGET)
nan_for_one = ModelSpec(name="nan_for_one", factory=NaNForOneInstance, budget=TINY_BUDGET)


class OneBagDropoutAttention(nn.Module):
    """Ilse-style attention MIL in the authors' style, one bag ``x [1, N, D]`` per call,
    with dropout on the instance embeddings: random, but each bag read alone."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Dropout(0.25))
        self.attention = nn.Linear(16, 1)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H = self.embed(x[0])  # [N, 16]
        A = torch.softmax(self.attention(H).squeeze(-1), dim=0)  # [N]
        return self.head(A @ H)  # [1]


class RemembersLastBag(OneBagDropoutAttention):
    """One bag per call, but in training mode it adds the previous bag's mean embedding to
    this one's: a bag's logit depends on the bag seen before it."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.register_buffer("last", torch.zeros(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H = self.embed(x[0])
        out = self.head(H.mean(0) + self.last)
        if self.training:
            self.last = H.mean(0).detach()
        return out


one_bag_dropout = ModelSpec(name="one_bag_dropout", factory=OneBagDropoutAttention,
                            input="bag1", budget=TINY_BUDGET)
remembers_last_bag = ModelSpec(name="remembers_last_bag", factory=RemembersLastBag,
                               input="bag1", budget=TINY_BUDGET)


class LeaksPaddingSlightly(InstanceMax):
    """Max pooling plus a 1e-5 share of the mean over every row, padding included: the
    leak moves the logits by about 1e-3, between the contract's tolerance and 0.5."""

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return super().forward(X, mask) + 1e-5 * self.score(X).squeeze(-1).mean(dim=1)


class MixesBagsSlightly(InstanceMax):
    """In training mode adds 1e-3 of the batch's mean logit to every bag's."""

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = super().forward(X, mask)
        return logits + 1e-3 * logits.mean() if self.training else logits


leaks_padding_slightly = ModelSpec(name="leaks_padding_slightly", factory=LeaksPaddingSlightly,
                                   budget=TINY_BUDGET)
mixes_bags_slightly = ModelSpec(name="mixes_bags_slightly", factory=MixesBagsSlightly,
                                budget=TINY_BUDGET)


class ReadsAPythonNumber(OneBagDropoutAttention):
    """One bag per call, with ``.item()`` in forward, which ``torch.func.vmap`` cannot run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if x.abs().max().item() < 1e6 else 0.0
        return super().forward(x) * scale


reads_a_python_number = ModelSpec(name="reads_a_python_number", factory=ReadsAPythonNumber,
                                  input="bag1", budget=TINY_BUDGET)


class RandomMaskInPlace(nn.Module):
    """One bag ``x [1, N, D]`` per call; in training it weighs the instances at random
    through an in-place ``scatter_`` on a fresh tensor (as ACMIL's instance masking writes
    its mask), which ``torch.func.vmap`` cannot run after it has drawn the numbers."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.score(x[0]).squeeze(-1)  # [N]
        if self.training:  # random instance weights, written in place into a fresh tensor
            weights = torch.ones(scores.shape[0])
            weights.scatter_(0, torch.arange(scores.shape[0]), torch.rand(scores.shape[0]))
            scores = scores * weights
        return self.head(torch.softmax(scores, 0) @ x[0])


random_mask_in_place = ModelSpec(name="random_mask_in_place", factory=RandomMaskInPlace,
                                 input="bag1", budget=TINY_BUDGET)


class OneConceptMax(nn.Module):
    """Learns one concept of a two-concept rule, by construction: the instance score is
    high on concept A only (minus the mean squared distance to A's mean, 2 in every
    dimension: about -0.01 on A, -1 on B, -5 on background, -144 on the poison), frozen;
    the bag logit is its maximum over the bag through a trainable increasing affine map.

    On ``threshold_poisoned`` and ``false_frequency`` (positive iff A and B) it ranks
    validation bags as the best rule of one concept does (AUC 0.82 and 0.75): the verdict
    rule must not count it as having learned the test's rule. Set-monotone, it keeps that
    ranking under ``threshold_poisoned``'s shift (the poison cannot lower a maximum); on
    ``false_frequency``'s test bags a negative's maximum over 35-44 draws of A beats a
    positive's one draw (the extreme-value effect), and its test AUC falls to about 0.53.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("centre", torch.full((dim,), 2.0))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        score = -((X - self.centre) ** 2).mean(dim=-1)  # [B, N]
        return self.log_scale.exp() * score.masked_fill(~mask, -1e9).amax(dim=1) + self.bias


one_concept = ModelSpec(name="one_concept", factory=OneConceptMax,
                        budget={"n_train_bags": 32, "epochs": 1})
"""Judged on the default 500 validation bags, so each seed's AUC has the precision the
verdict rule's thresholds assume; training is one epoch of 32 bags (only the affine map
trains)."""


class Constant(nn.Module):
    """Learns nothing: every bag's logit is 0 (one unused parameter, so it "trains")."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return X.new_zeros(X.shape[0]) + 0.0 * self.unused


constant = ModelSpec(name="constant", factory=Constant, budget=TINY_BUDGET)
"""Every cell inconclusive, every seed unlearned: the gate's "learned nothing" (exit 6)."""
