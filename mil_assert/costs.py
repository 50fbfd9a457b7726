"""How long a (model, test) cell takes, roughly: the order in which parallel routes start cells.

With several workers (``mil-assert check --jobs N``, ``pytest -n N``, a Ray cluster) a run
ends when its last cell does. Started in the order given, the longest cells can come last
(``transmil``'s four cells are the zoo's last model and take half its time), and one
worker trains them while the others wait. Started longest first, each free worker takes
the longest cell left, and the wall time approaches the summed cell time divided by the
workers (``docs/performance.md``). Results are reported in the usual order whatever the
order they ran in (:func:`mil_assert.report.order_results`).

The estimate is a cell's seconds per seed in the reference reports, shipped as
:mod:`mil_assert.cell_seconds` (the reports are not installed with the package). A cell
none of them holds (your own model, a test they did not run) is estimated from the test's
median over the models they hold, scaled by the model's budget (epochs x training bags,
its ``ModelSpec.budget`` against the default): it ranks by test (``threshold_poisoned``'s
bags are the largest; ``label_swap`` trains twice where its capacity control is not
skipped), and a model with a smaller budget ranks lower. Regenerate the table after a
reference report changes::

    python -m mil_assert.costs reports/compliance.json reports/recent-systems.json \\
        reports/torchmil.json > mil_assert/cell_seconds.py

This module imports no torch, so the pytest plugin can order collected cells cheaply.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mil_assert.cell_seconds import SECONDS_PER_SEED
from mil_assert.defaults import Budget

T = TypeVar("T")


def _work(overrides: Mapping[str, Any] | None) -> int:
    """Training bags seen per seed: epochs x training bags of the budget with ``overrides``."""
    budget = Budget()
    try:
        budget = budget.with_overrides(dict(overrides or {}))
    except (TypeError, ValueError):  # a bad override is the cell's error, not the order's
        pass
    return budget.epochs * budget.n_train_bags


DEFAULT_WORK = _work(None)


def _medians(table: Mapping[tuple[str, str], float]) -> tuple[dict[str, float], float]:
    """Each test's median over the table's models, and the median of every cell."""
    by_test: dict[str, list[float]] = {}
    for (_, test), seconds in table.items():
        by_test.setdefault(test, []).append(seconds)
    medians = {test: statistics.median(values) for test, values in by_test.items()}
    return medians, statistics.median(table.values()) if table else 1.0


TEST_MEDIANS, OVERALL_MEDIAN = _medians(SECONDS_PER_SEED)


def cell_cost(model: str, test: str, budget: Mapping[str, Any] | None = None) -> float:
    """Estimated seconds per seed of ``model`` (its name) on ``test``; ``budget``: the
    model's budget overrides (``ModelSpec.budget``), used for a cell the table lacks."""
    known = SECONDS_PER_SEED.get((model, test))
    if known is not None:
        return known
    return TEST_MEDIANS.get(test, OVERALL_MEDIAN) * _work(budget) / DEFAULT_WORK


def spec_cost(spec: Any, test: str) -> float:
    """:func:`cell_cost` of a ``ModelSpec`` (its ``name`` and ``budget``) on ``test``."""
    return cell_cost(spec.name, test, spec.budget)


def longest_first(cells: Sequence[T], cost: Callable[[T], float]) -> list[T]:
    """``cells`` by decreasing ``cost``; cells of equal cost keep their order."""
    return sorted(cells, key=lambda cell: -cost(cell))


def xdist_load_order(costs: Sequence[float], workers: int,
                     max_chunk: int | None = None) -> list[int]:
    """The order in which to collect items of these ``costs`` for pytest-xdist's ``load``
    scheduling with ``workers`` workers, as indices: longest first, dealt round robin
    over the workers' first chunks.

    xdist (3.x, ``LoadScheduling.schedule``) sends each worker a chunk of consecutive
    items first: ``max(2, min(n // workers // 4, max_chunk))`` of them, worker ``k`` the
    ``k``-th chunk (fewer than ``2 * workers`` items go round robin, one at a time), and
    then the items still pending, in order, to whichever worker runs low. A plain
    longest-first order would give the first worker the longest items all together.
    """
    order = longest_first(list(range(len(costs))), lambda i: costs[i])
    n = len(order)
    if workers <= 1 or n < 2 * workers:
        return order
    chunk = max(2, min(n // workers // 4, n if max_chunk is None else max_chunk))
    head = workers * chunk
    dealt = [0] * head
    for rank in range(head):
        dealt[(rank % workers) * chunk + rank // workers] = order[rank]
    return dealt + order[head:]


# Generating the table (needs torch: the verdict rule reads the reports' AUCs).


def table_from_reports(paths: Sequence[str | Path]) -> dict[tuple[str, str], float]:
    """Seconds per seed of every finished cell of these reports; the first report that
    holds a cell gives it. A ``label_swap`` cell written before the capacity control
    could be skipped (no ``control_skipped`` key) whose seeds would skip it now
    (:func:`mil_assert.harness.verdict_whatever_the_control`) counts half: its control
    was half its training."""
    from mil_assert.harness import verdict_whatever_the_control
    from mil_assert.report import load_report
    from mil_assert.synthetic import TESTS

    table: dict[tuple[str, str], float] = {}
    for path in paths:
        report = load_report(path)
        for cell in report["results"]:
            key = (cell["model"], cell["test"])
            if key in table or cell["verdict"] == "error" or not cell.get("seeds"):
                continue
            seconds = cell["seconds"] / len(cell["seeds"])
            test = TESTS.get(cell["test"])
            if (test is not None and "control_skipped" not in cell
                    and verdict_whatever_the_control(
                        test.kind, cell["val_auc"]["per_seed"], cell["test_auc"]["per_seed"],
                        test.partial_rule_auc) is not None):
                seconds /= 2
            table[key] = round(seconds, 2)
    return table


def table_module(table: Mapping[tuple[str, str], float], sources: Sequence[str]) -> str:
    """The text of :mod:`mil_assert.cell_seconds` for ``table``."""
    command = " \\\n        ".join(["python -m mil_assert.costs", *sources])
    lines = [
        'r"""Seconds per seed of each (model, test) cell in the reference reports: the cost',
        "estimate behind the order in which parallel routes start cells (:mod:`mil_assert.costs`).",
        "",
        "Generated from the reports below; do not edit. Regenerate from the repository root:",
        "",
        f"    {command} > mil_assert/cell_seconds.py",
        '"""',
        "",
        f"SOURCES = {tuple(sources)!r}",
        "",
        "SECONDS_PER_SEED: dict[tuple[str, str], float] = {",
        *(f"    {key!r}: {seconds!r}," for key, seconds in table.items()),
        "}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mil_assert.costs REPORT.json ...``: the table module on standard output."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m mil_assert.costs REPORT.json [REPORT.json ...] "
              "> mil_assert/cell_seconds.py", file=sys.stderr)
        return 2
    sys.stdout.write(table_module(table_from_reports(paths), paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
