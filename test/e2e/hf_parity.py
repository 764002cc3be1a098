#!/usr/bin/env python3
"""The compiled tiny Qwen3-MoE against Hugging Face transformers itself.

Builds `Qwen3MoeForCausalLM` from a config written from the model zoo's
shapes (models/gen_models.py), with seeded random weights, saves it with
`save_pretrained` (safetensors), runs the compiled executable's `forward` on
that very file, and compares its logits and loss with what transformers
computes for the same tokens:

  logits: transformers' own forward (eager attention, fp32);
  loss:   cross-entropy from transformers (labels = the tokens shifted left,
          the row's last position ignored) plus, for each MoE layer, the
          coefficient times transformers' `load_balancing_loss_func` applied
          to that layer's router logits alone, divided by top-k: the model's
          IR defines the auxiliary loss per layer with f_e over the T*K
          routed slots (MoEOps.td, `moe.aux_loss`, 1 when balanced), where
          transformers counts f_e per token (top-k when balanced). The script
          checks that relation on the run's own router logits against a
          direct formula before it relies on it.

Needs torch, transformers and safetensors (a current PyTorch from PyPI: the
project's scripts/peer_python.sh makes one); runs on the CPU or, with
--device cuda, on a GPU (the executable then gets --backend cuda).

  hf_parity.py --model-exe EXE [--backend cpu|cuda] [--seed 1] [--rtol 1e-4]
               [--workdir DIR] [--model qwen3_moe_tiny] [--tamper]

Prints the errors and PASS, or FAIL and exits 1.
"""

import argparse
import shutil
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))
import gen_models  # noqa: E402  (the zoo's shapes, never repeated here)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402


def hf_config(cfg):
    from transformers import Qwen3MoeConfig
    try:
        fields = gen_models.qwen3_moe_hf_fields(cfg)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    return Qwen3MoeConfig(**fields, output_router_logits=True, attn_implementation="eager")


