#!/usr/bin/env python3
"""Writes the model zoo's .mlir files from architecture configs.

Every model is one `func.func @forward(%tokens, %labels) -> (logits, loss)` in
the moe dialect at logical shapes; weights carry their Hugging Face names.

    models/gen_models.py                  # rewrite every committed model
    models/gen_models.py --check          # fail if a committed file is stale
    models/gen_models.py --print NAME     # print one model (also the large
                                          # configs that are not committed)

Plain Python 3, no third-party modules.
"""

import argparse
import dataclasses
import os
import sys
from typing import List, Optional


@dataclasses.dataclass
class Config:
    name: str
    description: str
    naming: str  # "qwen3", "mixtral" or "deepseek"
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    experts: int
    top_k: int
    moe_inter: int
    batch: int
    seq: int
    rope_theta: float = 10000.0
    eps: float = 1e-6
    qk_norm: bool = False
    scoring: str = "softmax"
    norm_topk_prob: bool = True
    route_scale: float = 1.0
    expert_bias: bool = False
    n_group: int = 1
    topk_group: int = 1
    shared_inter: int = 0  # 0: no shared experts
    shared_gate: bool = False
    first_dense_layers: int = 0
    dense_inter: int = 0
    capacity_factor: float = 0.0  # 0: dropless; else each expert takes ceil(cf*T*K/E) slots
    aux_coef: float = 0.0
    z_coef: float = 0.0
    vocab_chars: str = ""  # character-level models: token i is vocab_chars[i]
    committed: bool = True


# The 65 distinct characters of the tiny Shakespeare corpus, sorted (token i
# is the i-th): a fact of ../shared/data/tinyshakespeare/input.txt.
SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

