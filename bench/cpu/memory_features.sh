#!/usr/bin/env bash
# What the memory features cost in step time on the CPU: the Shakespeare MoE
# trained on two MPI ranks (mesh dp=2, one OpenBLAS thread each) compiled
# plain, with ZeRO stage 1 (moec --zero 1), with activation recompute (moec
# --recompute full) and with both, one after another in the same run; prints
# a table of each build's per-rank memory (moec --memory-report) and its
# training speed against the plain build's.
#
#   bench/cpu/memory_features.sh
#
# Environment: BUILD_DIR (default build/), STEPS (default 30), SKIP (steps
# left out of the median, default 5), CORPUS (default ../shared/data/
# tinyshakespeare/input.txt), JOBS (build parallelism, default nproc).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
steps="${STEPS:-30}"
skip="${SKIP:-5}"
corpus="${CORPUS:-$root/../shared/data/tinyshakespeare/input.txt}"
model="$root/models/shakespeare_moe.mlir"

if [ ! -r "$corpus" ]; then
  echo "memory_features: cannot read the corpus '$corpus' (set CORPUS)" >&2
  exit 1
fi

source "$root/bench/cpu/common.sh"
bench_build_moec
bench_mpi_launcher
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

out="$build/bench-memory-features"
mkdir -p "$out"

# VARIANT FLAGS...: compiles, trains, prints "total_bytes tokens_per_s".
measure() {
  local variant="$1"
  shift
  "$build/bin/moec" "$model" --mesh dp=2 "$@" -o "$out/$variant"
  "$build/bin/moec" "$model" --mesh dp=2 "$@" --memory-report=json \
    >"$out/$variant.json"
  rm -f "$out/$variant.jsonl"
  "${launcher[@]}" "$out/$variant" train --data "$corpus" --steps "$steps" \
    --init-random 1 --log-every 1 --metrics "$out/$variant.jsonl" \
    --eval-every 0 --sample-chars 0 >"$out/$variant.log"
  python3 - "$out/$variant.json" "$out/$variant.jsonl" "$skip" <<'PY'
import json, statistics, sys
total = json.load(open(sys.argv[1]))["ranks"][0]["total"]
rows = [json.loads(l) for l in open(sys.argv[2]) if '"tokens_per_s"' in l]
skip = int(sys.argv[3])
if len(rows) <= skip:
    sys.exit(f"memory_features: {sys.argv[2]} has {len(rows)} steps, need more than {skip}")
print(total, statistics.median(r["tokens_per_s"] for r in rows[skip:]),
      rows[-1]["loss"])
PY
}

printf '| build | memory a rank (report) | tokens/s | speed vs plain | last loss |\n'
printf '|---|---|---|---|---|\n'
plain=""
while read -r variant flags; do
  # shellcheck disable=SC2086 # the flags are words
  read -r total tps loss < <(measure "$variant" $flags)
  [ -n "$plain" ] || plain="$tps"
  python3 - "$variant" "$total" "$tps" "$plain" "$loss" <<'PY'
import sys
name, total, tps, plain, loss = sys.argv[1:]
print(f"| {name} | {int(total) / 2**20:.1f} MiB | {float(tps):.0f} | "
      f"{float(tps) / float(plain):.2f}x | {float(loss):.4f} |")
PY
done <<'VARIANTS'
plain
zero1 --zero 1
recompute --recompute full
zero1+recompute --zero 1 --recompute full
VARIANTS
