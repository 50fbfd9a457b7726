"""The result of one (model, test) cell and how it serialises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mil_assert.metrics import SeedSummary


@dataclass(frozen=True)
class CellResult:
    """Verdict and AUCs of one model on one test over all seeds.

    ``val_auc`` / ``test_auc`` are ``None`` when no seed finished (``error``);
    ``message`` holds the verdict's reason, or the error; ``training`` says whether the
    seeds were trained as one stacked model or seed by seed, and why; ``contract`` is the
    outcome of the model-contract check before training (``ContractOutcome.as_dict``).
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
        )
