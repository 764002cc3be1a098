#!/usr/bin/env bash
# The GPU round trip: compile and build here (where LLVM/MLIR 22 and nvcc
# are), run on a GPU machine that has CUDA, CMake, ninja and PyTorch but no
# MLIR, MPI or OpenBLAS (docs/cuda.md).
#
#   scripts/gpu_roundtrip.sh pack [CORPUS]   here: build moec, compile the
#       models to objects (moec --emit=obj), build the runtime-only tree with
#       the CUDA backend, its tests, the GPU benchmark and the model
#       executables (no MPI, no OpenBLAS: what the GPU machine lacks), and
#       gather into .gpu-bundle/ (git-ignored, carried to the machine): that
#       tree without its objects, the model objects, nlohmann/json.hpp and
#       the googletest sources (to build there should the binaries not run),
#       the corpus.
#   scripts/gpu_roundtrip.sh run [STEPS]     there, from the repository root
#       with .gpu-bundle/ beside it: use the carried tree (or build one there
#       when it does not run), then the runtime tests (the CUDA kernel tests
#       against the CPU backend), compute-sanitizer memcheck and racecheck on
#       the CUDA tests, the backend check (tiny Qwen3-MoE logits and
#       gradients on cuda vs cpu, ep=8 as 8 local ranks on one GPU vs 1 rank)
#       with fp32 and bf16 storage, the tiny Qwen3-MoE against Hugging Face
#       transformers on the GPU, Shakespeare training on the GPU (STEPS,
#       default 200) with fp32 and bf16 storage, and the GPU benchmarks
#       (bench/gpu/run.sh). Every step runs even when an earlier one failed,
#       each under its own time limit; steps that would start past the
#       deadline (GPU_DEADLINE_S seconds after the start, default 500) are
#       skipped, so the table of PASS/FAIL/SKIP per step and the verdict
#       always come last, inside one 10-minute command.
# Logs go to $OUT (or .gpu-bundle/out) when set, one file per step.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="${GPU_BUNDLE:-$root/.gpu-bundle}"
# The carried tree is built with its source and build directories at these
# fixed paths (links to the real ones, here and there), because CMake and
# CTest write absolute paths into what they generate.
src_link=/tmp/moe-gpu-src
tree_link=/tmp/moe-gpu-build
cmd="${1:-}"

# name=object pairs of the model executables, for MOE_MODEL_OBJECTS.
MODELS="qwen3_tiny qwen3_tiny_ep8 shakespeare qwen3_tiny_bf16 qwen3_tiny_ep8_bf16
  shakespeare_bf16 qwen3_gpu_bench qwen3_gpu_bench_bf16 deepseek_v3_tiny"
model_objects() {
  local objects="" m
  for m in $MODELS; do
    objects="$objects${objects:+;}$m=$1/$m.o"
  done
  echo "$objects"
}

# The runtime-only configuration, at `$1` from sources at `$2`.
configure_runtime() {
  cmake -S "$2" -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMOE_RUNTIME_ONLY=ON -DMOE_ENABLE_MPI=OFF -DMOE_ENABLE_BLAS=OFF \
    -DMOE_THIRD_PARTY_DIR="$bundle/third_party" \
    -DMOE_MODEL_OBJECTS="$(model_objects "$bundle/models")"
}

