"""The result of one (model, test) cell and how it serialises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mil_assert.metrics import SeedSummary


@dataclass(frozen=True)
class CellResult:
    """Verdict and AUCs of one model on one test over all seeds.

    ``val_auc`` / ``test_auc`` are ``None`` when no seed finished (``error``);
    ``message`` holds the verdict's reason, or the error; ``training`` says whether the
    seeds were trained as one stacked model or seed by seed, and why; ``contract`` is the
    outcome of the model-contract check before training (``ContractOutcome.as_dict``);
    ``control_auc`` is each seed's validation AUC on the capacity control of an
    ``unlearnable`` test (``label_swap``), ``None`` for shift tests, for an ``error``
    before the control finished, where the control was skipped and in reports written
    before the control; ``control_skipped`` says why a cell's capacity control was not
    trained (its seeds that learned the swapped rule already make a violation that no
    control outcome can change; :func:`mil_assert.harness.verdict_whatever_the_control`),
    ``None`` where it was trained or there is none, and in reports written before it;
    ``ran_on`` says where the cell ran when a cluster ran it (``executor``, ``node``,
    ``address``, ``device``; see :mod:`mil_assert.ray_executor`), ``None`` otherwise and
    in reports written before it.
    """

    model: str
    test: str
    verdict: str
    expected: str | None
    expected_reason: str | None
    seeds: tuple[int, ...]
    val_auc: SeedSummary | None
    test_auc: SeedSummary | None
    seconds: float
    message: str
    budget_overrides: dict[str, Any] = field(default_factory=dict)
    training: str = ""
    contract: dict[str, Any] | None = None
    control_auc: SeedSummary | None = None
    ran_on: dict[str, Any] | None = None
    control_skipped: str | None = None

    def seed_outcomes(self) -> list[str]:
        """What each finished seed shows under the verdict rule (empty for an ``error``
        cell and for a test this version does not know). A stored report is judged with
        the floor its test declares now (``partial_rule_auc``, looked up by the test's
        name), as a fresh run would be."""
        from mil_assert import verdict
        from mil_assert.synthetic import TESTS

        if (self.verdict == "error" or self.val_auc is None or self.test_auc is None
                or self.test not in TESTS):
            return []
        control = None if self.control_auc is None else self.control_auc.per_seed
        test = TESTS[self.test]
        return verdict.seed_outcomes(test.kind, self.val_auc.per_seed, self.test_auc.per_seed,
                                     control, test.partial_rule_auc)

    @property
    def gate_failure(self) -> str | None:
        """Why this cell fails a CI gate, or ``None`` when it passes the gate.

        The one gate rule of every route (pytest, decorator, API, ``mil-assert check``):
        ``error`` always fails; a declared verdict must be the measured one, in both
        directions; undeclared, ``pass`` and ``inconclusive`` pass and ``violation`` fails.
        """
        where = f"{self.model} on {self.test}"
        if self.verdict == "error":
            return f"error: {where}: {self.message}"
        if self.expected is not None:
            if self.verdict == self.expected:
                return None
            return (f"{where}: declared {self.expected} ({self.expected_reason}), "
                    f"measured {self.verdict}: {self.message}")
        if self.verdict == "violation":
            return f"MIL violation: {where}: {self.message}"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "test": self.test,
            "verdict": self.verdict,
            "expected": self.expected,
            "expected_reason": self.expected_reason,
            "seeds": list(self.seeds),
            "val_auc": None if self.val_auc is None else self.val_auc.as_dict(),
            "test_auc": None if self.test_auc is None else self.test_auc.as_dict(),
            "seconds": round(self.seconds, 3),
            "message": self.message,
            "budget_overrides": dict(self.budget_overrides),
            "training": self.training,
            "contract": self.contract,
            "control_auc": None if self.control_auc is None else self.control_auc.as_dict(),
            "ran_on": None if self.ran_on is None else dict(self.ran_on),
            "control_skipped": self.control_skipped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        def summary(entry: dict[str, Any] | None) -> SeedSummary | None:
            return None if entry is None else SeedSummary.of(entry["per_seed"])

        return cls(
            model=data["model"], test=data["test"], verdict=data["verdict"],
            expected=data.get("expected"), expected_reason=data.get("expected_reason"),
            seeds=tuple(data.get("seeds", ())), val_auc=summary(data["val_auc"]),
            test_auc=summary(data["test_auc"]), seconds=float(data["seconds"]),
            message=data["message"], budget_overrides=dict(data.get("budget_overrides", {})),
            training=data.get("training", ""), contract=data.get("contract"),
            control_auc=summary(data.get("control_auc")), ran_on=data.get("ran_on"),
            control_skipped=data.get("control_skipped"),
        )


LEARNED_NOTHING_STATUS = 6
"""Exit status of pytest (plugin, decorator; serial or ``-n``) and ``mil-assert check``
when a model learned nothing (:func:`untrained_models`). It outranks the gate's 1: a run
where other cells fail too (an undeclared violation, an ``error`` cell, a broken
declaration) still exits 6, and lists every failure. An interrupt keeps its own status
(``check``: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; pytest: 2, 143, 129), and bad input
stops the run before any training (``check``: 2; pytest: 4). Distinct from pytest's own
statuses (0-5) and from ``check``'s others (0 passed, 1 gate failed, 2 bad input, 128 +
the signal's number when interrupted). The API has no exit status: its report's
``untrained`` names the models, ``failures`` lists every failing line."""


def untrained_models(results: Sequence[CellResult]) -> list[str]:
    """Models that learned none of the training distributions of the cells they ran
    (:func:`mil_assert.verdict.learned_nothing` over every seed of their judged cells;
    ``error`` cells fail the gate on their own and are not counted), in order. A seed whose
    validation AUC (or control AUC) is at most ``1 - LEARNED_AUC`` ranked its training
    distribution backwards: it learned something, so its model is not one that learned
    nothing."""
    from mil_assert.verdict import LEARNED_AUC, learned_nothing

    outcomes: dict[str, list[str]] = {}
    for result in results:
        seen = outcomes.setdefault(result.model, [])
        seeds = result.seed_outcomes()
        seen.extend(seeds)
        validation = [*result.val_auc.per_seed,
                      *(result.control_auc.per_seed if result.control_auc else ())] if seeds else []
        if any(auc <= 1 - LEARNED_AUC for auc in validation):
            seen.append("ranked its training distribution backwards")
    return [model for model, seen in outcomes.items() if learned_nothing(seen)]


def untrained_lines(results: Sequence[CellResult]) -> list[str]:
    """The gate's one line for each model that learned nothing (:func:`untrained_models`)."""
    from mil_assert.verdict import LEARNED_NOTHING

    return [f"learned nothing: {model}: {LEARNED_NOTHING}" for model in untrained_models(results)]
