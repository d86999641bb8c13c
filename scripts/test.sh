#!/usr/bin/env bash
# The one command that runs the whole test suite on a fresh machine:
#   scripts/test.sh [pytest arguments]      (default: the whole tests/ directory)
# 1. creates .venv (python3 -m venv) if it is missing,
# 2. installs the package with its dev extras (pip install -e ".[dev]", pinned by constraints.txt)
#    when pyproject.toml or constraints.txt changed since the last install, then `pip check`,
# 3. installs the storage servers (scripts/install-test-deps.sh: Ceph RGW, Azurite),
# 4. with no arguments, runs ruff (lint and format check) and mypy --strict on the package first,
# 5. runs pytest; the test fixtures start and stop the servers on 127.0.0.1.
# Exits with pytest's exit status.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"

log() { printf 'test.sh: %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $("$PYTHON" --version 2>&1)"
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian's python3 needs python3-venv for ensurepip.
        rm -rf "$VENV"
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            log "python3 -m venv failed; installing python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                python3-venv || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends python3-venv; }
            "$PYTHON" -m venv "$VENV"
        else
            log "python3 -m venv failed; install python3-venv (Debian/Ubuntu) and retry"
            exit 1
        fi
    fi
fi

install_args=(-e ".[dev]")
stamp_inputs=(pyproject.toml)
if [ -f constraints.txt ]; then
    install_args=(-c constraints.txt "${install_args[@]}")
    stamp_inputs+=(constraints.txt)
fi
stamp="$VENV/.datashard-dev-installed"
wanted="$(cat "${stamp_inputs[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ] \
    || ! "$VENV/bin/python" -c "import datashard, pytest" >/dev/null 2>&1; then
    log "pip install ${install_args[*]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${install_args[@]}"
    echo "$wanted" > "$stamp"
else
    log "python packages up to date (pyproject.toml and constraints.txt unchanged)"
fi
log "pip check"
"$VENV/bin/python" -m pip check --disable-pip-version-check

bash "$ROOT/scripts/install-test-deps.sh"

if [ "$#" -eq 0 ]; then
    # The whole suite also holds the code to its style: ruff, and mypy --strict on the package.
    log "ruff check; ruff format --check; mypy --strict datashard"
    "$VENV/bin/ruff" check datashard tests bench examples
    "$VENV/bin/ruff" format --check datashard tests bench examples
    "$VENV/bin/mypy" --strict datashard
    set -- tests
fi
log "pytest $*"
set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
exit "$status"
