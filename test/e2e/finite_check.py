#!/usr/bin/env python3
"""Checks that every tensor of every checkpoint in a training checkpoint
directory (DIR/step-*/rank-*.safetensors) is finite, and that DIR/latest
names one of them: prints `ok` with the count, or FAIL and exits 1.

    finite_check.py DIR
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402


def main():
    root = sys.argv[1]
    steps = sorted(d for d in os.listdir(root) if d.startswith("step-") and
                   not d.endswith(".tmp"))
    latest = open(os.path.join(root, "latest")).read().strip()
    tensors = 0
    for step in steps:
        folder = os.path.join(root, step)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".safetensors"):
                continue
            for tname, tensor in st.load(os.path.join(folder, name)).items():
                values = tensor.to_numpy()
                tensors += 1
                if not np.all(np.isfinite(values)):
                    print(f"FAIL: {step}/{name}: {tname} is not finite")
                    return 1
    if os.path.basename(latest) not in steps:
        print(f"FAIL: latest names {latest!r}, not one of {steps}")
        return 1
    print(f"ok: {len(steps)} checkpoint(s), {tensors} tensors, all finite")
    return 0


if __name__ == "__main__":
    sys.exit(main())
