#!/usr/bin/env bash
# Installs, builds and runs every test (lit + FileCheck suite and the C++ unit
# tests) through CTest, then again under ASan + UBSan (scripts/sanitize.sh;
# SANITIZE=0 skips that second run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"

bash "$root/scripts/build.sh"
# The transformers parity tests run under a Python with PyPI's torch and
# transformers; without one they are reported unsupported, loudly.
if peer="$(bash "$root/scripts/peer_python.sh")"; then
  export MOE_PEER_PYTHON="$peer"
else
  echo "test.sh: WARNING: no PyPI torch/transformers; the transformers parity tests will be unsupported" >&2
fi
ctest --test-dir "$build" --output-on-failure
if [ "${SANITIZE:-1}" != 0 ]; then
  bash "$root/scripts/sanitize.sh"
fi
