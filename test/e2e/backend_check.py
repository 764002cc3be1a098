#!/usr/bin/env python3
"""Checks the CUDA backend against the CPU backend on compiled models.

Takes executables linked with the CUDA backend (`moec --cuda`, or the
runtime-only build of scripts/gpu_roundtrip.sh), so it runs where the models
were not compiled. For seeded random weights and tokens:
  - `forward` of the 1-rank model (--reference) on --backend cpu and cuda:
    logits and loss;
  - `grad` (the training step) on both backends: the loss and every
    parameter's gradient;
  - every --mesh-exe NAME=EXE (a model compiled for a mesh, e.g. ep=8), run
    with --comm local --backend cuda (all its ranks on one GPU), against the
    1-rank CPU logits.
Each comparison is max |a - b| / max |b| <= rtol per tensor. The storage
type is the executables' (`moec --storage`): fp32 on both sides, where the
GPU only sums in other orders, or bf16 on both sides, where that can move a
rounding by one bf16 ulp (pass looser --rtol/--grad-rtol; see docs/cuda.md).

Prints one line per comparison and PASS at the end, or FAIL lines and exits
1. Without a usable GPU it prints "skipped: no GPU" and exits 0 (the caller
decides whether that is acceptable: scripts/gpu_roundtrip.sh treats it as a
failure, since it runs on a GPU machine).
"""

import argparse
import os
import random
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from mesh_check import rel_err, run  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True,
                   help="the 1-rank model executable (linked with the CUDA backend)")
    p.add_argument("--mesh-exe", action="append", default=[],
                   help="NAME=EXE: a model compiled for a mesh (repeatable)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--grad-rtol", type=float, default=1e-4)
    args = p.parse_args()

    os.makedirs(args.workdir, exist_ok=True)
    work = lambda name: os.path.join(args.workdir, name)  # noqa: E731
    exe = args.reference

    info = run([exe, "info"])
    batch, seq = [int(v) for v in info.split("tokens")[1].split("[")[1].split("]")[0].split(",")]
    vocab = int(info.split("logits")[1].split("[")[1].split("]")[0].split(",")[2])
    weights = work("weights.safetensors")
    run([exe, "init", "--init-random", str(args.seed), "--output", weights])
    rng = random.Random(args.seed)
    tokens = ",".join(str(rng.randrange(vocab)) for _ in range(batch * seq))

    def forward(model, backend, name, extra=()):
        out = work(name + ".safetensors")
        run([model, "forward", "--weights", weights, "--tokens", tokens, "--output", out,
             "--backend", backend] + list(extra))
        result = safetensors_io.load_numpy(out)
        return result["logits"], float(result["loss"])

    probe = subprocess.run([exe, "forward", "--weights", weights, "--tokens", tokens,
                            "--backend", "cuda"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, universal_newlines=True)
    if probe.returncode != 0 and "no GPU is visible" in probe.stderr:
        print("skipped: no GPU")
        return 0
    cpu_logits, cpu_loss = forward(exe, "cpu", "forward_cpu")
    cuda_logits, cuda_loss = forward(exe, "cuda", "forward_cuda")

    failed = False

    def compare(what, actual, expected, rtol):
        nonlocal failed
        if np.shape(actual) != np.shape(expected):
            print(f"{what}: shape {np.shape(actual)} vs {np.shape(expected)}: FAIL")
            failed = True
            return
        err = rel_err(np.asarray(actual, dtype=np.float64),
                      np.asarray(expected, dtype=np.float64))
        ok = err <= rtol
        failed |= not ok
        print(f"{what}: max relative error {err:.2e}: {'ok' if ok else 'FAIL'}")

    compare("forward logits (cuda vs cpu)", cuda_logits, cpu_logits, args.rtol)
    compare("forward loss (cuda vs cpu)", np.array([cuda_loss]), np.array([cpu_loss]), args.rtol)

    grads = {}
    for backend in ("cpu", "cuda"):
        out = work(f"grad_{backend}.safetensors")
        run([exe, "grad", "--weights", weights, "--tokens", tokens, "--output", out,
             "--backend", backend])
        grads[backend] = safetensors_io.load_numpy(out)
    worst, worst_name = 0.0, ""
    for name, expected in sorted(grads["cpu"].items()):
        actual = grads["cuda"].get(name)
        if actual is None or actual.shape != expected.shape:
            print(f"gradient {name}: missing or misshapen on cuda: FAIL")
            failed = True
            continue
        err = rel_err(actual.astype(np.float64), expected.astype(np.float64))
        if err > worst:
            worst, worst_name = err, name
        if err > args.grad_rtol:
            print(f"gradient {name}: max relative error {err:.2e}: FAIL")
            failed = True
    print(f"gradients (cuda vs cpu, {len(grads['cpu'])} tensors): worst max relative "
          f"error {worst:.2e} ({worst_name})")

    for spec in args.mesh_exe:
        name, model = spec.split("=", 1)
        logits, loss = forward(model, "cuda", "mesh_" + name, extra=["--comm", "local"])
        compare(f"mesh {name} on one GPU (--comm local) vs 1-rank cpu: logits", logits,
                cpu_logits, args.rtol)
        compare(f"mesh {name} on one GPU (--comm local) vs 1-rank cpu: loss",
                np.array([loss]), np.array([cpu_loss]), args.rtol)

    print("FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
