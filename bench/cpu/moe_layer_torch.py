#!/usr/bin/python3
"""One MoE layer forward in PyTorch (the peer of moe-cpu-bench).

The router and experts the way Hugging Face's Qwen3-MoE block computes them:
softmax router, top-k, renormalised weights, then for each expert with tokens
the SwiGLU FFN on its tokens and an index_add of the weighted result. Prints
the median over repeats as "key=value" pairs.
"""
import argparse
import time

import torch


def moe_layer(x, gate, w_gate, w_up, w_down, top_k):
    logits = x @ gate.t()
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    weights, indices = torch.topk(probs, top_k, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(x)
    expert_mask = torch.nn.functional.one_hot(indices, num_classes=gate.shape[0]).permute(2, 1, 0)
    for e in range(gate.shape[0]):
        slot, token = torch.where(expert_mask[e])
        if token.numel() == 0:
            continue
        h = x[token]
        y = (torch.nn.functional.silu(h @ w_gate[e].t()) * (h @ w_up[e].t())) @ w_down[e].t()
        out.index_add_(0, token, y * weights[token, slot, None])
    return out


def main():
    p = argparse.ArgumentParser()
    for name, default in (("tokens", 2048), ("hidden", 512), ("experts", 8), ("topk", 2),
                          ("inter", 1024), ("repeats", 10), ("threads", 1)):
        p.add_argument(f"--{name}", type=int, default=default)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.tokens, a.hidden, generator=g)
    gate = torch.randn(a.experts, a.hidden, generator=g) * 0.02
    w_gate = torch.randn(a.experts, a.inter, a.hidden, generator=g) * 0.02
    w_up = torch.randn(a.experts, a.inter, a.hidden, generator=g) * 0.02
    w_down = torch.randn(a.experts, a.hidden, a.inter, generator=g) * 0.02
    times = []
    with torch.no_grad():
        for r in range(a.repeats + 1):
            start = time.perf_counter()
            moe_layer(x, gate, w_gate, w_up, w_down, a.topk)
            if r > 0:
                times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    median = times[len(times) // 2]
    flops = 2.0 * a.tokens * a.hidden * a.experts + 6.0 * a.tokens * a.topk * a.hidden * a.inter
    print(f"impl=torch median_ms={median:.3f} gflops={flops / (median * 1e6):.2f}")


if __name__ == "__main__":
    main()