CONFIGS: List[Config] = [
    Config(
        name="qwen3_moe_tiny",
        description="A tiny Qwen3-MoE (Qwen3MoeForCausalLM): GQA with q/k RMSNorm, RoPE, "
        "8 experts top-2, softmax router with renormalised top-k.",
        naming="qwen3", vocab=128, hidden=64, layers=2, heads=4, kv_heads=2,
        head_dim=16, experts=8, top_k=2, moe_inter=32, batch=4, seq=16,
        rope_theta=1e6, qk_norm=True, aux_coef=1e-3),
    Config(
        name="shakespeare_moe",
        description="The character-level Shakespeare MoE (Qwen3-MoE style): 65 characters, "
        "hidden 128, 2 layers, 4 heads (2 KV), 8 experts top-2; batch 16 x 128.",
        naming="qwen3", vocab=65, hidden=128, layers=2, heads=4, kv_heads=2,
        head_dim=32, experts=8, top_k=2, moe_inter=128, batch=16, seq=128,
        qk_norm=True, aux_coef=1e-2, z_coef=1e-3, vocab_chars=SHAKESPEARE_CHARS),
    Config(
        name="mixtral_tiny",
        description="A tiny Mixtral (MixtralForCausalLM): GQA, RoPE, no q/k norm, "
        "8 experts top-2 under block_sparse_moe names.",
        naming="mixtral", vocab=128, hidden=64, layers=2, heads=4, kv_heads=2,
        head_dim=16, experts=8, top_k=2, moe_inter=48, batch=2, seq=16,
        rope_theta=1e6, eps=1e-5, aux_coef=2e-2),
    Config(
        name="deepseek_v3_tiny",
        description="DeepSeek-V3 routing at tiny size: one dense layer first, then sigmoid "
        "router with expert bias (selection only), 4 groups of 4 experts with 2 kept, top-4, "
        "route scale 2.5, one shared expert. Attention is GQA here (MLA is not modelled).",
        naming="deepseek", vocab=128, hidden=64, layers=2, heads=4, kv_heads=4,
        head_dim=16, experts=16, top_k=4, moe_inter=32, batch=2, seq=16,
        scoring="sigmoid", route_scale=2.5, expert_bias=True, n_group=4, topk_group=2,
        shared_inter=32, first_dense_layers=1, dense_inter=96, aux_coef=1e-4),
    Config(
        name="vescale_mixtral_shakespeare",
        description="veScale's Shakespeare example configuration (Mixtral style): hidden 384, "
        "expert FFN 1536, 2 layers, 8 heads, 8 experts top-2, batch 128 x 256; read as "
        "characters (65).",
        naming="mixtral", vocab=65, hidden=384, layers=2, heads=8, kv_heads=8,
        head_dim=48, experts=8, top_k=2, moe_inter=1536, batch=128, seq=256,
        rope_theta=1e6, eps=1e-5, aux_coef=1e-2, vocab_chars=SHAKESPEARE_CHARS),
    Config(
        name="qwen3_moe_gpu_bench",
        description="A Qwen3-MoE shaped model for the GPU training-step benchmark "
        "(bench/gpu/run.sh): hidden 1024, 8 layers, 16 heads of 64 (4 KV), 64 experts top-8 "
        "of FFN 384, batch 8 x 1024; read as characters (65). Not committed.",
        naming="qwen3", vocab=65, hidden=1024, layers=8, heads=16, kv_heads=4,
        head_dim=64, experts=64, top_k=8, moe_inter=384, batch=8, seq=1024,
        rope_theta=1e6, qk_norm=True, aux_coef=1e-3, vocab_chars=SHAKESPEARE_CHARS,
        committed=False),
    Config(
        name="qwen3_30b_a3b",
        description="Qwen3-30B-A3B at full size (for compile-time benchmarks; not committed).",
        naming="qwen3", vocab=151936, hidden=2048, layers=48, heads=32, kv_heads=4,
        head_dim=128, experts=128, top_k=8, moe_inter=768, batch=8, seq=4096,
        rope_theta=1e6, qk_norm=True, aux_coef=1e-3, committed=False),
    Config(
        name="qwen3_235b_a22b",
        description="Qwen3-235B-A22B at full size (for compile-time benchmarks; not committed).",
        naming="qwen3", vocab=151936, hidden=4096, layers=94, heads=64, kv_heads=4,
        head_dim=128, experts=128, top_k=8, moe_inter=1536, batch=8, seq=4096,
        rope_theta=1e6, qk_norm=True, aux_coef=1e-3, committed=False),
    Config(
        name="mixtral_8x7b",
        description="Mixtral-8x7B at full size (MixtralForCausalLM; not committed).",
        naming="mixtral", vocab=32000, hidden=4096, layers=32, heads=32, kv_heads=8,
        head_dim=128, experts=8, top_k=2, moe_inter=14336, batch=8, seq=4096,
        rope_theta=1e6, eps=1e-5, aux_coef=2e-2, committed=False),
    Config(
        name="deepseek_v3_shape",
        description="DeepSeek-V3's sizes and routing at full size: 61 layers, the first 3 "
        "dense (FFN 18432), 256 experts top-8 of FFN 2048 in 8 groups with 4 kept, sigmoid "
        "scores with expert bias, route scale 2.5, one shared expert. Attention is GQA with "
        "128 heads of 128 (MLA is not modelled). Not committed.",
        naming="deepseek", vocab=129280, hidden=7168, layers=61, heads=128, kv_heads=128,
        head_dim=128, experts=256, top_k=8, moe_inter=2048, batch=8, seq=4096,
        scoring="sigmoid", route_scale=2.5, expert_bias=True, n_group=8, topk_group=4,
        shared_inter=2048, first_dense_layers=3, dense_inter=18432, aux_coef=1e-4,
        committed=False),
]


