"""What an algorithmic unit test is: a generator plus how its outcome is read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from mil_assert.synthetic.bags import Splits

# "shift": the test distribution moves a shortcut that fits the training data; a model that
#   learned the shortcut loses its ranking (or inverts it) on the test set.
# "unlearnable": no MIL-respecting model can represent the training rule; learning it is
#   the violation.
TestKind = Literal["shift", "unlearnable"]


@dataclass(frozen=True)
class AlgorithmicTest:
    """One algorithmic unit test.

    Attributes:
        name: test id, e.g. ``"single_concept"``; pytest ids read ``test_<name>[model]``.
        generate: ``generate(seed, **params) -> Splits``.
        assumption: the MIL assumption the data encodes (``"standard"`` or ``"threshold"``).
        kind: how the verdict reads the AUCs (see ``TestKind``).
        source: citation of the data-generating process.
        control: ``unlearnable`` tests only: ``control(seed, **params) -> Splits``, the
            capacity control, a task of the same bags that every MIL model can represent
            (``label_swap``: the labels unswapped). The harness trains it with the same
            model, seeds and budget; a seed that does not learn it says nothing about the
            test (:mod:`mil_assert.verdict`).
        partial_rule_auc: ``shift`` tests of a rule of several concepts only: the
            highest validation AUC a rule of one concept reaches on the test's validation
            bags (:func:`one_concept_auc`). A seed counts as having learned the test's rule
            only when its validation AUC clears this by a margin chance cannot produce
            (:mod:`mil_assert.verdict`); ``None``: the rule has one concept, and
            ``LEARNED_AUC`` alone decides.
        sized: ``sized(n) -> dict``, the generator's keyword arguments that make a
            training bag hold about ``n`` instances on average (``--mil-bag-size``): the
            background grows, the witnesses and the poison stay as they are, so the
            witness rate falls as ``n`` grows.
    """

    name: str
    generate: Callable[..., Splits]
    assumption: Literal["standard", "threshold"]
    kind: TestKind
    source: str
    control: Callable[..., Splits] | None = None
    partial_rule_auc: float | None = None
    sized: Callable[[int], dict[str, int]] | None = None

    def __post_init__(self) -> None:
        if self.kind == "unlearnable" and self.control is None:
            raise ValueError(f"test {self.name!r} is unlearnable and needs a capacity "
                             f"control (control=...): without it a model that learns "
                             f"nothing would pass")
        if self.partial_rule_auc is not None:
            if self.kind != "shift":
                raise ValueError(f"test {self.name!r}: partial_rule_auc applies to shift "
                                 f"tests only")
            if not 0.5 <= self.partial_rule_auc < 1.0:
                raise ValueError(f"test {self.name!r}: partial_rule_auc must lie in "
                                 f"[0.5, 1), got {self.partial_rule_auc!r}")


def one_concept_auc(copies: Sequence[int]) -> float:
    """The highest validation AUC of a maximum of instance scores on a two-concept test.

    The test's bags: a positive holds ``k`` instances of concept A and ``k`` of concept
    B, with ``k`` drawn uniformly from ``copies``; a negative holds one instance of A or
    one of B, with equal chance; background is drawn alike in both classes. A rule of
    one concept scores a bag by the maximum over its instances of a score that is high
    on that concept (A, say) and low on everything else.

    Derivation. Every positive holds A, so it outranks every negative that holds B (half
    of them). Against a negative that holds one A, the positive's maximum is taken over
    ``k`` A instances: with a score that is constant on A (a perfect indicator) the two
    tie and count one half; with a score that varies continuously over A's instances
    (a learned score, or A's likelihood), the positive's maximum is the largest of
    ``k + 1`` exchangeable draws with probability ``k / (k + 1)`` (the extreme-value
    effect), the most any score can reach. Hence ``AUC = 1/2 + 1/2 mean_k k / (k + 1)
    = mean_k (1 - 1 / (2 (k + 1)))``: 0.75 when every positive holds one copy, 59/72 =
    0.819 for ``k`` in {1, 2, 3}.

    This is also the most that *any* maximum of instance scores reaches on these bags,
    one concept or both (background scored below the concepts): with ``u`` and ``v`` the
    distribution functions of the scores of A and of B, the AUC is ``1 - 1/2 integral
    (u v)^k d(u + v)``, and ``(u v)^k >= max(0, u + v - 1)^k`` bounds the integral below
    by ``1 / (k + 1)``, with equality when one concept scores below the other everywhere,
    a rule of one concept. A model
    that pools instance scores by a maximum cannot express "A and B", and no such model
    ranks validation bags above this AUC except by sampling noise.
    """
    counts = list(copies)
    if not counts or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                         for k in counts):
        raise ValueError(f"copies must be positive integers, got {copies!r}")
    exact = sum(1 - Fraction(1, 2 * (k + 1)) for k in counts) / len(counts)
    return float(exact)


def fixed_background(other: float) -> Callable[[int], dict[str, int]]:
    """``sized`` of a test whose bags hold ``background`` instances besides ``other``
    others on average (witnesses and poison of a training bag)."""
    def sized(n: int) -> dict[str, int]:
        return {"background": max(1, round(n - other))}

    return sized


BACKGROUND_SPREAD = 0.1
"""With a bag size set, a test whose background count is drawn uniformly draws it within
this fraction of its mean, so that bags of about equal size pad little."""


def uniform_background(other: float) -> Callable[[int], dict[str, int]]:
    """``sized`` of a test whose bags hold U{min_background, ..., max_background}
    background instances besides ``other`` others on average."""
    def sized(n: int) -> dict[str, int]:
        mean = max(1.0, n - other)
        spread = round(mean * BACKGROUND_SPREAD)
        return {"min_background": max(1, round(mean) - spread),
                "max_background": max(1, round(mean) + spread)}

    return sized
