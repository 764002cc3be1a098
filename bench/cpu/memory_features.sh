#!/usr/bin/env bash
# What the memory features cost in step time on the CPU: the Shakespeare MoE
# trained on two MPI ranks (mesh dp=2, one OpenBLAS thread each) compiled
# plain, with ZeRO stage 1, 2 or 3 (moec --zero), with activation recompute
# (moec --recompute full) and with both, one after another in the same run;
# prints a table of each build's per-rank memory (moec --memory-report) and
# its training speed against the plain build's.
#
#   bench/cpu/memory_features.sh
#
# The builds take turns, ROUNDS times; a build's speed is the median over
# its rounds of the median tokens/s of its steps (after the first SKIP), so
# that a noisy stretch of a shared machine hits every build alike.
# Environment: BUILD_DIR (default build/), STEPS (default 100), SKIP (steps
# left out of the median, default 5), ROUNDS (default 3), CORPUS (default
# ../shared/data/tinyshakespeare/input.txt), JOBS (build parallelism,
# default nproc).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
steps="${STEPS:-100}"
rounds="${ROUNDS:-3}"
skip="${SKIP:-5}"
model="$root/models/shakespeare_moe.mlir"

source "$root/bench/cpu/common.sh"
bench_corpus memory_features

bench_build_moec
bench_mpi_launcher
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

out="$build/bench-memory-features"
mkdir -p "$out"

variants=("plain" "zero1 --zero 1" "zero2 --zero 2" "zero3 --zero 3"
  "recompute --recompute full" "zero1+recompute --zero 1 --recompute full"
  "zero3+recompute --zero 3 --recompute full")

compile() { # VARIANT FLAGS...
  local variant="$1"
  shift
  "$build/bin/moec" "$model" --mesh dp=2 "$@" -o "$out/$variant"
  "$build/bin/moec" "$model" --mesh dp=2 "$@" --memory-report=json \
    >"$out/$variant.json"
}

train() { # VARIANT ROUND
  "${launcher[@]}" "$out/$1" train --data "$corpus" --steps "$steps" \
    --init-random 1 --log-every 1 --metrics "$out/$1.$2.jsonl" \
    --eval-every 0 --sample-chars 0 </dev/null >"$out/$1.$2.log"
}

for v in "${variants[@]}"; do
  # shellcheck disable=SC2086 # the flags are words
  compile $v
done
rm -f "$out"/*.jsonl
for ((r = 0; r < rounds; ++r)); do
  for v in "${variants[@]}"; do
    train "${v%% *}" "$r"
  done
done

python3 - "$out" "$skip" "${variants[@]%% *}" <<'PY'
import json, statistics, sys
out, skip, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def speed(name):
    medians, loss = [], None
    r = 0
    while True:
        try:
            rows = [json.loads(l) for l in open(f"{out}/{name}.{r}.jsonl")
                    if '"tokens_per_s"' in l]
        except FileNotFoundError:
            break
        if len(rows) <= skip:
            sys.exit(f"memory_features: {name} has {len(rows)} steps, need more than {skip}")
        medians.append(statistics.median(x["tokens_per_s"] for x in rows[skip:]))
        loss = rows[-1]["loss"]
        r += 1
    return statistics.median(medians), loss
print("| build | memory a rank (report) | tokens/s | speed vs plain | last loss |")
print("|---|---|---|---|---|")
plain = None
for name in names:
    total = json.load(open(f"{out}/{name}.json"))["ranks"][0]["total"]
    tps, loss = speed(name)
    plain = plain or tps
    print(f"| {name} | {total / 2**20:.1f} MiB | {tps:.0f} | {tps / plain:.2f}x | {loss:.4f} |")
PY
