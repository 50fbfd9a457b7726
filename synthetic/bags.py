"""Padded bag tensors and the vectorised bag assembler shared by every generator.

A data set of bags is stored padded: ``X [bags, max_n, D]``, a boolean ``mask
[bags, max_n]`` (True = real instance), bag labels ``y [bags]`` and instance labels
``instance_labels [bags, max_n]``. Instance labels: ``0`` background, ``-1`` poison,
``1`` concept instance (for two-concept tests ``1`` is concept A and ``2`` concept B).
Padded positions hold zeros and label ``0``; only ``mask`` tells them apart.

What holds at any instance dimension D (``--mil-dim``). Every distribution is per
dimension, so no parameter depends on D and the bag-level rules (which instances make a
bag positive, where the poison is, how many copies a test negative holds) are the same
at every D; only how far apart the instance kinds lie grows, as sqrt(D):

- concept A N(2, 0.1), concept B N(3, 0.1) and the poison N(-10, 0.1) lie along the
  all-ones direction, at 2 sqrt(D), 3 sqrt(D) and -10 sqrt(D) from the origin; background
  N(0, 1) projects onto that direction as N(0, 1). Background reaches half-way to A with
  probability 2e-3 at D = 8 and 3e-5 at D = 16, so every concept and the poison can be
  told from background at every D >= 8; A and B lie sqrt(D) apart with spread 0.1.
- ``single_concept``'s wide concept N(0, 3) differs from background in scale only: 2.7%
  of its instances fall inside the background's 99th percentile of squared norm at
  D = 8, 0.05% at D = 16, none from D = 32. Its narrow concept N(1, 1) overlaps background
  along the all-ones direction with probability Phi(-sqrt(D) / 2): 7.9% at D = 8, 2.3% at
  16, 0.2% at 32, 0 from 64. The concept is learnable at every D >= 8; from D = 32 it is
  linearly separable in practice.
- The shortcut each test plants (the poison, the count of concept copies, absence) is
  exactly as available at every D; what changes is how easily a model finds the concept,
  so verdicts at another D than the default 16 are measurements of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

BACKGROUND = 0
POISON = -1
CONCEPT_A = 1
CONCEPT_B = 2


@dataclass(frozen=True)
class Component:
    """One instance distribution: N(mean, std) in every dimension, with its instance label."""

    label: int
    mean: float
    std: float


BACKGROUND_NOISE = Component(BACKGROUND, 0.0, 1.0)
POISON_NOISE = Component(POISON, -10.0, 0.1)
CONCEPT_A_NOISE = Component(CONCEPT_A, 2.0, 0.1)
CONCEPT_B_NOISE = Component(CONCEPT_B, 3.0, 0.1)


@dataclass(frozen=True)
class Bags:
    """A padded set of bags.

    Attributes:
        X: float32 ``[bags, max_n, D]`` instance features, zero where padded.
        mask: bool ``[bags, max_n]``, True for real instances.
        y: float32 ``[bags]`` bag labels in {0, 1}.
        instance_labels: int64 ``[bags, max_n]`` (see module docstring), 0 where padded.
    """

    X: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor
    instance_labels: torch.Tensor

    def __len__(self) -> int:
        return self.X.shape[0]

    @property
    def sizes(self) -> torch.Tensor:
        """int64 ``[bags]``: number of real instances per bag."""
        return self.mask.sum(dim=1)

    def count(self, label: int) -> torch.Tensor:
        """int64 ``[bags]``: number of real instances with ``label`` per bag."""
        return ((self.instance_labels == label) & self.mask).sum(dim=1)

    def to(self, device: torch.device | str) -> Bags:
        return Bags(
            self.X.to(device),
            self.mask.to(device),
            self.y.to(device),
            self.instance_labels.to(device),
        )


@dataclass(frozen=True)
class Splits:
    """The three sets of one algorithmic unit test.

    ``train`` and ``val`` come from the training distribution (``val`` is drawn fresh,
    to tell learning from memorising); ``test`` comes from the shifted test distribution.
    """

    train: Bags
    val: Bags
    test: Bags

    def to(self, device: torch.device | str) -> Splits:
        return Splits(self.train.to(device), self.val.to(device), self.test.to(device))


def assemble_bags(
    parts: Sequence[tuple[Component, torch.Tensor]],
    y: torch.Tensor,
    dim: int,
    generator: torch.Generator,
) -> Bags:
    """Build padded bags from per-bag instance counts, with no per-bag Python loop.

    Args:
        parts: ``(component, counts)`` pairs; ``counts`` is int64 ``[bags]``, how many
            instances of that component each bag holds.
        y: bag labels ``[bags]``.
        dim: instance dimension D.
        generator: CPU generator; it draws the within-bag order, then the features.

    Returns:
        :class:`Bags` whose instances are shuffled within each bag (no positional cue)
        and whose bags are shuffled among themselves (no class order).
    """
    counts = torch.stack([c for _, c in parts], dim=1)  # [bags, parts]
    n_bags = counts.shape[0]
    sizes = counts.sum(dim=1)
    max_n = int(sizes.max())
    position = torch.arange(max_n).expand(n_bags, max_n)
    mask = position < sizes[:, None]
    # Slot j of a bag belongs to the first part whose cumulative count exceeds j.
    part_of_slot = torch.searchsorted(counts.cumsum(dim=1), position.contiguous(), right=True)
    part_of_slot = part_of_slot.clamp(max=len(parts) - 1)
    # Shuffle real slots within each bag; padding sorts last.
    keys = torch.rand(n_bags, max_n, generator=generator).masked_fill(~mask, 2.0)
    part_of_slot = part_of_slot.gather(1, keys.argsort(dim=1))

    labels = torch.tensor([comp.label for comp, _ in parts])
    means = torch.tensor([comp.mean for comp, _ in parts])
    stds = torch.tensor([comp.std for comp, _ in parts])
    X = torch.randn(n_bags, max_n, dim, generator=generator)  # in place: at D = 1024 one
    X.mul_(stds[part_of_slot][..., None]).add_(means[part_of_slot][..., None])  # copy is
    X.masked_fill_(~mask[..., None], 0.0)  # 108 MiB (false_frequency's test set)
    instance_labels = labels[part_of_slot].masked_fill(~mask, 0)

    order = torch.randperm(n_bags, generator=generator)
    return Bags(
        X[order].contiguous(),
        mask[order].contiguous(),
        y[order].to(torch.float32),
        instance_labels[order].contiguous(),
    )


def balanced_labels(n_bags: int) -> torch.Tensor:
    """int64 ``[n_bags]``: ``n_bags // 2`` positives first, then negatives (shuffled later)."""
    n_pos = n_bags // 2
    return torch.cat([torch.ones(n_pos), torch.zeros(n_bags - n_pos)]).long()


def uniform_int(low: int, high: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """int64 ``[n]`` drawn uniformly from ``{low, ..., high}`` (both ends included)."""
    return torch.randint(low, high + 1, (n,), generator=generator)


def check_params(dim: int, n_train: int, n_eval: int, **counts: int) -> None:
    """Raise ``ValueError`` naming the first invalid generator parameter."""
    for name, value in {"dim": dim, "n_train": n_train, "n_eval": n_eval, **counts}.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if dim < 1:
        raise ValueError(f"dim (the instance dimension D) must be at least 1, got {dim}")
    for name, value in {"n_train": n_train, "n_eval": n_eval}.items():
        if value < 2:
            raise ValueError(f"{name} must be at least 2 bags (one per class), got {value}")
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")


def background_range(min_background: int, max_background: int) -> tuple[int, int]:
    """``(min_background, max_background)``, checked: background instances per bag are
    drawn from U{min_background, ..., max_background}, at least one."""
    check_params(1, 2, 2, min_background=min_background, max_background=max_background)
    if not 1 <= min_background <= max_background:
        raise ValueError(f"background counts must satisfy 1 <= min_background <= "
                         f"max_background, got {min_background} and {max_background}")
    return min_background, max_background
