#!/usr/bin/env bash
# Builds the API reference from the package's docstrings (Sphinx autodoc + napoleon) into
# build/reference/ (or the directory given as $1): open build/reference/index.html.
#
# Any warning fails the build (a name that does not import, a docstring Sphinx cannot parse, a
# page that does not exist): the suite runs this script (tests/test_api_reference.py).
# PYTHON picks the interpreter (default: python); DOCS_SOURCE the source pages
# (default: docs/reference).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/reference}
src=${DOCS_SOURCE:-$root/docs/reference}
python=${PYTHON:-python}
# -E: read every page again, so a warning is never hidden by the previous build's cache
exec "$python" -m sphinx -b html -E -W --keep-going -q -d "$out/.doctrees" "$src" "$out"
