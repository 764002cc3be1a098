"""Compares safetensors files with the first one: same names, shapes, values."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import safetensors_io  # noqa: E402

reference = safetensors_io.load_numpy(sys.argv[1])
for path in sys.argv[2:]:
    other = safetensors_io.load_numpy(path)
    if sorted(other) != sorted(reference):
        sys.exit(f"{path}: names differ: {sorted(set(other) ^ set(reference))[:5]}")
    for name, value in reference.items():
        if other[name].shape != value.shape or not np.array_equal(other[name], value):
            sys.exit(f"{path}: {name} differs ({other[name].shape} vs {value.shape})")
    print(f"{os.path.basename(path)}: {len(reference)} tensors equal")
