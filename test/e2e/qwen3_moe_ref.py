#!/usr/bin/python3
"""An independent PyTorch reference of the model zoo's MoE decoders
(Qwen3MoeForCausalLM, Mixtral, Qwen2-MoE, and DeepSeek-V3's routing and
layers on GQA attention), and the end-to-end check of a `moec`-compiled model
executable against it.

The reference follows Hugging Face transformers' modeling_qwen3_moe (eager
attention) written from scratch, op by op, with the semantics of the ops in
include/moe/Dialect/MoE/IR/ (DenseOps.td, ExpertOps.td, LossOps.td):

  embedding -> per layer:
      h += o_proj(attention(rope(q_norm(q)), rope(k_norm(k)), v))   (GQA, causal;
                                                  q/k/v biases for Qwen2-MoE)
      h += experts(router(rms_norm(h))) [+ shared experts]           (MoE layers)
        or mlp(rms_norm(h))                                          (dense layers)
  -> model.norm -> lm_head -> logits; loss = cross-entropy + router losses

The DeepSeek-V3 router follows DeepSeek-V3's published inference code: sigmoid
scores, selection by score plus e_score_correction_bias (the weights use the
unbiased scores), experts outside the topk_group best of n_group groups
(group score: the sum of its two best) ineligible, renormalised top-k times
routed_scaling_factor; its shared expert is added unscaled, Qwen2-MoE's is
scaled by sigmoid(x . shared_expert_gate).

It computes in float32 like HF (RMSNorm in fp32, inv_freq in fp32, attention
and router softmax in fp32) or, with --double, everything in float64. The
expert loop is deliberately naive (loop over experts, index_select the tokens
routed there, index_add the weighted outputs back), as HF does.

The loss output is what the model's IR computes: mean cross-entropy over
labels != -100, plus for each MoE layer `moe.aux_loss` as MoEOps.td defines it
(coefficient * E * sum_e f_e * P_e with f_e = slots routed to e / (T * K) and
P_e = mean softmax score, per layer) and `moe.z_loss` where the config has one.
This is NOT HF's load_balancing_loss_func (which concatenates all layers'
router logits into one loss, counts f_e per slot so that balanced routing
gives top_k rather than 1, and is only added when output_router_logits=True);
`hf_load_balancing_loss` below computes HF's value for comparison.

Subcommands (shapes come from the zoo's config.json files, models/zoo.py, never
repeated here):

  make-weights --model M --seed S [--std 0.1] --out W.safetensors
               [--dtype F32|BF16] [--break KIND[:TENSOR]]
      Seeded random weights under Hugging Face names. --break writes a broken
      file for error tests: missing:NAME (tensor dropped), shape:NAME (first
      dimension one larger), dtype:NAME (stored as I32), truncate[:NAME] (NAME,
      default the last tensor, stored last and its data cut in half).
  tokens --model M --seed S
      The seeded token ids that `check` uses, comma-separated.
  forward --model M --weights W --tokens IDS [--labels IDS] [--double] [--output OUT]
      Runs the reference alone; prints the loss (and writes logits/loss).
  grad-check --model-exe EXE --model M --seed S [--rtol 1e-4] [--labels ...]
      Runs `EXE grad` (the compiled training step's loss and gradients) and
      compares every weight's gradient with PyTorch autograd through this
      reference in float64; PASS/FAIL.
  check --model-exe EXE --model M --seed S [--rtol 1e-5] [--dtype F32|BF16]
        [--labels default|random] [--reference float32|float64] [--workdir DIR]
      Makes weights and tokens, runs `EXE forward --weights W --tokens IDS
      [--labels IDS] --output OUT`, runs the reference on the same inputs and
      compares logits and loss; PASS/FAIL, exit 1 on FAIL.
  selftest
      Checks the reference's pieces against independent formulations.
"""

import argparse
import dataclasses
import math
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRCROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRCROOT, "models"))
sys.path.insert(0, HERE)

import zoo  # noqa: E402  (the zoo's configs, read with the stdlib only)
import safetensors_io as st  # noqa: E402

IGNORE_INDEX = -100
NORM_NOISE = 0.1  # norm weights are 1 + normal(0, NORM_NOISE)
MIN_ROUTING_GAP = 1e-5  # smallest k-th vs (k+1)-th score gap we accept

# torch is imported lazily: make-weights and tokens need only numpy.
torch = None
F = None


def need_torch():
    global torch, F
    if torch is None:
        import torch as _torch
        import torch.nn.functional as _F
        torch, F = _torch, _F
        torch.manual_seed(0)
    return torch


# ----------------------------------------------------------------------------
# Configs and parameters
# ----------------------------------------------------------------------------

def get_config(name: str, capacity_factor: float = 0.0) -> "zoo.Config":
    try:
        cfg = zoo.load(name)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"error: unknown model '{name}' ({e})")
    if capacity_factor:
        cfg = dataclasses.replace(cfg, capacity_factor=capacity_factor)
    if cfg.naming not in ("qwen3", "qwen2", "mixtral", "deepseek"):
        raise SystemExit(f"error: the reference does not model {name} (naming {cfg.naming})")
    return cfg


def param_shapes(cfg) -> List[Tuple[str, Tuple[int, ...]]]:
    """Every checkpoint tensor (HF name, shape), in a fixed order. Expert
    weights are per expert, as in an HF checkpoint."""
    H, D, V = cfg.hidden, cfg.head_dim, cfg.vocab
    out = [("model.embed_tokens.weight", (V, H))]
    for i in range(cfg.layers):
        n = zoo.names(cfg, i)
        out += [(n["ln1"], (H,)),
                (n["q"], (cfg.heads * D, H)),
                (n["k"], (cfg.kv_heads * D, H)),
                (n["v"], (cfg.kv_heads * D, H)),
                (n["o"], (H, cfg.heads * D))]
        if cfg.qkv_bias:
            out += [(n["q_bias"], (cfg.heads * D,)), (n["k_bias"], (cfg.kv_heads * D,)),
                    (n["v_bias"], (cfg.kv_heads * D,))]
        if cfg.qk_norm:
            out += [(n["q_norm"], (D,)), (n["k_norm"], (D,))]
        out += [(n["ln2"], (H,))]
        if i in cfg.dense_layers:
            F = cfg.dense_inter
            out += [(n["d_gate"], (F, H)), (n["d_up"], (F, H)), (n["d_down"], (H, F))]
            continue
        out += [(n["router"], (cfg.experts, H))]
        if cfg.expert_bias:
            out += [(n["bias"], (cfg.experts,))]
        for e in range(cfg.experts):
            out += [(n["e_gate"].format(e=e), (cfg.moe_inter, H)),
                    (n["e_up"].format(e=e), (cfg.moe_inter, H)),
                    (n["e_down"].format(e=e), (H, cfg.moe_inter))]
        if cfg.shared_inter:
            F = cfg.shared_inter
            out += [(n["s_gate"], (F, H)), (n["s_up"], (F, H)), (n["s_down"], (H, F))]
            if cfg.shared_gate:
                out += [(n["s_sigmoid"], (1, H))]
    out += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    return out


