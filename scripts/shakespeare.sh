#!/usr/bin/env bash
# The main job: the character-level Shakespeare MoE model.
#
# Today (see docs/status.md) this builds the compiler, checks the corpus
# against the model's vocabulary, records the 4-rank expert-parallel mesh
# (dp=4, ep=4) the training demo will use, compiles the model into a
# single-rank CPU executable with moec and samples text from it with random
# weights. Training under mpirun is the work of the training issue and is
# not here yet.
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
start=$(date +%s%N)
"$build/bin/moe-opt" "$model" --moe-assign-mesh="mesh=$mesh world-size=$ranks" --canonicalize \
  -o "$out/shakespeare_moe.$mesh.mlir"
end=$(date +%s%N)
params=$(grep -c 'moe.param' "$out/shakespeare_moe.$mesh.mlir")
numel=$(grep -o 'moe.param "[^"]*" : tensor<[0-9x]*xf32>' "$out/shakespeare_moe.$mesh.mlir" |
  sed 's/.*tensor<\([0-9x]*\)xf32>/\1/' |
  awk -F x '{n = 1; for (i = 1; i <= NF; ++i) n *= $i; total += n} END {print total}')
printf 'compiled %s for mesh %s (%d ranks) in %d ms: %d parameter tensors, %d weights\n' \
  "$(basename "$model")" "$mesh" "$ranks" "$(((end - start) / 1000000))" "$params" "$numel"
grep -E 'moe.mesh|shard.grid' "$out/shakespeare_moe.$mesh.mlir" | sed 's/^/  /'
echo "wrote $out/shakespeare_moe.$mesh.mlir"

# The single-rank executable (distribution is the next piece of work).
"$build/bin/moec" "$model" -o "$out/shakespeare_moe" --print-memory-plan
"$out/shakespeare_moe" info
echo "sample from random weights (untrained, so the characters are noise):"
"$out/shakespeare_moe" generate --init-random 1 --prompt "ROMEO:" --max-new-tokens 200 \
  --temperature 1.0 --seed 1
echo "training on the CPU under mpirun is not implemented yet (see docs/status.md)"
