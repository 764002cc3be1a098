#!/usr/bin/python3
"""The training step of a zoo config (models/configs/) in PyTorch (the peer of
the compiled executable's `train` command in bench/cpu/train_step.sh).

The model is test/e2e/qwen3_moe_ref.py's reference_forward, run on torch
Parameters in float32 with autograd: embedding, per layer RMSNorm, GQA
attention with q/k RMSNorm and RoPE, softmax router with renormalised top-k,
the Hugging Face-style loop over experts (one weight per expert, as in an HF
checkpoint); loss = cross-entropy + each layer's aux and z losses with the
config's coefficients. One step, as `EXE train` does it: a batch of
batch x seq characters from the same 90% training split and the same
(seed, step) window sampler, forward, backward, global gradient-norm clipping
(torch.nn.utils.clip_grad_norm_), then torch.optim.AdamW with the same
warm-up + cosine schedule, betas, eps, and weight decay on matrices only.
Weights are drawn like `--init-random` (normal(0, std) matrices, norm weights
1) from torch's generator, so the losses differ from the executable's but
start near ln(vocab); with --weights (the executable's `init` output) both
start from the same weights and see the same batches.

With --processes N (N > 1) it runs as N processes of PyTorch's
DistributedDataParallel over gloo (the peer of an executable compiled for
dp=N on N MPI ranks): each process takes its 1/N of the global batch's
sequences and --threads threads, and DDP averages the gradients in backward.
Rank 0 reports.

Prints the parameter count, the first step's loss and the median step time
over the steps after --warmup-steps as "key=value" pairs.
"""
import argparse
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))

MASK64 = (1 << 64) - 1


