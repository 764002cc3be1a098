#!/usr/bin/env bash
# How well the cost model ranks layouts on this CPU: every layout `moec --mesh
# auto --devices 4` considers for a model, predicted (--explain=all, the cpu
# profile) and measured (each compiled and trained for STEPS steps under
# mpirun -np 4, one OpenBLAS thread a rank), in the same run. Prints each
# layout's predicted and measured step time, the Spearman rank correlation
# between them, and the measured speed of the layout --mesh auto chooses
# against the fastest measured one.
#
#   bench/cpu/layout_model.sh            # Shakespeare and a wider tiny Qwen3-MoE
#
# Environment: BUILD_DIR (default build/), STEPS (default 12), SKIP (steps
# left out of the median, default 2), HARDWARE (default cpu), CORPUS
# (default ../shared/data/tinyshakespeare/input.txt), JOBS.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
steps="${STEPS:-12}"
skip="${SKIP:-2}"
hardware="${HARDWARE:-cpu}"
corpus="${CORPUS:-$root/../shared/data/tinyshakespeare/input.txt}"
if [ ! -r "$corpus" ]; then
  echo "layout_model: cannot read the corpus '$corpus' (set CORPUS)" >&2
  exit 1
fi

source "$root/bench/cpu/common.sh"
bench_build_moec
bench_mpi_launcher
launcher[2]=4 # mpirun -np 4
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

out="$build/bench-layout-model"
rm -rf "$out" && mkdir -p "$out"

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
  "$build/bin/moec" "$model" --mesh auto --devices 4 --hardware "$hardware" \
    --explain=all >"$out/$name.table" 2>"$out/$name.chose"
  local i=0
  grep -E '^\*? +[0-9]+ +--mesh' "$out/$name.table" | while read -r line; do
    flags="$(sed -E 's/^\*? *[0-9]+ +//; s/  .*//' <<<"$line")"
    i=$((i + 1))
    # shellcheck disable=SC2086 # the flags are words
    "$build/bin/moec" "$model" $flags -o "$out/$name.$i"
    "${launcher[@]}" "$out/$name.$i" train "$@" --steps "$steps" \
      --init-random 1 --log-every 1 --metrics "$out/$name.$i.jsonl" \
      --eval-every 0 --sample-chars 0 </dev/null >"$out/$name.$i.log"
    echo "$i $flags" >>"$out/$name.layouts"
    rm -f "$out/$name.$i"
  done
}

measure shakespeare "$root/models/shakespeare_moe.mlir" --data "$corpus"
measure qwen3_tiny "$out/qwen3_tiny.mlir" --data "$out/tokens.bin" --data-format u16

python3 - "$out" "$skip" <<'PY'
import json, re, statistics, sys
out, skip = sys.argv[1], int(sys.argv[2])
SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}

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

for name in ("shakespeare", "qwen3_tiny"):
    predicted, chosen = [], None
    for line in open(f"{out}/{name}.table"):
        m = re.match(r"^(\*?)\s+(\d+)\s+(--mesh .+?)\s{2,}([\d.]+) (s|ms|us)", line)
        if m:
            predicted.append((m.group(3), float(m.group(4)) * SECONDS[m.group(5)]))
            if m.group(1):
                chosen = m.group(3)
    measured = []
    for i, (flags, _) in enumerate(predicted, 1):
        rows = [json.loads(l) for l in open(f"{out}/{name}.{i}.jsonl") if '"step_seconds"' in l or '"tokens_per_s"' in l]
        tps = statistics.median(r["tokens_per_s"] for r in rows[skip:])
        measured.append(1 / tps)
    pred = [p for _, p in predicted]
    rho = spearman(pred, measured)
    best = min(measured)
    pick = measured[[f for f, _ in predicted].index(chosen)]
    print(f"\n## {name}: {len(pred)} layouts on 4 ranks\n")
    print("| layout | predicted step | measured s/token (x1e-6) | measured rank |")
    print("|---|---|---|---|")
    mr = ranks(measured)
    for (flags, p), m, r in zip(predicted, measured, mr):
        star = " (chosen)" if flags == chosen else ""
        print(f"| `{flags}`{star} | {p * 1e3:.2f} ms | {m * 1e6:.2f} | {int(r) + 1} |")
    print(f"\nSpearman rank correlation, predicted vs measured: {rho:.2f}")
    print(f"chosen layout's measured speed against the fastest measured: {best / pick:.2f}x")
PY
