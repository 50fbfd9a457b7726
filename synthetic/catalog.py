"""What an algorithmic unit test is: a generator plus how its outcome is read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    """

    name: str
    generate: Callable[..., Splits]
    assumption: Literal["standard", "threshold"]
    kind: TestKind
    source: str
    control: Callable[..., Splits] | None = None

    def __post_init__(self) -> None:
        if self.kind == "unlearnable" and self.control is None:
            raise ValueError(f"test {self.name!r} is unlearnable and needs a capacity "
                             f"control (control=...): without it a model that learns "
                             f"nothing would pass")
