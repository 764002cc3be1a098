#!/usr/bin/env bash
# How well the cost model ranks layouts on this CPU: every layout `moec --mesh
# auto --devices 4` considers for a model, predicted (--explain=all) and
# measured (each compiled and trained for STEPS steps under mpirun -np 4, one
# OpenBLAS thread a rank), in the same run. The predictions come from the
# built-in cpu profile and from a profile moe-calibrate measures first under
# the same mpirun. Prints each layout's predicted and measured step time and,
# per profile, the Spearman rank correlation between them and the measured
# speed of the layout --mesh auto chooses against the fastest measured one.
#
#   bench/cpu/layout_model.sh            # Shakespeare and a wider tiny Qwen3-MoE
#
# A layout's measured step is its fastest step after the first SKIP of each
# round: the work is the same every step, so the fastest is the one a noisy
# neighbour disturbed least.
# Environment: BUILD_DIR (default build/), STEPS (default 10), SKIP (default
# 2), ROUNDS (default 3), CORPUS (default
# ../shared/data/tinyshakespeare/input.txt), JOBS.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
steps="${STEPS:-10}"
skip="${SKIP:-2}"
rounds="${ROUNDS:-3}"
source "$root/bench/cpu/common.sh"
bench_corpus layout_model

bench_build_moec
bench_mpi_launcher
launcher[2]=4 # mpirun -np 4
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

out="$build/bench-layout-model"
rm -rf "$out" && mkdir -p "$out"
cmake --build "$build" --target moe-calibrate -- -j "${JOBS:-$(nproc)}" >/dev/null
"${launcher[@]}" "$build/bin/moe-calibrate" --name calibrated \
  -o "$out/calibrated.json" </dev/null

# The tiny Qwen3-MoE at batch 8 x seq 128, on random token ids.
"$build/bin/moe-import" "$root/models/configs/qwen3_moe_tiny.json" --batch 8 \
  --seq 128 -o "$out/qwen3_tiny.mlir"
python3 -c "
import random, struct
random.seed(1)
open('$out/tokens.bin', 'wb').write(struct.pack('<200000H', *[random.randrange(128) for _ in range(200000)]))"

measure() { # NAME MODEL DATA...
  local name="$1" model="$2"
  shift 2
  for hw in cpu calibrated; do
    local profile="$hw"
    [ "$hw" = calibrated ] && profile="$out/calibrated.json"
    "$build/bin/moec" "$model" --mesh auto --devices 4 --hardware "$profile" \
      --explain=all --emit=obj -o "$out/$name.o" >"$out/$name.$hw.table"
  done
  local i=0
  while read -r line; do
    i=$((i + 1))
    flags="$(sed -E 's/^\*? *[0-9]+ +//; s/  .*//' <<<"$line")"
    # shellcheck disable=SC2086 # the flags are words
    "$build/bin/moec" "$model" $flags -o "$out/$name.$i"
    echo "$i $flags" >>"$out/$name.layouts"
  done < <(grep -E '^\*? +[0-9]+ +--mesh' "$out/$name.cpu.table")
  # The layouts take turns, ROUNDS times, so that a noisy stretch of a shared
  # machine hits them alike.
  for ((r = 0; r < rounds; ++r)); do
    for ((j = 1; j <= i; ++j)); do
      "${launcher[@]}" "$out/$name.$j" train "$@" --steps "$steps" \
        --init-random 1 --log-every 1 --metrics "$out/$name.$j.$r.jsonl" \
        --eval-every 0 --sample-chars 0 </dev/null >"$out/$name.$j.$r.log"
    done
  done
}

measure shakespeare "$root/models/shakespeare_moe.mlir" --data "$corpus"
measure qwen3_tiny "$out/qwen3_tiny.mlir" --data "$out/tokens.bin" --data-format u16

python3 - "$out" "$skip" "$rounds" <<'PY'
import json, re, statistics, sys
out, skip = sys.argv[1], int(sys.argv[2])
SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
PROFILES = ("cpu", "calibrated")

def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r

def spearman(x, y):
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5

def table(path):
    predicted, chosen = {}, None
    for line in open(path):
        m = re.match(r"^(\*?)\s+(\d+)\s+(--mesh .+?)\s{2,}([\d.]+) (s|ms|us)", line)
        if m:
            predicted[m.group(3)] = float(m.group(4)) * SECONDS[m.group(5)]
            if m.group(1):
                chosen = m.group(3)
    return predicted, chosen

for name in ("shakespeare", "qwen3_tiny"):
    layouts = [l.split(" ", 1)[1].strip() for l in open(f"{out}/{name}.layouts")]
    measured = []
    for i in range(1, len(layouts) + 1):
        fastest = 0
        for r in range(int(sys.argv[3])):
            rows = [json.loads(l) for l in open(f"{out}/{name}.{i}.{r}.jsonl") if '"tokens_per_s"' in l]
            fastest = max([fastest] + [x["tokens_per_s"] for x in rows[skip:]])
        measured.append(1 / fastest)
    tables = {p: table(f"{out}/{name}.{p}.table") for p in PROFILES}
    print(f"\n## {name}: {len(layouts)} layouts on 4 ranks\n")
    print("| layout | predicted, cpu | predicted, calibrated | measured us/token | measured rank |")
    print("|---|---|---|---|---|")
    for flags, m, r in zip(layouts, measured, ranks(measured)):
        cells = []
        for p in PROFILES:
            predicted, chosen = tables[p]
            cells.append(f"{predicted[flags] * 1e3:.2f} ms" + (" *" if flags == chosen else ""))
        print(f"| `{flags}` | {cells[0]} | {cells[1]} | {m * 1e6:.2f} | {int(r) + 1} |")
    best = min(measured)
    for p in PROFILES:
        predicted, chosen = tables[p]
        rho = spearman([predicted[f] for f in layouts], measured)
        pick = measured[layouts.index(chosen)]
        print(f"\n{p} profile: Spearman rank correlation {rho:.2f}; the chosen "
              f"`{chosen}` runs at {best / pick:.2f}x the fastest measured")
PY
