//===- ModelSpec.h - An MoE model's architecture and builder ----*- C++ -*-===//
//
// The architecture facts that decide a decoder-only MoE model's math and its
// parameter names, independent of where they come from (a Hugging Face
// config.json through HFConfig.h, or a test), and buildModel, which writes
// the model as `func.func @forward(%tokens, %labels) -> (logits, loss)` in the
// moe dialect at logical shapes with the dialect's builders.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_IMPORT_MODELSPEC_H
#define MOE_IMPORT_MODELSPEC_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::moe::import {

/// Whose parameter names (and block layout) the model uses.
enum class Naming {
  Qwen3Moe,   // mlp.experts.{e}.gate_proj, q_norm / k_norm
  Qwen2Moe,   // mlp.shared_expert.* and mlp.shared_expert_gate
  Mixtral,    // block_sparse_moe.experts.{e}.w1 / w3 / w2
  DeepseekV3, // mlp.shared_experts.*, mlp.gate.e_score_correction_bias
  DeepseekV2, // as DeepseekV3, without the correction bias
};

struct ModelSpec {
  Naming naming = Naming::Qwen3Moe;
  int64_t vocab = 0, hidden = 0, layers = 0;
  // Attention: GQA with RoPE.
  int64_t heads = 0, kvHeads = 0, headDim = 0;
  double ropeTheta = 10000.0;
  // YaRN (moe.rope's yarn_* attributes): factor 1 is plain RoPE.
  double yarnFactor = 1.0, yarnLow = 0.0, yarnHigh = 0.0, yarnScale = 1.0;
  double eps = 1e-6;
  bool qkNorm = false;     // RMSNorm of each q and k head (Qwen3)
  bool qkNormFlat = false; // RMSNorm of the whole q and k projections (OLMoE)
  bool qkvBias = false;    // biases on the q, k and v projections (Qwen2)
  // DeepSeek's multi-head latent attention instead of GQA (kvLoraRank > 0):
  // q from q_proj or, with a qLoraRank, q_a_proj -> RMSNorm -> q_b_proj;
  // keys and values from the latent of kv_a_proj_with_mqa (RMSNorm, then
  // kv_b_proj), each head's key its qkNopeDim features and the qkRopeDim
  // rotary features all heads share; value heads of vHeadDim. headDim is
  // qkRopeDim (the rotary size, as transformers sets it).
  int64_t qLoraRank = 0, kvLoraRank = 0, qkNopeDim = 0, qkRopeDim = 0,
          vHeadDim = 0;
  double latentEps = 1e-6;     // the q_a / kv_a RMSNorms' epsilon
  bool ropeInterleave = false; // RoPE pairs (2i, 2i + 1) (moe.rope)
  double attentionScale = 0.0; // the softmax scale; 0: 1/sqrt(q head size)
  // Routed experts.
  int64_t experts = 0, topK = 0, moeInter = 0;
  bool sigmoidScores = false;
  bool normTopkProb = false;
  double routeScale = 1.0;
  bool expertBias = false; // selection-only correction bias (DeepSeek-V3)
  int64_t nGroup = 1, topkGroup = 1;
  int64_t groupTop =
      2; // a group's score: its 2 best scores summed, or its best
  double capacityFactor = 0.0; // 0: dropless
  // Shared experts: one SwiGLU FFN of this width beside the routed ones.
  int64_t sharedInter = 0;
  bool sharedGate = false; // scaled by sigmoid(x . w) (Qwen2-MoE)
  // Layers whose FFN is a dense SwiGLU of width denseInter (true) instead of
  // experts; empty means none.
  std::vector<bool> denseLayers;
  int64_t denseInter = 0;
  // Training losses beside the cross entropy (0: none).
  double auxLossCoef = 0.0, zLossCoef = 0.0;
  // Compiled shape.
  int64_t batch = 0, seq = 0;
  // Character-level models: token i is vocabChars[i] (moe.vocab_chars).
  std::string vocabChars;
  // The Hugging Face config.json the spec was read from (a JSON object, the
  // project's fields removed), kept as moe.hf_config; empty: none.
  std::string hfConfig;

  bool isMLA() const { return kvLoraRank > 0; }
  bool isDense(int64_t layer) const {
    return layer < static_cast<int64_t>(denseLayers.size()) &&
           denseLayers[layer];
  }
};

/// The model of `spec` as a verified module, or null after emitting a
/// diagnostic (a spec the dialect rejects).
OwningOpRef<ModuleOp> buildModel(MLIRContext &context, const ModelSpec &spec);

} // namespace mlir::moe::import

#endif // MOE_IMPORT_MODELSPEC_H
