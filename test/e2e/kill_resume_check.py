#!/usr/bin/env python3
"""Checks that a training run killed mid-way resumes to the same trajectory.

Trains a model compiled for a mesh under mpirun twice from the same seeded
weights: once straight through, once with checkpoints every K steps and one
rank killed with SIGKILL a few steps after a checkpoint. The killed job must
fail; `train --resume` then continues from the last checkpoint. The metrics
file of the killed-and-resumed run (whose records after the checkpoint the
resumed run replaces) must equal the uninterrupted run's record for record:
the same steps, and bit for bit the same loss, learning rate, gradient norm,
expert counts and validation losses.

--reference-exe runs the uninterrupted run with another executable, and
--resume-exe resumes with another: the same model compiled another way
(say with and without `moec --zero 1`) must give the same records, and a
checkpoint of one must resume in the other. --rtol compares the records'
floating-point values within a relative tolerance instead of bit for bit,
for builds that sum in another order (`moec --zero 3` splits the gradient
norm's sum of squares another way); integers stay exact.

Prints what happened and PASS, or FAIL lines and exits 1.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def descendants(pid):
    """Every process below `pid` (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def close(a, b, rtol):
    """a == b, floats within rtol of each other (relative to b)."""
    if isinstance(a, float) and isinstance(b, (int, float)) and rtol:
        return abs(a - b) <= rtol * abs(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rtol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rtol) for x, y in zip(a, b))
    return a == b


def rank_of(pid):
    """The MPI world rank of a launched process, from its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    for item in env:
        for key in (b"OMPI_COMM_WORLD_RANK=", b"PMIX_RANK=", b"PMI_RANK="):
            if item.startswith(key):
                return int(item[len(key):])
    return None


def records(path):
    """The metrics records without their timing fields."""
    out = []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            record.pop("tokens_per_s", None)
            record.pop("elapsed_s", None)
            for layer in record.get("ep_layers", []):  # timings vary too
                layer.pop("expert_s", None)
                layer.pop("a2a_s", None)
            out.append(record)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exe", required=True, help="the model executable, compiled for a mesh")
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--mpirun", default="mpirun", help="launcher command (split on spaces)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--kill-at", type=int, default=23,
                        help="kill once this step's progress line is out")
    parser.add_argument("--kill-rank", type=int, default=1)
    parser.add_argument("--reference-exe",
                        help="the uninterrupted run's executable (default --exe)")
    parser.add_argument("--resume-exe", help="the resumed run's executable (default --exe)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--rtol", type=float, default=0.0,
                        help="relative tolerance of floating-point values (default 0: bit for bit)")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    launcher = args.mpirun.split() + ["-np", str(args.ranks)]
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"

    def train(name, extra, exe=args.exe):
        metrics = os.path.join(args.workdir, f"{name}.jsonl")
        return metrics, launcher + [exe,
            "train", "--data", args.data, "--steps", str(args.steps), "--init-random", "7",
            "--lr", "3e-3", "--warmup", "5", "--log-every", "1", "--eval-every", "20",
            "--eval-batches", "1", "--sample-chars", "0", "--seed", "3",
            "--metrics", metrics] + extra

    def run(cmd, what):
        """stdout of a run that must succeed, or None after saying why."""
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, env=env)
        if result.returncode != 0:
            sys.stdout.write(result.stdout)
            print(f"FAIL: the {what} run exited with {result.returncode}")
            return None
        return result.stdout

    whole_metrics, cmd = train("whole", [], args.reference_exe or args.exe)
    if run(cmd, "uninterrupted") is None:
        return 1

    ckpt = os.path.join(args.workdir, "ckpt")
    killed_metrics, cmd = train("killed", ["--checkpoint-dir", ckpt,
                                           "--save-every", str(args.save_every)])
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, env=env)
    marker = f"step {args.kill_at}/{args.steps} "
    victim, output = None, []
    for line in job.stdout:
        output.append(line)
        if victim is None and line.startswith(marker):
            for pid in descendants(job.pid):
                if rank_of(pid) == args.kill_rank:
                    victim = pid
                    break
            if victim is None:
                job.kill()
                print(f"FAIL: found no process of rank {args.kill_rank} under mpirun")
                return 1
            os.kill(victim, signal.SIGKILL)
    status = job.wait()
    if victim is None or status == 0:
        sys.stdout.write("".join(output))
        print("FAIL: the run finished before the kill" if victim is None
              else "FAIL: the job with a killed rank exited with 0")
        return 1
    last = max(r["step"] for r in records(killed_metrics) if "loss" in r)
    with open(os.path.join(ckpt, "latest")) as f:
        latest = f.read().strip()
    print(f"killed rank {args.kill_rank} after step {args.kill_at}: mpirun exited with "
          f"{status}, metrics reach step {last}, latest checkpoint {latest}")

    _, cmd = train("killed", ["--checkpoint-dir", ckpt, "--resume"],
                   args.resume_exe or args.exe)
    stdout = run(cmd, "resumed")
    if stdout is None:
        return 1
    resumed = [line for line in stdout.splitlines() if "resuming from" in line]
    print("resumed: " + (resumed[0].strip() if resumed else "(no note)"))

    whole, killed = records(whole_metrics), records(killed_metrics)
    losses = [r for r in whole if "loss" in r]
    print(f"{len(losses)} steps, loss {losses[0]['loss']:.6f} -> {losses[-1]['loss']:.6f}")
    same = len(whole) == len(killed) and all(
        close(a, b, args.rtol) for a, b in zip(whole, killed))
    ok = last < args.steps and same
    if not same:
        for a, b in zip(whole, killed):
            if not close(a, b, args.rtol):
                print(f"FAIL: first difference: {json.dumps(a)} vs {json.dumps(b)}")
                break
        else:
            print(f"FAIL: {len(whole)} records vs {len(killed)}")
    else:
        within = f" within {args.rtol:g}" if args.rtol else ""
        print(f"killed and resumed: all {len(whole)} records equal the uninterrupted run's{within}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
