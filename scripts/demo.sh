#!/usr/bin/env bash
# The demo command: installs what is missing, builds, and routes a batch on the default
# device (a GPU when there is one, else lavapipe). Extra arguments go to `moevk demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ ! -f build/build.ninja ]; then meson setup build >/dev/null; fi
ninja -C build >/dev/null
exec build/cli/moevk demo "$@"
