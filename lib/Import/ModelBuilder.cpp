//===- ModelBuilder.cpp - An MoE model in the moe dialect from its spec ---===//
//
// Writes the decoder of a ModelSpec with the dialect's builders: embedding,
// then per layer RMSNorm -> GQA attention with RoPE (q/k norms, qkv biases)
// or DeepSeek's latent attention (MLA) -> residual -> RMSNorm -> a dense SwiGLU
// or routed experts (with shared experts and router losses) -> residual; final
// RMSNorm, LM head, cross entropy plus the router losses. Parameters carry
// their Hugging Face names.
//
//===----------------------------------------------------------------------===//

#include "moe/Import/ModelSpec.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"

namespace mlir::moe::import {
namespace {

/// The Hugging Face names of one layer's parameters.
struct LayerNames {
  std::string prefix, mlp;

  LayerNames(const ModelSpec &spec, int64_t layer)
      : prefix("model.layers." + std::to_string(layer)) {
    mlp = prefix +
          (spec.naming == Naming::Mixtral ? ".block_sparse_moe" : ".mlp");
  }
  std::string attn(const std::string &what) const {
    return prefix + ".self_attn." + what;
  }
};

class Builder {
public:
  Builder(MLIRContext &context, const ModelSpec &spec)
      : spec(spec), b(&context), loc(b.getUnknownLoc()) {}

  OwningOpRef<ModuleOp> build();

private:
  RankedTensorType f32(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, b.getF32Type());
  }
  RankedTensorType act() { return f32({spec.batch, spec.seq, spec.hidden}); }
  Value param(const std::string &name, ArrayRef<int64_t> shape) {
    return ParamOp::create(b, loc, f32(shape), b.getStringAttr(name));
  }
  Value rmsNorm(Value x, const std::string &weightName) {
    return rmsNorm(x, weightName, spec.eps);
  }
  Value rmsNorm(Value x, const std::string &weightName, double eps) {
    int64_t width = cast<RankedTensorType>(x.getType()).getShape().back();
    Value w = param(weightName, {width});
    return RMSNormOp::create(b, loc, x.getType(), x, w, b.getF64FloatAttr(eps));
  }
  /// [B, S, count * dim] as [B, S, count, dim].
  Value toHeads(Value x, int64_t count, int64_t dim) {
    return tensor::ExpandShapeOp::create(
        b, loc, f32({spec.batch, spec.seq, count, dim}), x,
        ArrayRef<ReassociationIndices>{{0}, {1}, {2, 3}});
  }
  /// `x` cut after `width` features of its last dimension.
  std::pair<Value, Value> split(Value x, int64_t width) {
    auto type = cast<RankedTensorType>(x.getType());
    SmallVector<int64_t> lhs(type.getShape()), rhs(type.getShape());
    lhs.back() = width;
    rhs.back() -= width;
    auto op = SplitOp::create(b, loc, f32(lhs), f32(rhs), x);
    return {op.getLhs(), op.getRhs()};
  }
  Value rope(Value x) {
    return RopeOp::create(
        b, loc, x.getType(), x, Value(), b.getF64FloatAttr(spec.ropeTheta),
        b.getF64FloatAttr(spec.yarnFactor), b.getF64FloatAttr(spec.yarnLow),
        b.getF64FloatAttr(spec.yarnHigh), b.getF64FloatAttr(spec.yarnScale),
        spec.ropeInterleave ? b.getUnitAttr() : UnitAttr());
  }
  /// Causal attention, then the heads flattened back for o_proj.
  Value attend(const LayerNames &n, Value q, Value k, Value v) {
    auto qType = cast<RankedTensorType>(q.getType());
    SmallVector<int64_t> shape(qType.getShape());
    shape.back() = cast<RankedTensorType>(v.getType()).getShape().back();
    FloatAttr scale = spec.attentionScale
                          ? b.getF64FloatAttr(spec.attentionScale)
                          : FloatAttr();
    Value att = AttentionOp::create(b, loc, f32(shape), q, k, v,
                                    b.getUnitAttr(), scale);
    Value flat = tensor::CollapseShapeOp::create(
        b, loc, att, ArrayRef<ReassociationIndices>{{0}, {1}, {2, 3}});
    return linear(flat, n.attn("o_proj.weight"), spec.hidden);
  }
  Value linear(Value x, const std::string &weightName, int64_t out,
               const std::string &biasName = "") {
    auto in = cast<RankedTensorType>(x.getType());
    int64_t width = in.getShape().back();
    Value w = param(weightName, {out, width});
    Value bias = biasName.empty() ? Value() : param(biasName, {out});
    SmallVector<int64_t> shape(in.getShape());
    shape.back() = out;
    return LinearOp::create(b, loc, f32(shape), x, w, bias);
  }
  /// A SwiGLU FFN's gate_proj, up_proj and down_proj under `prefix`.
  void swigluWeights(const std::string &prefix, int64_t inter,
                     Value (&weights)[3]);
  Value attention(const LayerNames &n, Value x);
  Value latentAttention(const LayerNames &n, Value x);
  Value ffn(int64_t layer, const LayerNames &n, Value x,
            SmallVectorImpl<Value> &losses);

