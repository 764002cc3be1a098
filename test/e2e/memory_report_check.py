#!/usr/bin/env python3
"""Checks `moec --memory-report=json` against a count made here, from the
model's architecture config and the mesh's sharding rules alone.

    memory_report_check.py MOEC MOE_IMPORT MODEL MESH [--storage bf16] [--set F=V ...]
                           [--batch B --seq S]

MODEL is a zoo config (models/configs/MODEL.json), read here by models/zoo.py
and imported by MOE_IMPORT for moec.

The count: every parameter of the architecture (Qwen3-MoE, Mixtral and
DeepSeek-V3 naming: embedding, per-layer norms, q/k/v/o projections, q/k
norms, router gate and expert bias, stacked experts, dense and shared-expert
FFNs, final norm, LM head), its block on one rank under the documented rules
(Megatron-style: q/k/v rows and o columns split over tp; dense and
shared-expert FFN intermediates split over tp when tp divides them; the
expert dimension split over ep; the rest replicated), each block 64-byte
aligned in the weights blob (include/moe/Runtime/ModelABI.h). From it:
weights in the storage type; gradients f32, or under bf16 the bf16 blob the
training step writes plus one f32 chunk of at most 2^24 elements (the
optimizer widens the largest parameter's gradient a chunk at a time);
optimizer two f32 AdamW moments (plus the f32 master copy under bf16).

With --zero 1 (ZeRO stage 1) each moment of a block is split over the
block's data-parallel replicas, the dp x cp ranks for a dense weight and
dp x cp / ep for an expert weight: a rank keeps ceil(n / replicas)
elements, rounded up to 16.

With --zero 2 or 3 every weight not split over ep (all of them when ep = 1) is
split once more, over the dp x cp ranks, along the first dimension of its
block that they divide (none: it stays whole); a split weight's weights,
gradients, master copy and moments are its slice's, the others' as under
stage 1.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models"))
import zoo  # noqa: E402 (the zoo's architecture configs)


def align(n):
    return (n + 63) // 64 * 64


def config(model, sets, batch, seq):
    return dataclasses.asdict(zoo.load(model, zoo.parse_sets(sets), batch, seq))


def local_params(c, mesh):
    """(global shape, local shape) of every parameter on one rank."""
    tp, ep = mesh.get("tp", 1), mesh.get("ep", 1)
    H, D = c["hidden"], c["head_dim"]
    out = []

    def add(shape, local=None, expert=False):
        out.append((shape, local or shape, expert))

    def column(rows, cols):  # rows split over tp
        add([rows, cols], [rows // tp, cols])

    def row(rows, cols):  # columns split over tp
        add([rows, cols], [rows, cols // tp])

    def swiglu(inter):
        split = tp if inter % tp == 0 else 1
        for _ in range(2):
            add([inter, H], [inter // split, H])
        add([H, inter], [H, inter // split])

    add([c["vocab"], H])  # embedding
    for layer in range(c["layers"]):
        add([H])
        add([H])  # input / post-attention norms
        if c["kv_lora_rank"]:  # MLA: the latent projections whole, heads over tp
            nope, rope, v = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
            q_rank, kv_rank = c["q_lora_rank"], c["kv_lora_rank"]
            if q_rank:
                add([q_rank, H])
                add([q_rank])
                column(c["heads"] * (nope + rope), q_rank)
            else:
                column(c["heads"] * (nope + rope), H)
            add([kv_rank + rope, H])
            add([kv_rank])
            column(c["heads"] * (nope + v), kv_rank)
            row(H, c["heads"] * v)
        else:
            column(c["heads"] * D, H)
            column(c["kv_heads"] * D, H)
            column(c["kv_heads"] * D, H)
            if c["qkv_bias"]:  # split over tp like the projections' rows
                for rows in (c["heads"] * D, c["kv_heads"] * D, c["kv_heads"] * D):
                    add([rows], [rows // tp])
            row(H, c["heads"] * D)
        if c["qk_norm"]:
            add([D])
            add([D])
        if layer in c["dense_layers"]:
            swiglu(c["dense_inter"])
            continue
        E, F = c["experts"], c["moe_inter"]
        add([E, H])  # router gate
        if c["expert_bias"]:
            add([E])
        for shape in ([E, F, H], [E, F, H], [E, H, F]):
            add(shape, [E // ep] + shape[1:], expert=True)
        if c["shared_inter"]:
            swiglu(c["shared_inter"])
            if c["shared_gate"]:
                add([1, H])
    add([H])  # final norm
    add([c["vocab"], H])  # LM head
    return out


def zero_block(local, expert, mesh):
    """(block, split) of a weight under ZeRO stage 2 or 3."""
    plane = mesh["dp"] * mesh["cp"]
    if plane == 1 or (expert and mesh["ep"] > 1):
        return local, False
    for d, size in enumerate(local):
        if size % plane == 0:
            return local[:d] + [size // plane] + local[d + 1:], True
    return local, False


def elements(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("moec")
    parser.add_argument("moe_import")
    parser.add_argument("model")
    parser.add_argument("mesh")
    parser.add_argument("--storage", default="f32")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq", type=int)
    parser.add_argument("--zero", type=int, default=0)
    args = parser.parse_args()

    c = config(args.model, args.set, args.batch, args.seq)
    mesh = {"dp": 1, "cp": 1, "tp": 1, "ep": 1}
    for item in args.mesh.split(","):
        axis, _, size = item.partition("=")
        mesh[axis] = int(size)
    ranks = mesh["dp"] * mesh["cp"] * mesh["tp"]

    params = []
    for shape, local, expert in local_params(c, mesh):
        split = False
        if args.zero >= 2:
            local, split = zero_block(local, expert, mesh)
        params.append((shape, local, expert, split))
    storage_bytes = 2 if args.storage == "bf16" else 4
    weights = sum(align(elements(local) * storage_bytes) for _, local, _, _ in params)
    fp32 = sum(align(elements(local) * 4) for _, local, _, _ in params)
    moment = fp32
    if args.zero:
        plane = mesh["dp"] * mesh["cp"]
        moment = 0
        for _, local, expert, split in params:
            replicas = 1 if split else plane // mesh["ep"] if expert else plane
            each = -(-elements(local) // replicas)
            moment += -(-each // 16) * 16 * 4
    bf16 = args.storage == "bf16"
    want = {
        "weights": weights,
        "gradients": weights + 4 * min(max(elements(local) for _, local, _, _ in params), 1 << 24)
        if bf16 else fp32,
        "optimizer": 2 * moment + (fp32 if bf16 else 0),
    }

    shape = (["--batch", str(args.batch)] if args.batch else []) + (
        ["--seq", str(args.seq)] if args.seq else [])
    model_text = subprocess.run(
        [args.moe_import, zoo.config_path(args.model)] + shape
        + sum((["--set", s] for s in args.set), []),
        check=True, stdout=subprocess.PIPE).stdout
    report = json.loads(subprocess.run(
        [args.moec, "-", "--mesh", args.mesh, "--storage", args.storage,
         "--zero", str(args.zero), "--memory-report=json"],
        input=model_text, check=True, stdout=subprocess.PIPE).stdout)

    failures = []
    if len(report["ranks"]) != ranks:
        failures.append(f"{len(report['ranks'])} rank objects, expected {ranks}")
    for got in report["ranks"]:
        for field, value in want.items():
            if got[field] != value:
                failures.append(f"rank {got['rank']}: {field} {got[field]}, counted {value}")
        parts = (got["weights"] + got["gradients"] + got["optimizer"] + got["comm"]
                 + got["activations_train"])
        if got["total"] != parts:
            failures.append(f"rank {got['rank']}: total {got['total']} is not the sum of "
                            f"its parts {parts}")
        if got["activations_train"] < got["activations_forward"]:
            failures.append(f"rank {got['rank']}: a training run's activations are "
                            "smaller than a forward run's")
    if failures:
        print(f"FAIL {args.model} mesh {args.mesh} storage {args.storage} zero {args.zero}:")
        print("\n".join(failures[:10]))
        return 1
    print(f"ok {args.model} mesh {args.mesh} storage {args.storage} zero {args.zero}: "
          f"{ranks} ranks, {len(params)} parameters, weights {weights} bytes, "
          f"optimizer {want['optimizer']} bytes a rank")
    return 0


if __name__ == "__main__":
    sys.exit(main())