def splitmix64(state):
    """lib/Runtime/driver/Corpus.cpp's splitmix64: returns (new state, value)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def train_window_starts(seed, step, batch, train_size, seq):
    """Corpus::trainWindowStarts: the batch of a step depends on (seed, step) only."""
    state, z = splitmix64(seed)
    state = z ^ step
    n = train_size - seq
    threshold = ((1 << 64) - n) % n
    starts = []
    for _ in range(batch):
        while True:
            state, x = splitmix64(state)
            if x >= threshold:
                starts.append(x % n)
                break
    return starts


def lr_at(step, steps, warmup, lr, min_lr):
    """LrSchedule::at (lib/Runtime/driver/Optimizer.cpp)."""
    if step <= warmup:
        return lr * step / warmup
    if steps <= warmup:
        return lr
    progress = min((step - warmup) / (steps - warmup), 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shakespeare_moe")
    p.add_argument("--data", required=True, help="the text corpus (character-level)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup-steps", type=int, default=5,
                   help="steps left out of the median (default 5)")
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--processes", type=int, default=1,
                   help="DDP processes (gloo), each on 1/N of the batch")
    p.add_argument("--port", type=int, default=29571, help="DDP rendezvous port")
    p.add_argument("--seed", type=int, default=0, help="data order, as `train --seed`")
    p.add_argument("--init-seed", type=int, default=1)
    p.add_argument("--init-std", type=float, default=0.02)
    p.add_argument("--weights", help="start from these safetensors weights (HF names) "
                   "instead of random ones, e.g. `EXE init --init-random S --output W`")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--losses", metavar="FILE", help="write every step's loss and gradient "
                   "norm to FILE, one \"step loss grad_norm\" line a step")
    a = p.parse_args()
    if a.steps <= a.warmup_steps:
        raise SystemExit("error: --steps must exceed --warmup-steps")
    if a.processes < 1:
        raise SystemExit("error: --processes must be positive")
    if a.processes == 1:
        run(0, a)
        return
    # Environment first: OpenBLAS reads its thread count when torch loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch.multiprocessing as mp
    mp.spawn(run, args=(a,), nprocs=a.processes)


def run(rank, a):
    """One process: the whole run when a.processes == 1, else DDP rank `rank`."""

    # Debian's torch does its GEMMs in OpenBLAS, which reads its thread count
    # from the environment when it is loaded: default it to --threads before
    # importing torch (bench/cpu/train_step.sh exports both).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import numpy as np
    import qwen3_moe_ref as ref
    torch = ref.need_torch()
    torch.set_num_threads(a.threads)

    cfg = ref.get_config(a.model)
    if cfg.batch % a.processes != 0:
        raise SystemExit(f"error: batch {cfg.batch} does not split over {a.processes} processes")
    local_batch = cfg.batch // a.processes
    if not cfg.vocab_chars:
        raise SystemExit(f"error: {a.model} is not a character-level model")
    index = {c: i for i, c in enumerate(cfg.vocab_chars)}
    with open(a.data, encoding="utf-8") as f:
        text = f.read()
    try:
        ids = np.array([index[c] for c in text], dtype=np.int64)
    except KeyError as e:
        raise SystemExit(f"error: {a.data}: character {e} is not in the model's vocabulary")
    train_size = len(ids) * 9 // 10

    # Weights as `--init-random` draws them: normal(0, std) for matrices,
    # 1 for norm weights (vectors are all norm weights in this family).
    g = torch.Generator().manual_seed(a.init_seed)
    loaded = ref.read_weights(cfg, a.weights) if a.weights else None
    params = {}
    for name, shape in ref.param_shapes(cfg):
        if loaded is not None:
            t = torch.from_numpy(loaded[name])
        elif len(shape) >= 2:
            t = torch.randn(*shape, generator=g) * a.init_std
        else:
            t = torch.ones(*shape) if ref.is_norm_weight(name) else torch.zeros(*shape)
        params[name] = torch.nn.Parameter(t)
    n_params = sum(t.numel() for t in params.values())

    # DDP needs a Module: the same Parameters, names with "." spelled "/".
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterDict(
                {name.replace(".", "/"): t for name, t in params.items()})

        def forward(self, tokens, labels):
            return ref.reference_forward(cfg, None, tokens, labels, leaves=params)["loss"]

    model = Model()
    if a.processes > 1:
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}",
                                rank=rank, world_size=a.processes)
        # An expert that gets no token of a batch has no gradient in the HF
        # loop over experts: DDP must look for unused parameters.
        model = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=True)

    matrices = [t for t in params.values() if t.dim() >= 2]
    vectors = [t for t in params.values() if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": a.weight_decay},
                             {"params": vectors, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    warmup = min(100, a.steps // 10)

    times, losses = [], []
    for step in range(1, a.steps + 1):
        start = time.perf_counter()
        starts = train_window_starts(a.seed, step, cfg.batch, train_size, cfg.seq)
        starts = starts[rank * local_batch:(rank + 1) * local_batch]
        windows = np.stack([ids[s:s + cfg.seq + 1] for s in starts])
        tokens, labels = windows[:, :-1], windows[:, 1:]
        opt.zero_grad(set_to_none=True)
        loss = model(tokens, labels)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), a.clip)
        lr = lr_at(step, a.steps, warmup, a.lr, a.lr / 10)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        times.append((time.perf_counter() - start) * 1e3)
        if a.processes > 1:  # the global batch's loss, outside the timing
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= a.processes
        losses.append((float(loss.detach()), float(norm)))

    if rank != 0:
        return
    if a.losses:
        with open(a.losses, "w") as f:
            for step, (loss, norm) in enumerate(losses, 1):
                f.write(f"{step} {loss:.6f} {norm:.6f}\n")
    median = statistics.median(times[a.warmup_steps:])
    tokens_per_step = cfg.batch * cfg.seq
    print(f"impl=torch torch={torch.__version__} model={a.model} params={n_params} "
          f"processes={a.processes} "
          f"threads={a.threads} "
          f"openblas_threads={os.environ['OPENBLAS_NUM_THREADS']} "
          f"omp_wait_policy={os.environ.get('OMP_WAIT_POLICY', 'default')} "
          f"first_loss={losses[0][0]:.4f} last_loss={losses[-1][0]:.4f} "
          f"median_ms={median:.2f} tokens_per_s={tokens_per_step / (median / 1e3):.0f}")


if __name__ == "__main__":
    main()
