#!/usr/bin/env python3
"""Checks moec --memory-report against the memory a training run really uses.

Compiles MODEL (for MESH, if given), reads the report's total for a rank,
then runs `train` for a few steps and `info` (the same executable's baseline:
code, libraries, MPI) and compares the peak resident memory of the largest
process, less the baseline, with the report's total:

    memory_rss_check.py --compiler moec --model M.mlir [--mesh dp=4,ep=4]
        [--mpirun CMD] --data input.txt --workdir DIR [--tolerance 0.15]

With --forward-weights CHECKPOINT instead of --data: runs `forward --weights
CHECKPOINT` and compares with the report's weights, forward activations and
collective scratch: loading stages no copy of a rank's weights, and a rank
reads only its own tensors of the checkpoint, whatever its size.

With --zero-saving: compiles MODEL twice, plainly and with `moec --zero 1`,
trains both and compares what ZeRO stage 1 saves, the difference of the two
peaks, with the difference of the two reports' totals (mostly AdamW's
moments, which it splits over the data-parallel replicas); --zero-saving 3
the same for `moec --zero 3` (the weights, gradients and AdamW state, which
it splits, less the whole weights gathered while they are read). With
--recompute-saving the same for `moec --recompute full` (the training
activations, of which it keeps the checkpoints).

Prints the figures and `ok`, or FAIL and exits 1.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys


def peak_rss(command, env):
    """Peak resident bytes of the largest process `command` runs (itself or,
    under mpirun, a rank): measured in a fresh interpreter, whose children
    are only that command's processes."""
    probe = ("import resource, subprocess, sys\n"
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe] + command, check=True,
                         env=env, stdout=subprocess.PIPE, universal_newlines=True)
    return int(out.stdout.split()[-1]) * 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--compiler", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--mesh")
    parser.add_argument("--mpirun")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data")
    source.add_argument("--forward-weights")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.15)
    parser.add_argument("--zero-saving", type=int, nargs="?", const=1, metavar="STAGE",
                        help="what ZeRO stage STAGE (default 1) saves against the plain build")
    parser.add_argument("--recompute-saving", action="store_true")
    args = parser.parse_args()
    if args.zero_saving == 1:
        return saving(args, ["--zero", "1"], lambda plain, zero: (
            f"ZeRO stage 1 on {args.mesh}: optimizer a rank "
            f"{plain['optimizer'] / 2**20:.1f} -> {zero['optimizer'] / 2**20:.1f} MiB "
            f"({plain['optimizer'] / zero['optimizer']:.2f}x smaller)"))
    if args.zero_saving == 3:
        def state(report):
            return report["weights"] + report["gradients"] + report["optimizer"]
        return saving(args, ["--zero", "3"], lambda plain, zero: (
            f"ZeRO stage 3 on {args.mesh}: weights, gradients and optimizer a rank "
            f"{state(plain) / 2**20:.1f} -> {state(zero) / 2**20:.1f} MiB "
            f"({state(plain) / state(zero):.2f}x smaller)"))
    if args.zero_saving is not None:
        parser.error(f"--zero-saving: stage {args.zero_saving} is not built (1 or 3)")
    if args.recompute_saving:
        return saving(args, ["--recompute", "full"], lambda plain, again: (
            f"recompute on {args.mesh or '1 rank'}: training activations a rank "
            f"{plain['activations_train'] / 2**20:.1f} -> "
            f"{again['activations_train'] / 2**20:.1f} MiB "
            f"({plain['activations_train'] / again['activations_train']:.2f}x smaller)"))

    os.makedirs(args.workdir, exist_ok=True)
    exe = os.path.join(args.workdir, "model")
    mesh = ["--mesh", args.mesh] if args.mesh else []
    subprocess.run([args.compiler, args.model, "-o", exe] + mesh, check=True)
    report = json.loads(subprocess.run(
        [args.compiler, args.model, "--memory-report=json"] + mesh,
        check=True, stdout=subprocess.PIPE).stdout)
    rank0 = report["ranks"][0]
    ranks = len(report["ranks"])
    if args.forward_weights:
        total = rank0["weights"] + rank0["activations_forward"] + rank0["comm"]
        what = "weights + forward activations + comm"
    else:
        total = rank0["total"]
        what = "total"

    launch = []
    if ranks > 1:
        launch = shlex.split(args.mpirun) + ["-np", str(ranks)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    baseline = peak_rss(launch + [exe, "info"], env)
    if args.forward_weights:
        info = subprocess.run([exe, "info"], check=True, stdout=subprocess.PIPE,
                              universal_newlines=True).stdout
        shape = next(line for line in info.splitlines() if line.strip().startswith("tokens"))
        count = 1
        for d in shape.split("[")[1].split("]")[0].split(","):
            count *= int(d)
        ids = ",".join(str(i % 7) for i in range(count))
        run = [exe, "forward", "--weights", args.forward_weights, "--tokens", ids]
        size = sum(os.path.getsize(os.path.join(args.forward_weights, f))
                   for f in os.listdir(args.forward_weights) if f.endswith(".safetensors"))
        print(f"checkpoint {size / 2**20:.1f} MiB")
    else:
        run = train_command(args, exe)
    peak = peak_rss(launch + run, env)
    measured = peak - baseline
    error = abs(measured - total) / total
    line = (f"{ranks} rank(s): report {what} {total / 2**20:.1f} MiB, measured peak "
            f"{peak / 2**20:.1f} MiB - baseline {baseline / 2**20:.1f} MiB = "
            f"{measured / 2**20:.1f} MiB ({error * 100:.1f}% off)")
    return verdict(line, error, args.tolerance)


def train_command(args, exe):
    """A short `train` of `exe`: a few steps, one evaluation batch, no sample."""
    return [exe, "train", "--data", args.data, "--init-random", "1",
            "--steps", str(args.steps), "--eval-batches", "1",
            "--log-every", str(args.steps), "--sample-chars", "0"]


def verdict(line, error, tolerance):
    """Prints `line` as ok or FAIL; the exit status."""
    if error > tolerance:
        print("FAIL " + line)
        return 1
    print("ok " + line)
    return 0


def saving(args, flags, describe):
    """What compiling with `flags` saves: planned (reports) against measured
    (peaks); describe(plain report, flagged report) opens the line."""
    os.makedirs(args.workdir, exist_ok=True)
    mesh = ["--mesh", args.mesh] if args.mesh else []
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    runs = {}
    for name, extra in (("plain", []), ("flagged", flags)):
        exe = os.path.join(args.workdir, name)
        subprocess.run([args.compiler, args.model, "-o", exe] + mesh + extra, check=True)
        report = json.loads(subprocess.run(
            [args.compiler, args.model, "--memory-report=json"] + mesh + extra,
            check=True, stdout=subprocess.PIPE).stdout)
        ranks = len(report["ranks"])
        launch = shlex.split(args.mpirun) + ["-np", str(ranks)] if ranks > 1 else []
        peak = peak_rss(launch + train_command(args, exe), env)
        runs[name] = (report["ranks"][0], peak)
    (plain, plain_peak), (flagged, flagged_peak) = runs["plain"], runs["flagged"]
    planned = plain["total"] - flagged["total"]
    measured = plain_peak - flagged_peak
    error = abs(measured - planned) / planned
    line = (f"{describe(plain, flagged)}; report saves {planned / 2**20:.1f} MiB a rank, "
            f"measured peaks {plain_peak / 2**20:.1f} -> {flagged_peak / 2**20:.1f} MiB save "
            f"{measured / 2**20:.1f} MiB ({error * 100:.1f}% off)")
    return verdict(line, error, args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
