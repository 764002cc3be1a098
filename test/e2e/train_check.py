#!/usr/bin/env python3
"""Checks that training a model compiled for a mesh follows the 1-rank run.

Compiles one character-level model (an .mlir file) for one rank and with
`moec --mesh M` for every mesh M, trains each executable for the same steps
on the same corpus from the same seeded random weights (`train --metrics
FILE.jsonl`), and compares the loss of every step with the 1-rank run:
|a - b| / |b| <= rtol. Sharded programs sum in another order, so the
trajectories agree to rounding, step after step. Under bf16 storage a
rounding difference can flip a routing decision and the trajectories then
wander apart by a few percent at a step and back (how far depends on the
CPU's BLAS kernels): --close-steps K applies --rtol to the first K steps
only, and --mean-rtol bounds the mean relative difference over all steps.

Prints one line per run and PASS at the end, or FAIL lines and exits 1.
"""

import argparse
import json
import os
import subprocess
import sys


def run(cmd, mpi=False):
    env = dict(os.environ)
    if mpi:
        # Open MPI's own start-up allocations are not the executable's leaks.
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=env)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited with {result.returncode}")
    return result.stdout


def losses(path):
    """step -> training loss from a metrics JSONL file."""
    out = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if "loss" in record:
                out[int(record["step"])] = float(record["loss"])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compiler", required=True, help="the moec executable")
    parser.add_argument("--mpirun", default="mpirun", help="launcher command (split on spaces)")
    parser.add_argument("--model", required=True, help="a character-level model .mlir")
    parser.add_argument("--data", required=True, help="the training corpus")
    parser.add_argument("--mesh", action="append", default=[], help="a mesh, e.g. dp=2,ep=2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--close-steps", type=int,
                        help="apply --rtol to the first K steps only (default: all)")
    parser.add_argument("--mean-rtol", type=float,
                        help="bound the mean relative difference over all steps")
    parser.add_argument("--train-arg", action="append", default=[],
                        help="one more argument for every train run, e.g. --train-arg=--clip=0")
    parser.add_argument("--compile-arg", action="append", default=[],
                        help="one more moec argument for every executable, e.g. "
                             "--compile-arg=--storage=bf16")
    parser.add_argument("--reference-compile-arg", action="append",
                        help="moec arguments for the 1-rank reference instead of --compile-arg")
    parser.add_argument("--reference-model",
                        help="the 1-rank reference's model (default --model), e.g. the same "
                             "model compiled at a larger batch")
    parser.add_argument("--mesh-train-arg", action="append", default=[],
                        help="one more argument for the mesh runs only, e.g. "
                             "--mesh-train-arg=--micro-batches --mesh-train-arg=2")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    reference_args = [a for a in (args.compile_arg if args.reference_compile_arg is None
                                  else args.reference_compile_arg) if a]
    os.makedirs(args.workdir, exist_ok=True)

    train = ["train", "--data", args.data, "--steps", str(args.steps), "--init-random", "7",
             "--lr", "3e-3", "--warmup", "5", "--log-every", "1", "--eval-every", "0",
             "--eval-batches", "1", "--sample-chars", "0", "--seed", "3"] + args.train_arg

    def trajectory(name, exe, launcher=(), mpi=False, extra=()):
        metrics = os.path.join(args.workdir, f"{name}.jsonl")
        if os.path.exists(metrics):
            os.remove(metrics)
        run(list(launcher) + [exe] + train + list(extra) + ["--metrics", metrics], mpi=mpi)
        steps = losses(metrics)
        if sorted(steps) != list(range(1, args.steps + 1)):
            raise SystemExit(f"FAIL: {name}: metrics have steps {sorted(steps)}")
        return steps

    single = os.path.join(args.workdir, "single")
    run([args.compiler, args.reference_model or args.model, "-o", single] + reference_args)
    reference = trajectory("single", single)
    first, last = reference[1], reference[args.steps]
    print(f"1 rank: loss {first:.6f} -> {last:.6f}")
    ok = last < first
    if not ok:
        print("FAIL: the 1-rank loss does not fall")
    for mesh in args.mesh:
        ranks = 1
        for part in mesh.split(","):
            ranks *= int(part.split("=")[1]) if part.split("=")[0] in ("dp", "cp", "tp") else 1
        exe = os.path.join(args.workdir, "mesh-" + mesh.replace(",", "-").replace("=", ""))
        run([args.compiler, args.model, "--mesh", mesh, "-o", exe] + args.compile_arg)
        launcher = args.mpirun.split() + ["-np", str(ranks)]
        steps = trajectory(os.path.basename(exe), exe, launcher, mpi=True,
                           extra=args.mesh_train_arg)
        diff = {s: abs(steps[s] - reference[s]) / abs(reference[s]) for s in reference}
        close = args.close_steps or args.steps
        worst = max(diff[s] for s in range(1, close + 1))
        mean = sum(diff.values()) / len(diff)
        good = worst <= args.rtol and (args.mean_rtol is None or mean <= args.mean_rtol)
        ok &= good
        where = f" over the first {close} steps" if close < args.steps else ""
        print(f"{mesh} ({ranks} MPI ranks): {args.steps} steps, loss {steps[1]:.6f} -> "
              f"{steps[args.steps]:.6f}, max relative difference{where} {worst:.3g}"
              + (f", mean {mean:.3g}" if args.mean_rtol is not None else "") + ": "
              + ("ok" if good else "FAIL"))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