  const ModelSpec &spec;
  OpBuilder b;
  Location loc;
};

Value Builder::attention(const LayerNames &n, Value x) {
  if (spec.isMLA())
    return latentAttention(n, x);
  Value heads[3];
  const char *kinds[3] = {"q", "k", "v"};
  for (int kind = 0; kind < 3; ++kind) {
    int64_t count = kind == 0 ? spec.heads : spec.kvHeads;
    std::string proj = n.attn(std::string(kinds[kind]) + "_proj");
    Value flat = linear(x, proj + ".weight", count * spec.headDim,
                        spec.qkvBias ? proj + ".bias" : "");
    if (spec.qkNormFlat && kind != 2)
      flat = rmsNorm(flat, n.attn(std::string(kinds[kind]) + "_norm.weight"));
    Value split = toHeads(flat, count, spec.headDim);
    if (kind != 2) {
      if (spec.qkNorm)
        split =
            rmsNorm(split, n.attn(std::string(kinds[kind]) + "_norm.weight"));
      split = rope(split);
    }
    heads[kind] = split;
  }
  return attend(n, heads[0], heads[1], heads[2]);
}

Value Builder::latentAttention(const LayerNames &n, Value x) {
  const int64_t H = spec.heads, nope = spec.qkNopeDim, rot = spec.qkRopeDim;
  // Queries: each head's non-rotary features, then its rotated ones.
  Value q;
  if (spec.qLoraRank) {
    q = linear(x, n.attn("q_a_proj.weight"), spec.qLoraRank);
    q = rmsNorm(q, n.attn("q_a_layernorm.weight"), spec.latentEps);
    q = linear(q, n.attn("q_b_proj.weight"), H * (nope + rot));
  } else {
    q = linear(x, n.attn("q_proj.weight"), H * (nope + rot));
  }
  auto [qPass, qRot] = split(toHeads(q, H, nope + rot), nope);
  Value query = ConcatOp::create(
      b, loc, f32({spec.batch, spec.seq, H, nope + rot}), qPass, rope(qRot));
  // Keys and values from the compressed latent; the rotary key is one head
  // that every head's key shares.
  Value compressed =
      linear(x, n.attn("kv_a_proj_with_mqa.weight"), spec.kvLoraRank + rot);
  auto [latent, kRot] = split(compressed, spec.kvLoraRank);
  latent = rmsNorm(latent, n.attn("kv_a_layernorm.weight"), spec.latentEps);
  Value kv =
      linear(latent, n.attn("kv_b_proj.weight"), H * (nope + spec.vHeadDim));
  auto [kPass, value] = split(toHeads(kv, H, nope + spec.vHeadDim), nope);
  Value key =
      ConcatOp::create(b, loc, f32({spec.batch, spec.seq, H, nope + rot}),
                       kPass, rope(toHeads(kRot, 1, rot)));
  return attend(n, query, key, value);
}

void Builder::swigluWeights(const std::string &prefix, int64_t inter,
                            Value (&weights)[3]) {
  weights[0] = param(prefix + "gate_proj.weight", {inter, spec.hidden});
  weights[1] = param(prefix + "up_proj.weight", {inter, spec.hidden});
  weights[2] = param(prefix + "down_proj.weight", {spec.hidden, inter});
}

Value Builder::ffn(int64_t layer, const LayerNames &n, Value x,
                   SmallVectorImpl<Value> &losses) {
  const int64_t B = spec.batch, S = spec.seq, H = spec.hidden;
  if (spec.isDense(layer)) {
    Value w[3];
    swigluWeights(n.mlp + ".", spec.denseInter, w);
    return MLPOp::create(b, loc, act(), x, w[0], w[1], w[2]);
  }

  const int64_t E = spec.experts, K = spec.topK, F = spec.moeInter;
  Value gate = param(n.mlp + ".gate.weight", {E, H});
  Value bias = spec.expertBias
                   ? param(n.mlp + ".gate.e_score_correction_bias", {E})
                   : Value();
  auto scoring = ScoreFuncAttr::get(b.getContext(), spec.sigmoidScores
                                                        ? ScoreFunc::sigmoid
                                                        : ScoreFunc::softmax);
  auto router = RouterOp::create(
      b, loc, f32({B, S, K}), RankedTensorType::get({B, S, K}, b.getI32Type()),
      f32({B, S, E}), x, gate, bias, scoring, b.getI64IntegerAttr(K),
      spec.normTopkProb ? b.getUnitAttr() : UnitAttr(),
      b.getF64FloatAttr(spec.routeScale), b.getI64IntegerAttr(spec.nGroup),
      b.getI64IntegerAttr(spec.topkGroup), b.getI64IntegerAttr(spec.groupTop));

  // Routed experts, stacked [E, F, H] / [E, H, F]; each expert's tensors
  // keep their Hugging Face names with {e} for the expert.
  std::string expert = n.mlp + ".experts.{e}.";
  bool mixtral = spec.naming == Naming::Mixtral;
  Value eg =
      param(expert + (mixtral ? "w1" : "gate_proj") + ".weight", {E, F, H});
  Value eu =
      param(expert + (mixtral ? "w3" : "up_proj") + ".weight", {E, F, H});
  Value ed =
      param(expert + (mixtral ? "w2" : "down_proj") + ".weight", {E, H, F});
  Value out = ExpertsOp::create(
      b, loc, act(), x, router.getWeights(), router.getIndices(), eg, eu, ed,
      spec.capacityFactor ? b.getF64FloatAttr(spec.capacityFactor)
                          : FloatAttr());

  if (spec.sharedInter) {
    Value w[3];
    swigluWeights(n.mlp + (spec.naming == Naming::Qwen2Moe
                               ? ".shared_expert."
                               : ".shared_experts."),
                  spec.sharedInter, w);
    Value sigmoidGate =
        spec.sharedGate ? param(n.mlp + ".shared_expert_gate.weight", {1, H})
                        : Value();
    Value shared = SharedExpertsOp::create(b, loc, act(), x, w[0], w[1], w[2],
                                           sigmoidGate);
    out = AddOp::create(b, loc, out, shared);
  }
  if (spec.auxLossCoef)
    losses.push_back(AuxLossOp::create(b, loc, f32({}), router.getLogits(),
                                       router.getIndices(), scoring,
                                       b.getF64FloatAttr(spec.auxLossCoef)));
  if (spec.zLossCoef)
    losses.push_back(ZLossOp::create(b, loc, f32({}), router.getLogits(),
                                     b.getF64FloatAttr(spec.zLossCoef)));
  return out;
}

OwningOpRef<ModuleOp> Builder::build() {
  const int64_t B = spec.batch, S = spec.seq, H = spec.hidden, V = spec.vocab;
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  if (!spec.vocabChars.empty())
    (*module)->setAttr(MoEDialect::getVocabCharsAttrName(),
                       b.getStringAttr(spec.vocabChars));
  if (!spec.hfConfig.empty())
    (*module)->setAttr(MoEDialect::getHFConfigAttrName(),
                       b.getStringAttr(spec.hfConfig));
  b.setInsertionPointToEnd(module->getBody());

  auto ids = RankedTensorType::get({B, S}, b.getI32Type());
  auto logitsType = f32({B, S, V});
  auto func = func::FuncOp::create(
      b, loc, "forward", b.getFunctionType({ids, ids}, {logitsType, f32({})}));
  Block *body = func.addEntryBlock();
  b.setInsertionPointToEnd(body);
  Value tokens = body->getArgument(0), labels = body->getArgument(1);

  Value table = param("model.embed_tokens.weight", {V, H});
  Value h = EmbeddingOp::create(b, loc, act(), tokens, table);
  SmallVector<Value> losses;
  for (int64_t layer = 0; layer < spec.layers; ++layer) {
    LayerNames n(spec, layer);
    Value x = rmsNorm(h, n.prefix + ".input_layernorm.weight");
    Value h1 = AddOp::create(b, loc, h, attention(n, x));
    Value x2 = rmsNorm(h1, n.prefix + ".post_attention_layernorm.weight");
    h = AddOp::create(b, loc, h1, ffn(layer, n, x2, losses));
  }
  Value hn = rmsNorm(h, "model.norm.weight");
  Value logits = linear(hn, "lm_head.weight", V);
  Value loss =
      CrossEntropyOp::create(b, loc, f32({}), logits, labels,
                             /*count=*/Value(), b.getI64IntegerAttr(-100));
  for (Value extra : losses)
    loss = AddOp::create(b, loc, loss, extra);
  func::ReturnOp::create(b, loc, ValueRange{logits, loss});

  if (failed(verify(*module)))
    return nullptr;
  return module;
}

} // namespace

OwningOpRef<ModuleOp> buildModel(MLIRContext &context, const ModelSpec &spec) {
  context.loadDialect<MoEDialect, func::FuncDialect, tensor::TensorDialect>();
  return Builder(context, spec).build();
}

} // namespace mlir::moe::import