def qwen3_moe_hf_fields(cfg: Config) -> dict:
    """The fields of a Hugging Face Qwen3MoeConfig with this config's
    architecture (for the tests and benchmarks that build the transformers
    model beside the compiled one). Only plain Qwen3-MoE configs have one."""
    if cfg.naming != "qwen3" or cfg.scoring != "softmax" or cfg.shared_inter \
            or cfg.first_dense_layers or cfg.expert_bias or cfg.z_coef or not cfg.qk_norm:
        raise ValueError(f"{cfg.name} is not a plain Qwen3-MoE (Qwen3MoeForCausalLM)")
    return dict(
        vocab_size=cfg.vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim, num_experts=cfg.experts, num_experts_per_tok=cfg.top_k,
        moe_intermediate_size=cfg.moe_inter, intermediate_size=4 * cfg.hidden,
        decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=cfg.norm_topk_prob,
        rms_norm_eps=cfg.eps, rope_theta=cfg.rope_theta,
        max_position_embeddings=max(cfg.seq, 64), tie_word_embeddings=False,
        attention_bias=False, router_aux_loss_coef=cfg.aux_coef)


def tensor(shape: List[int], elem: str = "f32") -> str:
    return "tensor<" + "".join(f"{d}x" for d in shape) + elem + ">"


def mlir_string(text: str) -> str:
    """An MLIR string literal: printable ASCII as is, the rest as \\XX."""
    out = []
    for ch in text:
        if ch in '"\\' or not (32 <= ord(ch) < 127):
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def module_header(cfg: Config) -> str:
    if not cfg.vocab_chars:
        return "module {"
    assert len(cfg.vocab_chars) == cfg.vocab, cfg.name
    return f"module attributes {{moe.vocab_chars = {mlir_string(cfg.vocab_chars)}}} {{"


def fmt_float(x: float) -> str:
    return f"{x:.6e}"


class Writer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.lines: List[str] = []

    def emit(self, line: str = "") -> None:
        self.lines.append(("    " + line) if line else "")

    def param(self, var: str, name: str, shape: List[int]) -> str:
        self.emit(f'%{var} = moe.param "{name}" : {tensor(shape)}')
        return var

    def op(self, var: str, text: str, operand_types: List[str], result_type: str) -> str:
        self.emit(f"%{var} = {text} : ({', '.join(operand_types)}) -> {result_type}")
        return var


def names(cfg: Config, layer: int) -> dict:
    p = f"model.layers.{layer}"
    n = {
        "ln1": f"{p}.input_layernorm.weight",
        "ln2": f"{p}.post_attention_layernorm.weight",
        "q": f"{p}.self_attn.q_proj.weight",
        "k": f"{p}.self_attn.k_proj.weight",
        "v": f"{p}.self_attn.v_proj.weight",
        "o": f"{p}.self_attn.o_proj.weight",
        "q_norm": f"{p}.self_attn.q_norm.weight",
        "k_norm": f"{p}.self_attn.k_norm.weight",
    }
    if cfg.naming == "mixtral":
        m = f"{p}.block_sparse_moe"
        n.update(router=f"{m}.gate.weight", e_gate=f"{m}.experts.{{e}}.w1.weight",
                 e_up=f"{m}.experts.{{e}}.w3.weight", e_down=f"{m}.experts.{{e}}.w2.weight")
    else:
        m = f"{p}.mlp"
        n.update(router=f"{m}.gate.weight", e_gate=f"{m}.experts.{{e}}.gate_proj.weight",
                 e_up=f"{m}.experts.{{e}}.up_proj.weight",
                 e_down=f"{m}.experts.{{e}}.down_proj.weight",
                 bias=f"{m}.gate.e_score_correction_bias",
                 d_gate=f"{m}.gate_proj.weight", d_up=f"{m}.up_proj.weight",
                 d_down=f"{m}.down_proj.weight",
                 s_gate=f"{m}.shared_experts.gate_proj.weight",
                 s_up=f"{m}.shared_experts.up_proj.weight",
                 s_down=f"{m}.shared_experts.down_proj.weight",
                 s_sigmoid=f"{m}.shared_expert_gate.weight")
    return n


