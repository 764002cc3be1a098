#!/usr/bin/env python3
"""Checks that a checkpoint directory holds fp32 state that bf16 cannot hold.

A model compiled with `moec --storage bf16` runs its entries on bf16 copies
of the weights, but `train` keeps fp32 master weights and optimizer moments:
its checkpoints must be F32 tensors, most of whose values have low mantissa
bits set (a master rounded to bf16 every step would have none).

Usage: master_weights_check.py CHECKPOINT_DIR [--min-fraction F]
Prints the fraction per rank file and PASS, or FAIL and exits 1.
"""

import argparse
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("--min-fraction", type=float, default=0.5)
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.checkpoint, "rank-*.safetensors")))
    if not files:
        print(f"FAIL: no rank-*.safetensors in {args.checkpoint}")
        return 1
    ok = True
    for path in files:
        tensors = st.load(path)
        dtypes = sorted({t.dtype for t in tensors.values()})
        values = np.concatenate([t.to_numpy().astype(np.float32).ravel()
                                 for t in tensors.values()])
        fraction = float(np.mean((values.view(np.uint32) & 0xFFFF) != 0))
        good = dtypes == ["F32"] and fraction >= args.min_fraction
        ok &= good
        print(f"{os.path.basename(path)}: {len(tensors)} tensors, dtypes {dtypes}, "
              f"{fraction:.3f} of the values are not bf16: " + ("ok" if good else "FAIL"))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
