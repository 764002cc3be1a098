#!/usr/bin/env bash
# Load-aware expert placement under skewed (Zipf) routing: training steps of
# an expert-parallel Shakespeare MoE with and without re-placement, on the MPI
# and the local (threads) communicators; prints step time, tokens/s and the
# max/mean rows per EP rank, with the speed ratio against static placement.
#
#   bench/cpu/expert_placement.sh
#
# The model: shakespeare_moe with an expert bias on each router (selection
# only) and no aux loss, so routing follows the biases set here; its expert
# FFN is EXPERT_INTER wide (default 512, so that the experts carry most of
# the step, as in Qwen3-MoE / DeepSeek-V3 class models). Expert e of every
# layer gets the bias BETA * ln p_e with Zipf popularity p_e ~ (e + 1)^-S
# (defaults S = 1, BETA = 0.03: the first step's tokens per expert then fall
# off roughly as 1/(e+1)); `--bias-update-rate 0` keeps them. Expert 0 is the
# hottest, so the static split (rank 0 holds experts 0-3) makes rank 0 the
# straggler. Compiled for dp=2 x ep=2 (two ranks, one per core here).
#
# Three runs per communicator, all from the same weights and batches:
#   static R=0   the default: moec without spare slots, static placement
#   static R=2   moec --replica-slots 2, static placement (slots left empty)
#   replaced R=2 the same executable, --placement-policy replicate-hot
#                --replace-every K (least-loaded dispatch over replicas)
# Step time: mean wall time of steps K+1..STEPS (the first re-placement is
# after step K), re-placement steps included; tokens/s is the median of the
# same steps. max/mean rows: the rows the busiest EP rank receives over the
# mean, worst MoE layer of a step, averaged over the same steps.
# Environment: BUILD_DIR (default build/), STEPS (60), REPLACE_EVERY (10),
# EXPERT_INTER (512), ZIPF_S (1.0), BETA (0.03), CORPUS (default
# ../shared/data/tinyshakespeare/input.txt), JOBS (build parallelism).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
steps="${STEPS:-60}"
every="${REPLACE_EVERY:-10}"
inter="${EXPERT_INTER:-512}"
zipf_s="${ZIPF_S:-1.0}"
beta="${BETA:-0.03}"
mesh=dp=2,ep=2

source "$root/bench/cpu/common.sh"
bench_corpus expert_placement
if [ "$steps" -le "$every" ]; then
  echo "expert_placement: STEPS ($steps) must exceed REPLACE_EVERY ($every)" >&2
  exit 1
fi

bench_build_moec

out="$build/bench-expert-placement"
rm -rf "$out"
mkdir -p "$out"
"$build/bin/moe-import" "$root/models/configs/shakespeare_moe.json" \
  --set moec_expert_bias=true --set output_router_logits=false \
  --set moe_intermediate_size="$inter" -o "$out/model.mlir"
"$build/bin/moec" "$out/model.mlir" --mesh "$mesh" -o "$out/r0"
"$build/bin/moec" "$out/model.mlir" --mesh "$mesh" --replica-slots 2 -o "$out/r2"
"$out/r0" init --init-random 1 --output "$out/init.safetensors" >/dev/null

# The Zipf biases, written into a copy of the init (numpy: Debian's python3).
/usr/bin/python3 - "$root/test/e2e" "$out/init.safetensors" "$out/zipf.safetensors" \
  "$zipf_s" "$beta" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_io
tensors = safetensors_io.load_numpy(sys.argv[2])
s, beta = float(sys.argv[4]), float(sys.argv[5])
biases = [name for name in tensors if name.endswith("e_score_correction_bias")]
if not biases:
    sys.exit("expert_placement: the model has no expert biases")
for name in biases:
    p = 1.0 / np.arange(1, tensors[name].shape[0] + 1) ** s
    tensors[name] = (beta * np.log(p / p.sum())).astype(np.float32)
safetensors_io.save_numpy(sys.argv[3], tensors)
PY

bench_mpi_launcher
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

run() { # NAME EXE COMM [train flags...]
  local name="$1" exe="$2" comm="$3"
  shift 3
  local launch=()
  if [ "$comm" = mpi ]; then launch=("${launcher[@]}"); else set -- --comm local "$@"; fi
  "${launch[@]}" "$exe" train --data "$corpus" --steps "$steps" \
    --weights "$out/zipf.safetensors" --bias-update-rate 0 --log-every 1 \
    --eval-every 0 --eval-batches 1 --sample-chars 0 \
    --metrics "$out/$name.jsonl" "$@" >"$out/$name.log"
}

replace=(--placement-policy replicate-hot --replace-every "$every")
for comm in mpi local; do
  run "$comm-static-r0" "$out/r0" "$comm"
  run "$comm-static-r2" "$out/r2" "$comm"
  run "$comm-replaced-r2" "$out/r2" "$comm" "${replace[@]}"
done

python3 - "$out" "$every" "$zipf_s" "$beta" "$inter" <<'PY'
import json, statistics, sys
out, every = sys.argv[1], int(sys.argv[2])

def figures(name):
    records = [json.loads(line) for line in open(f"{out}/{name}.jsonl")]
    steps = [r for r in records if "tokens_per_s" in r]
    placements = sum(1 for r in records if "expert_placement" in r)
    later = [r for r in steps if r["step"] > every]
    # elapsed_s is cumulative: the steps after `every` took the difference.
    before = max(r["elapsed_s"] for r in steps if r["step"] <= every)
    step_ms = 1e3 * (later[-1]["elapsed_s"] - before) / len(later)
    tps = statistics.median(r["tokens_per_s"] for r in later)
    level = statistics.mean(max(l["max_mean_rows"] for l in r["ep_layers"])
                            for r in later)
    counts = steps[0]["expert_counts"][0]
    hot = max(counts) / sum(counts)
    return step_ms, tps, level, placements, hot, steps[-1]["loss"]

print(f"\nexpert placement, router biases {sys.argv[4]} * ln(Zipf s={sys.argv[3]}), "
      f"expert FFN {sys.argv[5]}, mesh dp=2,ep=2, steps {every + 1}+ "
      f"(re-placement every {every})")
print("| communicator | run | step ms | tok/s | max/mean rows | placements | "
      "last loss | speed-up vs static R=0 |")
print("|---|---|---|---|---|---|---|---|")
for comm in ("mpi", "local"):
    base = figures(f"{comm}-static-r0")[0]
    for run in ("static-r0", "static-r2", "replaced-r2"):
        ms, tps, level, placed, hot, loss = figures(f"{comm}-{run}")
        label = {"static-r0": "static, R=0", "static-r2": "static, R=2",
                 "replaced-r2": "replicate-hot, R=2"}[run]
        print(f"| {comm} | {label} | {ms:.1f} | {tps:.0f} | {level:.2f} | {placed} | "
              f"{loss:.4f} | {base / ms:.2f}x |")
print(f"(hottest expert's share of layer 0's first-step routed rows: {hot:.2f})")
PY
