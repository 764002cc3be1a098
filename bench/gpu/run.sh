#!/usr/bin/env bash
# The GPU benchmarks, each against its peer measured in the same run on the
# same device (docs/cuda.md, bench/RESULTS.md):
#   - the ceilings: device copy bandwidth and a large bf16 cuBLAS GEMM;
#   - the grouped expert GEMM (bf16, Qwen3-30B-A3B's layer: 128 experts,
#     hidden 2048, FFN 768, 16384 tokens x top-8; uniform and skewed routing)
#     against torch._grouped_mm and against dense cuBLAS of the same FLOPs;
#   - the permutation against the copy bandwidth;
#   - the routed block's forward + backward against PyTorch eager and
#     torch.compile;
#   - a training step of qwen3_moe_gpu_bench (8 layers, hidden 1024, 64
#     experts top-8, batch 8 x 1024) against Hugging Face transformers, fp32
#     and bf16, with MFU.
#
#   bench/gpu/run.sh BUILD_DIR DATA OUT
# BUILD_DIR holds bin/moe-gpu-bench and bin/qwen3_gpu_bench{,_bf16} (the
# runtime-only build of scripts/gpu_roundtrip.sh); DATA is the Shakespeare
# corpus the compiled model trains on; raw figures go to OUT/bench-*.txt and
# the tables to stdout. BENCH_QUICK=1 shrinks every shape (a smoke run).
# Exits 1 when a measurement of ours failed, 77 when there is no GPU.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:?usage: bench/gpu/run.sh BUILD_DIR DATA OUT}"
data="${2:?usage: bench/gpu/run.sh BUILD_DIR DATA OUT}"
out="${3:?usage: bench/gpu/run.sh BUILD_DIR DATA OUT}"
python="${PYTHON:-python3}"
mkdir -p "$out"
raw="$out/bench-raw.txt"
: >"$raw"

if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "bench/gpu/run.sh: skipped: no GPU that PyTorch can use"
  exit 77
fi
status=0
# Runs one measurement; its key=value line goes to $raw under LABEL.
measure() {
  local label="$1"
  shift
  local line
  if line=$("$@" 2>>"$out/bench-stderr.txt" | tail -1) && [ -n "$line" ]; then
    echo "$label $line" >>"$raw"
  else
    echo "$label failed" >>"$raw"
    return 1
  fi
}

shape=(--tokens 16384 --hidden 2048 --experts 128 --topk 8 --inter 768)
steps=12
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  shape=(--tokens 1024 --hidden 256 --experts 16 --topk 4 --inter 128)
  steps=4
fi

measure torch-ceilings "$python" "$root/bench/gpu/moe_layer_torch.py" ceilings
# The bf16 expert FFN on each of its paths (GroupedCublas.h): the default,
# cuBLAS's grouped batched GEMM, then one cuBLAS call per expert and the tiled
# fp32-FMA kernels.
for path in cublas tiled; do
  measure "ours-layer-uniform-$path" env MOE_CUDA_EXPERT_GEMM=$path \
    "$build/bin/moe-gpu-bench" "${shape[@]}" --routing uniform --dtype bf16 || status=1
done
for routing in uniform skewed; do
  measure "ours-layer-$routing" "$build/bin/moe-gpu-bench" "${shape[@]}" \
    --routing "$routing" --dtype bf16 || status=1
  measure "torch-layer-$routing" "$python" "$root/bench/gpu/moe_layer_torch.py" layer \
    "${shape[@]}" --routing "$routing" --dtype bf16
done

# Training steps: ours from the executable's per-step metrics (the median
# after three warm-up steps), the peer from train_step_hf.py.
for dtype in f32 bf16; do
  exe="$build/bin/qwen3_gpu_bench"
  [ "$dtype" = bf16 ] && exe="${exe}_bf16"
  metrics="$out/train-bench-$dtype.jsonl"
  rm -f "$metrics"
  if "$exe" train --data "$data" --steps "$((steps + 3))" --backend cuda --init-random 1 \
    --log-every 1 --eval-every 0 --sample-chars 0 --metrics "$metrics" \
    >"$out/train-bench-$dtype.log" 2>&1; then
    "$python" - "$metrics" >>"$raw" <<EOF
import json, sys
rates = [r["tokens_per_s"] for r in map(json.loads, open(sys.argv[1]))
         if r.get("step", 0) > 3 and "tokens_per_s" in r]
rates.sort()
print("ours-train-$dtype tokens_per_s=%.0f" % rates[len(rates) // 2])
EOF
  else
    echo "ours-train-$dtype failed" >>"$raw"
    status=1
  fi
  measure "hf-train-$dtype" "$python" "$root/bench/gpu/train_step_hf.py" --dtype "$dtype" \
    --steps "$steps"
done

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
"$python" "$root/bench/gpu/report.py" "$raw" --device "${gpu:-unknown GPU}" \
  --flops-per-token "$("$python" "$root/bench/gpu/train_step_hf.py" --flops-only | sed 's/.*=//')"
exit $status