def attention(w: Writer, cfg: Config, i: int, n: dict, x: str) -> str:
    B, S, H = cfg.batch, cfg.seq, cfg.hidden
    act = tensor([B, S, H])
    heads = {}
    for kind, nh in (("q", cfg.heads), ("k", cfg.kv_heads), ("v", cfg.kv_heads)):
        flat, split = tensor([B, S, nh * cfg.head_dim]), tensor([B, S, nh, cfg.head_dim])
        wt = w.param(f"l{i}_w{kind}", n[kind], [nh * cfg.head_dim, H])
        p = w.op(f"l{i}_{kind}", f"moe.linear %{x}, %{wt}", [act, tensor([nh * cfg.head_dim, H])], flat)
        w.emit(f"%l{i}_{kind}4 = tensor.expand_shape %{p} [[0], [1], [2, 3]] output_shape "
               f"[{B}, {S}, {nh}, {cfg.head_dim}] : {flat} into {split}")
        cur = f"l{i}_{kind}4"
        if kind != "v":
            if cfg.qk_norm:
                nw = w.param(f"l{i}_{kind}_norm", n[f"{kind}_norm"], [cfg.head_dim])
                cur = w.op(f"l{i}_{kind}n", f"moe.rms_norm %{cur}, %{nw} {{eps = {fmt_float(cfg.eps)}}}",
                           [split, tensor([cfg.head_dim])], split)
            cur = w.op(f"l{i}_{kind}r", f"moe.rope %{cur} {{theta = {fmt_float(cfg.rope_theta)}}}",
                       [split], split)
        heads[kind] = (cur, split)
    qs, ks = heads["q"][1], heads["k"][1]
    att = w.op(f"l{i}_att", f"moe.attention %{heads['q'][0]}, %{heads['k'][0]}, %{heads['v'][0]} {{causal}}",
               [qs, ks, ks], qs)
    flat = tensor([B, S, cfg.heads * cfg.head_dim])
    w.emit(f"%l{i}_attf = tensor.collapse_shape %{att} [[0], [1], [2, 3]] : {qs} into {flat}")
    wo = w.param(f"l{i}_wo", n["o"], [H, cfg.heads * cfg.head_dim])
    return w.op(f"l{i}_o", f"moe.linear %l{i}_attf, %{wo}", [flat, tensor([H, cfg.heads * cfg.head_dim])], act)


def swiglu_weights(w: Writer, prefix: str, names3: List[str], inter: int, hidden: int) -> List[str]:
    g = w.param(f"{prefix}_gate", names3[0], [inter, hidden])
    u = w.param(f"{prefix}_up", names3[1], [inter, hidden])
    d = w.param(f"{prefix}_down", names3[2], [hidden, inter])
    return [g, u, d]


