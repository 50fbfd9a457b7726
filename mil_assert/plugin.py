"""The pytest plugin: options, the ``mil_result`` fixture, the verdict check, the matrix.

Options (``pytest --help``, group "mil-assert"):
    --model=NAMES        built-in names, ``pkg.module:factory`` or ``file.py:factory``
    --mil-seeds=S        seeds per cell (default 5; at least 2)
    --device=D           auto | cpu | cuda (auto = cuda when available)
    --mil-report=PATH    write the matrix as JSON (schema mil-assert/report/v1)

A compliance test is a function named ``test_<test name>`` that takes the ``mil_result``
fixture and calls :func:`check_verdict` (see ``tests/test_compliance.py``). Each one is
parametrized over the selected models, so ids read ``test_single_concept[abmil]``.
Declared violations are strict xfails (as scikit-learn's ``parametrize_with_checks``):
a verdict that differs from the declaration, in either direction, fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from mil_assert.defaults import DEFAULT_SEEDS, INSTANCE_DIM, Budget
from mil_assert.harness import resolve_device, run_cell
from mil_assert.loading import resolve_models
from mil_assert.registry import ModelSpec
from mil_assert.report import build_report, format_matrix, write_json_atomic
from mil_assert.results import CellResult
from mil_assert.synthetic import TESTS
from mil_assert.verdict import MIN_SEEDS

RESULT_PROPERTY = "mil_result"


class MILViolation(AssertionError):
    """The model violates the MIL assumption the test encodes."""


@dataclass
class SuiteState:
    models: list[ModelSpec]
    seeds: list[int]
    device: torch.device
    budget: Budget = field(default_factory=Budget)
    dim: int = INSTANCE_DIM
    results: list[CellResult] = field(default_factory=list)
    report_path: Path | None = None


STATE = pytest.StashKey[SuiteState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mil-assert", "MIL assumption compliance (mil-assert)")
    group.addoption("--model", default=None, metavar="NAMES",
                    help="comma-separated models to judge: built-in names, pkg.module:factory "
                         "or path/to/file.py:factory (default: every built-in model)")
    group.addoption("--mil-seeds", type=int, default=DEFAULT_SEEDS, metavar="S",
                    help=f"seeds per (model, test) cell, seeds 0..S-1 (default {DEFAULT_SEEDS})")
    group.addoption("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where to train: auto (cuda when available), cpu or cuda")
    group.addoption("--mil-report", default=None, metavar="PATH.json",
                    help="write the compliance matrix as JSON to this path")


def seed_list(n_seeds: int) -> list[int]:
    """Seeds ``0 .. n_seeds - 1`` of a run; a verdict needs at least ``MIN_SEEDS``."""
    if n_seeds < MIN_SEEDS:
        raise ValueError(f"--mil-seeds={n_seeds}: a verdict needs at least {MIN_SEEDS} seeds")
    return list(range(n_seeds))


def pytest_configure(config: pytest.Config) -> None:
    base_dir = Path(config.invocation_params.dir)
    try:
        models = resolve_models(config.getoption("model"), base_dir)
        device = resolve_device(config.getoption("device"))
        seeds = seed_list(config.getoption("mil_seeds"))
    except ValueError as error:  # ModelSpecError is a ValueError
        raise pytest.UsageError(str(error)) from None
    report = config.getoption("mil_report")
    state = SuiteState(
        models=models, seeds=seeds, device=device,
        report_path=None if report is None else base_dir / report,
    )
    config.stash[STATE] = state
    config.pluginmanager.register(ComplianceSession(state), "mil-assert-session")
    if hasattr(config, "workerinput") and device.type == "cpu":
        torch.set_num_threads(1)  # xdist workers share the cores; one thread each


def _test_name(function_name: str) -> str:
    name = function_name.removeprefix("test_")
    if name not in TESTS:
        raise pytest.UsageError(f"{function_name} uses the mil_result fixture, but "
                                f"{name!r} is not a test; known tests: {', '.join(TESTS)}")
    return name


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mil_model" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE]
    test = _test_name(metafunc.function.__name__)
    params = []
    for spec in state.models:
        expected = spec.expected.get(test)
        marks = []
        if expected is not None and expected.verdict == "violation":
            marks.append(pytest.mark.xfail(strict=True, raises=MILViolation,
                                           reason=f"declared violation: {expected.reason}"))
        params.append(pytest.param(spec, id=spec.name, marks=marks))
    metafunc.parametrize("mil_model", params)


@pytest.fixture
def mil_result(request: pytest.FixtureRequest, mil_model: ModelSpec) -> CellResult:
    """Train ``mil_model`` on this test over the run's seeds and judge it."""
    state = request.config.stash[STATE]
    test = TESTS[_test_name(request.function.__name__)]
    result = run_cell(mil_model, test, state.seeds, state.budget, state.dim, state.device)
    request.node.user_properties.append((RESULT_PROPERTY, result.as_dict()))
    return result


