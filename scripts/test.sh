#!/usr/bin/env bash
# Installs, builds and runs every test (lit + FileCheck suite and the C++ unit
# tests) through CTest, then again under ASan + UBSan (scripts/sanitize.sh;
# SANITIZE=0 skips that second run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"

bash "$root/scripts/build.sh"
ctest --test-dir "$build" --output-on-failure
if [ "${SANITIZE:-1}" != 0 ]; then
  bash "$root/scripts/sanitize.sh"
fi
