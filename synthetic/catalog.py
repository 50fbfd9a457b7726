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
    """

    name: str
    generate: Callable[..., Splits]
    assumption: Literal["standard", "threshold"]
    kind: TestKind
    source: str
