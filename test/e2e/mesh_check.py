#!/usr/bin/env python3
"""Checks that a model compiled for a mesh computes what the 1-rank model does.

For one model (an .mlir file) and seeded random weights and tokens, runs the
1-rank executable once, then the executable compiled with `moec --mesh M` for
every mesh M, on every backend asked for (`--comm local`: the ranks as
threads; `mpi`: one process per rank under mpirun), and compares the whole
logits and the loss with the 1-rank run: max |a - b| / max |b| <= rtol.

Routing variants make the expert-parallel dispatch meet its corner cases:
  random     the seeded random router weights;
  zero-gate  every router gate weight zero: all scores tie, so every token
             picks experts 0..top_k-1 (with top_k 1, one expert takes every
             token; EP ranks holding no such expert receive zero tokens, and
             the other experts get none).

Prints one line per run and PASS at the end, or FAIL lines and exits 1.
"""

import argparse
import os
import random
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def run(cmd, **kwargs):
    if kwargs.pop("mpi", False):
        # Open MPI's own start-up allocations are not the executable's leaks.
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        kwargs["env"] = env
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, **kwargs)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited with {result.returncode}")
    return result.stdout


def rel_err(a, b):
    scale = float(np.max(np.abs(b))) or 1.0
    return float(np.max(np.abs(a - b))) / scale


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compiler", required=True, help="moec")
    p.add_argument("--model", required=True, help="the model .mlir")
    p.add_argument("--workdir", required=True)
    p.add_argument("--mesh", action="append", required=True,
                   help="a mesh to compile for, e.g. dp=2,ep=2 (repeatable)")
    p.add_argument("--backend", action="append", choices=["local", "mpi"],
                   required=True)
    p.add_argument("--mpirun", default="mpirun",
                   help="launcher command line for --backend mpi")
    p.add_argument("--routing", choices=["random", "zero-gate"], default="random")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--run-arg", action="append", default=[],
                   help="an extra flag for every mesh executable's run (repeatable)")
    args = p.parse_args()

    os.makedirs(args.workdir, exist_ok=True)
    work = lambda name: os.path.join(args.workdir, name)  # noqa: E731
    single = work("single")
    run([args.compiler, args.model, "-o", single])
    info = run([single, "info"])
    batch, seq = [int(v) for v in info.split("tokens")[1].split("[")[1].split("]")[0].split(",")]
    vocab = int(info.split("logits")[1].split("[")[1].split("]")[0].split(",")[2])

    weights = work("weights.safetensors")
    run([single, "init", "--init-random", str(args.seed), "--output", weights])
    if args.routing == "zero-gate":
        arrays = safetensors_io.load_numpy(weights)
        for name in arrays:
            if name.endswith("mlp.gate.weight"):
                arrays[name] = np.zeros_like(arrays[name])
        safetensors_io.save_numpy(weights, arrays)
    rng = random.Random(args.seed)
    tokens = ",".join(str(rng.randrange(vocab)) for _ in range(batch * seq))

    def forward(exe, out, launcher=(), extra=()):
        run(list(launcher) + [exe, "forward", "--weights", weights, "--tokens", tokens,
                              "--output", out] + list(extra), mpi=bool(launcher))
        result = safetensors_io.load_numpy(out)
        return result["logits"], float(result["loss"])

    ref_logits, ref_loss = forward(single, work("single.safetensors"))
    failed = False
    for mesh in args.mesh:
        ranks = 1
        for part in mesh.split(","):
            if part == "sp":  # sequence parallelism: a flag, not an axis
                continue
            axis, size = part.split("=")
            if axis in ("dp", "cp", "tp"):  # ep and etp borrow their ranks
                ranks *= int(size)
        exe = work("model_" + mesh.replace(",", "_").replace("=", ""))
        run([args.compiler, args.model, "--mesh", mesh, "-o", exe])
        for backend in args.backend:
            out = work(os.path.basename(exe) + "_" + backend + ".safetensors")
            if backend == "local":
                logits, loss = forward(exe, out, extra=["--comm", "local"] + args.run_arg)
            else:
                launcher = args.mpirun.split() + ["-np", str(ranks)]
                logits, loss = forward(exe, out, launcher=launcher, extra=args.run_arg)
            e_logits = rel_err(logits, ref_logits)
            e_loss = abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)
            ok = logits.shape == ref_logits.shape and e_logits <= args.rtol and e_loss <= args.rtol
            failed |= not ok
            print(f"mesh {mesh} ({ranks} ranks, {backend}): logits max relative error "
                  f"{e_logits:.2e}, loss relative error {e_loss:.2e}: {'ok' if ok else 'FAIL'}")
    print("FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
