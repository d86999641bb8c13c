"""Sphinx configuration of the API reference (built by scripts/build-docs.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

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