def is_norm_weight(name: str) -> bool:
    return name.endswith("norm.weight")  # *_layernorm, q_norm, k_norm, model.norm


def make_weights(cfg, seed: int, std: float) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in param_shapes(cfg):
        noise = rng.standard_normal(shape, dtype=np.float32)
        if is_norm_weight(name):
            weights[name] = (1.0 + NORM_NOISE * noise).astype(np.float32)
        else:
            weights[name] = (std * noise).astype(np.float32)
    return weights


def make_tokens(cfg, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    return rng.integers(0, cfg.vocab, size=(cfg.batch, cfg.seq)).astype(np.int64)


def default_labels(tokens: np.ndarray) -> np.ndarray:
    """tokens shifted left by one within each row, -100 at each row's end."""
    labels = np.full_like(tokens, IGNORE_INDEX)
    labels[:, :-1] = tokens[:, 1:]
    return labels


def random_labels(cfg, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 2])
    labels = rng.integers(0, cfg.vocab, size=(cfg.batch, cfg.seq)).astype(np.int64)
    labels[rng.random(labels.shape) < 0.25] = IGNORE_INDEX
    return labels


def ids_text(ids: np.ndarray) -> str:
    return ",".join(str(int(t)) for t in ids.reshape(-1))


def parse_ids(text: str, cfg, what: str) -> np.ndarray:
    try:
        ids = [int(t) for t in text.split(",")]
    except ValueError:
        raise SystemExit(f"error: --{what} must be comma-separated integers") from None
    if len(ids) != cfg.batch * cfg.seq:
        raise SystemExit(f"error: --{what} has {len(ids)} ids, expected {cfg.batch * cfg.seq}")
    return np.array(ids, dtype=np.int64).reshape(cfg.batch, cfg.seq)


# ----------------------------------------------------------------------------
# The reference model (torch)
# ----------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """HF Qwen3MoeRMSNorm: in fp32 (or the compute dtype when wider)."""
    dtype = x.dtype
    xf = x.to(torch.promote_types(dtype, torch.float32))
    variance = xf.pow(2).mean(-1, keepdim=True)
    xf = xf * torch.rsqrt(variance + eps)
    return weight * xf.to(dtype)


def rope_cos_sin(seq: int, dim: int, theta: float, dtype):
    """HF's default rotary embedding: inv_freq = 1 / theta^(arange(0, d, 2) / d)
    (computed in fp32 by HF, in `dtype` here when wider), angles = pos * inv_freq
    for positions 0..seq-1, duplicated over both halves."""
    cdtype = torch.promote_types(dtype, torch.float32)
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(cdtype) / dim))
    pos = torch.arange(seq, dtype=torch.int64).to(cdtype)
    freqs = pos[:, None] * inv_freq[None, :]  # [S, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [S, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, cos, sin):
    """x: [B, S, heads, D]; cos/sin: [S, D]."""
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return x * cos + rotate_half(x) * sin


def attention(q, k, v, causal: bool = True, scale: Optional[float] = None):
    """q [B, S, H, D]; k, v [B, S, KV, D]. Query head h uses KV head h // (H // KV).
    Eager attention as HF: scores scaled, masked, softmax in fp32, @ v."""
    B, S, H, D = q.shape
    KV = k.shape[2]
    assert H % KV == 0
    kv_of_head = torch.arange(H) // (H // KV)
    k = k.index_select(2, kv_of_head)
    v = v.index_select(2, kv_of_head)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, S, D]
    scale = D ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, H, S, S]
    if causal:
        future = torch.ones(S, S, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32))
    out = torch.matmul(probs.to(q.dtype), v)
    return out.transpose(1, 2).contiguous()  # [B, S, H, D]


def linear(x, w):
    return torch.matmul(x, w.t())


def route(router_logits, top_k: int, norm_topk_prob: bool, route_scale: float,
          sigmoid: bool = False, bias=None, n_group: int = 1, topk_group: int = 1):
    """Scores (softmax over all experts, or DeepSeek-V3's sigmoid; fp32 or
    wider), selection by score plus the expert bias when given (selection
    only, as DeepSeek-V3's e_score_correction_bias), first among the
    topk_group groups of highest top-2 score sum when n_group > 1 (the other
    groups' experts ineligible: -inf, as DeepSeek-V3's inference code and
    transformers mask them),
    top-k with ties to the lower index; the chosen experts' unbiased scores,
    optionally renormalised, times the route scale.
    Returns (weights [T, K], indices [T, K], scores [T, E], choice [T, E]
    (the masked selection scores), group gap (the smallest margin of the
    last kept group over the next, inf without groups))."""
    wide = torch.promote_types(router_logits.dtype, torch.float32)
    if sigmoid:
        scores = torch.sigmoid(router_logits.to(wide))
    else:
        scores = torch.softmax(router_logits, dim=-1, dtype=wide)
    choice = scores.detach()
    if bias is not None:
        choice = choice + bias.detach().to(wide)
    group_gap = float("inf")
    if n_group > 1:
        T, E = choice.shape
        per = E // n_group
        grouped = choice.view(T, n_group, per)
        group_scores = torch.sort(grouped, dim=-1, descending=True).values[..., :min(2, per)].sum(-1)
        order = torch.sort(group_scores, dim=-1, descending=True, stable=True)
        keep = order.indices[:, :topk_group]
        if topk_group < n_group:
            group_gap = float((order.values[:, topk_group - 1] - order.values[:, topk_group]).min())
        eligible = torch.zeros(T, n_group, dtype=torch.bool).scatter(1, keep, True)
        choice = choice.masked_fill(~eligible.repeat_interleave(per, dim=1), float("-inf"))
    order = torch.sort(choice, dim=-1, descending=True, stable=True).indices
    indices = order[:, :top_k]
    weights = scores.gather(1, indices)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    weights = weights * route_scale
    return weights.to(router_logits.dtype), indices, scores, choice, group_gap


def drop_over_capacity(indices, num_experts: int, capacity_factor: float):
    """Drop by position: each expert keeps its first ceil(cf * T * K / E)
    token-slots in slot order (token-major, then k); the others become -1.
    Returns (kept indices [T, K], number dropped)."""
    T, K = indices.shape
    capacity = max(1, math.ceil(capacity_factor * T * K / num_experts))
    taken = [0] * num_experts
    kept = []
    for e in indices.reshape(-1).tolist():
        kept.append(e if taken[e] < capacity else -1)
        taken[e] += 1
    dropped = sum(1 for e in kept if e < 0)
    return torch.tensor(kept, dtype=indices.dtype).view(T, K), dropped


