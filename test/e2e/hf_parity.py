#!/usr/bin/env python3
"""A compiled zoo model against Hugging Face transformers itself.

Builds the transformers model (AutoModelForCausalLM: Qwen3MoeForCausalLM,
Qwen2MoeForCausalLM, MixtralForCausalLM, ...) from the very config.json the
executable was imported from (models/configs/NAME.json, read by
transformers' own configuration class), with seeded random weights, saves it
with `save_pretrained` (safetensors), runs the compiled executable's
`forward` on that folder, and compares its logits and loss with what
transformers computes for the same tokens:

  logits: transformers' own forward (eager attention, fp32);
  loss:   cross-entropy from transformers (labels = the tokens shifted left,
          the row's last position ignored) plus, for each MoE layer, the
          coefficient times transformers' `load_balancing_loss_func` applied
          to that layer's router logits alone, divided by top-k: the model's
          IR defines the auxiliary loss per layer with f_e over the T*K
          routed slots (MoEOps.td, `moe.aux_loss`, 1 when balanced), where
          transformers counts f_e per token (top-k when balanced). The script
          checks that relation on the run's own router logits against a
          direct formula before it relies on it. The coefficient is the
          config's router_aux_loss_coef when output_router_logits is set
          (transformers adds the loss only then), else 0.

Needs torch, transformers and safetensors (a current PyTorch from PyPI: the
project's scripts/peer_python.sh makes one); runs on the CPU or, with
--device cuda, on a GPU (the executable then gets --backend cuda).

  hf_parity.py --model-exe EXE [--config qwen3_moe_tiny|PATH] [--backend cpu|cuda]
               [--seed 1] [--rtol 1e-4] [--workdir DIR] [--tamper]

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
import zoo  # noqa: E402  (the zoo's config.json files, never repeated here)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402


def hf_config(cfg):
    """transformers' configuration class for the config, from its own fields."""
    from transformers import AutoConfig
    fields = cfg.hf_fields()
    fields.pop("architectures", None)
    fields.update(output_router_logits=True, attn_implementation="eager")
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def hf_model(config):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager")


def randomise(model, seed, std):
    """Every weight normal(0, std), norm weights 1 + normal(0, std): large enough
    that routing is far from ties and swapped norms would show. DeepSeek's
    selection-only expert bias (a buffer) is random too, so that it moves the
    choice of experts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32) * std
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=torch.float32) * std)


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


def hf_layer_aux(layer_logits, cfg, grad=False):
    """transformers' load balancing loss of one layer's router logits."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
    loss = load_balancing_loss_func((layer_logits,), cfg.experts, cfg.top_k)
    return loss if grad else float(loss)


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
    global args  # the options, read by the helpers below
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-exe", required=True)
    ap.add_argument("--config", default="qwen3_moe_tiny",
                    help="a zoo config name (models/configs/NAME.json) or a config.json path")
    ap.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--std", type=float, default=0.1)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--workdir")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--max-shard-size",
                    help="save_pretrained's max_shard_size (e.g. 40KB): a sharded "
                         "checkpoint, which the executable reads through its index")
    ap.add_argument("--from-exe", action="store_true",
                    help="the other way round: the executable writes the weights "
                         "(init --output FOLDER, with --max-shard-size and --save-dtype), "
                         "transformers loads them with from_pretrained")
    ap.add_argument("--save-dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--grad", action="store_true",
                    help="also compare the executable's gradients (grad --output) with "
                         "transformers' autograd of the same loss, tensor by tensor under "
                         "the checkpoint's names, within --grad-rtol of each tensor's "
                         "largest element")
    ap.add_argument("--grad-rtol", type=float, default=1e-4)
    ap.add_argument("--train-steps", type=int, default=0,
                    help="the round trip: train the save_pretrained checkpoint for this many "
                         "steps on a file of token ids (train --data-format u32), export the "
                         "training checkpoint in the Hugging Face layout (export), load that "
                         "with from_pretrained and compare it with the executable's forward "
                         "on the exported files")
    ap.add_argument("--train-exe", help="the executable that trains (default --model-exe: "
                                        "e.g. one compiled for a mesh)")
    ap.add_argument("--train-arg", action="append", default=[],
                    help="an extra argument for train (e.g. --comm, local)")
    ap.add_argument("--exe-arg", action="append", default=[],
                    help="an extra argument for the executable's forward (e.g. --comm, "
                         "local for a model compiled for a mesh)")
    ap.add_argument("--tamper", action="store_true",
                    help="scale one routed expert's down projection in the file the "
                         "executable reads (transformers keeps the original): the check "
                         "must then FAIL, showing it can")
    args = ap.parse_args()

    import transformers
    try:
        cfg = zoo.load(args.config)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"error: --config {args.config}: {e}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="moe-hf-")
    os.makedirs(workdir, exist_ok=True)
    torch.manual_seed(args.seed)
    if args.from_exe:
        return compare(cfg, workdir, *exe_written(cfg, workdir))
    model = hf_model(hf_config(cfg)).eval()
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

    if args.train_steps:
        model, weights = trained_and_exported(cfg, workdir, weights)
    status = compare(cfg, workdir, model, weights)
    if args.grad:
        status = max(status, compare_gradients(cfg, workdir, model, weights))
    return status


