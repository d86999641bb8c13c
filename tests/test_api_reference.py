"""The API reference (docs/reference, built by scripts/build-docs.sh) builds without a warning
and documents every public name a user reaches for."""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import datashard
import datashard.errors
import datashard.storage
from datashard.io.loader import RowGroupLoader
from datashard.table.scan import Scan

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build-docs.sh"

pytest.importorskip("sphinx", reason="the reference is built with Sphinx (the dev extra)")


def _build(out: Path, source: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATASHARD_")}
    env["PYTHON"] = sys.executable
    if source is not None:
        env["DOCS_SOURCE"] = str(source)
    return subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The full names of every object the built reference documents."""
    from sphinx.util.inventory import InventoryFile

    out = tmp_path_factory.mktemp("reference")
    done = _build(out)
    assert done.returncode == 0, f"the reference does not build:\n{done.stderr}"
    assert "WARNING" not in done.stderr, done.stderr
    assert (out / "index.html").exists()
    with open(out / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    data = getattr(inventory, "data", inventory)  # an object in newer Sphinx, a dict before
    return {name for objects in data.values() for name in objects}


def _public(cls: type) -> list[str]:
    return [name for name in vars(cls) if not name.startswith("_")]


def test_every_name_of_the_package_is_in_the_reference(documented: set[str]) -> None:
    missing = []
    for name in datashard.__all__:
        if name == "__version__":
            continue
        if name in datashard.errors.__all__:
            if f"datashard.errors.{name}" not in documented:
                missing.append(f"datashard.errors.{name}")
        elif f"datashard.{name}" not in documented:
            missing.append(f"datashard.{name}")
    assert not missing, f"not in the reference: {missing}"


@pytest.mark.parametrize(
    ("cls", "prefix"),
    [
        (datashard.Table, "datashard.Table"),
        (Scan, "datashard.table.scan.Scan"),
        (RowGroupLoader, "datashard.io.loader.RowGroupLoader"),
    ],
    ids=["Table", "Scan", "RowGroupLoader"],
)
def test_every_public_method_is_in_the_reference(
    documented: set[str], cls: type, prefix: str
) -> None:
    names = _public(cls)
    assert len(names) > 5
    missing = [f"{prefix}.{name}" for name in names if f"{prefix}.{name}" not in documented]
    assert not missing, f"not in the reference: {missing}"


def test_storage_loader_and_returned_types_are_in_the_reference(documented: set[str]) -> None:
    short = {name.rsplit(".", 1)[-1] for name in documented}
    wanted = [
        *datashard.storage.__all__,
        *("LocalConfig", "DirectConfig", "MemoryConfig", "S3Config", "AzureConfig", "GCSConfig"),
        *("RowGroupLoader", "TorchRowGroupDataset", "LazyReader", "LazyWriter"),
        # what the table API returns
        *("Scan", "Snapshot", "HistoryEntry", "InspectTable", "SchemaUpdate", "Column"),
        *("CompactResult", "ExpireResult", "UpsertResult", "Transaction", "lazy_frame"),
    ]
    missing = [name for name in wanted if name not in short]
    assert not missing, f"not in the reference: {missing}"


def test_a_name_that_does_not_exist_fails_the_build(tmp_path: Path) -> None:
    """A page documenting a name the package no longer has is a failed build, not a blank."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "docs" / "reference", source)
    page = source / "tables.rst"
    page.write_text(
        page.read_text(encoding="utf-8") + "\n.. autofunction:: datashard.no_such_function\n",
        encoding="utf-8",
    )
    done = _build(tmp_path / "out", source)
    assert done.returncode != 0
    assert "no_such_function" in done.stderr
