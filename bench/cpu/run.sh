#!/usr/bin/env bash
# One MoE layer forward on the CPU: the runtime's kernels against PyTorch
# (Debian's torch, /usr/bin/python3) at the same shapes and thread count,
# measured side by side; prints a table with the speed ratio.
#   bench/cpu/run.sh [THREADS]   (default 1)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
threads="${1:-1}"
bash "$root/scripts/build.sh" >/dev/null

# Debian's torch does its GEMMs in the system BLAS (OpenBLAS here), which
# takes its thread count from the environment, not from torch.set_num_threads.
export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

printf '| shape | threads | moe-cpu ms | torch ms | speed-up |\n|---|---|---|---|---|\n'
while read -r name args; do
  ours=$("$build/bench/cpu/moe-cpu-bench" $args)
  peer=$(/usr/bin/python3 "$root/bench/cpu/moe_layer_torch.py" $args --threads "$threads")
  a=$(echo "$ours" | field median_ms)
  b=$(echo "$peer" | field median_ms)
  printf '| %s | %s | %s | %s | %.2fx |\n' "$name" "$threads" "$a" "$b" \
    "$(python3 -c "print($b / $a)")"
done <<'SHAPES'
mixtral-like(T=2048,H=512,E=8,k=2,F=1024) --tokens 2048 --hidden 512 --experts 8 --topk 2 --inter 1024
qwen3-like(T=1024,H=512,E=64,k=8,F=256) --tokens 1024 --hidden 512 --experts 64 --topk 8 --inter 256
shakespeare(T=2048,H=128,E=8,k=2,F=128) --tokens 2048 --hidden 128 --experts 8 --topk 2 --inter 128
SHAPES
