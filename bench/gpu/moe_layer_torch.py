#!/usr/bin/env python3
"""PyTorch's side of the GPU MoE benchmarks (bench/gpu/run.sh).

Measures, on the same device and shapes as bench/gpu/MoELayerGpuBench.cpp,
each figure as the median of CUDA-event timings after warm-up:

  ceilings   device-to-device copy bandwidth (bytes read + written) and a
             large bf16 matrix product (8192^3 by default) through cuBLAS;
  layer      the routed-expert block of one MoE layer: the permutation
             (index_select of the routed rows), the expert FFN through
             torch._grouped_mm (gate and up in one grouped product, SwiGLU,
             down), the same FLOPs as one dense cuBLAS product per projection,
             and the whole block (router, top-k, sort, grouped FFN, weighted
             combine) forward + backward in eager mode and under
             torch.compile.

The routing is drawn as the C++ bench draws it (uniform, or Zipf-skewed with
expert e weighted 1 / (e + 1)). Prints one line of key=value pairs per
section; a figure PyTorch cannot produce here is printed as `nan` with the
reason on stderr, so the table still comes out.

  moe_layer_torch.py ceilings [--gemm 8192] [--copy-mib 2048]
  moe_layer_torch.py layer --tokens T --hidden H --experts E --topk K
                     --inter F [--routing uniform|skewed] [--dtype bf16|f32]
                     [--no-compile]
  --device cpu runs the same code on the CPU (small shapes; a smoke test).
"""

import argparse
import math
import sys

import torch
import torch.nn.functional as F


