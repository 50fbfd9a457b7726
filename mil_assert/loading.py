"""Turn model strings (``--mil-model``, ``mil-assert check``, the API) into ModelSpecs.

A value is a comma-separated list; each item is a built-in model name, a user's model
given as ``pkg.module:factory`` or ``path/to/file.py:factory``, or a torchmil model as
``torchmil:CLASS``. ``factory`` may be a callable ``factory(dim) -> nn.Module`` (judged
with no declared expectations: any violation or error fails) or a :class:`ModelSpec`
(its declarations apply).

An item may end in options, each ``@key=value``: ``input``, ``output``,
``positive_class`` and ``output_key`` say how the model is called and read
(:mod:`mil_assert.adapters`); any other key is a keyword argument of the factory (for
torchmil, of the constructor). Values are Python literals, else strings::

    path/to/attention.py:Attention@input=bag1@output=probability
    torchmil:ABMIL@gated=True
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mil_assert.defaults import INSTANCE_DIM
from mil_assert.registry import ModelSpec, builtin_models


class ModelSpecError(ValueError):
    """A ``--model`` value names no model that can be loaded."""


def _choices(builtins: dict[str, ModelSpec]) -> str:
    return (f"built-in models: {', '.join(builtins)}; or your own model as "
            f"pkg.module:factory or path/to/file.py:factory, or torchmil:CLASS")


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
    for item in (part.strip() for part in split_top_level(option, ",")):
        if not item:
            raise ModelSpecError(f"--model={option!r} has an empty item; {_choices(builtins)}")
        base, options = split_options(item)
        if base in builtins:
            spec = builtins[base]
        elif base.startswith(TORCHMIL_PREFIX):
            from mil_assert.torchmil_models import torchmil_spec

            spec = torchmil_spec(base.removeprefix(TORCHMIL_PREFIX))
        elif ":" in base:
            spec = load_user_model(base, base_dir, builtins)
        else:
            raise ModelSpecError(f"unknown model {item!r}; {_choices(builtins)}")
        spec = checked(with_options(spec, item, options) if options else spec)
        if any(s.name == spec.name for s in specs):
            raise ModelSpecError(f"model {spec.name!r} is selected twice in --model={option!r}")
        specs.append(spec)
    return specs


TORCHMIL_PREFIX = "torchmil:"
ADAPTER_OPTIONS = ("input", "output", "positive_class", "output_key")


OPENING = {"(": ")", "[": "]", "{": "}"}
QUOTES = ("'", '"')


def split_top_level(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` outside brackets and quotes.

    ``"a.py:f@hidden=(32,16),abmil"`` split at ``","`` is ``["a.py:f@hidden=(32,16)",
    "abmil"]``, so option values may hold commas (and ``@``) in a tuple, list, dict or
    string literal. An unclosed bracket or quote is a :class:`ModelSpecError`.
    """
    parts, current, closing, quote = [], [], [], None
    for char in text:
        if quote is not None:
            quote = None if char == quote else quote
        elif char in QUOTES:
            quote = char
        elif char in OPENING:
            closing.append(OPENING[char])
        elif closing and char == closing[-1]:
            closing.pop()
        elif char == separator and not closing:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote is not None or closing:
        missing = quote if quote is not None else closing[-1]
        raise ModelSpecError(f"{text!r} has an unclosed bracket or quote (no closing "
                             f"{missing!r}); close it, e.g. @hidden=(32,16)")
    parts.append("".join(current))
    return parts


def split_options(item: str) -> tuple[str, dict[str, Any]]:
    """``"a.py:f@input=bag@hidden=(32,16)"`` -> ``("a.py:f", {"input": "bag", "hidden":
    (32, 16)})``."""
    base, *parts = split_top_level(item, "@")
    options: dict[str, Any] = {}
    for part in parts:
        key, equals, text = part.partition("=")
        if not key.isidentifier() or not equals:
            raise ModelSpecError(f"model option {part!r} in {item!r} must read @key=value, e.g. "
                                 f"@input=bag1 or @output=probability")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return base, options