def swiglu(x, w_gate, w_up, w_down):
    """A SwiGLU FFN: (silu(x W_gate^T) * (x W_up^T)) W_down^T."""
    return linear(F.silu(linear(x, w_gate)) * linear(x, w_up), w_down)


def experts_forward(x, weights, indices, experts, store=lambda t: t):
    """Naive routed experts: for each expert, gather its tokens, run SwiGLU,
    scale by the routing weight and add back. x [T, H]; experts: [(gate, up, down)].
    `store` rounds each expert's output as the grouped SwiGLU stores it."""
    out = torch.zeros_like(x)
    for e, (wg, wu, wd) in enumerate(experts):
        token_idx, slot = torch.where(indices == e)
        if token_idx.numel() == 0:
            continue
        xs = x.index_select(0, token_idx)
        y = store(linear(F.silu(linear(xs, wg)) * linear(xs, wu), wd))
        out.index_add_(0, token_idx, y * weights[token_idx, slot, None])
    return out


def aux_loss(scores, indices, num_experts: int, top_k: int, coefficient: float,
             sigmoid: bool = False):
    """moe.aux_loss (LossOps.td): coefficient * E * sum_e f_e * P_e; sigmoid
    scores normalised to sum 1 per token first, as DeepSeek-V3's
    sequence-wise balance loss does."""
    if sigmoid:
        scores = scores / scores.sum(dim=-1, keepdim=True)
    T = scores.shape[0]
    counts = torch.bincount(indices.reshape(-1), minlength=num_experts).to(scores.dtype)
    f = counts / (T * top_k)
    P = scores.mean(dim=0)
    return coefficient * num_experts * (f * P).sum()


def z_loss(router_logits, coefficient: float):
    lse = torch.logsumexp(router_logits.to(torch.promote_types(router_logits.dtype,
                                                                torch.float32)), dim=-1)
    return coefficient * (lse ** 2).mean()


def hf_load_balancing_loss(router_logits_per_layer, num_experts: int, top_k: int):
    """HF transformers' load_balancing_loss_func without an attention mask
    (for comparison only: the model's IR uses moe.aux_loss per layer)."""
    logits = torch.cat(list(router_logits_per_layer), dim=0)
    routing_weights = torch.softmax(logits, dim=-1)
    _, selected = torch.topk(routing_weights, top_k, dim=-1)
    expert_mask = F.one_hot(selected, num_experts)
    tokens_per_expert = expert_mask.to(routing_weights.dtype).mean(dim=0)
    router_prob_per_expert = routing_weights.mean(dim=0)
    return (tokens_per_expert * router_prob_per_expert.unsqueeze(0)).sum() * num_experts


def cross_entropy(logits, labels):
    """Mean over labels != -100 of logsumexp - logit[label]; 0 when all are ignored."""
    V = logits.shape[-1]
    logits = logits.reshape(-1, V).to(torch.promote_types(logits.dtype, torch.float32))
    labels = labels.reshape(-1)
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.new_zeros(())
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="mean")


def reference_forward(cfg, weights: Dict[str, np.ndarray], tokens: np.ndarray,
                      labels: np.ndarray, double: bool = False,
                      leaves: Optional[dict] = None, bf16_storage: bool = False) -> dict:
    """The model's forward. Returns logits [B, S, V], loss, ce, the per-layer
    aux/z losses, and the routing (scores [T, E], indices [T, K]) per layer.
    `leaves`, when given, are the weights as torch tensors (e.g. with
    requires_grad, for autograd) and `weights` is ignored.
    `bf16_storage` mimics a model compiled with moec --storage bf16: weights
    and every op's result are rounded to bf16 where the runtime stores them
    (each runtime call computes in fp32 and rounds its outputs once); the
    losses stay fp32."""
    need_torch()
    dtype = torch.float64 if double else torch.float32
    W = leaves if leaves is not None else {
        k: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(dtype) for k, v in weights.items()}
    if bf16_storage:
        def store(t):
            return t.to(torch.bfloat16).to(dtype)
        W = {k: store(v) for k, v in W.items()}
    else:
        def store(t):
            return t
    tok = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    lab = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    B, S = tok.shape
    Hd, D, E, K = cfg.hidden, cfg.head_dim, cfg.experts, cfg.top_k
    if bool((tok < 0).any()) or bool((tok >= cfg.vocab).any()):
        raise SystemExit("error: token ids must be in [0, vocab)")
    cos, sin = rope_cos_sin(S, D, cfg.rope_theta, dtype)

    h = W["model.embed_tokens.weight"][tok]  # [B, S, H]
    routing, aux, zl, dropped = [], [], [], []
    for i in range(cfg.layers):
        n = zoo.names(cfg, i)
        x = store(rms_norm(h, W[n["ln1"]], cfg.eps))
        qkv = []
        for part, heads in (("q", cfg.heads), ("k", cfg.kv_heads), ("v", cfg.kv_heads)):
            y = linear(x, W[n[part]])
            if cfg.qkv_bias:
                y = y + W[n[part + "_bias"]]
            qkv.append(store(y).view(B, S, heads, D))
        q, k, v = qkv
        if cfg.qk_norm:
            q = store(rms_norm(q, W[n["q_norm"]], cfg.eps))
            k = store(rms_norm(k, W[n["k_norm"]], cfg.eps))
        q, k = store(apply_rope(q, cos, sin)), store(apply_rope(k, cos, sin))
        a = store(attention(q, k, v, causal=True)).reshape(B, S, cfg.heads * D)
        h = store(h + store(linear(a, W[n["o"]])))

        x = store(rms_norm(h, W[n["ln2"]], cfg.eps)).reshape(B * S, Hd)
        if i in cfg.dense_layers:
            mlp = swiglu(x, W[n["d_gate"]], W[n["d_up"]], W[n["d_down"]])
            h = store(h + store(mlp).view(B, S, Hd))
            continue
        router_logits = store(linear(x, W[n["router"]]))  # [T, E]
        sigmoid = cfg.scoring == "sigmoid"
        rw, ri, scores, choice, group_gap = route(
            router_logits, K, cfg.norm_topk_prob, cfg.route_scale, sigmoid,
            W[n["bias"]] if cfg.expert_bias else None, cfg.n_group, cfg.topk_group)
        rw = store(rw)
        experts = [(W[n["e_gate"].format(e=e)], W[n["e_up"].format(e=e)],
                    W[n["e_down"].format(e=e)]) for e in range(E)]
        kept = ri
        if cfg.capacity_factor:
            kept, n_dropped = drop_over_capacity(ri, E, cfg.capacity_factor)
            dropped.append(n_dropped)
        ffn = store(experts_forward(x, rw, kept, experts, store))
        if cfg.shared_inter:
            shared = swiglu(x, W[n["s_gate"]], W[n["s_up"]], W[n["s_down"]])
            if cfg.shared_gate:  # Qwen2-MoE: scaled by sigmoid(x . shared_expert_gate)
                shared = shared * torch.sigmoid(linear(x, W[n["s_sigmoid"]]))
            ffn = store(ffn + store(shared))
        h = store(h + ffn.view(B, S, Hd))
        routing.append((choice, ri, router_logits, group_gap))
        if cfg.aux_coef:
            aux.append(aux_loss(scores, ri, E, K, cfg.aux_coef, sigmoid))
        if cfg.z_coef:
            zl.append(z_loss(router_logits, cfg.z_coef))

    hn = store(rms_norm(h, W["model.norm.weight"], cfg.eps))
    logits = store(linear(hn, W["lm_head.weight"]))
    ce = cross_entropy(logits, lab)
    loss = ce
    for term in aux + zl:
        loss = loss + term
    return {"logits": logits, "loss": loss, "ce": ce, "aux": aux, "z": zl, "routing": routing,
            "dropped": dropped}


