#!/usr/bin/env bash
# Builds everything with AddressSanitizer + UndefinedBehaviorSanitizer into
# $SANITIZE_BUILD_DIR (default: build-asan/) and runs every test under them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SANITIZE_BUILD_DIR:-$root/build-asan}"

bash "$root/scripts/setup.sh"
# The CUDA backend is left out: nothing here can run it (its tests skip), and
# nvcc-compiled objects are not instrumented anyway.
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DLLVM_USE_SANITIZER="Address;Undefined" -DMOE_ENABLE_CUDA=OFF \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit
fi
cmake --build "$build" -- -j "${JOBS:-$(nproc)}"

# The packaged LLVM/MLIR libraries are not instrumented, but the allocator
# templates inlined into our code poison their slabs; with user poisoning on,
# ASan reports the libraries' own (valid) reads of those slabs. Everything
# else stays checked, and any UB report fails the run.
export ASAN_OPTIONS="allow_user_poisoning=0:detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir "$build" --output-on-failure