case "$cmd" in
pack)
  corpus="${2:-$root/../shared/data/tinyshakespeare/input.txt}"
  bash "$root/scripts/build.sh"
  moec="${BUILD_DIR:-$root/build}/bin/moec"
  rm -rf "$bundle"
  mkdir -p "$bundle/models" "$bundle/third_party/include" "$bundle/data"
  m="$bundle/models"
  "$moec" "$root/models/qwen3_moe_tiny.mlir" --emit=obj -o "$m/qwen3_tiny.o"
  "$moec" "$root/models/qwen3_moe_tiny.mlir" --mesh dp=4,cp=2,ep=8 --emit=obj \
    -o "$m/qwen3_tiny_ep8.o"
  "$moec" "$root/models/shakespeare_moe.mlir" --emit=obj -o "$m/shakespeare.o"
  "$moec" "$root/models/deepseek_v3_tiny.mlir" --emit=obj -o "$m/deepseek_v3_tiny.o"
  "$moec" "$root/models/qwen3_moe_tiny.mlir" --storage bf16 --emit=obj \
    -o "$m/qwen3_tiny_bf16.o"
  "$moec" "$root/models/qwen3_moe_tiny.mlir" --storage bf16 --mesh dp=4,cp=2,ep=8 \
    --emit=obj -o "$m/qwen3_tiny_ep8_bf16.o"
  "$moec" "$root/models/shakespeare_moe.mlir" --storage bf16 --emit=obj \
    -o "$m/shakespeare_bf16.o"
  "${BUILD_DIR:-$root/build}/bin/moe-import" "$root/models/configs/qwen3_moe_gpu_bench.json" \
    -o "$m/qwen3_gpu_bench.mlir"
  "$moec" "$m/qwen3_gpu_bench.mlir" --emit=obj -o "$m/qwen3_gpu_bench.o"
  "$moec" "$m/qwen3_gpu_bench.mlir" --storage bf16 --emit=obj -o "$m/qwen3_gpu_bench_bf16.o"
  cp -r /usr/include/nlohmann "$bundle/third_party/include/"
  cp -r /usr/src/googletest "$bundle/third_party/googletest"
  if [ -r "$corpus" ]; then
    cp "$corpus" "$bundle/data/input.txt"
  else
    echo "gpu_roundtrip: no corpus at '$corpus': the training runs will be skipped" >&2
  fi
  # The runtime-only tree, built here at the fixed paths and carried
  # without its objects and archives.
  ln -sfn "$root" "$src_link"
  work="${GPU_PACK_BUILD_DIR:-$root/build-gpu-pack}"
  mkdir -p "$work"
  ln -sfn "$work" "$tree_link"
  configure_runtime "$tree_link" "$src_link" >/dev/null
  ninja -C "$tree_link"
  # Stripped and compressed: the executables share most of their bytes
  # (the CUDA kernels), which xz's large window finds (about 95 MB -> 4 MB;
  # what travels to the GPU machine is limited to 64 MiB).
  stage="$bundle/build"
  mkdir -p "$stage"
  tar -C "$work" --exclude='*.o' --exclude='*.a' --exclude=CMakeFiles \
    --exclude='.ninja_*' -cf - . | tar -C "$stage" -xf -
  strip --strip-unneeded "$stage/bin/"* 2>/dev/null || true
  tar -C "$stage" -cf - . | xz -T2 -9 >"$bundle/build.tar.xz"
  rm -rf "$stage"
  echo "packed: $(du -sh "$bundle" | cut -f1) in $bundle"
  ;;