@dataclasses.dataclass(frozen=True)
class FactoryCall:
    """``factory(dim)`` for a constructor as its authors wrote it: the instance dimension
    goes to keyword ``dim_arg`` (``None``: the constructor takes none, its width is fixed),
    with the other options as keyword arguments. Picklable, for ``--jobs``."""

    factory: Callable[..., Any]
    dim_arg: str | None | bool = True  # True: positional
    arguments: tuple[tuple[str, Any], ...] = ()

    def __call__(self, dim: int) -> Any:
        kwargs = dict(self.arguments)
        if self.dim_arg is True:
            return self.factory(dim, **kwargs)
        if self.dim_arg:
            kwargs[self.dim_arg] = dim
        return self.factory(**kwargs)

    def check(self, item: str) -> None:
        """Raise :class:`ModelSpecError` unless the factory takes these arguments: bad
        keywords stop the run before training for every kind of model (for torchmil, the
        model class's constructor is checked)."""
        factory, kwargs = self.factory, dict(self.arguments)
        if isinstance(self.dim_arg, str):
            kwargs[self.dim_arg] = INSTANCE_DIM
        args: tuple[Any, ...] = (INSTANCE_DIM,) if self.dim_arg is True else ()
        constructor = _torchmil_constructor(factory)
        if constructor is not None and args:
            factory, args, kwargs = constructor, (), {**kwargs, "in_shape": args}
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            raise ModelSpecError(f"{item!r}: the factory cannot be called with "
                                 f"{'the dimension and ' if args else ''}{sorted(kwargs)} "
                                 f"({error}); see @dim_arg=NAME and @dim_arg=None") from None


def _torchmil_constructor(factory: Any) -> Any:
    """The torchmil model class a ``torchmil:CLASS`` factory builds, else ``None``."""
    from mil_assert.torchmil_models import TorchmilFactory, _zoo

    return getattr(_zoo(), factory.name) if isinstance(factory, TorchmilFactory) else None


def with_options(spec: ModelSpec, item: str, options: dict[str, Any]) -> ModelSpec:
    """``spec`` named ``item``, called and read as the adapter options say; ``dim_arg`` and
    the other options go to the factory (:class:`FactoryCall`)."""
    adapter = {key: value for key, value in options.items() if key in ADAPTER_OPTIONS}
    arguments = {key: value for key, value in options.items()
                 if key not in ADAPTER_OPTIONS and key != "dim_arg"}
    factory = spec.factory
    _refuse_misspelled_options(item, factory, arguments)
    if arguments or "dim_arg" in options:
        call = FactoryCall(factory, options.get("dim_arg", True), tuple(arguments.items()))
        call.check(item)
        factory = call
    try:
        return dataclasses.replace(spec, name=item, factory=factory, **adapter)
    except ValueError as error:
        raise ModelSpecError(str(error)) from None


def _refuse_misspelled_options(item: str, factory: Any, arguments: dict[str, Any]) -> None:
    """A factory option that is not one of the factory's own parameters but reads like a
    mil-assert option (``@inptu=bag1``) is a typo: refused with the option it resembles,
    also for a factory taking ``**kwargs``, which would swallow it silently."""
    try:
        own = set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        own = set()
    ours = (*ADAPTER_OPTIONS, "dim_arg")
    for key in arguments:
        close = difflib.get_close_matches(key, ours, n=1, cutoff=0.7)
        if close and key not in own:
            raise ModelSpecError(f"{item!r}: unknown option {key!r} (did you mean "
                                 f"{close[0]}?); mil-assert's options are "
                                 f"{', '.join('@' + option + '=' for option in ours)} and any "
                                 f"other option is passed to the factory")


def load_user_model(item: str, base_dir: Path, builtins: dict[str, ModelSpec]) -> ModelSpec:
    """Import ``target:attribute`` and wrap it as a :class:`ModelSpec` named ``item``."""
    target, _, attribute = item.rpartition(":")
    if not target or not attribute:
        raise ModelSpecError(f"model {item!r} must read pkg.module:factory or "
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
        raise ModelSpecError(f"cannot import {target!r} for model {item!r}: "
                             f"{type(error).__name__}: {error}; {_choices(builtins)}") from error
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"{target!r} has no attribute {attribute!r} (from model "
                                 f"{item!r}); {_choices(builtins)}")
        obj = getattr(obj, part)
    if isinstance(obj, ModelSpec):
        return obj
    if not callable(obj):
        raise ModelSpecError(f"{item!r} is a {type(obj).__name__}, not a factory: it must be "
                             f"callable as factory(dim) -> torch.nn.Module, or a ModelSpec; "
                             f"{_choices(builtins)}")
    return ModelSpec(name=item, factory=obj, citation=f"user model {item}")


