"""The report's figure: per test, every model's per-seed validation and test AUC.

One panel per test; one row per model; hollow circles are validation AUCs (training
distribution), filled dots test AUCs (shifted distribution), coloured by the cell's
verdict; the dashed line is chance. Sized for a two-column paper's full width (7 in),
and readable at a single column's width. Needs matplotlib (``pip install
'mil-assert[plot]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mil_assert.files import atomic_file
from mil_assert.report import ReportError, report_models, report_results
from mil_assert.synthetic import TESTS

VERDICT_COLOURS = {"pass": "#1b7837", "violation": "#b2182b", "inconclusive": "#878787",
                   "error": "#000000"}


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Draw the figure of ``report`` into the PNG file ``path`` (written whole or not at
    all, see :func:`mil_assert.files.atomic_file`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        raise ReportError("the png format needs matplotlib: pip install 'mil-assert[plot]'") \
            from None
    results = report_results(report)
    models = report_models(report)
    present = {r.test for r in results}
    tests = [t for t in TESTS if t in present] + sorted(present - set(TESTS))
    cells = {(r.model, r.test): r for r in results}
    columns = 2 if len(tests) > 1 else 1
    rows = -(-len(tests) // columns)
    height = 0.9 + rows * (0.3 + 0.22 * len(models))
    with plt.rc_context({"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7}):
        fig, axes = plt.subplots(rows, columns, figsize=(7.0, height), sharex=True,
                                 squeeze=False, constrained_layout=True)
        for ax, test in zip(axes.flat, tests, strict=False):
            for row, model in enumerate(models):
                result = cells.get((model, test))
                if result is None or result.test_auc is None:
                    continue
                colour = VERDICT_COLOURS[result.verdict]
                if result.val_auc is not None:
                    ax.scatter(result.val_auc.per_seed, [row - 0.17] * len(result.val_auc.per_seed),
                               s=14, facecolors="none", edgecolors=colour, linewidths=0.8)
                ax.scatter(result.test_auc.per_seed, [row + 0.17] * len(result.test_auc.per_seed),
                           s=14, color=colour)
            ax.axvline(0.5, color="#444444", linestyle="--", linewidth=0.7)
            ax.set_title(test)
            ax.set_yticks(range(len(models)), models)
            ax.set_ylim(len(models) - 0.5, -0.5)
            ax.set_xlim(-0.03, 1.03)
            ax.grid(axis="x", linewidth=0.3, alpha=0.5)
        for ax in axes.flat[len(tests):]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("AUC per seed")
        handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor="none",
                          markeredgecolor="#444444", label="validation"),
                   Line2D([], [], marker="o", linestyle="", color="#444444", label="test")]
        handles += [Line2D([], [], marker="s", linestyle="", color=c, label=v)
                    for v, c in VERDICT_COLOURS.items()]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles),
                   frameon=False)
        target = Path(path)
        try:
            with atomic_file(target, binary=True) as stream:
                fig.savefig(stream, dpi=200, format="png")
        finally:
            plt.close(fig)
    return target
