#!/usr/bin/env python3
"""Checks aux-loss-free load balancing (`train --bias-update-rate R`).

Trains a character model whose routers take an expert bias twice from the
same seeded weights on the same batches, once with the bias update off and
once at rate R, logging every step's per-layer expert token counts. Then:

  * the biases in the final checkpoint equal the DeepSeek-V3 rule replayed
    here from the logged counts: start at 0, and after each step add R where
    an expert got fewer token slots than its layer's mean, subtract R where
    it got more (float32, as the weights are);
  * with the update on, the layers are more balanced over the last half of
    the run (mean over steps of the worst layer's max/mean count) than with
    it off.

Prints the figures and PASS, or FAIL lines and exits 1.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def train(exe, args, rate, name):
    metrics = os.path.join(args.workdir, f"{name}.jsonl")
    ckpt = os.path.join(args.workdir, f"{name}-ckpt")
    for path in (metrics,):
        if os.path.exists(path):
            os.remove(path)
    cmd = [exe, "train", "--data", args.data, "--steps", str(args.steps), "--init-random", "7",
           "--log-every", "1", "--eval-every", "0", "--eval-batches", "1", "--sample-chars", "0",
           "--metrics", metrics, "--checkpoint-dir", ckpt, "--bias-update-rate", str(rate)]
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout)
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited with {result.returncode}")
    counts = {}
    with open(metrics) as f:
        for line in f:
            record = json.loads(line)
            if "loss" in record:
                counts[int(record["step"])] = [np.array(c, dtype=np.int64)
                                               for c in record["expert_counts"]]
    if sorted(counts) != list(range(1, args.steps + 1)):
        raise SystemExit(f"FAIL: {name}: metrics have steps {sorted(counts)}")
    shard = os.path.join(ckpt, f"step-{args.steps:06d}", "rank-00000.safetensors")
    return counts, safetensors_io.load_numpy(shard)


def imbalance(counts, first):
    worst = [max(c.max() / c.mean() for c in counts[s]) for s in sorted(counts) if s >= first]
    return float(np.mean(worst))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exe", required=True, help="the model executable (one rank)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--rate", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    off_counts, off_weights = train(args.exe, args, 0, "off")
    on_counts, on_weights = train(args.exe, args, args.rate, "on")
    ok = True

    names = sorted(n for n in on_weights if n.endswith("e_score_correction_bias")
                   and "/" not in n)
    if not names:
        print("FAIL: the checkpoint has no router expert bias")
        return 1
    rate = np.float32(args.rate)
    for layer, name in enumerate(names):
        bias = np.zeros_like(on_weights[name])
        for step in range(1, args.steps + 1):
            c = on_counts[step][layer]
            total, experts = int(c.sum()), len(c)
            bias = bias + np.where(c * experts < total, rate,
                                   np.where(c * experts > total, -rate, np.float32(0)))
            bias = bias.astype(np.float32)
        err = float(np.abs(on_weights[name] - bias).max())
        good = err <= 1e-6
        ok &= good
        print(f"{name}: {np.count_nonzero(bias)} of {len(bias)} moved, "
              f"max |bias - replayed rule| {err:.3g}: " + ("ok" if good else "FAIL"))
        untouched = float(np.abs(off_weights[name]).max())
        if untouched != 0.0:
            ok = False
            print(f"FAIL: with --bias-update-rate 0, {name} moved to max |b| {untouched}")

    half = args.steps // 2 + 1
    before, after = imbalance(off_counts, half), imbalance(on_counts, half)
    good = after < before
    ok &= good
    print(f"max/mean tokens per expert over steps {half}-{args.steps}: {before:.3f} without, "
          f"{after:.3f} with the bias update: " + ("ok" if good else "FAIL"))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
