#!/usr/bin/env bash
# Compile time against depth: Qwen3-235B-A22B's widths (hidden 4096, 128
# experts top-8, vocabulary 151,936, batch 8 x 4096) at 8, 16, 32, 64 and 94
# layers, compiled by moec from .mlir to an x86-64 object with the training
# step, on one rank and on a dp=8,ep=8 mesh. Prints the median wall time of
# REPEATS runs (default 5) and the time per layer relative to 8 layers: a
# compiler linear in depth keeps that ratio near 1.
#
#   bench/compile/compile_time.sh [REPEATS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
repeats="${1:-5}"
# shellcheck source=../cpu/common.sh
source "$root/bench/cpu/common.sh"
bench_build_moec

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Median wall seconds of compiling $1 with the rest of the arguments.
median_seconds() {
  local model="$1"
  shift
  for _ in $(seq "$repeats"); do
    local start end
    start=$(date +%s%N)
    "$build/bin/moec" "$model" --emit=obj -o "$work/out.o" "$@"
    end=$(date +%s%N)
    echo $(((end - start) / 1000))
  done | sort -n | awk '{ t[NR] = $1 } END { printf "%.3f", t[int((NR + 1) / 2)] / 1e6 }'
}

echo "moec compile time, Qwen3-235B-A22B widths, .mlir -> object with the training step"
echo "(median of $repeats; per-layer time relative to 8 layers)"
echo
printf '| layers | mesh | ops in model | seconds | ms per layer | per layer vs 8 |\n'
printf '|---|---|---|---|---|---|\n'
for mesh in "" "dp=8,ep=8"; do
  base=""
  for layers in 8 16 32 64 94; do
    model="$work/qwen3_235b_${layers}.mlir"
    "$build/bin/moe-import" "$root/models/configs/qwen3_235b_a22b.json" --batch 8 \
      --seq 4096 --set "num_hidden_layers=$layers" -o "$model"
    ops=$(grep -c ' = \(moe\|tensor\)\.' "$model")
    if [ -n "$mesh" ]; then
      seconds=$(median_seconds "$model" --mesh "$mesh")
    else
      seconds=$(median_seconds "$model")
    fi
    per_layer=$(awk -v s="$seconds" -v l="$layers" 'BEGIN { print 1000 * s / l }')
    [ -n "$base" ] || base="$per_layer"
    awk -v l="$layers" -v m="${mesh:-1 rank}" -v o="$ops" -v s="$seconds" \
      -v p="$per_layer" -v b="$base" \
      'BEGIN { printf "| %d | %s | %d | %.3f | %.1f | %.2f |\n", l, m, o, s, p, p / b }'
  done
done