# ----------------------------------------------------------------------------
# Weights files
# ----------------------------------------------------------------------------

def write_weights(cfg, path: str, seed: int, std: float, dtype: str = "F32",
                  brk: Optional[str] = None) -> None:
    arrays = make_weights(cfg, seed, std)
    tensors = {k: st.tensor_from_numpy(v, dtype) for k, v in arrays.items()}
    order = [name for name, _ in param_shapes(cfg)]
    truncate = False
    if brk:
        kind, _, target = brk.partition(":")
        if kind == "truncate":
            target = target or order[-1]
        elif kind not in ("missing", "shape", "dtype") or not target:
            raise SystemExit(f"error: --break {brk!r}: expected missing:NAME, shape:NAME, "
                             "dtype:NAME or truncate[:NAME]")
        if target not in tensors:
            raise SystemExit(f"error: --break {brk!r}: no tensor '{target}' in {cfg.name}")
        if kind == "missing":
            del tensors[target]
            order.remove(target)
        elif kind == "shape":
            a = arrays[target]
            bigger = np.concatenate([a, a[:1]], axis=0)  # first dimension + 1
            tensors[target] = st.tensor_from_numpy(bigger, dtype)
        elif kind == "dtype":
            tensors[target] = st.Tensor("I32", np.round(arrays[target] * 100).astype(np.int32))
        else:
            order.remove(target)
            order.append(target)  # its data last, so that only it is cut
            truncate = target
    blob = st.serialize(tensors, {"format": "pt", "generator": "test/e2e/qwen3_moe_ref.py"}, order)
    if truncate:
        blob = blob[:len(blob) - tensors[truncate].array.nbytes // 2]
    with open(path, "wb") as f:
        f.write(blob)


def read_weights(cfg, path: str) -> Dict[str, np.ndarray]:
    arrays = st.load_numpy(path)
    for name, shape in param_shapes(cfg):
        if name not in arrays:
            raise SystemExit(f"error: {path}: no tensor '{name}'")
        if tuple(arrays[name].shape) != shape:
            raise SystemExit(f"error: {path}: tensor '{name}' has shape "
                             f"{list(arrays[name].shape)}, expected {list(shape)}")
        arrays[name] = arrays[name].astype(np.float32)
    return arrays


# ----------------------------------------------------------------------------
# check
# ----------------------------------------------------------------------------

def rel_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |a - b| / max |b| over the whole tensor (b = reference). Element-wise
    relative error is ill-defined where the reference is near zero, so the
    error is normalised by the tensor's largest magnitude instead."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if b.size else 0.0
    if not np.all(np.isfinite(a)):
        return float("inf")
    return diff / scale if scale > 0 else diff


def routing_stats(cfg, ref: dict) -> Tuple[List[int], float]:
    """(number of experts that receive tokens per MoE layer, smallest gap
    between the k-th and (k+1)-th highest selection score, or between the
    last kept group and the next, over all tokens and layers)."""
    used, gap = [], float("inf")
    K = cfg.top_k
    for choice, indices, _, group_gap in ref["routing"]:
        used.append(int(torch.unique(indices).numel()))
        gap = min(gap, group_gap)
        if K < cfg.experts:
            top = torch.sort(choice, dim=-1, descending=True).values
            gap = min(gap, float((top[:, K - 1] - top[:, K]).min()))
    return used, gap


def choose_tokens(cfg, weights, seed: int, label_kind: str):
    """Seeded tokens and labels. If a token sits at a near-tie of the router's
    k-th and (k+1)-th score, a different but equally correct fp32
    implementation could route it differently, so move to another token seed,
    deterministically. Returns (tokens, labels, token seed, ref32, ref64) or
    None when every seed has a near-tie."""
    token_seed = seed
    for attempt in range(20):
        tokens = make_tokens(cfg, token_seed)
        labels = default_labels(tokens) if label_kind == "default" else random_labels(cfg, token_seed)
        ref32 = reference_forward(cfg, weights, tokens, labels, double=False)
        ref64 = reference_forward(cfg, weights, tokens, labels, double=True)
        used, gap = routing_stats(cfg, ref32)
        same_routing = all(bool(torch.equal(a[1], b[1])) for a, b in
                           zip(ref32["routing"], ref64["routing"]))
        if gap >= MIN_ROUTING_GAP and same_routing:
            return tokens, labels, token_seed, ref32, ref64
        new_seed = seed + 1000 * (attempt + 1)
        print(f"note: token seed {token_seed} has a router score gap of {gap:.3g} "
              f"(< {MIN_ROUTING_GAP:g}) or fp32/fp64 routing differs; using token seed {new_seed}")
        token_seed = new_seed
    print("FAIL: no token seed without a near-tie in routing")
    return None


def run_executable(cmd: List[str], opath: str, timeout: float):
    """Runs the model executable, which writes safetensors `opath`; returns
    the tensors read back and the executable's stdout, or (None, None) after
    printing why it failed."""
    if os.path.exists(opath):
        os.remove(opath)
    print("running: " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: cannot run the model executable: {e}")
        return None, None
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout.decode(errors="replace"))
        sys.stdout.write(proc.stderr.decode(errors="replace"))
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        print(f"FAIL: the model executable failed ({how})")
        return None, None
    try:
        out, _ = st.load_with_metadata(opath)
    except (OSError, st.SafetensorsError) as e:
        print(f"FAIL: cannot read the executable's output: {e}")
        return None, None
    return out, proc.stdout.decode(errors="replace")


def run_check(args) -> int:
    need_torch()
    cfg = get_config(args.model, args.capacity_factor)
    workdir = args.workdir or tempfile.mkdtemp(prefix="moe-e2e-")
    os.makedirs(workdir, exist_ok=True)
    wpath = os.path.join(workdir, f"weights-{args.seed}.safetensors")
    opath = os.path.join(workdir, f"out-{args.seed}.safetensors")
    write_weights(cfg, wpath, args.seed, args.std, args.dtype)
    weights = read_weights(cfg, wpath)  # what the file holds (BF16 rounded)

    chosen = choose_tokens(cfg, weights, args.seed, args.labels)
    if chosen is None:
        return 1
    tokens, labels, token_seed, ref32, ref64 = chosen
    used, gap = routing_stats(cfg, ref32)

    print(f"model {cfg.name}, weight seed {args.seed} ({args.dtype}, std {args.std}), "
          f"token seed {token_seed}, {args.labels} labels")
    print(f"experts receiving tokens per layer: {used} of {cfg.experts}")
    print(f"smallest top-{cfg.top_k} vs top-{cfg.top_k + 1} router score gap: {gap:.3g}")
    ok = True
    need = (cfg.experts + 1) // 2
    if min(used) < need:
        print(f"degenerate routing: a layer routes to fewer than {need} experts "
              "(the weights do not exercise the experts)")
        ok = False

    ref = ref64 if args.reference == "float64" else ref32
    if args.reference == "bf16-storage":
        ref = reference_forward(cfg, weights, tokens, labels, bf16_storage=True)
        used16, _ = routing_stats(cfg, ref)
        print(f"bf16-storage reference: experts receiving tokens per layer {used16}, "
              f"logits vs fp32 {rel_error(ref['logits'].numpy(), ref32['logits'].numpy()):.3g}")
    ref_logits = ref["logits"].double().numpy()
    ref_loss = float(ref["loss"])
    print(f"reference ({args.reference}): loss {ref_loss:.8g} = cross-entropy "
          f"{float(ref['ce']):.8g} + aux {[round(float(a), 8) for a in ref['aux']]}"
          + (f" + z {[round(float(z), 8) for z in ref['z']]}" if ref["z"] else ""))
    print(f"reference fp32 vs fp64: logits {rel_error(ref32['logits'].numpy(), ref64['logits'].numpy()):.3g}, "
          f"loss {rel_error(ref32['loss'].numpy(), ref64['loss'].numpy()):.3g}")
    spread = float(ref_logits.std())
    if not 0.1 <= spread <= 10:
        print(f"logits have standard deviation {spread:.3g}, expected O(1) (choose another --std)")
        ok = False

    cmd = [args.model_exe, "forward", "--weights", wpath, "--tokens", ids_text(tokens)]
    if args.labels != "default":
        cmd += ["--labels", ids_text(labels)]
    cmd += ["--output", opath] + args.exe_arg
    out, stdout = run_executable(cmd, opath, args.timeout)
    if out is None:
        return 1
    B, S, V = cfg.batch, cfg.seq, cfg.vocab
    for name, shape in (("logits", (B, S, V)), ("loss", ())):
        if name not in out:
            print(f"FAIL: the output has no '{name}' (has {sorted(out)})")
            return 1
        if out[name].dtype != "F32" or out[name].shape != shape:
            print(f"FAIL: output '{name}' is {out[name].dtype} {list(out[name].shape)}, "
                  f"expected F32 {list(shape)}")
            return 1
    logits = out["logits"].to_numpy()
    loss = out["loss"].to_numpy()
    e_logits = rel_error(logits, ref_logits)
    e_loss = rel_error(loss, np.array(ref_loss))
    print(f"executable: loss {float(loss):.8g}")
    print(f"logits max relative error: {e_logits:.3g}")
    print(f"loss relative error: {e_loss:.3g}")
    if not (e_logits <= args.rtol and e_loss <= args.rtol):
        print(f"relative error above --rtol {args.rtol:g}")
        ok = False
    if cfg.capacity_factor:
        # The executable reports the slots it dropped per layer; the
        # reference's drop-by-position policy gives the counts to expect.
        line = [l for l in stdout.splitlines() if l.startswith("dropped token-slots")]
        reported = [int(n) for n in line[0].split(":")[1].split()] if line else None
        expected = ref32["dropped"]
        print(f"dropped token-slots per layer (capacity factor {cfg.capacity_factor:g}): "
              f"executable {reported}, reference {expected}")
        if reported != expected:
            print("FAIL: the dropped counts differ")
            ok = False
        elif sum(expected) == 0:
            print("FAIL: nothing was dropped (choose a smaller capacity factor)")
            ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def run_grad_check(args) -> int:
    """The executable's `grad` (loss and every weight's gradient from the
    compiled training step) against PyTorch autograd through the reference,
    in float64."""
    need_torch()
    cfg = get_config(args.model, args.capacity_factor)
    workdir = args.workdir or tempfile.mkdtemp(prefix="moe-e2e-")
    os.makedirs(workdir, exist_ok=True)
    wpath = os.path.join(workdir, f"weights-{args.seed}.safetensors")
    opath = os.path.join(workdir, f"grads-{args.seed}.safetensors")
    write_weights(cfg, wpath, args.seed, args.std)
    weights = read_weights(cfg, wpath)
    chosen = choose_tokens(cfg, weights, args.seed, args.labels)
    if chosen is None:
        return 1
    tokens, labels, token_seed, _, _ = chosen

    grads = {}
    for dtype in (torch.float32, torch.float64):
        leaves = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(dtype).requires_grad_()
                  for k, v in weights.items()}
        ref = reference_forward(cfg, None, tokens, labels, double=dtype == torch.float64,
                                leaves=leaves)
        ref["loss"].backward()
        grads[dtype] = ({k: t.grad.double().numpy() if t.grad is not None else np.zeros(t.shape)
                         for k, t in leaves.items()}, float(ref["loss"]))
    ref_grads, ref_loss = grads[torch.float64]
    ref32_worst = max(rel_error(grads[torch.float32][0][k], ref_grads[k]) for k in ref_grads)
    print(f"model {cfg.name}, weight seed {args.seed}, token seed {token_seed}, {args.labels} labels")
    print(f"reference (float64): loss {ref_loss:.8g}; fp32 reference gradients within {ref32_worst:.3g}")

    cmd = [args.model_exe, "grad", "--weights", wpath, "--tokens", ids_text(tokens)]
    if args.labels != "default":
        cmd += ["--labels", ids_text(labels)]
    cmd += ["--output", opath]
    out, _ = run_executable(cmd, opath, args.timeout)
    if out is None:
        return 1
    ok = True
    missing = [k for k in ref_grads if k not in out]
    if missing:
        print(f"FAIL: the output has no gradient of {len(missing)} weight(s), e.g. {missing[0]}")
        return 1
    worst_name, worst = "", 0.0
    by_kind: Dict[str, float] = {}
    for name, ref_g in ref_grads.items():
        g = out[name].to_numpy()
        if g.shape != ref_g.shape:
            print(f"FAIL: gradient of {name} has shape {list(g.shape)}, expected {list(ref_g.shape)}")
            return 1
        if not np.any(ref_g):
            print(f"note: the reference gradient of {name} is zero")
        e = rel_error(g, ref_g)
        kind = name.split(".")[-2] if name.count(".") >= 2 else name
        by_kind[kind] = max(by_kind.get(kind, 0.0), e)
        if e > worst:
            worst_name, worst = name, e
    e_loss = rel_error(out["loss"].to_numpy(), np.array(ref_loss))
    for kind in sorted(by_kind):
        print(f"  {kind:>12}: {by_kind[kind]:.3g}")
    print(f"gradients max relative error: {worst:.3g} ({worst_name})")
    print(f"loss relative error: {e_loss:.3g}")
    if not (worst <= args.rtol and e_loss <= args.rtol):
        print(f"relative error above --rtol {args.rtol:g}")
        ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


