//===- HFConfig.cpp - A ModelSpec from a Hugging Face config.json ---------===//
//
// One reader per model_type, each reading the fields of its transformers
// configuration class with that class's defaults (Qwen3MoeConfig,
// Qwen2MoeConfig, MixtralConfig, DeepseekV3Config, OlmoeConfig). A field's
// value the project does not implement is an error naming the field and the
// value.
//
//===----------------------------------------------------------------------===//

#include "moe/Import/HFConfig.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

// The compiler builds without exceptions: nlohmann::json is used only
// through calls that do not throw (parse without exceptions, object access).
#define JSON_NOEXCEPTION
#include <nlohmann/json.hpp>

#include <cmath>
#include <optional>

namespace mlir::moe::import {
namespace {

std::string show(const llvm::json::Value &value) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << value;
  return text;
}

/// Reads typed fields of one config object; the first problem is kept and
/// later reads return their defaults.
class Reader {
public:
  explicit Reader(llvm::json::Object config) : config(std::move(config)) {}

  bool has(llvm::StringRef key) const {
    const llvm::json::Value *v = config.get(key);
    return v && v->kind() != llvm::json::Value::Null;
  }
  const llvm::json::Value *get(llvm::StringRef key) const {
    return has(key) ? config.get(key) : nullptr;
  }

  int64_t integer(llvm::StringRef key, std::optional<int64_t> fallback) {
    const llvm::json::Value *v = get(key);
    if (!v) {
      if (!fallback)
        fail("field '" + key.str() + "' is missing");
      return fallback.value_or(0);
    }
    std::optional<int64_t> n = v->getAsInteger();
    if (!n) {
      fail("field '" + key.str() + "' is " + show(*v) +
           ", expected an "
           "integer");
      return 0;
    }
    return *n;
  }
  int64_t positive(llvm::StringRef key, std::optional<int64_t> fallback) {
    int64_t n = integer(key, fallback);
    if (n <= 0)
      fail("field '" + key.str() + "' is " + std::to_string(n) +
           ", expected a positive integer");
    return n;
  }
  double number(llvm::StringRef key, double fallback) {
    const llvm::json::Value *v = get(key);
    if (!v)
      return fallback;
    std::optional<double> x = v->getAsNumber();
    if (!x || !std::isfinite(*x)) {
      fail("field '" + key.str() + "' is " + show(*v) + ", expected a number");
      return fallback;
    }
    return *x;
  }
  bool boolean(llvm::StringRef key, bool fallback) {
    const llvm::json::Value *v = get(key);
    if (!v)
      return fallback;
    std::optional<bool> x = v->getAsBoolean();
    if (!x) {
      fail("field '" + key.str() + "' is " + show(*v) +
           ", expected true or "
           "false");
      return fallback;
    }
    return *x;
  }
  std::string string(llvm::StringRef key, llvm::StringRef fallback) {
    const llvm::json::Value *v = get(key);
    if (!v)
      return fallback.str();
    std::optional<llvm::StringRef> x = v->getAsString();
    if (!x) {
      fail("field '" + key.str() + "' is " + show(*v) + ", expected a string");
      return fallback.str();
    }
    return x->str();
  }
  std::vector<int64_t> integers(llvm::StringRef key) {
    std::vector<int64_t> out;
    const llvm::json::Value *v = get(key);
    if (!v)
      return out;
    const llvm::json::Array *array = v->getAsArray();
    for (size_t i = 0; array && i < array->size(); ++i) {
      std::optional<int64_t> n = (*array)[i].getAsInteger();
      if (!n) {
        array = nullptr;
        break;
      }
      out.push_back(*n);
    }
    if (!array)
      fail("field '" + key.str() + "' is " + show(*v) +
           ", expected a list "
           "of integers");
    return out;
  }

