"""torchmil's models by name: ``torchmil:ABMIL``, ``torchmil:TransMIL@att_dim=64``.

torchmil (Castro-Macías et al., arXiv 2509.08129; an optional extra:
``pip install "mil-assert[torchmil]"``) builds its models as ``Model(in_shape=(D,),
...)``; options after ``@`` are further constructor arguments. A model whose ``forward``
takes a mask is called on padded batches with it; one that takes none (torchmil's
``TransMIL``) is called one bag at a time, ``[1, N, D]``, so padding never reaches it.
Training uses the model's own ``compute_loss`` (see :mod:`mil_assert.adapters` for how
its terms become one loss per bag). Models that need instance coordinates or an
adjacency matrix (``SETMIL``, the ``Sm*`` and graph models) cannot take plain bags and are
refused with a line saying what they need.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Any

from torch import nn

from mil_assert.registry import ModelSpec

NEEDS = {"adj": "an adjacency matrix between instances (adj)",
         "coords": "instance coordinates (coords)"}


class TorchmilError(ValueError):
    """A torchmil model that cannot be loaded or cannot take plain bags."""


@dataclass(frozen=True)
class TorchmilFactory:
    """``factory(dim)`` building torchmil's ``name`` with ``in_shape=(dim,)``; picklable."""

    name: str

    def __call__(self, dim: int, **arguments: Any) -> nn.Module:
        return getattr(_zoo(), self.name)(in_shape=(dim,), **arguments)


def _zoo() -> Any:
    try:
        import torchmil.models
    except ImportError as error:
        raise TorchmilError(f"torchmil models need torchmil, which is not installed "
                            f"({error}); pip install 'mil-assert[torchmil]'") from None
    return torchmil.models


def torchmil_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of torchmil's model class ``name`` (e.g. ``"ABMIL"``)."""
    zoo = _zoo()
    models = [n for n in sorted(dir(zoo)) if _is_model(getattr(zoo, n))]
    if name not in models:
        raise TorchmilError(f"torchmil has no model {name!r}; its models: {', '.join(models)}")
    needs = [what for argument, what in NEEDS.items()
             if _required(getattr(zoo, name).forward, argument)
             or _required(getattr(zoo, name).compute_loss, argument)]
    if needs:
        raise TorchmilError(f"torchmil:{name} needs {' and '.join(needs)}, which plain bags "
                            f"of instances do not have; it cannot be judged by these tests")
    takes_mask = "mask" in inspect.signature(getattr(zoo, name).forward).parameters
    version = importlib.metadata.version("torchmil")
    return ModelSpec(
        name=f"torchmil:{name}", factory=TorchmilFactory(name),
        citation=f"torchmil {version} {name} (Castro-Macías et al., arXiv 2509.08129)",
        input="batch" if takes_mask else "bag1",
    )


def _is_model(obj: Any) -> bool:
    return (inspect.isclass(obj) and issubclass(obj, nn.Module) and hasattr(obj, "compute_loss")
            and obj.__name__ not in ("MILModel", "MILModelWrapper"))


def _required(function: Any, argument: str) -> bool:
    parameter = inspect.signature(function).parameters.get(argument)
    return parameter is not None and parameter.default is inspect.Parameter.empty
