#!/usr/bin/env bash
# One training step of the Shakespeare MoE on the CPU: the compiled executable's
# `train` (forward + backward of the compiled training step, global gradient-norm
# clipping, AdamW) against bench/cpu/train_step_torch.py (the same model, loss,
# batches, clipping and AdamW in PyTorch), in tokens per second, measured side
# by side; prints a table with the speed ratio. The peer is the faster of two
# PyTorch builds: Debian's 1.13 (/usr/bin/python3) and PyPI's current one
# (scripts/peer_python.sh; left out, with a note, when it cannot be had).
#
#   bench/cpu/train_step.sh [THREADS]   (default 1)
#
# Row 1: one rank with THREADS OpenBLAS threads against torch with THREADS
# threads. Row 2: processes against processes: two MPI ranks (mesh dp=2, one
# OpenBLAS thread each) against two PyTorch DistributedDataParallel processes
# over gloo (one thread each, each on half of the batch). Both sides start from the same weights (the
# executable's `init --init-random 1`) and see the same batches (the corpus's
# (seed, step) sampler), so their first-step losses agree (and the next few
# steps' too, until a near-tie in the top-k routing flips on one side).
# Environment: BUILD_DIR (default build/), STEPS (default 30), SKIP (steps left
# out of the median, default 5), CORPUS (default ../shared/data/tinyshakespeare/
# input.txt), JOBS (build parallelism, default nproc).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${BUILD_DIR:-$root/build}"
threads="${1:-1}"
steps="${STEPS:-30}"
skip="${SKIP:-5}"
model="$root/models/shakespeare_moe.mlir"
name=shakespeare_moe
batch=16x128

source "$root/bench/cpu/common.sh"
bench_corpus train_step

bench_build_moec

out="$build/bench-train-step"
mkdir -p "$out"
"$build/bin/moec" "$model" -o "$out/$name"
"$out/$name" init --init-random 1 --output "$out/init.safetensors" >/dev/null

bench_mpi_launcher

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

# Our run: `train` logs every step's tokens/s; the median over the steps after
# the first SKIP. Prints "params=... first_loss=... tokens_per_s=...".
ours() { # METRICS EXE [launcher...]
  local metrics="$1" exe="$2"
  shift 2
  rm -f "$metrics"
  "$@" "$exe" train --data "$corpus" --steps "$steps" --init-random 1 --log-every 1 \
    --metrics "$metrics" --eval-every 0 --eval-batches 1 --sample-chars 0 >"$metrics.log"
  local params
  params=$("$exe" info | sed -n 's/^parameters.* \([0-9][0-9,]*\) scalars.*/\1/p' | tr -d , | head -1)
  python3 - "$metrics" "$skip" "$params" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
skip = int(sys.argv[2])
if len(rows) <= skip:
    sys.exit(f"train_step: {sys.argv[1]} has {len(rows)} steps, need more than {skip}")
tps = statistics.median(r["tokens_per_s"] for r in rows[skip:])
print(f"impl=ours params={sys.argv[3] or '?'} first_loss={rows[0]['loss']:.4f} "
      f"last_loss={rows[-1]['loss']:.4f} tokens_per_s={tps:.0f}")
PY
}

# The PyTorch builds to measure; the faster of them is the peer.
pythons=(/usr/bin/python3)
if pypi=$(bash "$root/scripts/peer_python.sh" 2>"$out/peer_python.err"); then
  pythons+=("$pypi")
else
  echo "train_step: no PyPI torch ($(tail -1 "$out/peer_python.err")); Debian's torch only" >&2
fi

# The line (of those given) with the most tokens per second, naming the
# torch it came from and the others' figures.
fastest() {
  python3 - "$@" <<'PY'
import re, sys
def tps(line):
    m = re.search(r" tokens_per_s=([0-9.]+)", " " + line)
    return float(m.group(1)) if m else -1.0
lines = [l for l in sys.argv[1:] if l]
best = max(lines, key=tps)
def torch_of(line):
    m = re.search(r"torch=(\S+)", line)
    return m.group(1) if m else "?"
others = ["%s: %.0f tok/s" % (torch_of(l), tps(l)) for l in lines if l is not best]
print(best + (" (also %s)" % ", ".join(others) if others else ""))
PY
}

