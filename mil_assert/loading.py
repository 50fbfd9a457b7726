"""Turn ``--model`` values into :class:`ModelSpec` objects.

A value is a comma-separated list; each item is a built-in model name, or a user's model
given as ``pkg.module:factory`` or ``path/to/file.py:factory``. ``factory`` may be a
callable ``factory(dim) -> nn.Module`` (judged with no declared expectations: any
violation or error fails) or a :class:`ModelSpec` (its declarations apply).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from mil_assert.registry import ModelSpec, builtin_models


class ModelSpecError(ValueError):
    """A ``--model`` value names no model that can be loaded."""


def _choices(builtins: dict[str, ModelSpec]) -> str:
    return (f"built-in models: {', '.join(builtins)}; or your own model as "
            f"pkg.module:factory or path/to/file.py:factory")


def resolve_models(option: str | None, base_dir: Path) -> list[ModelSpec]:
    """The models a ``--model`` value selects; every built-in model when it is empty.

    Args:
        option: the ``--model`` value, e.g. ``"abmil,mi_net"`` or ``"my.py:build"``.
        base_dir: directory that relative file paths and module imports start from.
    """
    builtins = builtin_models()
    if option is None or not option.strip():
        return list(builtins.values())
    specs: list[ModelSpec] = []
    for item in (part.strip() for part in option.split(",")):
        if not item:
            raise ModelSpecError(f"--model={option!r} has an empty item; {_choices(builtins)}")
        if item in builtins:
            spec = builtins[item]
        elif ":" in item:
            spec = load_user_model(item, base_dir, builtins)
        else:
            raise ModelSpecError(f"unknown model {item!r}; {_choices(builtins)}")
        if any(s.name == spec.name for s in specs):
            raise ModelSpecError(f"model {spec.name!r} is selected twice in --model={option!r}")
        specs.append(spec)
    return specs


def load_user_model(item: str, base_dir: Path, builtins: dict[str, ModelSpec]) -> ModelSpec:
    """Import ``target:attribute`` and wrap it as a :class:`ModelSpec` named ``item``."""
    target, _, attribute = item.rpartition(":")
    if not target or not attribute:
        raise ModelSpecError(f"--model item {item!r} must read pkg.module:factory or "
                             f"path/to/file.py:factory; {_choices(builtins)}")
    try:
        if target.endswith(".py") or "/" in target or "\\" in target:
            module = _import_file(target, base_dir)
        else:
            if str(base_dir) not in sys.path:
                sys.path.insert(0, str(base_dir))
            module = importlib.import_module(target)
    except ModelSpecError as error:
        raise ModelSpecError(f"{error}; {_choices(builtins)}") from None
    except Exception as error:
        raise ModelSpecError(f"cannot import {target!r} for --model {item!r}: "
                             f"{type(error).__name__}: {error}; {_choices(builtins)}") from error
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"{target!r} has no attribute {attribute!r} (from --model "
                                 f"{item!r}); {_choices(builtins)}")
        obj = getattr(obj, part)
    if isinstance(obj, ModelSpec):
        return obj
    if not callable(obj):
        raise ModelSpecError(f"{item!r} is a {type(obj).__name__}, not a factory: it must be "
                             f"callable as factory(dim) -> torch.nn.Module, or a ModelSpec; "
                             f"{_choices(builtins)}")
    return ModelSpec(name=item, factory=obj, citation=f"user model {item}")


def _import_file(target: str, base_dir: Path):
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    path = path.resolve()
    if not path.is_file():
        raise ModelSpecError(f"model file {target!r} not found (looked for {path})")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"mil_assert_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"model file {target!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # lets the file import its sibling modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
