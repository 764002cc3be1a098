# Shared by the CPU benchmark scripts (sourced, after `root` and `build` are
# set): the corpus, the compiler and the runtime it links, and the MPI
# launcher.

# Sets `corpus` to $CORPUS (default: the shared tiny Shakespeare), or ends
# the script named $1 with one line when it cannot be read.
bench_corpus() {
  corpus="${CORPUS:-$root/../shared/data/tinyshakespeare/input.txt}"
  if [ ! -r "$corpus" ]; then
    echo "$1: cannot read the corpus '$corpus' (set CORPUS)" >&2
    exit 1
  fi
}

# Configures (the flags of scripts/build.sh) and builds moec in $build.
bench_build_moec() {
  bash "$root/scripts/setup.sh" >/dev/null
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S "$root" -B "$build" -G Ninja \
      -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
      -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
      -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit >/dev/null
  fi
  cmake --build "$build" --target moec moe-import -- -j "${JOBS:-$(nproc)}" >/dev/null
}

# Sets the array `launcher` to run 2 MPI ranks (Open MPI: oversubscribed,
# as root if need be, passing the BLAS thread counts on).
bench_mpi_launcher() {
  launcher=(mpirun -np 2)
  if mpirun --version 2>/dev/null | grep -q "Open MPI"; then
    launcher+=(--oversubscribe -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS)
    [ "$(id -u)" = 0 ] && launcher+=(--allow-run-as-root)
  fi
  return 0
}
