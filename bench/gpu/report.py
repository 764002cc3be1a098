#!/usr/bin/env python3
"""Turns bench/gpu/run.sh's raw figures into the tables of bench/RESULTS.md:
each of ours beside its peer from the same run, the ratio, and the mark the
GPU issue aims at.

  report.py RAW --device NAME --flops-per-token N [--peak-tflops 989]

RAW has one line per measurement: a label, then key=value pairs (or the word
`failed`). The peak is the dense bf16 tensor-core rate the MFU is taken
against (989 TFLOP/s: NVIDIA's H100 SXM and H200 datasheets); the measured
large-GEMM rate of the same run is shown beside it.
"""

import argparse
import math


def read(path):
    figures = {}
    for line in open(path):
        label, _, rest = line.strip().partition(" ")
        if not label:
            continue
        figures[label] = {} if rest == "failed" else dict(
            kv.split("=", 1) for kv in rest.split() if "=" in kv)
    return figures


def num(figures, label, key):
    try:
        return float(figures.get(label, {})[key])
    except (KeyError, ValueError):
        return math.nan


def fmt(x, digits=2, unit=""):
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}{unit}"


def ratio(a, b):
    return math.nan if math.isnan(a) or math.isnan(b) or b == 0 else a / b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--device", default="GPU")
    ap.add_argument("--flops-per-token", type=float, required=True)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    args = ap.parse_args()
    f = read(args.raw)

    copy = num(f, "torch-ceilings", "copy_gbs")
    gemm = num(f, "torch-ceilings", "gemm_bf16_tflops")
    print(f"\n### {args.device}: ceilings\n")
    print("| ceiling | figure |\n|---|---|")
    print(f"| device copy (read + write) | {fmt(copy, 0)} GB/s |")
    print(f"| bf16 GEMM 8192^3 (cuBLAS via torch) | {fmt(gemm, 0)} TFLOP/s |")

    print("\n### Grouped expert FFN, bf16, Qwen3-30B-A3B layer (128 experts, hidden 2048, "
          "FFN 768, 16384 tokens x top-8)\n")
    print("| routing, path | ours ms | ours TFLOP/s | torch._grouped_mm ms | ours / grouped_mm "
          "(aim >= 1.1x) | dense cuBLAS ms | ours vs dense (aim >= 80%) |")
    print("|---|---|---|---|---|---|---|")
    for routing in ("uniform", "skewed"):
        ours = num(f, f"ours-layer-{routing}", "expert_ms")
        gmm = num(f, f"torch-layer-{routing}", "grouped_mm_ms")
        dense = num(f, f"torch-layer-{routing}", "dense_ms")
        print(f"| {routing}, cuBLAS grouped batched | {fmt(ours, 3)} | "
              f"{fmt(num(f, f'ours-layer-{routing}', 'expert_tflops'), 0)}"
              f" | {fmt(gmm, 3)} | {fmt(ratio(gmm, ours), unit='x')} | {fmt(dense, 3)} | "
              f"{fmt(100 * ratio(dense, ours), 0, '%')} |")

    for path, what in (("cublas", "one cuBLAS GEMM per expert"),
                       ("tiled", "tiled fp32-FMA kernels")):
        ours = num(f, f"ours-layer-uniform-{path}", "expert_ms")
        gmm = num(f, "torch-layer-uniform", "grouped_mm_ms")
        dense = num(f, "torch-layer-uniform", "dense_ms")
        print(f"| uniform, {what} | {fmt(ours, 3)} | "
              f"{fmt(num(f, f'ours-layer-uniform-{path}', 'expert_tflops'), 0)} | "
              f"{fmt(gmm, 3)} | {fmt(ratio(gmm, ours), unit='x')} | {fmt(dense, 3)} | "
              f"{fmt(100 * ratio(dense, ours), 0, '%')} |")

    print("\n### Permutation and the routed block\n")
    print("| routing | gather GB/s (aim >= 85% of copy) | torch index_select GB/s | "
          "block fwd+bwd ms | torch eager ms | speed-up (aim >= 2x) | "
          "torch.compile ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for routing in ("uniform", "skewed"):
        o, t = f"ours-layer-{routing}", f"torch-layer-{routing}"
        gather = num(f, o, "gather_gbs")
        block = num(f, o, "forward_ms") + num(f, o, "backward_ms")
        eager = num(f, t, "eager_fwd_bwd_ms")
        comp = num(f, t, "compiled_fwd_bwd_ms")
        print(f"| {routing} | {fmt(gather, 0)} ({fmt(100 * ratio(gather, copy), 0, '%')}) | "
              f"{fmt(num(f, t, 'permute_gbs'), 0)} | {fmt(block, 3)} | {fmt(eager, 3)} | "
              f"{fmt(ratio(eager, block), unit='x')} | {fmt(comp, 3)} | {fmt(ratio(comp, block), unit='x')} |")

    print("\n### Training step, qwen3_moe_gpu_bench (8 layers, hidden 1024, 64 experts "
          "top-8, batch 8 x 1024), against HF transformers\n")
    print("| dtype | ours tok/s | transformers tok/s | speed-up (aim >= 3x) | ours MFU "
          "(aim >= 45%) | transformers MFU |")
    print("|---|---|---|---|---|---|")
    for dtype in ("f32", "bf16"):
        ours = num(f, f"ours-train-{dtype}", "tokens_per_s")
        hf = num(f, f"hf-train-{dtype}", "tokens_per_s")
        mfu = lambda r: 100 * r * args.flops_per_token / (args.peak_tflops * 1e12)
        print(f"| {dtype} | {fmt(ours, 0)} | {fmt(hf, 0)} | {fmt(ratio(ours, hf), unit='x')} | "
              f"{fmt(mfu(ours), 1, '%')} | {fmt(mfu(hf), 1, '%')} |")
    print(f"\nMFU: model FLOPs ({args.flops_per_token:.3g} per token, "
          f"bench/gpu/train_step_hf.py) over {args.peak_tflops:g} TFLOP/s dense bf16; "
          f"the large GEMM above reached {fmt(gemm, 0)}.")


if __name__ == "__main__":
    main()