def hf_loss_of(cfg, model, tokens, labels):
    """transformers' forward and the loss the model's IR defines: mean
    cross-entropy plus, per MoE layer, the coefficient times transformers'
    load-balancing loss of that layer over top-k (see the module's doc)."""
    out = model(input_ids=tokens, output_router_logits=True)
    ce = torch.nn.functional.cross_entropy(
        out.logits.reshape(-1, cfg.vocab).double(), labels.reshape(-1), ignore_index=-100)
    aux = sum(cfg.aux_coef * hf_layer_aux(l, cfg, grad=True) / cfg.top_k
              for l in out.router_logits) if cfg.aux_coef else 0.0
    return out, ce, ce + aux


def compare_gradients(cfg, workdir, model, weights):
    """The executable's gradients against transformers' autograd. Each
    gradient is put in its parameter's place and the model saved with
    save_pretrained, so that transformers itself names and lays out the
    gradients as the checkpoint the executable read (per-expert tensors)."""
    tokens, labels = batch_of(cfg)
    model.zero_grad()
    with torch.enable_grad():
        _, _, loss = hf_loss_of(cfg, model, tokens, labels)
        loss.backward()
    saved = os.path.join(workdir, "hf-grads")
    shutil.rmtree(saved, ignore_errors=True)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
        for name, b in model.named_buffers():  # selection only: no gradient
            if name.endswith("e_score_correction_bias"):
                b.zero_()
    model.save_pretrained(saved, safe_serialization=True)
    ref = {}
    for f in os.listdir(saved):
        if f.endswith(".safetensors"):
            ref.update(load_file(os.path.join(saved, f)))

    opath = os.path.join(workdir, "grads.safetensors")
    ids = ",".join(str(int(t)) for t in tokens.reshape(-1))
    run_exe([args.model_exe, "grad", "--weights", weights, "--tokens", ids, "--output", opath,
             "--backend", args.backend], "grad")
    got = load_file(opath)
    got.pop("loss", None)
    missing = sorted(set(ref) ^ set(got))
    worst, worst_name = 0.0, ""
    for name in sorted(set(ref) & set(got)):
        e = rel_error(got[name], ref[name])
        if e > worst:
            worst, worst_name = e, name
    print(f"gradients: {len(got)} tensors, max relative error {worst:.3g} ({worst_name})")
    ok = not missing and worst <= args.grad_rtol
    if missing:
        print("gradient names differ: " + ", ".join(missing[:6]))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def batch_of(cfg):
    """The run's tokens (seeded) and labels (the tokens shifted left)."""
    g = torch.Generator().manual_seed(1000 + args.seed)
    tokens = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=g)
    labels = torch.full_like(tokens, -100)
    labels[:, :-1] = tokens[:, 1:]
    return tokens, labels