def ffn(w: Writer, cfg: Config, i: int, n: dict, x: str, losses: List[str]) -> str:
    B, S, H = cfg.batch, cfg.seq, cfg.hidden
    act = tensor([B, S, H])
    if i < cfg.first_dense_layers:
        g, u, d = swiglu_weights(w, f"l{i}_mlp", [n["d_gate"], n["d_up"], n["d_down"]], cfg.dense_inter, H)
        wt = [tensor([cfg.dense_inter, H])] * 2 + [tensor([H, cfg.dense_inter])]
        return w.op(f"l{i}_mlp", f"moe.mlp %{x}, %{g}, %{u}, %{d}", [act] + wt, act)

    E, K, F = cfg.experts, cfg.top_k, cfg.moe_inter
    gate = w.param(f"l{i}_router", n["router"], [E, H])
    operand_types = [act, tensor([E, H])]
    bias = ""
    if cfg.expert_bias:
        b = w.param(f"l{i}_bias", n["bias"], [E])
        bias = f" bias %{b}"
        operand_types.append(tensor([E]))
    attrs = []
    if cfg.norm_topk_prob:
        attrs.append("norm_topk_prob")
    if cfg.route_scale != 1.0:
        attrs.append(f"route_scale = {fmt_float(cfg.route_scale)}")
    if cfg.n_group != 1:
        attrs.append(f"n_group = {cfg.n_group}")
        attrs.append(f"topk_group = {cfg.topk_group}")
    attr_text = (" {" + ", ".join(attrs) + "}") if attrs else ""
    wk, ik, lk = tensor([B, S, K]), tensor([B, S, K], "i32"), tensor([B, S, E])
    w.emit(f"%l{i}_rw, %l{i}_ri, %l{i}_rl = moe.router %{x}, %{gate}{bias} {cfg.scoring} top {K}{attr_text}"
           f" : ({', '.join(operand_types)}) -> ({wk}, {ik}, {lk})")
    eg = w.param(f"l{i}_egate", n["e_gate"], [E, F, H])
    eu = w.param(f"l{i}_eup", n["e_up"], [E, F, H])
    ed = w.param(f"l{i}_edown", n["e_down"], [E, H, F])
    capacity = (f" {{capacity_factor = {fmt_float(cfg.capacity_factor)}}}"
                if cfg.capacity_factor else "")
    out = w.op(f"l{i}_moe", f"moe.experts %{x}, %l{i}_rw, %l{i}_ri, %{eg}, %{eu}, %{ed}{capacity}",
               [act, wk, ik, tensor([E, F, H]), tensor([E, F, H]), tensor([E, H, F])], act)
    if cfg.shared_inter:
        SF = cfg.shared_inter
        g, u, d = swiglu_weights(w, f"l{i}_shared", [n["s_gate"], n["s_up"], n["s_down"]], SF, H)
        types = [act, tensor([SF, H]), tensor([SF, H]), tensor([H, SF])]
        gated = ""
        if cfg.shared_gate:
            sg = w.param(f"l{i}_shared_sigmoid", n["s_sigmoid"], [1, H])
            gated = f" gated by %{sg}"
            types.append(tensor([1, H]))
        sh = w.op(f"l{i}_shared", f"moe.shared_experts %{x}, %{g}, %{u}, %{d}{gated}",
                 types, act)
        w.emit(f"%l{i}_ffn = moe.add %{out}, %{sh} : {act}")
        out = f"l{i}_ffn"
    if cfg.aux_coef:
        w.emit(f"%l{i}_aux = moe.aux_loss %l{i}_rl, %l{i}_ri {cfg.scoring} {{coefficient = "
               f"{fmt_float(cfg.aux_coef)}}} : ({lk}, {ik}) -> tensor<f32>")
        losses.append(f"l{i}_aux")
    if cfg.z_coef:
        w.emit(f"%l{i}_z = moe.z_loss %l{i}_rl {{coefficient = {fmt_float(cfg.z_coef)}}} : ({lk}) -> tensor<f32>")
        losses.append(f"l{i}_z")
    return out


