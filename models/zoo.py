#!/usr/bin/env python3
"""The model zoo: Hugging Face config.json files in models/configs/, imported
by moe-import (the C++ tool that builds models with the dialect's builders).

    models/zoo.py --moe-import build/bin/moe-import           # rewrite models/*.mlir
    models/zoo.py --moe-import build/bin/moe-import --check   # fail if one is stale

For the tests' references and the benchmarks, `load(name)` reads a config
into the plain facts they need (Config) the way transformers' configuration
classes define them, independently of moe-import, and `names(cfg, layer)`
gives a layer's Hugging Face parameter names. Plain Python 3, no third-party
modules.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIR = os.path.join(HERE, "configs")

# The models committed as .mlir (imported from configs/NAME.json); the other
# configs are the published full-size ones and variants for benchmarks.
COMMITTED = ["qwen3_moe_tiny", "shakespeare_moe", "mixtral_tiny", "qwen2_moe_tiny",
             "deepseek_v3_tiny", "deepseek_v2_tiny", "olmoe_tiny",
             "vescale_mixtral_shakespeare"]


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    naming: str  # "qwen3", "qwen2", "mixtral", "deepseek" or "olmoe"
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
    rope_theta: float
    eps: float
    qk_norm: bool = False
    qkv_bias: bool = False
    scoring: str = "softmax"
    norm_topk_prob: bool = False
    route_scale: float = 1.0
    expert_bias: bool = False
    n_group: int = 1
    topk_group: int = 1
    shared_inter: int = 0
    shared_gate: bool = False
    dense_layers: Tuple[int, ...] = ()
    dense_inter: int = 0
    # DeepSeek's multi-head latent attention (kv_lora_rank > 0; q_lora_rank 0
    # is a plain q_proj); head_dim is then the rotary size.
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    capacity_factor: float = 0.0
    aux_coef: float = 0.0
    z_coef: float = 0.0
    vocab_chars: str = ""
    hf: Optional[dict] = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def first_dense_layers(self) -> int:
        n = 0
        while n in self.dense_layers:
            n += 1
        return n

    def hf_fields(self) -> dict:
        """The config's Hugging Face fields (the project's moec_* removed)."""
        return {k: v for k, v in self.hf.items() if not k.startswith("moec_")}


def config_path(name: str) -> str:
    return name if name.endswith(".json") else os.path.join(CONFIG_DIR, name + ".json")


def from_hf(name: str, d: dict, batch: Optional[int] = None,
            seq: Optional[int] = None) -> Config:
    """Config of a config.json dict, with the defaults of transformers'
    Qwen3MoeConfig, Qwen2MoeConfig, MixtralConfig and DeepseekV3Config."""
    t = d["model_type"]
    heads = d["num_attention_heads"]
    f = dict(name=name, vocab=d["vocab_size"], hidden=d["hidden_size"],
             layers=d["num_hidden_layers"], heads=heads,
             kv_heads=d.get("num_key_value_heads") or heads,
             head_dim=d.get("head_dim") or d["hidden_size"] // heads,
             batch=batch or d.get("moec_batch", 0), seq=seq or d.get("moec_seq", 0))
    hf_aux = d.get("router_aux_loss_coef", 0.001) if d.get("output_router_logits") else 0.0
    if t in ("qwen3_moe", "qwen2_moe"):
        step = d.get("decoder_sparse_step", 1)
        only = d.get("mlp_only_layers") or []
        dense = tuple(i for i in range(f["layers"]) if (i + 1) % step or i in only)
        f.update(naming="qwen3" if t == "qwen3_moe" else "qwen2",
                 eps=d.get("rms_norm_eps", 1e-6), rope_theta=d.get("rope_theta", 10000.0),
                 experts=d.get("num_experts", 128 if t == "qwen3_moe" else 60),
                 top_k=d.get("num_experts_per_tok", 8 if t == "qwen3_moe" else 4),
                 moe_inter=d.get("moe_intermediate_size", 768 if t == "qwen3_moe" else 1408),
                 norm_topk_prob=d.get("norm_topk_prob", False), dense_layers=dense,
                 dense_inter=d.get("intermediate_size", 0) if dense else 0, aux_coef=hf_aux)
        if t == "qwen3_moe":
            f.update(qk_norm=True)
        else:
            shared = d.get("shared_expert_intermediate_size", 5632)
            f.update(qkv_bias=True, shared_inter=shared, shared_gate=shared > 0)
    elif t == "olmoe":
        f.update(naming="olmoe", eps=d.get("rms_norm_eps", 1e-5),
                 rope_theta=d.get("rope_theta", 10000.0), experts=d.get("num_experts", 64),
                 top_k=d.get("num_experts_per_tok", 8), moe_inter=d.get("intermediate_size", 1024),
                 norm_topk_prob=d.get("norm_topk_prob", False),
                 aux_coef=d.get("router_aux_loss_coef", 0.01) if d.get("output_router_logits")
                 else 0.0)
    elif t == "mixtral":
        f.update(naming="mixtral", eps=d.get("rms_norm_eps", 1e-5),
                 rope_theta=d.get("rope_theta", 1e6), experts=d.get("num_local_experts", 8),
                 top_k=d.get("num_experts_per_tok", 2),
                 moe_inter=d.get("intermediate_size", 14336), norm_topk_prob=True,
                 aux_coef=hf_aux)
    elif t == "deepseek_v3":
        first = d.get("first_k_dense_replace", 3)
        moe_inter = d.get("moe_intermediate_size", 2048)
        noaux = d.get("topk_method", "noaux_tc") == "noaux_tc"
        f.update(naming="deepseek", eps=d.get("rms_norm_eps", 1e-6),
                 rope_theta=d.get("rope_theta", 10000.0), experts=d.get("n_routed_experts", 256),
                 top_k=d.get("num_experts_per_tok", 8), moe_inter=moe_inter,
                 scoring=d.get("scoring_func", "sigmoid"),
                 norm_topk_prob=d.get("norm_topk_prob", True),
                 route_scale=d.get("routed_scaling_factor", 2.5), expert_bias=noaux,
                 n_group=d.get("n_group", 8) if noaux else 1,
                 topk_group=d.get("topk_group", 4) if noaux else 1,
                 shared_inter=d.get("n_shared_experts", 1) * moe_inter,
                 dense_layers=tuple(range(min(first, f["layers"]))),
                 dense_inter=d.get("intermediate_size", 18432) if first else 0)
    elif t == "deepseek_v2":  # transformers' router: never renormalised
        first = d.get("first_k_dense_replace", 0)
        moe_inter = d.get("moe_intermediate_size", 1407)
        grouped = d.get("topk_method", "greedy") == "group_limited_greedy"
        f.update(naming="deepseek", eps=d.get("rms_norm_eps", 1e-6),
                 rope_theta=d.get("rope_theta", 10000.0), experts=d.get("n_routed_experts", 64),
                 top_k=d["num_experts_per_tok"], moe_inter=moe_inter,
                 route_scale=d.get("routed_scaling_factor", 1.0),
                 n_group=d["n_group"] if grouped else 1,
                 topk_group=d["topk_group"] if grouped else 1,
                 shared_inter=d.get("n_shared_experts", 2) * moe_inter,
                 dense_layers=tuple(range(min(first, f["layers"]))),
                 dense_inter=d.get("intermediate_size", 11008) if first else 0)
    else:
        raise ValueError(f"{name}: model_type {t!r} is not in the zoo's families")
    if t.startswith("deepseek") and d.get("moec_attention", "mla") == "mla":
        rope = d.get("qk_rope_head_dim", 64)  # DeepseekV3Config's (and V2's) defaults
        f.update(q_lora_rank=d.get("q_lora_rank", 1536) or 0,
                 kv_lora_rank=d.get("kv_lora_rank", 512),
                 qk_nope_head_dim=d.get("qk_nope_head_dim", 128),
                 qk_rope_head_dim=rope, v_head_dim=d.get("v_head_dim", 128), head_dim=rope)
    f.update(aux_coef=d.get("moec_aux_loss_coef", f.get("aux_coef", 0.0)),
             z_coef=d.get("moec_z_loss_coef", 0.0),
             capacity_factor=d.get("moec_capacity_factor", 0.0),
             expert_bias=d.get("moec_expert_bias", f.get("expert_bias", False)),
             vocab_chars=d.get("moec_vocab_chars", ""), hf=d)
    return Config(**f)


def load(name: str, sets: Optional[Dict[str, object]] = None, batch: Optional[int] = None,
         seq: Optional[int] = None) -> Config:
    """The zoo config `name` (or a config.json path), with `sets` applied to
    its fields as moe-import --set does."""
    with open(config_path(name)) as f:
        d = json.load(f)
    d.update(sets or {})
    return from_hf(os.path.basename(name).removesuffix(".json"), d, batch, seq)


def parse_sets(items: List[str]) -> Dict[str, object]:
    """FIELD=VALUE strings (VALUE JSON, else a string), as moe-import --set."""
    out = {}
    for item in items:
        field, _, value = item.partition("=")
        try:
            out[field] = json.loads(value)
        except ValueError:
            out[field] = value
    return out


def names(cfg: Config, layer: int) -> dict:
    """Layer `layer`'s Hugging Face parameter names ({e}: the expert)."""
    p = f"model.layers.{layer}"
    n = {
        "ln1": f"{p}.input_layernorm.weight",
        "ln2": f"{p}.post_attention_layernorm.weight",
        "q": f"{p}.self_attn.q_proj.weight",
        "k": f"{p}.self_attn.k_proj.weight",
        "v": f"{p}.self_attn.v_proj.weight",
        "o": f"{p}.self_attn.o_proj.weight",
        "q_bias": f"{p}.self_attn.q_proj.bias",
        "k_bias": f"{p}.self_attn.k_proj.bias",
        "v_bias": f"{p}.self_attn.v_proj.bias",
        "q_norm": f"{p}.self_attn.q_norm.weight",
        "k_norm": f"{p}.self_attn.k_norm.weight",
    }
    if cfg.naming == "mixtral":
        m = f"{p}.block_sparse_moe"
        n.update(router=f"{m}.gate.weight", e_gate=f"{m}.experts.{{e}}.w1.weight",
                 e_up=f"{m}.experts.{{e}}.w3.weight", e_down=f"{m}.experts.{{e}}.w2.weight",
                 bias=f"{m}.gate.e_score_correction_bias")
    else:
        m = f"{p}.mlp"
        shared = f"{m}.shared_expert" if cfg.naming == "qwen2" else f"{m}.shared_experts"
        n.update(router=f"{m}.gate.weight", e_gate=f"{m}.experts.{{e}}.gate_proj.weight",
                 e_up=f"{m}.experts.{{e}}.up_proj.weight",
                 e_down=f"{m}.experts.{{e}}.down_proj.weight",
                 bias=f"{m}.gate.e_score_correction_bias",
                 d_gate=f"{m}.gate_proj.weight", d_up=f"{m}.up_proj.weight",
                 d_down=f"{m}.down_proj.weight",
                 s_gate=f"{shared}.gate_proj.weight", s_up=f"{shared}.up_proj.weight",
                 s_down=f"{shared}.down_proj.weight",
                 s_sigmoid=f"{m}.shared_expert_gate.weight")
    return n


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moe-import", required=True, help="the moe-import binary")
    parser.add_argument("--check", action="store_true", help="fail if a committed model is stale")
    args = parser.parse_args(argv)
    stale = []
    for name in COMMITTED:
        path = os.path.join(HERE, name + ".mlir")
        text = subprocess.run([args.moe_import, config_path(name)], check=True,
                              stdout=subprocess.PIPE, text=True).stdout
        if not args.check:
            with open(path, "w") as f:
                f.write(text)
            continue
        try:
            with open(path) as f:
                if f.read() == text:
                    continue
        except OSError:
            pass
        stale.append(path)
    if stale:
        print("zoo.py: stale models (run models/zoo.py --moe-import build/bin/moe-import): "
              + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