def checked(spec: ModelSpec) -> ModelSpec:
    """``spec`` if its factory can be called as ``factory(dim)``; else a clear error.

    Checked when the model is loaded, so a factory of the wrong signature stops the run
    before any training instead of turning every cell into an error.
    """
    factory = spec.factory
    if not callable(factory):
        raise ModelSpecError(f"model {spec.name!r}: factory is a {type(factory).__name__}, "
                             f"not a callable factory(dim) -> torch.nn.Module")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no introspectable signature: leave it to the call
        return spec
    try:
        signature.bind(INSTANCE_DIM)
    except TypeError:
        name = getattr(factory, "__qualname__", type(factory).__name__)
        raise ModelSpecError(
            f"model {spec.name!r}: the factory {name}{signature} cannot be called as "
            f"factory(dim) with the instance dimension; give a factory that takes it, or "
            f"name the constructor's keyword for it with @dim_arg=NAME (@dim_arg=None: it "
            f"takes none)") from None
    return spec


def as_spec(model: Any, base_dir: Path | None = None) -> ModelSpec:
    """One model given to the decorator or the Python API, as a checked :class:`ModelSpec`.

    ``model`` is a ``ModelSpec``, a factory ``factory(dim) -> nn.Module`` (named after the
    factory), or one ``--mil-model`` item string (relative to ``base_dir``, default the
    current directory).
    """
    if isinstance(model, ModelSpec):
        return checked(model)
    if isinstance(model, str):
        specs = resolve_models(model, Path.cwd() if base_dir is None else base_dir)
        if len(specs) != 1:
            raise ModelSpecError(f"{model!r} names {len(specs)} models; give one per item")
        return specs[0]
    if callable(model):
        name = getattr(model, "__name__", None) or type(model).__name__
        return checked(ModelSpec(name=name, factory=model,
                                 citation=f"user model {getattr(model, '__module__', '?')}.{name}"))
    raise ModelSpecError(f"cannot judge a {type(model).__name__}: give a ModelSpec, a factory "
                         f"factory(dim) -> torch.nn.Module, or a model string such as "
                         f"'abmil' or 'path/to/file.py:factory'")


def model_items(models: Any) -> list[Any]:
    """``models`` as a list of single items: one model, a list of them, and comma-separated
    strings are split."""
    if isinstance(models, (str, ModelSpec)) or callable(models) or not hasattr(models, "__iter__"):
        models = [models]
    items: list[Any] = []
    for model in models:
        if isinstance(model, str):
            items += [part.strip() for part in split_top_level(model, ",")]
        else:
            items.append(model)
    if not items:
        raise ModelSpecError("no model given: name at least one model to judge")
    return items


def as_specs(models: Any, base_dir: Path | None = None) -> list[ModelSpec]:
    """Every model of ``models`` (see :func:`as_spec`); two models of one name are refused."""
    specs = [as_spec(item, base_dir) for item in model_items(models)]
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ModelSpecError(f"model name(s) {twice} given twice; give each model once, or "
                             f"a ModelSpec with its own name")
    return specs


def select_tests(tests: str | Sequence[str] | None) -> list[str]:
    """Test names in report order; ``None`` is all of them. Unknown names are refused."""
    from mil_assert.synthetic import TESTS

    if tests is None:
        return list(TESTS)
    if isinstance(tests, str):
        tests = [part.strip() for part in tests.split(",")]
    unknown = [name for name in tests if name not in TESTS]
    if unknown or not tests:
        raise ModelSpecError(f"unknown test(s) {unknown}; known tests: {', '.join(TESTS)}")
    return [name for name in TESTS if name in tests]


USER_MODULE_PREFIX = "mil_assert_user_"
"""Name prefix of the modules imported from model files (``path/to/file.py:factory``)."""


def user_model_files() -> dict[str, str]:
    """The model files imported so far, by module name: a worker process imports them
    under the same names before it unpickles a model whose factory lives in one."""
    return {name: module.__file__ for name, module in list(sys.modules.items())
            if name.startswith(USER_MODULE_PREFIX) and getattr(module, "__file__", None)}


def import_model_files(files: dict[str, str]) -> None:
    """Import each of :func:`user_model_files`'s files under its own name."""
    for name, path in files.items():
        if name not in sys.modules:
            _import_file(path, Path(path).parent)


def _import_file(target: str, base_dir: Path):
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    path = path.resolve()
    if not path.is_file():
        raise ModelSpecError(f"model file {target!r} not found (looked for {path})")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"{USER_MODULE_PREFIX}{path.stem}_{digest}"
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