def generate(cfg: Config) -> str:
    B, S, H, V = cfg.batch, cfg.seq, cfg.hidden, cfg.vocab
    act, ids = tensor([B, S, H]), tensor([B, S], "i32")
    logits_t = tensor([B, S, V])
    w = Writer(cfg)
    header = [
        f"// {cfg.name}: {cfg.description}",
        "// Generated by models/gen_models.py; edit the config there, not this file.",
        f"// hidden {H}, {cfg.layers} layers, {cfg.heads} heads ({cfg.kv_heads} KV) x {cfg.head_dim}, "
        f"{cfg.experts} experts top-{cfg.top_k}, expert FFN {cfg.moe_inter}, vocab {V}, "
        f"batch {B} x seq {S}.",
        module_header(cfg),
        f"  func.func @forward(%tokens: {ids}, %labels: {ids}) -> ({logits_t}, tensor<f32>) {{",
    ]
    emb = w.param("embed", "model.embed_tokens.weight", [V, H])
    h = w.op("h0", f"moe.embedding %tokens, %{emb}", [ids, tensor([V, H])], act)
    losses: List[str] = []
    for i in range(cfg.layers):
        n = names(cfg, i)
        w.emit()
        w.emit(f"// layer {i}")
        ln1 = w.param(f"l{i}_ln1_w", n["ln1"], [H])
        x = w.op(f"l{i}_ln1", f"moe.rms_norm %{h}, %{ln1} {{eps = {fmt_float(cfg.eps)}}}",
                 [act, tensor([H])], act)
        o = attention(w, cfg, i, n, x)
        h1 = f"l{i}_h"
        w.emit(f"%{h1} = moe.add %{h}, %{o} : {act}")
        ln2 = w.param(f"l{i}_ln2_w", n["ln2"], [H])
        x2 = w.op(f"l{i}_ln2", f"moe.rms_norm %{h1}, %{ln2} {{eps = {fmt_float(cfg.eps)}}}",
                  [act, tensor([H])], act)
        f = ffn(w, cfg, i, n, x2, losses)
        h = f"l{i}_out"
        w.emit(f"%{h} = moe.add %{h1}, %{f} : {act}")
    w.emit()
    w.emit("// head and loss")
    nw = w.param("norm_w", "model.norm.weight", [H])
    hn = w.op("hn", f"moe.rms_norm %{h}, %{nw} {{eps = {fmt_float(cfg.eps)}}}", [act, tensor([H])], act)
    lm = w.param("lm_head", "lm_head.weight", [V, H])
    w.op("logits", f"moe.linear %{hn}, %{lm}", [act, tensor([V, H])], logits_t)
    w.op("ce", "moe.cross_entropy %logits, %labels", [logits_t, ids], "tensor<f32>")
    total = "ce"
    for j, loss in enumerate(losses):
        w.emit(f"%loss{j} = moe.add %{total}, %{loss} : tensor<f32>")
        total = f"loss{j}"
    w.emit(f"return %logits, %{total} : {logits_t}, tensor<f32>")
    footer = ["  }", "}"]
    return "\n".join(header + w.lines + footer) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if a committed model is stale")
    parser.add_argument("--print", metavar="NAME", help="print one model to stdout")
    parser.add_argument("--set", metavar="FIELD=VALUE", action="append", default=[],
                        help="with --print: override a numeric config field, e.g. top_k=1 or "
                             "capacity_factor=1.25")
    parser.add_argument("--dir", default=os.path.dirname(os.path.abspath(__file__)),
                        help="where the committed models live (default: beside this script)")
    args = parser.parse_args(argv)
    by_name = {c.name: c for c in CONFIGS}
    if args.print:
        if args.print not in by_name:
            print(f"gen_models.py: unknown model '{args.print}' (known: {', '.join(by_name)})",
                  file=sys.stderr)
            return 2
        cfg = by_name[args.print]
        for item in args.set:
            field, _, value = item.partition("=")
            current = getattr(cfg, field, None)
            try:
                if not isinstance(current, (int, float)):
                    raise ValueError
                number = (bool(int(value)) if isinstance(current, bool)
                          else int(value) if isinstance(current, int) else float(value))
            except ValueError:
                print(f"gen_models.py: --set {item}: expected a numeric config field and a "
                      "number", file=sys.stderr)
                return 2
            cfg = dataclasses.replace(cfg, **{field: number})
        sys.stdout.write(generate(cfg))
        return 0
    stale = []
    for cfg in CONFIGS:
        if not cfg.committed:
            continue
        path = os.path.join(args.dir, cfg.name + ".mlir")
        text = generate(cfg)
        if args.check:
            try:
                with open(path) as f:
                    current = f.read()
            except OSError:
                current = None
            if current != text:
                stale.append(path)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        print("gen_models.py: stale models (run models/gen_models.py): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