def timer(device, repeats=10, warmup=3):
    """Returns median milliseconds of fn() on `device`."""
    def run(fn):
        for _ in range(warmup):
            fn()
        times = []
        if device.type == "cuda":
            for _ in range(repeats):
                start = torch.cuda.Event(enable_timing=True)
                stop = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop))
        else:
            import time
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        return times[len(times) // 2]
    return run


def attempt(what, fn):
    try:
        return fn()
    except Exception as e:  # a figure this torch cannot produce
        print(f"moe_layer_torch: {what}: {type(e).__name__}: {str(e).splitlines()[0]}",
              file=sys.stderr)
        return math.nan


def ceilings(args, device):
    ms = timer(device)
    n = args.copy_mib * (1 << 20) // 4
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy_ms = ms(lambda: dst.copy_(src))
    m = args.gemm
    a = torch.randn(m, m, dtype=torch.bfloat16, device=device)
    b = torch.randn(m, m, dtype=torch.bfloat16, device=device)
    gemm_ms = ms(lambda: a @ b)
    print(f"copy_gbs={2 * n * 4 / (copy_ms * 1e-3) / 1e9:.1f} "
          f"gemm_bf16_tflops={2 * m ** 3 / (gemm_ms * 1e-3) / 1e12:.1f} gemm_n={m}")


def draw_routing(tokens, experts, topk, skewed, generator):
    weight = (1.0 / torch.arange(1, experts + 1, dtype=torch.float64) if skewed
              else torch.ones(experts, dtype=torch.float64))
    # Top-k distinct experts per token, each drawn with the weights above.
    return torch.multinomial(weight.expand(tokens, experts), topk, replacement=False,
                             generator=generator).to(torch.int64)


def grouped_mm(a, b_t, offs):
    """a [rows, k] @ b_t[e]^T per group, b_t [E, n, k]: torch._grouped_mm takes
    the weights as [E, k, n] and prefers them column-major, which b_t's
    transpose is."""
    return torch._grouped_mm(a, b_t.transpose(-2, -1), offs=offs)


def layer(args, device):
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    ms = timer(device)
    g = torch.Generator().manual_seed(1)
    T, H, E, K, Fi = args.tokens, args.hidden, args.experts, args.topk, args.inter
    x = torch.randn(T, H, generator=g).to(device, dtype)
    router_w = (torch.randn(E, H, generator=g) * 0.02).to(device, dtype)
    gate_up = (torch.randn(E, 2 * Fi, H, generator=g) * 0.02).to(device, dtype)
    down = (torch.randn(E, H, Fi, generator=g) * 0.02).to(device, dtype)
    idx = draw_routing(T, E, K, args.routing == "skewed", g).to(device)

    flat = idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=E)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    src_rows = order // K
    rows = T * K

    permute_ms = ms(lambda: x.index_select(0, src_rows))
    permuted = x.index_select(0, src_rows)

    def experts_grouped(p):
        h = grouped_mm(p, gate_up, offs)
        act = F.silu(h[:, :Fi]) * h[:, Fi:]
        return grouped_mm(act, down, offs)

    grouped_ms = attempt("torch._grouped_mm", lambda: ms(lambda: experts_grouped(permuted)))

    # The same FLOPs as one dense product per projection (every row against
    # one expert's weights): cuBLAS at its best on these sizes.
    w_gu = gate_up[0].t().contiguous()
    w_d = down[0].t().contiguous()

    def experts_dense(p):
        h = p @ w_gu
        return (F.silu(h[:, :Fi]) * h[:, Fi:]) @ w_d

    dense_ms = ms(lambda: experts_dense(permuted))

    def block(x, router_w, gate_up, down):
        """The routed-expert block as a PyTorch user writes it: softmax
        router with renormalised top-k, sort by expert, grouped FFN, weighted
        combine. The drawn routing (idx) replaces the router's choice so both
        sides see the same load; the router's probabilities still carry
        gradients."""
        probs = torch.softmax((x @ router_w.t()).float(), dim=-1)
        w = torch.gather(probs, 1, idx)
        w = (w / w.sum(-1, keepdim=True)).to(x.dtype)
        p = x.index_select(0, src_rows)
        h = grouped_mm(p, gate_up, offs)
        y = grouped_mm(F.silu(h[:, :Fi]) * h[:, Fi:], down, offs)
        out = torch.zeros_like(x)
        out.index_add_(0, src_rows, y * w.reshape(-1)[order].unsqueeze(1))
        return out

    params = [t.clone().requires_grad_(True) for t in (x, router_w, gate_up, down)]
    dout = torch.randn(T, H, generator=g).to(device, dtype)

    def fwd_bwd(fn):
        def step():
            for p in params:
                p.grad = None
            fn(*params).backward(dout)
        return step

    eager_ms = attempt("eager block", lambda: ms(fwd_bwd(block)))
    compiled_ms = math.nan
    if not args.no_compile:
        compiled = torch.compile(block)
        compiled_ms = attempt("torch.compile block", lambda: ms(fwd_bwd(compiled)))
    flops = 2.0 * rows * H * Fi * 3
    print(f"dtype={args.dtype} routing={args.routing} grouped_mm_ms={grouped_ms:.4f} "
          f"grouped_mm_tflops={flops / (grouped_ms * 1e-3) / 1e12:.2f} "
          f"dense_ms={dense_ms:.4f} dense_tflops={flops / (dense_ms * 1e-3) / 1e12:.2f} "
          f"permute_ms={permute_ms:.4f} "
          f"permute_gbs={2 * rows * H * x.element_size() / (permute_ms * 1e-3) / 1e9:.1f} "
          f"eager_fwd_bwd_ms={eager_ms:.4f} compiled_fwd_bwd_ms={compiled_ms:.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["ceilings", "layer"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gemm", type=int, default=8192)
    ap.add_argument("--copy-mib", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--topk", type=int, default=8)
    ap.add_argument("--inter", type=int, default=768)
    ap.add_argument("--routing", choices=["uniform", "skewed"], default="uniform")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("moe_layer_torch: skipped: no GPU")
        return 77
    torch.backends.cuda.matmul.allow_tf32 = False
    (ceilings if args.what == "ceilings" else layer)(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
