"""The model registry: what a model is, what it is declared to do, and how to find it.

Each built-in model lives in one file under ``models/`` that defines a module-level
``SPEC = ModelSpec(...)``; the registry discovers those files, so adding a model is a
one-file change. A user's own model needs no registration: ``--model=pkg.module:factory``
or ``--model=path/to/file.py:factory`` (see :mod:`mil_assert.loading`).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from torch import nn

Verdict = Literal["pass", "violation", "inconclusive", "error"]
VERDICTS: tuple[str, ...] = ("pass", "violation", "inconclusive", "error")
DECLARABLE: tuple[str, ...] = ("pass", "violation", "inconclusive")


@dataclass(frozen=True)
class Expected:
    """A declared verdict for one test, from a measured run, with a one-line reason."""

    verdict: Verdict
    reason: str

    def __post_init__(self) -> None:
        if self.verdict not in DECLARABLE:
            raise ValueError(f"a declared verdict must be one of {DECLARABLE} (an error always "
                             f"fails), got {self.verdict!r}")
        if not self.reason.strip():
            raise ValueError("an expected verdict needs a one-line reason")


@dataclass(frozen=True)
class ModelSpec:
    """A model the suite can judge.

    Attributes:
        name: registry name, used in ``--model=NAME`` and in test ids.
        factory: ``factory(dim) -> nn.Module``; the module maps ``X`` float ``[B, N, D]``
            and ``mask`` bool ``[B, N]`` (True = real instance) to bag logits ``[B]``.
        citation: the paper the architecture comes from.
        respects: the MIL assumptions the model is designed to respect
            (``"standard"``, ``"threshold"``); empty if none.
        expected: declared verdict per test name; tests not listed are expected to pass
            (``inconclusive`` is then reported as skipped).
        budget: overrides of :class:`mil_assert.defaults.Budget` fields for this model.
        stackable: train all seeds of a cell as one stacked model when the model's layers
            allow it (:mod:`mil_assert.stacking`); ``False`` trains them one by one, for a
            model whose forward draws random numbers or mixes bags in a way the first-batch
            check cannot see.
        input: how ``forward`` takes bags: ``"batch"`` (``X [B, N, D]``, ``mask [B, N]``),
            ``"bag"`` (one unpadded bag ``[N, D]``) or ``"bag1"`` (``[1, N, D]``).
        output: ``"logit"`` or ``"probability"``: what the scores ``forward`` returns are.
        positive_class: the class whose log-odds is the bag logit, for outputs of more
            than two classes (default class 1 of two).
        output_key: the tuple index or dict key of the scores in ``forward``'s output
            (default: item 0, or ``"logits"``). See :mod:`mil_assert.adapters` for the rule.
        in_default_run: whether a run that names no model (``pytest`` without
            ``--model``/``--mil-model``) judges this model. ``False`` keeps a slow model
            (one trained seed by seed with its own training procedure) out of the default
            suite, so CI stays short; ``pytest --model=NAME`` and ``mil-assert check NAME``
            still judge it, and the self-tests (tests/test_models.py) still check it.
    """

    name: str
    factory: Callable[[int], nn.Module]
    citation: str = ""
    respects: tuple[str, ...] = ()
    expected: Mapping[str, Expected] = field(default_factory=dict)
    budget: Mapping[str, Any] = field(default_factory=dict)
    stackable: bool = True
    input: str = "batch"
    output: str = "logit"
    positive_class: int | None = None
    output_key: str | int | None = None
    in_default_run: bool = True

    def __post_init__(self) -> None:
        from mil_assert.adapters import INPUTS, OUTPUTS

        object.__setattr__(self, "expected", MappingProxyType(dict(self.expected)))
        object.__setattr__(self, "budget", MappingProxyType(dict(self.budget)))
        if self.input not in INPUTS:
            raise ValueError(f"model {self.name!r}: input={self.input!r}; use 'batch' "
                             f"(forward(X [B, N, D], mask)), 'bag' (forward(x [N, D])) or "
                             f"'bag1' (forward(x [1, N, D]))")
        if self.output not in OUTPUTS:
            raise ValueError(f"model {self.name!r}: output={self.output!r}; use 'logit' or "
                             f"'probability'")
        if not isinstance(self.in_default_run, bool):
            raise ValueError(f"model {self.name!r}: in_default_run must be True or False, "
                             f"got {self.in_default_run!r}")
        if self.positive_class is not None and (isinstance(self.positive_class, bool) or not
                                                isinstance(self.positive_class, int)
                                                or self.positive_class < 0):
            raise ValueError(f"model {self.name!r}: positive_class must be a class index >= 0, "
                             f"got {self.positive_class!r}")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickles (to a worker process) with plain dicts; ``__post_init__`` freezes them."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(expected=dict(self.expected), budget=dict(self.budget))
        return _spec_from_fields, (fields,)


def builtin_models() -> dict[str, ModelSpec]:
    """Every ``SPEC`` defined in a module of ``mil_assert.models``, in file-name order."""
    import mil_assert.models as package

    specs: dict[str, ModelSpec] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
        except Exception as error:  # noqa: BLE001 - one broken file must not hide the others
            specs[info.name] = _unimportable(info.name, error)
            continue
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, ModelSpec):
            if spec.name in specs:
                raise ValueError(f"two built-in models are named {spec.name!r}")
            specs[spec.name] = spec
    return specs


def default_models() -> list[str]:
    """The names of the built-in models a run that names none judges
    (``ModelSpec.in_default_run``)."""
    return [name for name, spec in builtin_models().items() if spec.in_default_run]


def _unimportable(name: str, error: Exception) -> ModelSpec:
    """A spec whose factory re-raises the import error, so its cells read ``error``."""
    message = f"models/{name}.py failed to import: {type(error).__name__}: {error}"

    def factory(dim: int) -> nn.Module:
        raise ImportError(message)

    return ModelSpec(name=name, factory=factory, citation=message)


def _spec_from_fields(fields: dict[str, Any]) -> ModelSpec:
    return ModelSpec(**fields)