def run_exe(cmd, what):
    """Runs an executable; its output, or FAIL (on stdout) and exit 1."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=args.timeout)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout.decode(errors="replace"))
        print(f"FAIL: {what} exited with {proc.returncode}", flush=True)
        raise SystemExit(1)
    return proc.stdout.decode(errors="replace")


def trained_and_exported(cfg, workdir, saved):
    """Trains from the checkpoint `saved` on random token ids, exports the
    training checkpoint as Hugging Face shards, and loads them back with
    from_pretrained; the trained weights must differ from `saved`'s."""
    from transformers import AutoModelForCausalLM
    rng = np.random.default_rng(args.seed)
    ids_path = os.path.join(workdir, "ids.u32")
    rng.integers(0, cfg.vocab, size=40 * cfg.batch * (cfg.seq + 1)).astype("<u4").tofile(ids_path)
    ckpt = os.path.join(workdir, "train-ckpt")
    out = os.path.join(workdir, "exported")
    shutil.rmtree(ckpt, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    n = str(args.train_steps)
    log = run_exe([args.train_exe or args.model_exe, "train", "--data", ids_path,
                   "--data-format", "u32", "--steps", n, "--weights", saved, "--lr", "1e-2",
                   "--checkpoint-dir", ckpt, "--save-every", n, "--eval-every", n,
                   "--sample-chars", "0"] + args.train_arg, "train")
    losses = [line for line in log.splitlines() if line.startswith("step ")]
    print(f"trained {n} steps from the save_pretrained checkpoint: "
          f"{losses[0] if losses else ''} ... {losses[-1] if losses else ''}")
    shard_args = ["--max-shard-size", args.max_shard_size] if args.max_shard_size else []
    print(run_exe([args.train_exe or args.model_exe, "export", "--checkpoint", ckpt, "--output", out]
                  + shard_args, "export").strip().replace(workdir + "/", ""))
    before = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    moved = max(float((a - b).abs().max()) for a, b in
                zip(before.parameters(), model.parameters()))
    files = len([f for f in os.listdir(out) if f.endswith(".safetensors")])
    print(f"exported in {files} file(s), loaded with from_pretrained; the weights "
          f"moved by up to {moved:.3g} in training")
    if moved == 0.0:
        raise SystemExit("FAIL: the exported weights equal the initial ones")
    return model, out


def exe_written(cfg, workdir):
    """The executable's random init written as a Hugging Face checkpoint
    (init --output FOLDER, config.json included), then loaded by
    from_pretrained."""
    import transformers
    from transformers import AutoModelForCausalLM
    saved = os.path.join(workdir, "exe-model")
    shutil.rmtree(saved, ignore_errors=True)
    cmd = [args.model_exe, "init", "--init-random", str(args.seed), "--init-std",
           str(args.std), "--output", saved, "--save-dtype", args.save_dtype]
    if args.max_shard_size:
        cmd += ["--max-shard-size", args.max_shard_size]
    run_exe(cmd, "init")
    # The config.json beside the weights is the executable's own (the
    # model's moe.hf_config), not one written here.
    if not os.path.exists(os.path.join(saved, "config.json")):
        raise SystemExit("FAIL: the executable wrote no config.json")
    shards = len([f for f in os.listdir(saved) if f.endswith(".safetensors")])
    model = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: "
          f"{cfg.name} written by the executable ({args.save_dtype}, {shards} file(s)), "
          "loaded with from_pretrained")
    return model, saved


def compare(cfg, workdir, model, weights):
    """The executable's forward on `weights` against transformers' `model`."""
    tokens, labels = batch_of(cfg)
    with torch.no_grad():
        out, ce, loss = hf_loss_of(cfg, model, tokens, labels)
    hf_logits = out.logits.float().numpy()
    hf_loss = float(loss)
    aux = hf_loss - float(ce)

    # The relation between the two definitions, checked before it is used.
    agree = max(abs(hf_layer_aux(l, cfg) / cfg.top_k - ir_aux_loss(l, cfg.top_k, cfg.experts))
                for l in out.router_logits)
    print(f"aux loss: transformers' per layer / top-k vs the IR's formula differ by {agree:.3g}")

    opath = os.path.join(workdir, "out.safetensors")
    ids = ",".join(str(int(t)) for t in tokens.reshape(-1))
    cmd = [args.model_exe, "forward", "--weights", weights, "--tokens", ids,
           "--output", opath, "--backend", args.backend] + args.exe_arg
    print("running: " + " ".join(cmd[:3]) + " ... --backend " + args.backend)
    run_exe(cmd, "the model executable")
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
