#!/bin/sh
# Build (or reuse) the emulated aarch64 board and print its directory.
# Needs the Debian packages qemu-user-static and g++-aarch64-linux-gnu; the first build adds the
# arm64 architecture to apt (root). Options: --dir DIR, --force, --quiet. $SHIELD_CACHE moves the cache.
set -e
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m stochastic_shield.runtime_py.emulated "$@"
