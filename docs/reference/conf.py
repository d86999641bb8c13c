"""Sphinx configuration of the API reference (built by scripts/build-docs.sh)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# this checkout's datashard, whatever the environment's install points at
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

project = "datashard"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
root_doc = "index"
exclude_patterns: list[str] = []
html_theme = "alabaster"
html_title = "datashard API reference"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Forward references of `from __future__ import annotations` stay as written in the signature.
autodoc_type_aliases: dict[str, str] = {}
suppress_warnings: list[str] = []

# Napoleon reads the first line of an attribute's doc comment as "type: description", so
# "#: Short environment aliases: ..." would render "Short environment aliases" as the type. This
# package annotates its attributes and never writes a type there: a leading ": " gives an empty
# type and keeps the sentence whole.


def _keep_sentences(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what in ("attribute", "data", "property") and lines and ":" in lines[0]:
        lines[0] = ": " + lines[0]


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _keep_sentences, priority=400)
