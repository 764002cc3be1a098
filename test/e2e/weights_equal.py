"""Compares safetensors checkpoints with the first one: same names, shapes,
values (bit for bit, or within --rtol of each tensor's largest element). A
checkpoint is a .safetensors file or a folder of model.safetensors or of
shards and their model.safetensors.index.json."""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import safetensors_io  # noqa: E402


def load(path):
    if not os.path.isdir(path):
        return safetensors_io.load_numpy(path)
    index = os.path.join(path, "model.safetensors.index.json")
    if not os.path.exists(index):
        return safetensors_io.load_numpy(os.path.join(path, "model.safetensors"))
    tensors = {}
    for shard in sorted(set(json.load(open(index))["weight_map"].values())):
        tensors.update(safetensors_io.load_numpy(os.path.join(path, shard)))
    return tensors


parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("reference")
parser.add_argument("others", nargs="+")
parser.add_argument("--rtol", type=float, default=0.0)
args = parser.parse_args()
reference = load(args.reference)
for path in args.others:
    other = load(path)
    if sorted(other) != sorted(reference):
        sys.exit(f"{path}: names differ: {sorted(set(other) ^ set(reference))[:5]}")
    for name, value in reference.items():
        got = other[name]
        if got.shape != value.shape:
            sys.exit(f"{path}: {name} has shape {got.shape}, expected {value.shape}")
        scale = float(np.max(np.abs(value))) if value.size else 0.0
        error = float(np.max(np.abs(got.astype(np.float64) - value))) if value.size else 0.0
        if (args.rtol == 0.0 and not np.array_equal(got, value)) or \
                (args.rtol > 0.0 and error > args.rtol * max(scale, 1e-30)):
            sys.exit(f"{path}: {name} differs (max difference {error:.3g}, largest "
                     f"element {scale:.3g})")
    print(f"{os.path.basename(path)}: {len(reference)} tensors "
          + ("equal" if args.rtol == 0.0 else f"within {args.rtol:g}"))
