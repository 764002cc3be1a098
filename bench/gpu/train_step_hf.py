#!/usr/bin/env python3
"""Hugging Face transformers' side of the GPU training-step benchmark
(bench/gpu/run.sh): Qwen3MoeForCausalLM with the architecture of a model-zoo
config (models/configs/, default qwen3_moe_gpu_bench), trained with
AdamW on random token batches of the config's batch x seq, the loss being
cross-entropy plus the router's load-balancing loss, as the compiled model's.

  --dtype f32    fp32 parameters and arithmetic (TF32 off);
  --dtype bf16   fp32 parameters under torch.autocast(bfloat16): fp32 master
                 weights with bf16 compute, what the compiled model's
                 --storage bf16 does (bf16 weights, fp32 master copy).

Times each whole step (forward, backward, optimizer, zero_grad) with CUDA
events and prints one line of key=value pairs: the median tokens per second
after the warm-up steps, and the model FLOPs per token (6 x the parameters a
token passes through in matrix products, plus causal attention's
6 x layers x seq x heads x head_dim), from which run.sh computes MFU.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))
import zoo  # noqa: E402


def flops_per_token(cfg):
    """Training FLOPs per token (forward + backward = 3 x forward, a matrix
    product of an [n, k] weight costing 2 n k per token): the attention
    projections, the router, top-k experts of three projections, the LM
    head; plus the causal attention scores and values (half of the full
    square)."""
    h, d = cfg.hidden, cfg.head_dim
    attn = h * d * (2 * cfg.heads + 2 * cfg.kv_heads)
    experts = cfg.top_k * 3 * h * cfg.moe_inter
    per_layer = attn + cfg.experts * h + experts
    dense = cfg.layers * per_layer + cfg.vocab * h
    scores = cfg.layers * cfg.seq * cfg.heads * d * 2  # QK^T and PV, causal half
    return 6 * dense + 6 * scores // 2


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen3_moe_gpu_bench")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="bf16")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--flops-only", action="store_true",
                    help="print the FLOPs per token and exit")
    args = ap.parse_args()
    cfg = zoo.load(args.model)
    if args.flops_only:
        print(f"flops_per_token={flops_per_token(cfg)}")
        return 0
    import torch
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("train_step_hf: skipped: no GPU")
        return 77
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM
    fields = cfg.hf_fields()
    fields.pop("architectures", None)
    hf = AutoConfig.for_model(fields.pop("model_type"), **fields, output_router_logits=True)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(hf).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1,
                            fused=device.type == "cuda")
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=g).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def step():
        with autocast:
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step()
            stop.record()
            stop.synchronize()
            ms = start.elapsed_time(stop)
        else:
            import time
            t0 = time.perf_counter()
            loss = step()
            ms = (time.perf_counter() - t0) * 1e3
        if i >= args.warmup:
            times.append(ms)
    times.sort()
    median = times[len(times) // 2]
    tokens_per_step = cfg.batch * cfg.seq
    print(f"transformers={transformers.__version__} torch={torch.__version__} "
          f"dtype={args.dtype} step_ms={median:.2f} "
          f"tokens_per_s={tokens_per_step / (median * 1e-3):.0f} "
          f"flops_per_token={flops_per_token(cfg)} loss={float(loss.detach()):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
