"""Compliance checks for pytest: the verdict check and the decorator for a user's test file.

In the manner of scikit-learn's ``parametrize_with_checks``: a user lists models and gets
one test per (model, algorithmic unit test), with declared verdicts as strict
expectations::

    from mil_assert import check_verdict, parametrize_with_checks
    from models.batched import SPEC, build

    @parametrize_with_checks([SPEC, build])
    def test_mil_compliance(mil_result):
        check_verdict(mil_result)

The ``mil_result`` fixture (from the installed pytest plugin, :mod:`mil_assert.plugin`)
trains the cell over the run's seeds (``--mil-seeds``) on ``--mil-device`` and judges
it; the matrix is printed at the end of the session and ``--mil-report`` writes it, under
pytest-xdist too. Test ids read ``test_mil_compliance[batched-single_concept]``, so ``-k``
selects a model or a test.

This module imports no torch at import time, so the plugin can use it in every session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mil_assert.registry import ModelSpec
    from mil_assert.results import CellResult

MODEL_ARG = "mil_model"
TEST_ARG = "mil_test"


class MILViolation(AssertionError):
    """The model violates the MIL assumption the test encodes."""


def check_verdict(result: CellResult) -> None:
    """Pass, skip, xfail or fail a compliance test from its cell's verdict and declaration.

    Undeclared: ``pass`` passes, ``inconclusive`` skips, ``violation`` and ``error`` fail.
    Declared: the measured verdict must equal the declared one (a declared violation
    is a strict xfail, a declared inconclusive a skip); anything else fails. The rule is
    :attr:`mil_assert.results.CellResult.gate_failure`, shared by every route.
    """
    __tracebackhide__ = True
    failure = result.gate_failure
    if result.verdict == "violation" and (failure is None or result.expected is None):
        raise MILViolation(f"MIL violation: {result.model} on {result.test}: {result.message}")
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    if result.verdict == "inconclusive":
        pytest.skip(f"inconclusive: {result.model} on {result.test}: {result.message}")


def cell_marks(spec: ModelSpec, test: str) -> list[pytest.MarkDecorator]:
    """A declared violation is a strict xfail that only a :class:`MILViolation` satisfies."""
    expected = spec.expected.get(test)
    if expected is None or expected.verdict != "violation":
        return []
    return [pytest.mark.xfail(strict=True, raises=MILViolation,
                              reason=f"declared violation: {expected.reason}")]


def parametrize_with_checks(
    models: Sequence[Any], *, tests: Sequence[str] | None = None,
) -> pytest.MarkDecorator:
    """Parametrize a test function over every (model, algorithmic unit test) cell.

    Args:
        models: each a :class:`~mil_assert.registry.ModelSpec` (its declarations apply), a
            factory ``factory(dim) -> nn.Module`` (named after the factory, judged with no
            declarations), or a ``--mil-model`` string (a built-in name,
            ``pkg.module:factory`` or ``path/to/file.py:factory``, relative to the current
            directory).
        tests: test names (default: all four, in report order).

    Returns:
        A ``pytest.mark.parametrize`` over ``mil_model`` and ``mil_test``; the decorated
        function takes the ``mil_result`` fixture and calls :func:`check_verdict`.

    Raises:
        ValueError: an unknown test name, a model that is neither a spec, a factory nor a
            loadable string, or two models of the same name.
    """
    __tracebackhide__ = True
    from mil_assert.loading import as_specs, select_tests

    specs = as_specs(models)
    names = select_tests(tests)
    params = [pytest.param(spec, test, id=f"{spec.name}-{test}", marks=cell_marks(spec, test))
              for spec in specs for test in names]
    return pytest.mark.parametrize((MODEL_ARG, TEST_ARG), params)
