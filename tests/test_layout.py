"""The package's declared layers: built-in models import only what ``mil_assert``
exports (and the models package's own helpers), so module paths are not public API."""

from __future__ import annotations

import ast
from pathlib import Path

import mil_assert

MODELS = Path(__file__).resolve().parent.parent / "models"


def imported(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """``(module, names)`` of every ``from mil_assert... import`` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mil_assert"):
            found.append((node.module, tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names
                      if alias.name.startswith("mil_assert")]
    return found


def test_built_in_models_import_only_what_mil_assert_exports():
    wrong = []
    for path in sorted(MODELS.glob("*.py")):
        for module, names in imported(path):
            if module == "mil_assert":
                wrong += [f"{path.name}: {name}" for name in names
                          if name not in mil_assert.__all__]
            elif not module.startswith("mil_assert.models"):
                wrong.append(f"{path.name}: {module}")
    assert wrong == []
