#!/usr/bin/env bash
# Installs, builds and runs every test (lit + FileCheck suite and the C++ unit
# tests) through CTest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"

bash "$root/scripts/build.sh"
ctest --test-dir "$build" --output-on-failure