  /// `key` must be absent, null, or `expected` (a fact the project's ops fix).
  template <typename T>
  void require(llvm::StringRef key, T expected, llvm::StringRef why) {
    const llvm::json::Value *v = get(key);
    if (v && *v != llvm::json::Value(expected))
      unsupported(key, why);
  }
  void unsupported(llvm::StringRef key, llvm::StringRef why) {
    fail("field '" + key.str() + "' is " + show(*config.get(key)) + ": " +
         why.str());
  }
  void fail(const std::string &message) {
    if (!error)
      error = message;
  }

  llvm::json::Object config;
  std::optional<std::string> error;
};

/// YaRN's frequency ramp and cos/sin scale from a rope_scaling (or 5.x
/// rope_parameters) object, as transformers' _compute_yarn_parameters
/// derives them; any other scaling is refused.
void readYarn(Reader &r, ModelSpec &s, const char *key,
              const llvm::json::Object &scaling) {
  llvm::StringRef type = scaling.getString("rope_type")
                             .value_or(scaling.getString("type").value_or(""));
  if (type != "yarn") {
    r.unsupported(key, "of scaled RoPE only YaRN (rope_type \"yarn\") is "
                       "supported");
    return;
  }
  if (scaling.getNumber("partial_rotary_factor").value_or(1.0) != 1.0) {
    r.unsupported(key, "partial rotary embeddings are not supported");
    return;
  }
  int64_t maxPositions = r.integer("max_position_embeddings", 0);
  double original = scaling.getNumber("original_max_position_embeddings")
                        .value_or(double(maxPositions));
  std::optional<double> factor = scaling.getNumber("factor");
  if (!factor && original > 0)
    factor = maxPositions / original;
  if (!factor || *factor < 1.0 || !(original > 0)) {
    r.unsupported(key, "YaRN needs a factor >= 1 and "
                       "original_max_position_embeddings");
    return;
  }
  auto mscale = [](double scale, double m) {
    return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
  };
  double attention = 0.0;
  if (std::optional<double> given = scaling.getNumber("attention_factor"))
    attention = *given;
  else if (scaling.getNumber("mscale").value_or(0.0) != 0.0 &&
           scaling.getNumber("mscale_all_dim").value_or(0.0) != 0.0)
    attention = mscale(*factor, *scaling.getNumber("mscale")) /
                mscale(*factor, *scaling.getNumber("mscale_all_dim"));
  else
    attention = mscale(*factor, 1.0);
  double betaFast = scaling.getNumber("beta_fast").value_or(32.0);
  double betaSlow = scaling.getNumber("beta_slow").value_or(1.0);
  if (!betaFast)
    betaFast = 32.0;
  if (!betaSlow)
    betaSlow = 1.0;
  bool truncate = scaling.getBoolean("truncate").value_or(true);
  // The pair index at which a frequency turns `rotations` times over the
  // original context.
  double dim = double(s.headDim);
  auto correctionDim = [&](double rotations) {
    return dim * std::log(original / (rotations * 2 * M_PI)) /
           (2 * std::log(s.ropeTheta));
  };
  double low = correctionDim(betaFast), high = correctionDim(betaSlow);
  if (truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  s.yarnFactor = *factor;
  s.yarnLow = std::max(low, 0.0);
  s.yarnHigh = std::min(high, dim - 1);
  s.yarnScale = attention;
  if (!(s.yarnHigh >= s.yarnLow) || !(attention > 0))
    r.unsupported(key, "gives an empty YaRN ramp or a non-positive scale");
}

/// The fields every supported family shares: sizes, norms, RoPE, the head.
void readDecoder(Reader &r, ModelSpec &s, double epsDefault,
                 double thetaDefault,
                 std::optional<int64_t> ropeDim = std::nullopt) {
  s.vocab = r.positive("vocab_size", std::nullopt);
  s.hidden = r.positive("hidden_size", std::nullopt);
  s.layers = r.positive("num_hidden_layers", std::nullopt);
  s.heads = r.positive("num_attention_heads", std::nullopt);
  s.kvHeads = r.positive("num_key_value_heads", s.heads);
  if (s.heads % std::max<int64_t>(s.kvHeads, 1) != 0)
    r.fail("num_attention_heads (" + std::to_string(s.heads) +
           ") is not a multiple of num_key_value_heads (" +
           std::to_string(s.kvHeads) + ")");
  // The rotary head size: head_dim, or what the family fixes it to.
  s.headDim = ropeDim ? *ropeDim
                      : r.positive("head_dim",
                                   s.hidden / std::max<int64_t>(s.heads, 1));
  s.eps = r.number("rms_norm_eps", epsDefault);
  if (s.eps <= 0)
    r.fail("field 'rms_norm_eps' must be positive");

  // RoPE: transformers 4.x writes rope_theta and rope_scaling, 5.x may write
  // rope_parameters {rope_type, rope_theta, ...}; plain RoPE and YaRN exist.
  s.ropeTheta = r.number("rope_theta", thetaDefault);
  const char *scalingKey = nullptr;
  const llvm::json::Object *scaling = nullptr;
  if (const llvm::json::Value *p = r.get("rope_parameters")) {
    const llvm::json::Object *params = p->getAsObject();
    if (!params)
      r.unsupported("rope_parameters", "expected an object");
    else if (std::optional<double> theta = params->getNumber("rope_theta"))
      s.ropeTheta = *theta;
    if (params &&
        params->getString("rope_type").value_or("default") != "default") {
      scalingKey = "rope_parameters";
      scaling = params;
    }
  }
  if (const llvm::json::Value *p = r.get("rope_scaling")) {
    scalingKey = "rope_scaling";
    scaling = p->getAsObject();
    if (!scaling)
      r.unsupported("rope_scaling", "expected an object");
  }
  if (s.ropeTheta <= 0)
    r.fail("the RoPE theta must be positive");
  if (scaling)
    readYarn(r, s, scalingKey, *scaling);

  r.require("hidden_act", "silu", "the FFNs are SwiGLU (silu) only");
  r.require("tie_word_embeddings", false,
            "tied input and output embeddings are not supported");
  if (r.number("attention_dropout", 0.0) != 0.0)
    r.unsupported("attention_dropout", "dropout is not supported");
}

/// The sparse layout of Qwen2-MoE and Qwen3-MoE: layer i has experts unless
/// it is in mlp_only_layers or (i + 1) is not a multiple of
/// decoder_sparse_step.
void readQwenSparseLayers(Reader &r, ModelSpec &s) {
  int64_t step = r.positive("decoder_sparse_step", 1);
  std::vector<int64_t> mlpOnly = r.integers("mlp_only_layers");
  s.denseLayers.assign(s.layers, false);
  bool anyDense = false;
  for (int64_t i = 0; i < s.layers; ++i) {
    bool dense = (i + 1) % step != 0 || llvm::is_contained(mlpOnly, i);
    s.denseLayers[i] = dense;
    anyDense |= dense;
  }
  for (int64_t i : mlpOnly)
    if (i < 0 || i >= s.layers)
      r.fail("field 'mlp_only_layers' names layer " + std::to_string(i) +
             " of " + std::to_string(s.layers));
  if (anyDense)
    s.denseInter = r.positive("intermediate_size", std::nullopt);
}

/// Hugging Face adds router_aux_loss_coef * load-balancing loss to the loss
/// only when output_router_logits is set.
double hfAuxLossCoef(Reader &r, double fallback = 0.001) {
  double coef = r.number("router_aux_loss_coef", fallback);
  return r.boolean("output_router_logits", false) ? coef : 0.0;
}

void readQwen3Moe(Reader &r, ModelSpec &s) {
  s.naming = Naming::Qwen3Moe;
  readDecoder(r, s, 1e-6, 10000.0);
  s.qkNorm = true;
  r.require("attention_bias", false,
            "biased attention projections are not supported for Qwen3-MoE");
  r.require("use_sliding_window", false,
            "sliding-window attention is not supported");
  s.experts = r.positive("num_experts", 128);
  s.topK = r.positive("num_experts_per_tok", 8);
  s.moeInter = r.positive("moe_intermediate_size", 768);
  s.normTopkProb = r.boolean("norm_topk_prob", false);
  readQwenSparseLayers(r, s);
  s.auxLossCoef = hfAuxLossCoef(r);
}

void readQwen2Moe(Reader &r, ModelSpec &s) {
  s.naming = Naming::Qwen2Moe;
  readDecoder(r, s, 1e-6, 10000.0);
  s.qkvBias = true; // Qwen2-MoE's q, k and v projections always have biases
  r.require("use_sliding_window", false,
            "sliding-window attention is not supported");
  r.require("qkv_bias", true, "Qwen2-MoE's q/k/v biases are always on here");
  s.experts = r.positive("num_experts", 60);
  s.topK = r.positive("num_experts_per_tok", 4);
  s.moeInter = r.positive("moe_intermediate_size", 1408);
  s.normTopkProb = r.boolean("norm_topk_prob", false);
  s.sharedInter = r.integer("shared_expert_intermediate_size", 5632);
  if (s.sharedInter < 0)
    r.unsupported("shared_expert_intermediate_size", "expected >= 0");
  s.sharedGate = s.sharedInter > 0;
  readQwenSparseLayers(r, s);
  s.auxLossCoef = hfAuxLossCoef(r);
}

void readOlmoe(Reader &r, ModelSpec &s) {
  s.naming = Naming::Qwen3Moe; // the same parameter names
  readDecoder(r, s, 1e-5, 10000.0);
  // OLMoE normalises the whole q and k projections (q_norm over
  // hidden_size), which needs head_dim * heads == hidden_size.
  s.qkNormFlat = true;
  if (s.headDim * s.heads != s.hidden)
    r.fail("OLMoE needs head_dim * num_attention_heads == hidden_size (its "
           "q_norm spans hidden_size), got " +
           std::to_string(s.headDim) + " * " + std::to_string(s.heads));
  r.require("attention_bias", false,
            "biased attention projections are not supported for OLMoE");
  if (r.has("clip_qkv"))
    r.unsupported("clip_qkv", "clipping q, k and v is not supported");
  s.experts = r.positive("num_experts", 64);
  s.topK = r.positive("num_experts_per_tok", 8);
  s.moeInter = r.positive("intermediate_size", 1024);
  s.normTopkProb = r.boolean("norm_topk_prob", false);
  s.auxLossCoef = hfAuxLossCoef(r, 0.01);
}

void readMixtral(Reader &r, ModelSpec &s, int64_t seq) {
  s.naming = Naming::Mixtral;
  readDecoder(r, s, 1e-5, 1e6);
  s.experts = r.positive("num_local_experts", 8);
  s.topK = r.positive("num_experts_per_tok", 2);
  s.moeInter = r.positive("intermediate_size", 14336);
  s.normTopkProb = true; // softmax over the top-k logits
  if (r.has("sliding_window") &&
      r.integer("sliding_window", std::nullopt) < seq)
    r.unsupported("sliding_window",
                  "sliding-window attention shorter than the sequence (" +
                      std::to_string(seq) + ") is not supported");
  if (r.number("router_jitter_noise", 0.0) != 0.0)
    r.unsupported("router_jitter_noise", "router noise is not supported");
  s.auxLossCoef = hfAuxLossCoef(r);
}

/// DeepSeek's multi-head latent attention, with DeepseekV3Config's (and
/// V2's, the same) defaults: q_lora_rank null means a plain q_proj; the
/// rotary part of each head is qk_rope_head_dim wide (transformers'
/// head_dim, which YaRN's ramp uses); the softmax scale is 1/sqrt(qk head
/// size), times mscale^2 from YaRN's mscale_all_dim. V3 rotates interleaved
/// pairs unless rope_interleave is false; V2 always does (as complex
/// numbers, which leaves the rotated pairs interleaved: the same attention).
void readLatentAttention(Reader &r, ModelSpec &s, bool v2) {
  const llvm::json::Value *qLora = r.config.get("q_lora_rank");
  s.qLoraRank = qLora && qLora->kind() == llvm::json::Value::Null
                    ? 0
                    : r.positive("q_lora_rank", 1536);
  s.kvLoraRank = r.positive("kv_lora_rank", 512);
  s.qkNopeDim = r.positive("qk_nope_head_dim", 128);
  s.qkRopeDim = r.positive("qk_rope_head_dim", 64);
  s.vHeadDim = r.positive("v_head_dim", 128);
  s.ropeInterleave = v2 || r.boolean("rope_interleave", true);
  if (s.qkRopeDim % 2 != 0)
    r.fail("field 'qk_rope_head_dim' is " + std::to_string(s.qkRopeDim) +
           ", expected an even number");
  readDecoder(r, s, 1e-6, 10000.0, /*ropeDim=*/s.qkRopeDim);
  if (s.kvHeads != s.heads)
    r.unsupported("num_key_value_heads",
                  "MLA has one key/value head per query head (" +
                      std::to_string(s.heads) + ")");
  double scale = 1.0 / std::sqrt(double(s.qkNopeDim + s.qkRopeDim));
  if (s.yarnFactor > 1.0) {
    const llvm::json::Object *scaling = nullptr;
    for (const char *key : {"rope_scaling", "rope_parameters"})
      if (const llvm::json::Value *v = r.get(key))
        scaling = scaling ? scaling : v->getAsObject();
    double all =
        scaling ? scaling->getNumber("mscale_all_dim").value_or(0.0) : 0.0;
    if (all != 0.0) {
      double m = 0.1 * all * std::log(s.yarnFactor) + 1.0;
      scale *= m * m;
    }
  }
  s.attentionScale = scale;
}

/// DeepSeek's MLA, or GQA attention on request (moec_attention "gqa").
void readDeepseekAttention(Reader &r, ModelSpec &s, bool v2) {
  std::string attention = r.string("moec_attention", "mla");
  if (attention == "mla")
    readLatentAttention(r, s, v2);
  else if (attention == "gqa")
    readDecoder(r, s, 1e-6, 10000.0);
  else
    r.unsupported("moec_attention", "expected \"mla\" or \"gqa\"");
  r.require("attention_bias", false,
            "biased attention projections are not supported");
}

/// The layers of both DeepSeek versions: the first first_k_dense_replace
/// dense, the others routed experts and shared experts.
void readDeepseekLayers(Reader &r, ModelSpec &s, int64_t sharedDefault,
                        int64_t firstDenseDefault) {
  s.sharedInter = r.integer("n_shared_experts", sharedDefault) * s.moeInter;
  if (s.sharedInter < 0)
    r.unsupported("n_shared_experts", "expected >= 0");
  int64_t firstDense = r.integer("first_k_dense_replace", firstDenseDefault);
  if (firstDense < 0 || firstDense > s.layers)
    r.unsupported("first_k_dense_replace", "expected 0 to num_hidden_layers");
  r.require("moe_layer_freq", 1,
            "experts in every layer after the first "
            "dense ones (moe_layer_freq 1) only");
  s.denseLayers.assign(s.layers, false);
  for (int64_t i = 0; i < std::min(firstDense, s.layers); ++i)
    s.denseLayers[i] = true;
  if (firstDense > 0)
    s.denseInter = r.positive("intermediate_size", 18432);
}

/// DeepseekV2Config: softmax scores, top-k "greedy" or
/// "group_limited_greedy" (groups scored by their best expert), weights
/// scaled by routed_scaling_factor and never renormalised (transformers'
/// DeepseekV2 router), no correction bias.
void readDeepseekV2(Reader &r, ModelSpec &s) {
  s.naming = Naming::DeepseekV2;
  readDeepseekAttention(r, s, /*v2=*/true);
  r.require("mlp_bias", false, "biased FFN projections are not supported");
  s.experts = r.positive("n_routed_experts", 64);
  s.topK = r.positive("num_experts_per_tok", std::nullopt);
  s.moeInter = r.positive("moe_intermediate_size", 1407);
  std::string method = r.string("topk_method", "greedy");
  if (method == "group_limited_greedy") {
    s.nGroup = r.positive("n_group", std::nullopt);
    s.topkGroup = r.positive("topk_group", std::nullopt);
    s.groupTop = 1;
  } else if (method != "greedy") {
    r.unsupported("topk_method",
                  "expected \"greedy\" or \"group_limited_greedy\"");
  }
  r.require("norm_topk_prob", false,
            "transformers' DeepseekV2 never renormalises the top-k weights");
  s.routeScale = r.number("routed_scaling_factor", 1.0);
  readDeepseekLayers(r, s, /*sharedDefault=*/2, /*firstDenseDefault=*/0);
}

void readDeepseekV3(Reader &r, ModelSpec &s) {
  s.naming = Naming::DeepseekV3;
  readDeepseekAttention(r, s, /*v2=*/false);
  s.experts = r.positive("n_routed_experts", 256);
  s.topK = r.positive("num_experts_per_tok", 8);
  s.moeInter = r.positive("moe_intermediate_size", 2048);
  std::string scoring = r.string("scoring_func", "sigmoid");
  if (scoring != "sigmoid" && scoring != "softmax")
    r.unsupported("scoring_func", "expected \"sigmoid\" or \"softmax\"");
  s.sigmoidScores = scoring == "sigmoid";
  std::string method = r.string("topk_method", "noaux_tc");
  if (method == "noaux_tc") {
    // Selection by score + e_score_correction_bias, first within the best
    // topk_group of n_group groups (each group scored by its top-2 sum).
    s.expertBias = true;
    s.nGroup = r.positive("n_group", 8);
    s.topkGroup = r.positive("topk_group", 4);
  } else if (method != "greedy") {
    r.unsupported("topk_method", "expected \"noaux_tc\" or \"greedy\"");
  }
  s.normTopkProb = r.boolean("norm_topk_prob", true);
  s.routeScale = r.number("routed_scaling_factor", 2.5);
  readDeepseekLayers(r, s, /*sharedDefault=*/1, /*firstDenseDefault=*/3);
}

/// The project's moec_* fields.
void readProjectFields(Reader &r, ModelSpec &s, const ImportOptions &options) {
  static const char *const known[] = {
      "moec_batch",         "moec_seq",         "moec_vocab_chars",
      "moec_aux_loss_coef", "moec_z_loss_coef", "moec_capacity_factor",
      "moec_attention",     "moec_expert_bias"};
  for (const auto &field : r.config)
    if (llvm::StringRef(field.first).starts_with("moec_") &&
        !llvm::is_contained(known, llvm::StringRef(field.first)))
      r.fail("field '" + field.first.str() + "' is not a project field (" +
             llvm::join(llvm::ArrayRef(known), ", ") + ")");
  s.batch = options.batch ? options.batch : r.integer("moec_batch", 0);
  s.seq = options.seq ? options.seq : r.integer("moec_seq", 0);
  if (s.batch <= 0 || s.seq <= 0)
    r.fail("no compiled shape: give --batch and --seq (or moec_batch and "
           "moec_seq in the config), both positive");
  s.vocabChars = r.string("moec_vocab_chars", "");
  if (!s.vocabChars.empty() &&
      static_cast<int64_t>(s.vocabChars.size()) != s.vocab)
    r.fail("moec_vocab_chars has " + std::to_string(s.vocabChars.size()) +
           " characters for a vocab_size of " + std::to_string(s.vocab));
  s.auxLossCoef = r.number("moec_aux_loss_coef", s.auxLossCoef);
  s.zLossCoef = r.number("moec_z_loss_coef", 0.0);
  s.capacityFactor = r.number("moec_capacity_factor", 0.0);
  // Aux-loss-free balancing (a selection-only bias per expert, updated by
  // train --bias-update-rate) on any family's router.
  s.expertBias = r.boolean("moec_expert_bias", s.expertBias);
  if (s.auxLossCoef < 0 || s.zLossCoef < 0 || s.capacityFactor < 0)
    r.fail("moec_aux_loss_coef, moec_z_loss_coef and moec_capacity_factor must "
           "not be negative");
}

} // namespace

llvm::Expected<ModelSpec> specFromHFConfig(const std::string &configText,
                                           const ImportOptions &options) {
  // nlohmann::json keeps what llvm::json does not: 0.0 stays a float, which
  // transformers' typed configs insist on. The config with the overrides
  // applied and the project's fields removed becomes spec.hfConfig; the
  // fields are read through llvm::json.
  if (llvm::Expected<llvm::json::Value> valid = llvm::json::parse(configText);
      !valid)
    return llvm::createStringError("not JSON: " +
                                   llvm::toString(valid.takeError()));
  nlohmann::ordered_json parsed =
      nlohmann::ordered_json::parse(configText, nullptr, false);
  if (!parsed.is_object())
    return llvm::createStringError("expected a JSON object");
  for (const auto &[key, text] : options.overrides) {
    nlohmann::ordered_json value =
        nlohmann::ordered_json::parse(text, nullptr, false);
    parsed[key] = value.is_discarded() ? nlohmann::ordered_json(text) : value;
  }
  ModelSpec spec;
  nlohmann::ordered_json hf = nlohmann::ordered_json::object();
  for (auto it = parsed.begin(); it != parsed.end(); ++it)
    if (!llvm::StringRef(it.key()).starts_with("moec_"))
      hf[it.key()] = it.value();
  spec.hfConfig = hf.dump();
  llvm::Expected<llvm::json::Value> value = llvm::json::parse(parsed.dump());
  if (!value)
    return value.takeError();
  llvm::json::Object config = std::move(*value->getAsObject());
  Reader r(std::move(config));
  std::string type = r.string("model_type", "");
  // The shape first: Mixtral's sliding window is judged against it.
  int64_t seq = options.seq ? options.seq : r.integer("moec_seq", 0);
  if (type == "qwen3_moe")
    readQwen3Moe(r, spec);
  else if (type == "qwen2_moe")
    readQwen2Moe(r, spec);
  else if (type == "mixtral")
    readMixtral(r, spec, seq);
  else if (type == "deepseek_v3")
    readDeepseekV3(r, spec);
  else if (type == "deepseek_v2")
    readDeepseekV2(r, spec);
  else if (type == "olmoe")
    readOlmoe(r, spec);
  else if (type.empty())
    r.fail("field 'model_type' is missing");
  else
    r.fail("model_type '" + type +
           "' is not supported (supported: "
           "qwen3_moe, qwen2_moe, mixtral, deepseek_v3, deepseek_v2, olmoe)");
  if (!r.error) {
    if (spec.topK > spec.experts)
      r.fail("num_experts_per_tok (" + std::to_string(spec.topK) +
             ") is more than the experts (" + std::to_string(spec.experts) +
             ")");
    if (spec.nGroup > 1 &&
        (spec.experts % spec.nGroup != 0 || spec.topkGroup > spec.nGroup))
      r.fail("n_group (" + std::to_string(spec.nGroup) + ") must divide the " +
             std::to_string(spec.experts) +
             " experts and be at least "
             "topk_group (" +
             std::to_string(spec.topkGroup) + ")");
    readProjectFields(r, spec, options);
  }
  if (r.error)
    return llvm::createStringError(*r.error);
  return spec;
}

llvm::Expected<ModelSpec> readHFConfig(const std::string &path,
                                       const ImportOptions &options) {
  std::string file = path;
  if (llvm::sys::fs::is_directory(path))
    file = (llvm::Twine(path) + "/config.json").str();
  auto fail = [&](const llvm::Twine &what) {
    return llvm::createStringError(file + ": " + what);
  };
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(file);
  if (!buffer)
    return fail("cannot read: " + buffer.getError().message());
  llvm::Expected<ModelSpec> spec =
      specFromHFConfig((*buffer)->getBuffer().str(), options);
  if (!spec)
    return fail(llvm::toString(spec.takeError()));
  return spec;
}

} // namespace mlir::moe::import