def randomise(model, seed, std):
    """Every weight normal(0, std), norm weights 1 + normal(0, std): large enough
    that routing is far from ties and swapped norms would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32) * std
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)


def per_expert_file(saved_dir, out_path, cfg, merge=False):
    """What the executable's --weights reads: the saved folder itself (one
    file, or shards and their index) when its experts are per-expert tensors,
    else (or with `merge`) one file of per-expert tensors. transformers 5
    keeps the experts fused in memory and writes them back in the published
    per-expert layout; should a version write the fused layout instead
    (gate_up_proj [E, 2F, H], down_proj [E, H, F]), it is split here."""
    index = os.path.join(saved_dir, "model.safetensors.index.json")
    files = ([os.path.join(saved_dir, f) for f in
              sorted(set(json.load(open(index))["weight_map"].values()))]
             if os.path.exists(index) else [os.path.join(saved_dir, "model.safetensors")])
    tensors = {}
    for f in files:
        tensors.update(load_file(f))
    fused = [k for k in tensors if k.endswith("mlp.experts.gate_up_proj")]
    for key in fused:
        prefix = key[: -len("gate_up_proj")]
        gate_up = tensors.pop(key)
        down = tensors.pop(prefix + "down_proj")
        for e in range(gate_up.shape[0]):
            gate, up = np.split(gate_up[e], 2, axis=0)
            tensors[f"{prefix}{e}.gate_proj.weight"] = np.ascontiguousarray(gate)
            tensors[f"{prefix}{e}.up_proj.weight"] = np.ascontiguousarray(up)
            tensors[f"{prefix}{e}.down_proj.weight"] = np.ascontiguousarray(down[e])
    if not fused and not merge:
        return saved_dir, False
    save_file(tensors, out_path)
    return out_path, bool(fused)


def hf_layer_aux(layer_logits, cfg):
    """transformers' load balancing loss of one layer's router logits."""
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func
    return float(load_balancing_loss_func((layer_logits,), cfg.experts, cfg.top_k))


def ir_aux_loss(logits, top_k, experts):
    """MoEOps.td's moe.aux_loss for one layer (coefficient 1): E * sum_e f_e P_e,
    f_e = slots routed to e / (T K), P_e = mean softmax score."""
    probs = torch.softmax(logits.double(), dim=-1)
    idx = torch.topk(probs, top_k, dim=-1).indices
    f = torch.bincount(idx.reshape(-1), minlength=experts).double() / idx.numel()
    return float(experts * (f * probs.mean(0)).sum())


def rel_error(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return float("inf")
    scale = float(np.max(np.abs(b)))
    return float(np.max(np.abs(a - b))) / scale if scale else float(np.max(np.abs(a - b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-exe", required=True)
    ap.add_argument("--model", default="qwen3_moe_tiny")
    ap.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--std", type=float, default=0.1)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--workdir")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--max-shard-size",
                    help="save_pretrained's max_shard_size (e.g. 40KB): a sharded "
                         "checkpoint, which the executable reads through its index")
    ap.add_argument("--tamper", action="store_true",
                    help="scale one routed expert's down projection in the file the "
                         "executable reads (transformers keeps the original): the check "
                         "must then FAIL, showing it can")
    args = ap.parse_args()

    import transformers
    from transformers import Qwen3MoeForCausalLM
    cfg = {c.name: c for c in gen_models.CONFIGS}.get(args.model)
    if cfg is None:
        raise SystemExit(f"error: unknown model '{args.model}'")
    workdir = args.workdir or tempfile.mkdtemp(prefix="moe-hf-")
    os.makedirs(workdir, exist_ok=True)
    torch.manual_seed(args.seed)
    model = Qwen3MoeForCausalLM(hf_config(cfg)).eval()
    randomise(model, args.seed, args.std)
    saved = os.path.join(workdir, "hf-model")
    shutil.rmtree(saved, ignore_errors=True)  # no shards of an earlier run
    shard_args = {"max_shard_size": args.max_shard_size} if args.max_shard_size else {}
    model.save_pretrained(saved, safe_serialization=True, **shard_args)
    shards = len([f for f in os.listdir(saved) if f.endswith(".safetensors")])
    weights, converted = per_expert_file(saved, os.path.join(workdir, "per-expert.safetensors"),
                                         cfg, merge=args.tamper)
    if args.tamper:
        tensors = load_file(weights)
        key = "model.layers.0.mlp.experts.0.down_proj.weight"
        tensors[key] = tensors[key] * np.float32(1.5)
        weights = os.path.join(workdir, "tampered.safetensors")
        save_file(tensors, weights)
        print(f"tampered: {key} scaled by 1.5 in the executable's weights")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: "
          f"{cfg.name} saved with save_pretrained in {shards} file(s)"
          + (" (fused experts split into per-expert tensors)" if converted else ""))

    g = torch.Generator().manual_seed(1000 + args.seed)
    tokens = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=g)
    labels = torch.full_like(tokens, -100)
    labels[:, :-1] = tokens[:, 1:]
    with torch.no_grad():
        out = model(input_ids=tokens, output_router_logits=True)
    hf_logits = out.logits.float().numpy()
    ce = torch.nn.functional.cross_entropy(
        out.logits.reshape(-1, cfg.vocab).double(), labels.reshape(-1), ignore_index=-100)
    aux = sum(cfg.aux_coef * hf_layer_aux(l, cfg) / cfg.top_k for l in out.router_logits)
    hf_loss = float(ce) + aux

    # The relation between the two definitions, checked before it is used.
    agree = max(abs(hf_layer_aux(l, cfg) / cfg.top_k - ir_aux_loss(l, cfg.top_k, cfg.experts))
                for l in out.router_logits)
    print(f"aux loss: transformers' per layer / top-k vs the IR's formula differ by {agree:.3g}")

    opath = os.path.join(workdir, "out.safetensors")
    ids = ",".join(str(int(t)) for t in tokens.reshape(-1))
    cmd = [args.model_exe, "forward", "--weights", weights, "--tokens", ids,
           "--output", opath, "--backend", args.backend]
    print("running: " + " ".join(cmd[:3]) + " ... --backend " + args.backend)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=args.timeout)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout.decode(errors="replace"))
        print(f"FAIL: the model executable exited with {proc.returncode}")
        return 1
    result = load_file(opath)
    e_logits = rel_error(result["logits"], hf_logits)
    e_loss = rel_error(result["loss"], np.array(hf_loss))
    print(f"transformers loss {hf_loss:.8g} (cross-entropy {float(ce):.8g} + aux {aux:.6g}); "
          f"executable {float(result['loss']):.8g}")
    print(f"logits max relative error: {e_logits:.3g}")
    print(f"loss relative error: {e_loss:.3g}")
    ok = e_logits <= args.rtol and e_loss <= args.rtol and agree <= 1e-6
    if not ok:
        print(f"above --rtol {args.rtol:g} (or the aux definitions disagree)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
