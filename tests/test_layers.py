"""The package's layers import downward only (docs/format.md, "Where the code lives").

``iceberg`` (the format) and ``storage`` import nothing of datashard but ``datashard.errors`` and
themselves; ``io`` adds ``storage`` and ``iceberg``; ``table`` adds ``io``; none of them imports
``datashard.testing`` or the front door. A violation names the module, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "datashard"

ALLOWED = {
    "iceberg": {"errors", "iceberg"},
    "storage": {"errors", "storage"},
    "io": {"errors", "storage", "iceberg", "io"},
    "table": {"errors", "storage", "iceberg", "io", "table"},
    # the `datashard` command: an adapter on top of the table layer
    "cli": {"errors", "storage", "iceberg", "io", "table", "cli"},
}


def _datashard_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``datashard.*`` import in the file, wherever it stands."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.extend((node.lineno, n) for n in names if n.split(".")[0] == "datashard")
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules under datashard/{layer}"
    wrong = []
    for path in files:
        for line, module in _datashard_imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else "<front door>"
            if target not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_package_root_holds_only_the_front_door_and_errors() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    # adapters on top of the table layer, each named by its import path: pyiceberg_catalog
    # (the PyIceberg catalog plug-in), dask and ray (datashard.dask / datashard.ray)
    adapters = ["dask.py", "pyiceberg_catalog.py", "ray.py"]
    assert modules == sorted(["__init__.py", "errors.py", *adapters])
    for adapter in adapters:
        found = _datashard_imports(PACKAGE / adapter)
        assert all(m.split(".")[1] in ALLOWED["table"] for _, m in found), (adapter, found)
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert packages == ["cli", "iceberg", "io", "storage", "table", "testing"]