def check_verdict(result: CellResult) -> None:
    """Pass, skip, xfail or fail a compliance test from its cell's verdict and declaration.

    Undeclared: ``pass`` passes, ``inconclusive`` skips, ``violation`` and ``error`` fail.
    Declared: the measured verdict must equal the declared one (a declared violation
    is a strict xfail, a declared inconclusive a skip); anything else fails.
    """
    __tracebackhide__ = True
    verdict, expected = result.verdict, result.expected
    where = f"{result.model} on {result.test}"
    if verdict == "error":
        pytest.fail(f"error: {where}: {result.message}", pytrace=False)
    if expected is not None and verdict != expected:
        pytest.fail(f"{where}: declared {expected} ({result.expected_reason}), "
                    f"measured {verdict}: {result.message}", pytrace=False)
    if verdict == "violation":
        raise MILViolation(f"MIL violation: {where}: {result.message}")
    if verdict == "inconclusive":
        pytest.skip(f"inconclusive: {where}: {result.message}")


class ComplianceSession:
    """Per-run hooks: gathers cell results (also from xdist workers), writes the report,
    prints the matrix. Registered by ``pytest_configure``."""

    def __init__(self, state: SuiteState) -> None:
        self.state = state

    def pytest_report_header(self) -> str:
        state = self.state
        return (f"mil-assert: models {', '.join(m.name for m in state.models)}; "
                f"{len(state.seeds)} seeds per cell; device {state.device}; default budget "
                f"{state.budget.epochs} epochs x {state.budget.n_train_bags} bags, "
                f"batch {state.budget.batch_size}, {state.budget.optimizer} "
                f"lr {state.budget.lr:g}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == RESULT_PROPERTY:
                self.state.results.append(CellResult.from_dict(value))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = self.state
        if hasattr(session.config, "workerinput") or not state.results:
            return
        if state.report_path is not None:
            data = build_report(state.results, self.model_names, state.seeds, state.budget,
                                state.dim, state.device)
            write_json_atomic(data, state.report_path)

    def pytest_terminal_summary(self, terminalreporter, config: pytest.Config) -> None:
        state = self.state
        if hasattr(config, "workerinput") or not state.results:
            return
        terminalreporter.section(f"MIL compliance matrix (verdict, test AUC mean ± std "
                                 f"over {len(state.seeds)} seeds)")
        for line in format_matrix(state.results, self.model_names).splitlines():
            terminalreporter.write_line(line)
        seed_by_seed = {r.model: r.training for r in state.results
                        if r.training.startswith("seed by seed") and len(r.seeds) > 1}
        for model, training in sorted(seed_by_seed.items()):
            terminalreporter.write_line(f"{model}: trained {training}")
        if state.report_path is not None:
            terminalreporter.write_line(f"report written to {state.report_path}")

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.state.models]