# ----------------------------------------------------------------------------
# selftest: the pieces against independent formulations
# ----------------------------------------------------------------------------

def selftest() -> int:
    need_torch()
    failures = []

    def expect(cond: bool, what: str):
        print(("ok    " if cond else "FAIL  ") + what)
        if not cond:
            failures.append(what)

    def close(a, b, tol=1e-12):
        a, b = (t.double() if torch.is_tensor(t) else torch.from_numpy(np.asarray(t, np.float64))
                for t in (a, b))
        return a.shape == b.shape and float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))

    g = torch.Generator().manual_seed(1234)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731

    # RMSNorm: a hand computation. x = [3, 4]: mean square 12.5.
    x = torch.tensor([3.0, 4.0], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    r = 1 / math.sqrt(12.5 + 1e-6)
    expect(close(rms_norm(x, w, 1e-6), [3 * r, 8 * r]), "rms_norm([3, 4], [1, 2]) by hand")
    x = rnd(2, 3, 4, 16)
    w = rnd(16)
    ref = x / torch.sqrt((x * x).sum(-1, keepdim=True) / 16 + 1e-6) * w
    expect(close(rms_norm(x, w, 1e-6), ref), "rms_norm over the last dim of [B, S, heads, D] (q/k norm)")

    # RoPE: inv_freq, identity at position 0, the complex-number formulation
    # of rotate-half (pairs (i, i + D/2)), norm preservation.
    S, D, theta = 16, 16, 1e6
    cos32, sin32 = rope_cos_sin(S, D, theta, torch.float32)
    inv = torch.tensor([theta ** (-2 * i / D) for i in range(D // 2)], dtype=torch.float64)
    ang = torch.arange(S, dtype=torch.float64)[:, None] * inv[None, :]
    expect(close(cos32[:, :D // 2], ang.cos(), 1e-6) and close(sin32[:, D // 2:], ang.sin(), 1e-6),
           "rope fp32 angles = pos * theta^(-2i/D) (within fp32 rounding)")
    cos, sin = rope_cos_sin(S, D, theta, torch.float64)
    x = rnd(2, S, 3, D)
    y = apply_rope(x, cos, sin)
    expect(close(y[:, 0], x[:, 0]), "rope is the identity at position 0")
    z = torch.complex(x[..., :D // 2], x[..., D // 2:]) * torch.polar(torch.ones_like(ang), ang)[None, :, None, :]
    expect(close(y, torch.cat([z.real, z.imag], -1)), "rope = complex rotation of (x_i, x_{i+D/2}) pairs")
    expect(close(y.norm(dim=-1), x.norm(dim=-1)), "rope preserves norms")
    # The same q and k vectors at every position: score(s, t) depends on s - t only.
    q_same = apply_rope(rnd(1, 1, 1, D).expand(1, S, 1, D), cos, sin)[0, :, 0]
    k_same = apply_rope(rnd(1, 1, 1, D).expand(1, S, 1, D), cos, sin)[0, :, 0]
    rel = q_same @ k_same.t()
    expect(all(close(torch.diagonal(rel, o), torch.diagonal(rel, o)[:1].expand(S - abs(o)))
               for o in range(-(S - 1), S)), "rope scores depend on relative position only")

    # Attention: a naive loop in float64 with explicit GQA mapping h -> h // (H / KV).
    B, S, H, KV, D = 2, 5, 4, 2, 8
    q, k, v = rnd(B, S, H, D), rnd(B, S, KV, D), rnd(B, S, KV, D)
    naive = torch.zeros(B, S, H, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            kvh = h // (H // KV)
            for s in range(S):
                sc = torch.tensor([float(q[b, s, h] @ k[b, t, kvh]) / math.sqrt(D) for t in range(s + 1)],
                                  dtype=torch.float64)
                p = torch.exp(sc - sc.max())
                p = p / p.sum()
                naive[b, s, h] = sum(p[t] * v[b, t, kvh] for t in range(s + 1))
    out = attention(q, k, v, causal=True)
    expect(close(out, naive), "attention = naive causal GQA loop (h -> h // (H/KV))")
    rep = attention(q, k.repeat_interleave(H // KV, dim=2), v.repeat_interleave(H // KV, dim=2))
    expect(close(out, rep), "GQA = multi-head attention with repeat_interleave'd KV heads")
    expect(close(out[:, 0], v[:, 0].repeat_interleave(H // KV, dim=1)), "position 0 attends only to itself")
    k2, v2 = k.clone(), v.clone()
    k2[:, 3:] += 5
    v2[:, 3:] -= 7
    out2 = attention(q, k2, v2, causal=True)
    expect(close(out2[:, :3], out[:, :3]) and not close(out2[:, 3:], out[:, 3:]),
           "causal: changing keys/values at positions >= 3 changes only outputs >= 3")
    expect(not close(attention(q, k, v, causal=False)[:, :-1], out[:, :-1]),
           "causal mask matters (non-causal differs)")

    # Router: ties go to the lower index; renormalisation; route scale.
    logits = torch.log(torch.tensor([[0.1, 0.3, 0.3, 0.2, 0.1],
                                     [0.25, 0.25, 0.25, 0.25, 0.0 + 1e-30]], dtype=torch.float64))
    wts, idx, sc, _, _ = route(logits, 2, True, 1.0)
    expect(idx.tolist() == [[1, 2], [0, 1]], "top-k ties go to the lower expert index")
    expect(close(wts, [[0.5, 0.5], [0.5, 0.5]]), "norm_topk_prob renormalises the chosen scores")
    wts, _, _, _, _ = route(logits, 2, False, 2.5)
    expect(close(wts, [[0.75, 0.75], [0.625, 0.625]]), "without norm_topk_prob: raw scores x route_scale")

    # DeepSeek-V3 routing by hand: sigmoid scores p, 4 groups of 2, the 2 best
    # groups by top-2 sum (g1 1.2, g0 1.0; not g2 0.95 although it holds the
    # best expert), top-2 of those (0.9, then 0.6 of experts 2 and 3: the
    # lower index), weights renormalised and scaled.
    p = torch.tensor([[0.9, 0.1, 0.6, 0.6, 0.95, 0.0001, 0.3, 0.3]], dtype=torch.float64)
    logit = torch.log(p / (1 - p))
    wts, idx, _, choice, gap = route(logit, 2, True, 2.5, sigmoid=True, n_group=4, topk_group=2)
    expect(idx.tolist() == [[0, 2]], "group-limited top-k skips the best expert of a dropped group")
    expect(close(wts, [[1.5, 1.0]]), "sigmoid weights renormalised (0.9, 0.6)/1.5 x 2.5")
    expect(bool(torch.isinf(choice[0, 4])) and abs(gap - (1.0 - 0.9501)) < 1e-9,
           "dropped groups' experts are ineligible; the group margin is 1.0 - 0.9501")
    bias = torch.tensor([0.0, 0.85, 0, 0, 0, 0, 0, 0], dtype=torch.float64)
    wts, idx, _, _, _ = route(logit, 2, True, 1.0, sigmoid=True, bias=bias, n_group=4, topk_group=2)
    expect(idx.tolist() == [[1, 0]] and close(wts, [[0.1, 0.9]]),
           "the expert bias changes the choice (0.1 + 0.85 > 0.9) but not the weights")

    # Experts: the naive loop against computing every expert for every token.
    T, Hd, Fd, E, K = 7, 6, 5, 4, 2
    x = rnd(T, Hd)
    ex = [(rnd(Fd, Hd), rnd(Fd, Hd), rnd(Hd, Fd)) for _ in range(E)]
    wts, idx, _, _, _ = route(rnd(T, E), K, True, 1.0)
    dense = torch.stack([linear(F.silu(linear(x, a)) * linear(x, b), c) for a, b, c in ex], 1)  # [T, E, H]
    ref = (dense.gather(1, idx[:, :, None].expand(T, K, Hd)) * wts[:, :, None]).sum(1)
    expect(close(experts_forward(x, wts, idx, ex), ref), "experts loop = dense all-experts gather")

    # Losses.
    lg = rnd(6, 10)
    lb = torch.tensor([1, -100, 3, 9, -100, 0])
    keep = lb != -100
    man = (torch.logsumexp(lg[keep], -1) - lg[keep].gather(1, lb[keep][:, None])[:, 0]).mean()
    expect(close(cross_entropy(lg, lb), man), "cross-entropy = mean(logsumexp - logit[label]) over kept labels")
    expect(float(cross_entropy(lg, torch.full((6,), -100))) == 0.0, "cross-entropy is 0 when every label is ignored")
    Eb, Kb = 4, 2
    bal_scores = torch.full((8, Eb), 1.0 / Eb, dtype=torch.float64)
    bal_idx = torch.tensor([[0, 1], [2, 3]] * 4)
    expect(close(aux_loss(bal_scores, bal_idx, Eb, Kb, 0.01), 0.01), "aux_loss of balanced routing = coefficient")
    skew = torch.tensor([[0, 1]] * 8)
    expect(close(aux_loss(bal_scores, skew, Eb, Kb, 1.0), 1.0), "aux_loss with uniform scores = coefficient")
    skew_scores = torch.tensor([[0.5, 0.5, 0.0, 0.0]] * 8, dtype=torch.float64)
    expect(close(aux_loss(skew_scores, skew, Eb, Kb, 1.0), 2.0),
           "aux_loss with all slots and scores on 2 of 4 experts = 2 (E * 2 * 0.5 * 0.5)")
    expect(close(aux_loss(skew_scores * 0.3, skew, Eb, Kb, 1.0, sigmoid=True), 2.0),
           "sigmoid aux_loss normalises each token's scores to sum 1 first")

    # safetensors round trip, every dtype, rank 0, metadata, BF16 rounding.
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        arrs = {"f": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "i": np.array([-1, 2**31 - 1], np.int32),
                "l": np.array([[2**40]], np.int64), "s": np.array(3.5, np.float32)}
        st.save_numpy(p, arrs, metadata={"k": "v"})
        back, meta = st.load_with_metadata(p)
        expect(meta == {"k": "v"} and all(back[k].shape == arrs[k].shape and
                                          np.array_equal(back[k].to_numpy(), arrs[k]) for k in arrs),
               "safetensors round trip (F32, I32, I64, rank 0, metadata)")
        with open(p, "rb") as f:
            blob = f.read()
        n = int.from_bytes(blob[:8], "little")
        expect((8 + n) % 8 == 0 and blob[8:8 + n].decode().rstrip(" ").endswith("}"),
               "safetensors header is JSON padded to 8 bytes")
        vals = np.array([1.0, 1.00390625, 1.001953125, 1.005859375, -3e38, 1e-40], np.float32)
        bf = st.f32_to_bf16(vals)
        expect(np.array_equal(st.bf16_to_f32(bf)[:4], np.array([1.0, 1.0, 1.0, 1.0078125], np.float32)),
               "bf16 rounds to nearest even")
        expect(np.array_equal(bf, torch.from_numpy(vals).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)),
               "bf16 rounding agrees with torch")

        # make-weights: names/shapes = the model's params (from the generated IR),
        # reader round trip, BF16, and each --break kind.
        for cfg in map(get_config, ("qwen3_moe_tiny", "mixtral_tiny", "qwen2_moe_tiny")):
            with open(os.path.join(zoo.HERE, cfg.name + ".mlir")) as f:
                ir = f.read()
            ir_params = {}
            for line in ir.splitlines():
                if "moe.param" in line:
                    name = line.split('"')[1]
                    dims = [int(t) for t in line.split("tensor<")[1].split("x")[:-1]]
                    if "{e}" in name:
                        for e in range(dims[0]):
                            ir_params[name.replace("{e}", str(e))] = tuple(dims[1:])
                    else:
                        ir_params[name] = tuple(dims)
            expect(dict(param_shapes(cfg)) == ir_params and len(param_shapes(cfg)) == len(ir_params),
                   f"{cfg.name}: weight names and shapes = the IR's moe.param (experts expanded)")
        cfg = get_config("qwen3_moe_tiny")
        p = os.path.join(d, "w.safetensors")
        write_weights(cfg, p, 7, 0.1)
        made = make_weights(cfg, 7, 0.1)
        back = read_weights(cfg, p)
        expect(all(np.array_equal(back[k], made[k]) for k in made), "make-weights F32 round trip")
        norms = [k for k in made if is_norm_weight(k)]
        expect(len(norms) == (4 if cfg.qk_norm else 2) * cfg.layers + 1 and
               all(abs(float(made[k].mean()) - 1) < 0.1 and float(made[k].std()) > 0.01 for k in norms),
               "norm weights are 1 + noise")
        write_weights(cfg, p, 7, 0.1, "BF16")
        tens = st.load(p)
        back = read_weights(cfg, p)
        expect(all(t.dtype == "BF16" for t in tens.values()) and
               all(float(np.abs(back[k] - made[k]).max()) <= 2**-8 * float(np.abs(made[k]).max()) for k in made),
               "make-weights BF16 round trip (within bf16 rounding)")
        name = "model.layers.1.mlp.experts.3.up_proj.weight"
        write_weights(cfg, p, 7, 0.1, brk="missing:" + name)
        expect(name not in st.load(p) and len(st.load(p)) == len(made) - 1, "--break missing drops the tensor")
        write_weights(cfg, p, 7, 0.1, brk="shape:" + name)
        expect(st.load(p)[name].shape == (cfg.moe_inter + 1, cfg.hidden), "--break shape grows dimension 0")
        write_weights(cfg, p, 7, 0.1, brk="dtype:" + name)
        expect(st.load(p)[name].dtype == "I32", "--break dtype stores I32")
        write_weights(cfg, p, 7, 0.1, brk="truncate:" + name)
        try:
            st.load(p)
            expect(False, "--break truncate cuts the file")
        except st.SafetensorsError as e:
            expect(f"'{name}'" in str(e) and "truncated" in str(e), "--break truncate cuts that tensor's data")

        # The whole model: fp32 against fp64, and routing is not degenerate.
        tokens = make_tokens(cfg, 7)
        labels = default_labels(tokens)
        r32 = reference_forward(cfg, made, tokens, labels)
        r64 = reference_forward(cfg, made, tokens, labels, double=True)
        e = rel_error(r32["logits"].numpy(), r64["logits"].numpy())
        expect(e < 1e-5, f"reference fp32 vs fp64 logits relative error {e:.2g} < 1e-5")
        e = rel_error(r32["loss"].numpy(), r64["loss"].numpy())
        expect(e < 1e-5, f"reference fp32 vs fp64 loss relative error {e:.2g} < 1e-5")
        used, gap = routing_stats(cfg, r32)
        expect(min(used) >= cfg.experts // 2, f"experts used per layer {used}, smallest gap {gap:.2g}")
        std = float(r64["logits"].std())
        expect(0.1 < std < 10, f"logits standard deviation {std:.3g} is O(1)")
        ce = float(r64["ce"])
        expect(abs(ce - math.log(cfg.vocab)) < 1.0, f"cross-entropy {ce:.4g} near log(vocab) = {math.log(cfg.vocab):.4g}")
        expect(tokens.min() >= 0 and tokens.max() < cfg.vocab and labels[:, -1].tolist() == [-100] * cfg.batch
               and np.array_equal(labels[:, :-1], tokens[:, 1:]), "default labels: shifted left, -100 at row ends")
        # Causality end to end: changing the last token changes only the last position.
        t2 = tokens.copy()
        t2[:, -1] = (t2[:, -1] + 1) % cfg.vocab
        r2 = reference_forward(cfg, made, t2, default_labels(t2), double=True)
        expect(close(r2["logits"][:, :-1], r64["logits"][:, :-1], 1e-12) and
               not close(r2["logits"][:, -1], r64["logits"][:, -1]), "model is causal end to end")
        hf = float(hf_load_balancing_loss([r[2] for r in r64["routing"]], cfg.experts, cfg.top_k))
        print(f"info  HF load_balancing_loss_func (all layers concatenated, not used) = {hf:.6g}; "
              f"moe.aux_loss / coefficient per layer = "
              f"{[round(float(a) / cfg.aux_coef, 6) for a in r64['aux']]}")

    print("selftest: " + ("PASS" if not failures else f"FAIL ({len(failures)} failed)"))
    return 0 if not failures else 1


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("make-weights", help="write seeded random weights")
    p.add_argument("--model", default="qwen3_moe_tiny")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--std", type=float, default=0.1)
    p.add_argument("--dtype", choices=["F32", "BF16"], default="F32")
    p.add_argument("--break", dest="brk", metavar="KIND[:TENSOR]")
    p.add_argument("--out", required=True)

    p = sub.add_parser("tokens", help="print the seeded token ids")
    p.add_argument("--model", default="qwen3_moe_tiny")
    p.add_argument("--seed", type=int, required=True)

    p = sub.add_parser("forward", help="run the reference alone")
    p.add_argument("--model", default="qwen3_moe_tiny")
    p.add_argument("--weights", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--labels")
    p.add_argument("--double", action="store_true")
    p.add_argument("--output")

    p = sub.add_parser("check", help="compare a model executable against the reference")
    p.add_argument("--model-exe", required=True)
    p.add_argument("--model", default="qwen3_moe_tiny")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--std", type=float, default=0.1)
    p.add_argument("--dtype", choices=["F32", "BF16"], default="F32")
    p.add_argument("--labels", choices=["default", "random"], default="default",
                   help="default: let the executable shift the tokens; random: pass random "
                        "labels with about a quarter ignored (-100)")
    p.add_argument("--reference", choices=["float32", "float64", "bf16-storage"],
                   default="float32",
                   help="which reference the executable is compared with (bf16-storage: "
                        "fp32 compute rounded to bf16 where a --storage bf16 model stores)")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--exe-arg", action="append", default=[],
                   help="an extra argument for the executable's forward (e.g. --comm, local "
                        "for a model compiled for a mesh)")
    p.add_argument("--capacity-factor", type=float, default=0.0,
                   help="the model has experts with this capacity factor (0: dropless)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--workdir", help="where weights and outputs go (default: a new temporary directory)")

    p = sub.add_parser("grad-check", help="compare an executable's gradients against autograd")
    p.add_argument("--model-exe", required=True)
    p.add_argument("--model", default="qwen3_moe_tiny")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--std", type=float, default=0.1)
    p.add_argument("--labels", choices=["default", "random"], default="default")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--capacity-factor", type=float, default=0.0,
                   help="the model has experts with this capacity factor (0: dropless)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--workdir", help="where weights and outputs go (default: a new temporary directory)")

    sub.add_parser("selftest", help="check the reference's pieces")

    args = parser.parse_args(argv)
    if args.cmd == "make-weights":
        cfg = get_config(args.model)
        write_weights(cfg, args.out, args.seed, args.std, args.dtype, args.brk)
        return 0
    if args.cmd == "tokens":
        print(ids_text(make_tokens(get_config(args.model), args.seed)))
        return 0
    if args.cmd == "forward":
        cfg = get_config(args.model)
        tokens = parse_ids(args.tokens, cfg, "tokens")
        labels = parse_ids(args.labels, cfg, "labels") if args.labels else default_labels(tokens)
        ref = reference_forward(cfg, read_weights(cfg, args.weights), tokens, labels, args.double)
        print(f"loss {float(ref['loss']):.9g} (cross-entropy {float(ref['ce']):.9g})")
        if args.output:
            st.save_numpy(args.output, {"logits": ref["logits"].float().numpy(),
                                        "loss": np.array(float(ref["loss"]), np.float32)})
        return 0
    if args.cmd == "grad-check":
        return run_grad_check(args)
    if args.cmd == "check":
        return run_check(args)
    return selftest()


if __name__ == "__main__":
    sys.exit(main())
