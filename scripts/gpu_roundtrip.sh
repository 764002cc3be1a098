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
#       gradients on cuda vs cpu, ep=8 as 8 local ranks on one GPU vs 1 rank)
#       with fp32 and with bf16 storage, and Shakespeare training runs on the
#       GPU (STEPS, default 300) with fp32 and with bf16 storage. Every step
#       runs even when an earlier one failed; a table of PASS/FAIL/SKIP per
#       step and the verdict come last.
# Logs go to $OUT (or .gpu-bundle/out) when set, one file per step.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="${GPU_BUNDLE:-$root/.gpu-bundle}"
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
  "$moec" "$root/models/qwen3_moe_tiny.mlir" --storage bf16 --emit=obj \
    -o "$bundle/models/qwen3_tiny_bf16.o"
  "$moec" "$root/models/qwen3_moe_tiny.mlir" --storage bf16 --mesh dp=4,cp=2,ep=8 \
    --emit=obj -o "$bundle/models/qwen3_tiny_ep8_bf16.o"
  "$moec" "$root/models/shakespeare_moe.mlir" --storage bf16 --emit=obj \
    -o "$bundle/models/shakespeare_bf16.o"
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
  build="${GPU_BUILD_DIR:-$root/build-gpu}"
  objects=""
  for m in qwen3_tiny qwen3_tiny_ep8 shakespeare qwen3_tiny_bf16 qwen3_tiny_ep8_bf16 \
    shakespeare_bf16; do
    objects="$objects${objects:+;}$m=$bundle/models/$m.o"
  done
  # Every step runs, whatever the earlier ones did, with its whole output in
  # $out/NAME.log and its last lines shown; the verdict table comes last.
  set +e
  results=()
  step() {
    local name="$1"
    shift
    echo "== $name"
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n "${TAIL:-8}" "$out/$name.log"
    if [ $rc = 0 ]; then results+=("$name|PASS"); else results+=("$name|FAIL (exit $rc)"); fi
  }
  skip() { results+=("$1|SKIP: $2"); }
  step configure cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMOE_RUNTIME_ONLY=ON -DMOE_THIRD_PARTY_DIR="$bundle/third_party" \
    -DMOE_MODEL_OBJECTS="$objects"
  step build ninja -C "$build"
  step gpu nvidia-smi -L
  step ctest bash -c "cd '$build' && ctest --output-on-failure --no-tests=error"
  # The CUDA tests skip themselves without a GPU: that is a failure here.
  step cuda-tests-ran bash -c "! grep -q 'skipped: no GPU' '$out/ctest.log'"
  if command -v compute-sanitizer >/dev/null; then
    for t in CudaDenseKernelsTest CudaAttentionTest CudaMoEKernelsTest CudaBf16StorageTest; do
      step "memcheck-$t" compute-sanitizer --tool memcheck --error-exitcode 3 "$build/bin/$t"
    done
  else
    skip memcheck "no compute-sanitizer"
  fi
  # Tolerances as test/e2e/cuda-backend.test and cuda-backend-bf16.test.
  for storage in "" _bf16; do
    tol=()
    [ -n "$storage" ] && tol=(--rtol 1e-2 --grad-rtol 3e-2)
    step "backend-check$storage" python3 "$root/test/e2e/backend_check.py" \
      --reference "$build/bin/qwen3_tiny$storage" \
      --mesh-exe "ep8=$build/bin/qwen3_tiny_ep8$storage" \
      --workdir "$out/backend_check$storage" "${tol[@]}"
  done
  for storage in "" _bf16; do
    if [ -r "$bundle/data/input.txt" ]; then
      TAIL=15 step "train$storage" "$build/bin/shakespeare$storage" train \
        --data "$bundle/data/input.txt" --steps "$steps" --backend cuda --init-random 1 \
        --lr 3e-3 --log-every 25 --eval-every 100 --eval-batches 16 --sample-chars 200 \
        --seed 1 --metrics "$out/train$storage.jsonl"
    else
      skip "train$storage" "no corpus in the bundle"
    fi
  done
  status=0
  echo
  printf '%-36s %s\n' step result
  for r in "${results[@]}"; do
    printf '%-36s %s\n' "${r%%|*}" "${r#*|}"
    case "$r" in *FAIL*) status=1 ;; esac
  done
  echo "gpu_roundtrip: $([ $status = 0 ] && echo PASS || echo FAIL) (logs in $out)"
  exit $status
  ;;
*)
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