peer_once() { # PYTHON THREADS [ENV...]
  local py="$1" t="$2"
  shift 2
  env OPENBLAS_NUM_THREADS="$t" OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t" "$@" "$py" \
    "$root/bench/cpu/train_step_torch.py" --data "$corpus" --steps "$steps" \
    --warmup-steps "$skip" --threads "$t" --weights "$out/init.safetensors"
}

# Two DDP processes (gloo) of one thread each: the peer of the dp=2 ranks.
peer_ddp() {
  local py lines=()
  for py in "${pythons[@]}"; do
    lines+=("$(OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$py" \
      "$root/bench/cpu/train_step_torch.py" --data "$corpus" --steps "$steps" \
      --warmup-steps "$skip" --threads 1 --processes 2 \
      --weights "$out/init.safetensors" 2>>"$out/ddp.err")")
  done
  fastest "${lines[@]}"
}

# With more than one thread, torch's OpenMP pool spins while it waits by
# default, which on a small, shared machine can make a step many times slower:
# run it as it comes and with OMP_WAIT_POLICY=PASSIVE, and keep the faster.
peer() { # THREADS
  local py lines=()
  for py in "${pythons[@]}"; do
    lines+=("$(peer_once "$py" "$1")")
    [ "$1" = 1 ] || lines+=("$(peer_once "$py" "$1" OMP_WAIT_POLICY=PASSIVE)")
  done
  fastest "${lines[@]}"
}

notes=()
row() { # LABEL THREADS OURS PEER
  local a b
  a=$(echo "$3" | field tokens_per_s)
  b=$(echo "$4" | field tokens_per_s)
  printf '| %s | %s | %s | %s | %s | %.2fx |\n' "$name" "$batch" "$2" "$a" "$b" \
    "$(python3 -c "print($a / $b)")"
  notes+=("$1: ours params=$(echo "$3" | field params) first_loss=$(echo "$3" | field first_loss) \
last_loss=$(echo "$3" | field last_loss); torch params=$(echo "$4" | field params) \
first_loss=$(echo "$4" | field first_loss) last_loss=$(echo "$4" | field last_loss) \
median_ms=$(echo "$4" | field median_ms) torch=$(echo "$4" | field torch) omp_wait_policy=$(echo "$4" | field omp_wait_policy)\
$(echo "$4" | sed -n 's/.*\( (.*)\)$/\1/p')")
}

printf '| model | batch | processes x threads | ours tok/s | torch tok/s | speed-up |\n|---|---|---|---|---|---|\n'

export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
a=$(ours "$out/metrics-1rank.jsonl" "$out/$name")
b=$(peer "$threads")
row "1 rank" "1 x $threads" "$a" "$b"

if "$build/bin/moec" "$model" --mesh dp=2 -o "$out/${name}_dp2" 2>"$out/dp2.err" &&
   OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
     ours "$out/metrics-dp2.jsonl" "$out/${name}_dp2" "${launcher[@]}" 2>>"$out/dp2.err" >"$out/dp2.txt"; then
  if b=$(peer_ddp); then
    row "dp=2" "2 processes x 1" "$(cat "$out/dp2.txt")" "$b"
  else
    echo "| $name | $batch | 2 processes x 1 | $(cat "$out/dp2.txt" | field tokens_per_s) | failed: see $out/ddp.err | |"
  fi
else
  echo "| $name | $batch | 2 processes x 1 | failed: see $out/dp2.err | | |"
fi

echo
echo "$steps steps, median over steps $((skip + 1))-$steps; same initial weights and batches on both sides"
printf '%s\n' "${notes[@]}"