run)
  steps="${2:-200}"
  [ -d "$bundle/models" ] || { echo "gpu_roundtrip: no $bundle (run 'pack' first, where MLIR is)" >&2; exit 1; }
  out="${OUT:-$bundle/out}"
  mkdir -p "$out"
  build="${GPU_BUILD_DIR:-$root/build-gpu}"
  deadline=$((SECONDS + ${GPU_DEADLINE_S:-500}))
  # Every step runs, whatever the earlier ones did, with its whole output in
  # $out/NAME.log, its last lines shown and a time limit (STEP_TIMEOUT, 300 s
  # unless set for the step); the verdict table comes last.
  set +e
  results=()
  step() {
    local name="$1"
    shift
    if [ $SECONDS -ge $deadline ]; then
      results+=("$name|FAIL (not run: past the deadline)")
      return
    fi
    echo "== $name"
    local t0=$SECONDS
    if declare -F "$1" >/dev/null; then # a function of this script
      "$@" >"$out/$name.log" 2>&1
    else
      timeout -k 10 "${STEP_TIMEOUT:-300}" "$@" >"$out/$name.log" 2>&1
    fi
    local rc=$?
    tail -n "${TAIL:-8}" "$out/$name.log"
    local took="$((SECONDS - t0)) s"
    case $rc in
    0) results+=("$name|PASS ($took)") ;;
    124 | 137) results+=("$name|FAIL (time limit, $took)") ;;
    77) results+=("$name|SKIP: no GPU") ;;
    *) results+=("$name|FAIL (exit $rc, $took)") ;;
    esac
  }
  skip() { results+=("$1|SKIP: $2"); }

  # NCCL and cuBLAS may be missing from the loader's path there; PyTorch's
  # wheels bring both.
  if ! ldconfig -p 2>/dev/null | grep -q 'libnccl\.so\.2'; then
    extra=$(python3 -c 'import glob, os, nvidia
print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__
                       for p in glob.glob(d + "/*/lib/lib*.so*")})))' 2>/dev/null)
    [ -n "$extra" ] && export LD_LIBRARY_PATH="$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi

  # compute-sanitizer from the PATH, else the CUDA toolkit's own folder.
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)

  # The carried tree when its binaries run here; else build one.
  if [ -r "$bundle/build.tar.xz" ] && [ ! -d "$bundle/build" ]; then
    mkdir -p "$bundle/build"
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$bundle/build.tar.xz" "$bundle/build"
  fi
  if [ -x "$bundle/build/bin/CudaDenseKernelsTest" ]; then
    ln -sfn "$root" "$src_link"
    ln -sfn "$bundle/build" "$tree_link"
    step prebuilt "$tree_link/bin/CudaDenseKernelsTest" --gtest_list_tests
  else
    skip prebuilt "no carried tree in $bundle/build"
  fi
  if [ "${results[-1]}" != "${results[-1]#prebuilt|PASS}" ]; then
    build="$tree_link"
    skip configure "the carried tree runs"
    skip build "the carried tree runs"
  else
    step configure configure_runtime "$build" "$root"
    step build ninja -C "$build"
  fi
  step gpu nvidia-smi -L
  step ctest bash -c "cd '$build' && ctest --output-on-failure --no-tests=error"
  # The CUDA tests skip themselves without a GPU (CTest lists them as
  # Skipped): that is a failure here. (The NCCL test needs two GPUs.)
  step cuda-tests-ran bash -c "! grep 'Skipped' '$out/ctest.log' | grep -v Nccl | grep -q ."
  # ctest ran the bf16 expert FFN on cuBLAS's grouped GEMM (the default);
  # the other two paths against the same CPU reference (a test that skips
  # for want of a GPU fails here too).
  for path in cublas tiled; do
    step "bf16-experts-$path" bash -c "MOE_CUDA_EXPERT_GEMM=$path \
      '$build/bin/CudaBf16StorageTest' --gtest_filter='*Grouped*' >'$out/experts-$path.txt' 2>&1;
      rc=\$?; cat '$out/experts-$path.txt'; [ \$rc = 0 ] && ! grep -q 'skipped: no GPU' '$out/experts-$path.txt'"
  done
  # Tolerances as test/e2e/cuda-backend.test and cuda-backend-bf16.test.
  for storage in "" _bf16; do
    tol=()
    [ -n "$storage" ] && tol=(--rtol 1e-2 --grad-rtol 3e-2)
    step "backend-check$storage" python3 "$root/test/e2e/backend_check.py" \
      --reference "$build/bin/qwen3_tiny$storage" \
      --mesh-exe "ep8=$build/bin/qwen3_tiny_ep8$storage" \
      --workdir "$out/backend_check$storage" "${tol[@]}"
  done
  # transformers itself as the oracle, the executable on the GPU.
  step hf-parity python3 "$root/test/e2e/hf_parity.py" --model-exe "$build/bin/qwen3_tiny" \
    --backend cuda --rtol 1e-4 --workdir "$out/hf_parity"
  # DeepSeek-V3's MLA (concat/split, interleaved RoPE, value heads of their
  # own size) and routing on the GPU, logits and gradients.
  step hf-parity-deepseek python3 "$root/test/e2e/hf_parity.py" \
    --model-exe "$build/bin/deepseek_v3_tiny" --config deepseek_v3_tiny --grad \
    --backend cuda --rtol 1e-4 --workdir "$out/hf_parity_deepseek"
  if [ -n "$sanitizer" ]; then
    for t in CudaDenseKernelsTest CudaAttentionTest CudaMoEKernelsTest CudaBf16StorageTest; do
      STEP_TIMEOUT=120 step "memcheck-$t" "$sanitizer" --tool memcheck \
        --error-exitcode 3 "$build/bin/$t"
    done
  else
    skip memcheck "no compute-sanitizer"
  fi
  for storage in "" _bf16; do
    if [ -r "$bundle/data/input.txt" ]; then
      TAIL=15 STEP_TIMEOUT=150 step "train$storage" "$build/bin/shakespeare$storage" train \
        --data "$bundle/data/input.txt" --steps "$steps" --backend cuda --init-random 1 \
        --lr 3e-3 --log-every 25 --eval-every 100 --eval-batches 16 --sample-chars 200 \
        --seed 1 --metrics "$out/train$storage.jsonl"
    else
      skip "train$storage" "no corpus in the bundle"
    fi
  done
  if [ -r "$bundle/data/input.txt" ]; then
    TAIL=40 STEP_TIMEOUT=240 step bench bash "$root/bench/gpu/run.sh" "$build" \
      "$bundle/data/input.txt" "$out"
  else
    skip bench "no corpus in the bundle"
  fi
  # Racecheck is the slowest tool: last, with what time is left.
  if [ -n "$sanitizer" ]; then
    for t in CudaMoEKernelsTest CudaAttentionTest CudaDenseKernelsTest; do
      STEP_TIMEOUT=90 step "racecheck-$t" "$sanitizer" --tool racecheck \
        --racecheck-report hazard --error-exitcode 3 "$build/bin/$t"
    done
  else
    skip racecheck "no compute-sanitizer"
  fi
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
  sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
