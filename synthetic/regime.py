"""Where a run's bags come from: their size, their instances, or the user's own bags.

The tests' default bags hold about 13 Gaussian instances. A :class:`Regime` changes that
for every cell of a run, on every route (``--mil-bag-size`` / ``--mil-instances`` /
``--mil-data`` under pytest, ``--bag-size`` / ``--instances`` / ``--data`` on ``mil-assert
check``, ``bag_size=`` / ``instances=`` / ``data=`` in the API):

- ``bag_size``: about this many instances per bag on average; the background grows, the
  witnesses and the poison stay (:attr:`AlgorithmicTest.sized`), so the witness rate
  falls as bags grow (slide-sized bags hold thousands of patches, few of them tumour).
- ``instances="digits"``: every instance is a real 8x8 digit image
  (:mod:`mil_assert.synthetic.digits`), the bag rules unchanged.
- ``data``: the user's own bags with the ``single_concept`` poison added
  (:mod:`mil_assert.synthetic.own_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mil_assert.synthetic.bags import Splits
from mil_assert.synthetic.catalog import AlgorithmicTest

INSTANCES = ("gaussian", "digits")
MAX_BAG_SIZE = 100_000
"""Largest ``bag_size`` accepted: far above a whole slide's patches at 20x."""


class RegimeError(ValueError):
    """A regime option is invalid; the message names the option and the fix."""


@dataclass(frozen=True)
class Regime:
    """The bags of a run; the default is the tests' own Gaussian bags."""

    bag_size: int | None = None
    instances: str = "gaussian"
    data: str | None = None

    def __post_init__(self) -> None:
        size = self.bag_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or not 2 <= size <= MAX_BAG_SIZE):
            raise RegimeError(f"bag size {size!r}: give the mean number of instances per bag, "
                              f"an integer from 2 to {MAX_BAG_SIZE}")
        if self.instances not in INSTANCES:
            raise RegimeError(f"instances {self.instances!r}: use one of {', '.join(INSTANCES)}")
        if self.data is not None and (size is not None or self.instances != "gaussian"):
            raise RegimeError("data: the user's own bags set their own sizes and instances; "
                              "give --data without --bag-size and --instances")

    @property
    def is_default(self) -> bool:
        return self == Regime()

    def tests(self) -> tuple[str, ...] | None:
        """The tests this regime can build, or ``None`` for all of them."""
        return ("single_concept",) if self.data is not None else None

    def instance_dim(self, dim: int) -> int:
        """The instance dimension D the models are built for, given the run's ``dim``."""
        if self.data is not None:
            from mil_assert.synthetic.own_data import load

            return load(self.data).dim
        return dim

    def generate(self, test: AlgorithmicTest, seed: int, *, dim: int, n_train: int,
                 n_eval: int, control: bool = False) -> Splits:
        """The test's (or its capacity control's) training, validation and test bags."""
        if self.data is not None:
            if test.name != "single_concept":
                raise RegimeError(f"data: the user's own bags build the shift test of "
                                  f"single_concept only, not {test.name}; run --tests "
                                  f"single_concept")
            from mil_assert.synthetic.own_data import poisoned_splits

            return poisoned_splits(self.data, seed)
        generate = test.control if control else test.generate
        params: dict[str, Any] = {}
        if self.bag_size is not None:
            params.update(test.sized(self.bag_size))
        if self.instances == "digits":
            from mil_assert.synthetic.digits import digit_splits

            return digit_splits(test, generate, seed, dim=dim, n_train=n_train,
                                n_eval=n_eval, **params)
        return generate(seed, dim=dim, n_train=n_train, n_eval=n_eval, **params)

    def as_dict(self) -> dict[str, Any]:
        return {"bag_size": self.bag_size, "instances": self.instances, "data": self.data}

    def describe(self) -> str:
        """``"bags of ~1000 instances"``, ``"digit images"``, ``"your bags in PATH"``, or
        ``"the tests' own bags"``."""
        parts = []
        if self.data is not None:
            parts.append(f"your bags in {self.data} with a poison instance")
        if self.bag_size is not None:
            parts.append(f"bags of ~{self.bag_size} instances")
        if self.instances == "digits":
            parts.append("digit images as instances")
        return "; ".join(parts) or "the tests' own bags"
