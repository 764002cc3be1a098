#!/usr/bin/env bash
# The GPU round trip: compile models here (where LLVM/MLIR 22 is), run them on
# a GPU machine that has CUDA, CMake and ninja but no MLIR (docs/cuda.md).
#
#   scripts/gpu_roundtrip.sh pack [CORPUS]   here: build moec, compile the
#       models to objects (moec --emit=obj) and gather what the GPU machine
#       lacks into .gpu-bundle/ (git-ignored): the objects, nlohmann/json.hpp
#       and the googletest sources from this machine's packages, the corpus.
#   scripts/gpu_roundtrip.sh run [STEPS]     there, from the repository root
#       with .gpu-bundle/ beside it: build the runtime alone
#       (-DMOE_RUNTIME_ONLY=ON) with the CUDA backend, link the model objects
#       into executables, run the runtime tests (the CUDA kernel tests run
#       against the CPU backend), compute-sanitizer memcheck on the CUDA
#       tests when it is there, the backend check (tiny Qwen3-MoE logits and
#       gradients on cuda vs cpu, ep=8 as 8 local ranks on one GPU vs 1 rank),
#       and a Shakespeare training run on the GPU (STEPS, default 300).
# Logs go to $OUT (or .gpu-bundle/out) when set.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="$root/.gpu-bundle"
cmd="${1:-}"

case "$cmd" in
pack)
  corpus="${2:-$root/../shared/data/tinyshakespeare/input.txt}"
  bash "$root/scripts/build.sh"
  moec="${BUILD_DIR:-$root/build}/bin/moec"
  rm -rf "$bundle"
  mkdir -p "$bundle/models" "$bundle/third_party/include" "$bundle/data"
  "$moec" "$root/models/qwen3_moe_tiny.mlir" --emit=obj -o "$bundle/models/qwen3_tiny.o"
  "$moec" "$root/models/qwen3_moe_tiny.mlir" --mesh dp=4,cp=2,ep=8 --emit=obj \
    -o "$bundle/models/qwen3_tiny_ep8.o"
  "$moec" "$root/models/shakespeare_moe.mlir" --emit=obj -o "$bundle/models/shakespeare.o"
  cp -r /usr/include/nlohmann "$bundle/third_party/include/"
  cp -r /usr/src/googletest "$bundle/third_party/googletest"
  if [ -r "$corpus" ]; then
    cp "$corpus" "$bundle/data/input.txt"
  else
    echo "gpu_roundtrip: no corpus at '$corpus': the training run will be skipped" >&2
  fi
  echo "packed: $(du -sh "$bundle" | cut -f1) in $bundle"
  ;;
run)
  steps="${2:-300}"
  [ -d "$bundle/models" ] || { echo "gpu_roundtrip: no $bundle (run 'pack' first, where MLIR is)" >&2; exit 1; }
  out="${OUT:-$bundle/out}"
  mkdir -p "$out"
  build="$root/build-gpu"
  objects="qwen3_tiny=$bundle/models/qwen3_tiny.o;qwen3_tiny_ep8=$bundle/models/qwen3_tiny_ep8.o;shakespeare=$bundle/models/shakespeare.o"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_RUNTIME_ONLY=ON \
    -DMOE_THIRD_PARTY_DIR="$bundle/third_party" -DMOE_MODEL_OBJECTS="$objects" \
    2>&1 | tee "$out/configure.log" | grep -E "CUDA|BLAS|MPI|Runtime-only" || true
  ninja -C "$build" 2>&1 | tail -3 | tee "$out/build.log"
  nvidia-smi -L | tee "$out/gpu.txt" || true
  status=0
  (cd "$build" && ctest --output-on-failure 2>&1) | tee "$out/ctest.log" | tail -25 || status=1
  if grep -q "skipped: no GPU" "$out/ctest.log"; then
    echo "gpu_roundtrip: the CUDA tests skipped: no GPU visible" >&2
    status=1
  fi
  if command -v compute-sanitizer >/dev/null; then
    for t in CudaDenseKernelsTest CudaAttentionTest CudaMoEKernelsTest; do
      compute-sanitizer --tool memcheck --error-exitcode 3 "$build/bin/$t" \
        > "$out/memcheck_$t.log" 2>&1 && echo "memcheck $t: clean" \
        || { echo "memcheck $t: FAILED (see $out/memcheck_$t.log)"; status=1; }
    done
  fi
  python3 "$root/test/e2e/backend_check.py" --reference "$build/bin/qwen3_tiny" \
    --mesh-exe "ep8=$build/bin/qwen3_tiny_ep8" --workdir "$out/backend_check" \
    | tee "$out/backend_check.log" || status=1
  grep -q "^PASS" "$out/backend_check.log" || status=1
  if [ -r "$bundle/data/input.txt" ]; then
    "$build/bin/shakespeare" train --data "$bundle/data/input.txt" --steps "$steps" \
      --backend cuda --init-random 1 --lr 3e-3 --log-every 25 --eval-every 100 \
      --eval-batches 16 --sample-chars 200 --seed 1 --metrics "$out/train.jsonl" 2>&1 \
      | tee "$out/train.log" | tail -15 || status=1
  fi
  echo "gpu_roundtrip: $([ $status = 0 ] && echo PASS || echo FAIL) (logs in $out)"
  exit $status
  ;;
*)
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
