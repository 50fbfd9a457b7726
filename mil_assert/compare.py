"""Two reports of the same cells side by side: do the verdicts and per-seed AUCs agree?

    mil-assert compare reports/compliance.json gpu/compliance.json

The reference report (a CPU run) comes first, the new one (a GPU run, another machine,
another version) second. Cells are matched by model and test. A cell's verdicts are
compared only where both reports trained it on the same seeds; its AUCs are compared on
the seeds both trained (validation, test and, where both trained it, the capacity
control), and its seconds give the new run's speed-up. Floating-point results differ
between devices, so the AUCs are not expected to be equal: the largest change per cell
shows how far the two runs drifted apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

AUC_KEYS = ("val_auc", "test_auc", "control_auc")


@dataclass(frozen=True)
class CellComparison:
    """One cell of both reports.

    Attributes:
        model, test: the cell.
        before, after: the verdicts of the reference and the new report.
        same_seeds: whether both trained the cell on the same seeds (only then can the
            verdicts be compared).
        common_seeds: the seeds both trained.
        auc_change: the largest absolute AUC difference over the common seeds (validation,
            test, and the capacity control where both trained it); ``None`` when no seed
            is common or a cell is an ``error`` without AUCs.
        seconds_before, seconds_after: the cells' wall times in seconds.
    """

    model: str
    test: str
    before: str
    after: str
    same_seeds: bool
    common_seeds: tuple[int, ...]
    auc_change: float | None
    seconds_before: float
    seconds_after: float

    @property
    def agrees(self) -> bool:
        """The verdicts are equal (meaningful when ``same_seeds``)."""
        return self.before == self.after


@dataclass(frozen=True)
class Comparison:
    """The cells both reports hold, and those only one holds (``(model, test)`` pairs)."""

    cells: list[CellComparison]
    only_before: list[tuple[str, str]]
    only_after: list[tuple[str, str]]

    @property
    def disagreements(self) -> list[CellComparison]:
        """Cells trained on the same seeds whose verdicts differ."""
        return [cell for cell in self.cells if cell.same_seeds and not cell.agrees]


def per_seed(cell: Mapping[str, Any], key: str) -> dict[int, float]:
    """``{seed: AUC}`` of one of a cell's AUC entries; empty where it has none."""
    values = (cell.get(key) or {}).get("per_seed") or []
    seeds = cell.get("seeds") or list(range(len(values)))
    return {seed: value for seed, value in zip(seeds, values, strict=False) if value is not None}


def largest_auc_change(before: Mapping[str, Any], after: Mapping[str, Any],
                       seeds: Sequence[int]) -> float | None:
    """The largest absolute difference of any AUC of the two cells on ``seeds``."""
    changes = []
    for key in AUC_KEYS:
        old, new = per_seed(before, key), per_seed(after, key)
        changes += [abs(old[seed] - new[seed]) for seed in seeds if seed in old and seed in new]
    return max(changes) if changes else None


def compare_reports(before: Mapping[str, Any], after: Mapping[str, Any]) -> Comparison:
    """Match the two reports' cells by model and test and compare each pair."""
    old = {(cell["model"], cell["test"]): cell for cell in before["results"]}
    new = {(cell["model"], cell["test"]): cell for cell in after["results"]}
    cells = []
    for key, cell in old.items():
        if key not in new:
            continue
        other = new[key]
        seeds_before = tuple(cell.get("seeds") or before.get("seeds") or ())
        seeds_after = tuple(other.get("seeds") or after.get("seeds") or ())
        common = tuple(seed for seed in seeds_before if seed in seeds_after)
        cells.append(CellComparison(
            model=key[0], test=key[1], before=cell["verdict"], after=other["verdict"],
            same_seeds=sorted(seeds_before) == sorted(seeds_after), common_seeds=common,
            auc_change=largest_auc_change(cell, other, common),
            seconds_before=float(cell.get("seconds") or 0.0),
            seconds_after=float(other.get("seconds") or 0.0)))
    return Comparison(cells=cells,
                      only_before=[key for key in old if key not in new],
                      only_after=[key for key in new if key not in old])


def comparison_lines(comparison: Comparison) -> list[str]:
    """The comparison as a Markdown table and a summary, for the terminal or a file."""
    from tabulate import tabulate

    rows = []
    for cell in comparison.cells:
        if not cell.same_seeds:
            agreement = f"seeds differ ({len(cell.common_seeds)} common)"
        else:
            agreement = "agree" if cell.agrees else "DIFFER"
        change = "-" if cell.auc_change is None else f"{cell.auc_change:.3f}"
        ratio = (f"{cell.seconds_before / cell.seconds_after:.1f}x"
                 if cell.seconds_after > 0 else "-")
        rows.append([cell.model, cell.test, cell.before, cell.after, agreement, change,
                     f"{cell.seconds_before:.1f}", f"{cell.seconds_after:.1f}", ratio])
    lines = tabulate(rows, headers=["model", "test", "reference", "new", "verdicts",
                                    "largest AUC change", "s reference", "s new",
                                    "speed-up"], tablefmt="github").splitlines()
    judged = [cell for cell in comparison.cells if cell.same_seeds]
    before = sum(cell.seconds_before for cell in comparison.cells)
    after = sum(cell.seconds_after for cell in comparison.cells)
    lines.append("")
    lines.append(f"{len(judged) - len(comparison.disagreements)} of {len(judged)} cells on the "
                 f"same seeds agree; summed cell seconds {before:.0f} (reference) and "
                 f"{after:.0f} (new)" + (f", {before / after:.1f}x" if after > 0 else ""))
    for label, keys in (("only in the reference", comparison.only_before),
                        ("only in the new report", comparison.only_after)):
        if keys:
            lines.append(f"{len(keys)} cell(s) {label}: "
                         + ", ".join(f"{model} / {test}" for model, test in keys))
    return lines
