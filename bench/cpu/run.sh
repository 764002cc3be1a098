#!/usr/bin/env bash
# One MoE layer forward on the CPU: the runtime's kernels against PyTorch at
# the same shapes and thread count, measured side by side; prints a table with
# the speed ratio.
#   bench/cpu/run.sh [THREADS]   (default 1)
#
# Two PyTorch peers, and the ratio is taken against the faster of them:
# Debian's torch 1.13 (/usr/bin/python3, GEMMs in the system OpenBLAS) and a
# current torch from PyPI (scripts/peer_python.sh, MKL GEMMs), when one can be
# had (the first use installs it; without it the table says so and compares
# with Debian's only). The layer's GFLOP/s are also given as a share of one
# 2048x1024x1024 sgemm through the same BLAS, timed in the same run.
# Environment: BUILD_DIR (default build/; a runtime-only tree, cmake
# -DMOE_RUNTIME_ONLY=ON as in README.md, is enough), JOBS (build parallelism,
# default nproc).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
threads="${1:-1}"

# Build the benchmark only; configure (the full build) only where $build is
# not configured yet.
if [ ! -f "$build/build.ninja" ]; then
  BUILD_DIR="$build" bash "$root/scripts/build.sh" >/dev/null
fi
cmake --build "$build" --target moe-cpu-bench -- -j "${JOBS:-$(nproc)}" >/dev/null
bench="$build/bench/cpu/moe-cpu-bench"
[ -x "$bench" ] || bench="$build/bin/moe-cpu-bench" # the runtime-only tree

# Debian's torch does its GEMMs in the system BLAS (OpenBLAS here), which
# takes its thread count from the environment, not from torch.set_num_threads;
# PyPI's uses MKL.
export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" \
  MKL_NUM_THREADS="$threads"

if pypi=$(bash "$root/scripts/peer_python.sh" 2>/tmp/moe-peer-python.$$.log); then
  pypi_version=$("$pypi" -c 'import torch; print(torch.__version__)')
else
  pypi=""
  echo "note: no PyPI torch ($(tail -1 /tmp/moe-peer-python.$$.log)); comparing with Debian's torch only"
fi
rm -f /tmp/moe-peer-python.$$.log
debian_version=$(/usr/bin/python3 -c 'import torch; print(torch.__version__)')

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

sgemm=$("$bench" --sgemm | field gflops)
echo "sgemm ceiling (2048x1024x1024, $threads thread(s)): $sgemm GFLOP/s"
echo
printf '| shape | threads | moe-cpu ms | GFLOP/s | of sgemm | torch %s ms | torch %s ms | speed-up vs faster torch |\n' \
  "$debian_version" "${pypi_version:-(PyPI: none)}"
printf '|---|---|---|---|---|---|---|---|\n'
while read -r name args; do
  ours=$("$bench" $args)
  debian=$(/usr/bin/python3 "$root/bench/cpu/moe_layer_torch.py" $args --threads "$threads" | field median_ms)
  current="-"
  if [ -n "$pypi" ]; then
    current=$("$pypi" "$root/bench/cpu/moe_layer_torch.py" $args --threads "$threads" | field median_ms)
  fi
  a=$(echo "$ours" | field median_ms)
  g=$(echo "$ours" | field gflops)
  python3 - "$name" "$threads" "$a" "$g" "$sgemm" "$debian" "$current" <<'PY'
import sys
name, threads, ours, gflops, sgemm, debian, current = sys.argv[1:]
peers = [float(debian)] + ([float(current)] if current != "-" else [])
print(f"| {name} | {threads} | {ours} | {gflops} | {100 * float(gflops) / float(sgemm):.0f}% "
      f"| {debian} | {current} | {min(peers) / float(ours):.2f}x |")
PY
done <<'SHAPES'
mixtral-like(T=2048,H=512,E=8,k=2,F=1024) --tokens 2048 --hidden 512 --experts 8 --topk 2 --inter 1024
qwen3-like(T=1024,H=512,E=64,k=8,F=256) --tokens 1024 --hidden 512 --experts 64 --topk 8 --inter 256
shakespeare(T=2048,H=128,E=8,k=2,F=128) --tokens 2048 --hidden 128 --experts 8 --topk 2 --inter 128
SHAPES
