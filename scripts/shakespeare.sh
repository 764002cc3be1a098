#!/usr/bin/env bash
# The main job: the character-level Shakespeare MoE model.
#
# Builds the compiler, checks the corpus against the model's vocabulary,
# compiles the model with moec for the 4-rank expert-parallel mesh (dp=4,
# ep=4: each rank a quarter of the batch and 2 of the 8 experts per layer),
# checks one forward under mpirun against the 1-rank executable, then trains
# it under mpirun (STEPS steps, default 600) until the validation loss is
# below 2.0 and prints a sample.
#
#   scripts/shakespeare.sh [CORPUS]   (default: ../shared/data/tinyshakespeare/input.txt)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
corpus="${1:-$root/../shared/data/tinyshakespeare/input.txt}"
mesh="dp=4,ep=4"
ranks=4

if [ ! -r "$corpus" ]; then
  echo "shakespeare: cannot read the corpus '$corpus' (pass its path as the first argument)" >&2
  exit 1
fi

bash "$root/scripts/build.sh"

model="$root/models/shakespeare_moe.mlir"
vocab=$(grep -o 'tensor<16x128x[0-9]*xf32>' "$model" | head -1 | sed 's/.*x\([0-9]*\)xf32>/\1/')
chars=$(python3 - "$corpus" <<'PY'
import sys
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        print(len(set(f.read())))
except (OSError, UnicodeDecodeError) as e:
    sys.exit(f"shakespeare: cannot read the corpus '{sys.argv[1]}' as UTF-8 text: {e}")
PY
)
echo "corpus: $corpus ($(wc -c < "$corpus") bytes, $chars distinct characters; model vocabulary $vocab)"
if [ "$chars" -gt "$vocab" ]; then
  echo "shakespeare: the corpus has $chars distinct characters but the model's vocabulary is $vocab" >&2
  exit 1
fi

out="$build/shakespeare"
mkdir -p "$out"
launcher=(mpirun -np "$ranks")
if mpirun --version 2>/dev/null | grep -q "Open MPI"; then
  launcher+=(--oversubscribe)
  [ "$(id -u)" = 0 ] && launcher+=(--allow-run-as-root)
fi

start=$(date +%s%N)
"$build/bin/moec" "$model" --mesh "$mesh" -o "$out/shakespeare_moe_ep4" --print-memory-plan
end=$(date +%s%N)
printf 'compiled %s for mesh %s (%d ranks) in %d ms\n' \
  "$(basename "$model")" "$mesh" "$ranks" "$(((end - start) / 1000000))"
"$out/shakespeare_moe_ep4" info
"$build/bin/moec" "$model" -o "$out/shakespeare_moe"

# One forward on the same batch: 4 MPI ranks against 1 rank.
tokens=$(python3 -c "import random; random.seed(0); print(','.join(str(random.randrange($vocab)) for _ in range(16 * 128)))")
single=$("$out/shakespeare_moe" forward --init-random 1 --tokens "$tokens" | head -1)
meshed=$("${launcher[@]}" "$out/shakespeare_moe_ep4" forward --init-random 1 --tokens "$tokens" | head -1)
echo "forward, 1 rank:               $single"
echo "forward, $ranks MPI ranks ($mesh): $meshed"

# Training: AdamW with warm-up and cosine decay, the compiled training step on
# 4 MPI ranks (expert-parallel dispatch and combine, data-parallel gradient
# all-reduce), evaluation on the held-out 10%, checkpoints, metrics, a loss
# curve and a sample at the end.
steps="${STEPS:-600}"
rm -rf "$out/checkpoints" "$out/metrics.jsonl"
echo "training $steps steps of 16 x 128 characters on $ranks MPI ranks ($mesh)"
"${launcher[@]}" "$out/shakespeare_moe_ep4" train --data "$corpus" --steps "$steps" \
  --init-random 1 --lr 3e-3 --log-every 25 --eval-every 100 --eval-batches 16 \
  --checkpoint-dir "$out/checkpoints" --save-every 200 \
  --metrics "$out/metrics.jsonl" --plot "$out/loss.png" --sample-chars 400 --seed 1
python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
val = [json.loads(l)["val_loss"] for l in open(sys.argv[1]) if "val_loss" in l]
if not val:
    sys.exit("shakespeare: no validation loss in the metrics")
print(f"final validation loss {val[-1]:.4f} ({'below' if val[-1] < 2.0 else 'NOT below'} 2.0)")
sys.exit(0 if val[-1] < 2.0 else 1)
PY
echo "metrics: $out/metrics.jsonl, loss curve: $out/loss.png, checkpoints: $out/checkpoints"
