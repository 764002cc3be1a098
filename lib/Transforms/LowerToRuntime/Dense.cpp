//===- Dense.cpp - Lowering of the dense layers ---------------------------===//
//
// Embedding, RMSNorm, linear (with and without bias), the SwiGLU FFNs
// applied to every token (the dense MLP and the shared experts, with or
// without their sigmoid gate), elementwise add, rotary embeddings and
// attention on [batch, seq, heads, headDim] buffers, concat and split along
// the last dimension, and their gradients:
// one runtime call each, with the row count folded from the leading
// dimensions.
//
//===----------------------------------------------------------------------===//

#include "EntryBuilder.h"

#include <optional>

namespace mlir::moe::lowering {
namespace {

LogicalResult lowerEmbedding(EmbeddingOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  return e.call("moert_embedding",
                {e.buffer(op.getTokens()), e.buffer(op.getTable()), *out},
                {e.i64(numElements(op.getTokens())),
                 e.i64(dimSize(op.getTable(), 0)),
                 e.i64(dimSize(op.getTable(), 1))});
}

LogicalResult lowerEmbeddingGrad(EmbeddingGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  Value table = op.getTableGrad();
  return e.call(
      "moert_embedding_grad",
      {e.buffer(op.getResultGrad()), e.buffer(op.getTokens()), (*out)[0]},
      {e.i64(numElements(op.getTokens())), e.i64(dimSize(table, 0)),
       e.i64(dimSize(table, 1))});
}

LogicalResult lowerRMSNorm(RMSNormOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t dim = dimSize(op.getInput(), -1);
  return e.call("moert_rms_norm",
                {e.buffer(op.getInput()), e.buffer(op.getWeight()), *out},
                {e.i64(numElements(op.getInput()) / dim), e.i64(dim),
                 e.f32(op.getEps().convertToDouble())});
}

LogicalResult lowerRMSNormGrad(RMSNormGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t dim = dimSize(op.getInput(), -1);
  return e.call("moert_rms_norm_grad",
                {e.buffer(op.getResultGrad()), e.buffer(op.getInput()),
                 e.buffer(op.getWeight()), (*out)[0], (*out)[1]},
                {e.i64(numElements(op.getInput()) / dim), e.i64(dim),
                 e.f32(op.getEps().convertToDouble())});
}

LogicalResult lowerLinear(LinearOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t in = dimSize(op.getInput(), -1);
  SmallVector<Value> sizes = {e.i64(numElements(op.getInput()) / in), e.i64(in),
                              e.i64(dimSize(op.getWeight(), 0))};
  return e.call("moert_linear",
                {e.buffer(op.getInput()), e.buffer(op.getWeight()),
                 e.optionalBuffer(op.getBias()), *out},
                sizes);
}

LogicalResult lowerLinearGrad(LinearGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t in = dimSize(op.getInput(), -1);
  return e.call("moert_linear_grad",
                {e.buffer(op.getResultGrad()), e.buffer(op.getInput()),
                 e.buffer(op.getWeight()), (*out)[0], (*out)[1],
                 op.getBiasGrad() ? (*out)[2] : e.absent()},
                {e.i64(numElements(op.getInput()) / in), e.i64(in),
                 e.i64(dimSize(op.getWeight(), 0))});
}

/// The operands every SwiGLU FFN call takes (the dense MLP and the shared
/// experts): x, the gate, up and down weights, and for the shared experts
/// their optional gate; and its sizes: rows, hidden, inter.
SmallVector<Value> ffnOperands(EntryBuilder &e, Value x, Value gate, Value up,
                               Value down, std::optional<Value> sharedGate) {
  SmallVector<Value> buffers = {e.buffer(x), e.buffer(gate), e.buffer(up),
                                e.buffer(down)};
  if (sharedGate)
    buffers.push_back(e.optionalBuffer(*sharedGate));
  return buffers;
}
SmallVector<Value> ffnSizes(EntryBuilder &e, Value x, Value gate) {
  int64_t hidden = dimSize(x, -1);
  return {e.i64(numElements(x) / hidden), e.i64(hidden),
          e.i64(dimSize(gate, 0))};
}

/// The forward: the FFN's operands, then its output.
template <typename Op>
LogicalResult lowerFFN(EntryBuilder &e, Op op, StringRef callee,
                       std::optional<Value> sharedGate = std::nullopt) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  SmallVector<Value> buffers =
      ffnOperands(e, op.getInput(), op.getGateWeight(), op.getUpWeight(),
                  op.getDownWeight(), sharedGate);
  buffers.push_back(*out);
  return e.call(callee, buffers,
                ffnSizes(e, op.getInput(), op.getGateWeight()));
}

/// The gradient: d output, the FFN's operands, then one gradient each.
template <typename Op>
LogicalResult lowerFFNGrad(EntryBuilder &e, Op op, StringRef callee,
                           std::optional<Value> sharedGate = std::nullopt) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  SmallVector<Value> buffers = {e.buffer(op.getResultGrad())};
  llvm::append_range(buffers, ffnOperands(e, op.getInput(), op.getGateWeight(),
                                          op.getUpWeight(), op.getDownWeight(),
                                          sharedGate));
  llvm::append_range(buffers, *out);
  if (sharedGate && !*sharedGate)
    buffers.push_back(e.absent()); // no shared gate, no gradient of it
  return e.call(callee, buffers,
                ffnSizes(e, op.getInput(), op.getGateWeight()));
}

LogicalResult lowerMLP(MLPOp op, EntryBuilder &e) {
  return lowerFFN(e, op, "moert_mlp");
}

LogicalResult lowerMLPGrad(MLPGradOp op, EntryBuilder &e) {
  return lowerFFNGrad(e, op, "moert_mlp_grad");
}

LogicalResult lowerSharedExperts(SharedExpertsOp op, EntryBuilder &e) {
  return lowerFFN(e, op, "moert_shared_experts", op.getSharedGate());
}

LogicalResult lowerSharedExpertsGrad(SharedExpertsGradOp op, EntryBuilder &e) {
  return lowerFFNGrad(e, op, "moert_shared_experts_grad", op.getSharedGate());
}

LogicalResult lowerAdd(AddOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  // Scalars (loss terms) stay f32 whatever the storage.
  bool scalar = cast<RankedTensorType>(op.getType()).getRank() == 0;
  return e.call(scalar ? "moert_add_f32" : "moert_add",
                {e.buffer(op.getLhs()), e.buffer(op.getRhs()), *out},
                {e.i64(numElements(op.getResult()))});
}

/// The sizes and frequency parameters every rope call takes: batch, seq,
/// heads, headDim, theta, the YaRN factor, ramp bounds and scale, and the
/// interleaved flag.
template <typename Op>
SmallVector<Value> ropeScalars(EntryBuilder &e, Op op, Value x) {
  return {e.i64(dimSize(x, 0)),
          e.i64(dimSize(x, 1)),
          e.i64(dimSize(x, 2)),
          e.i64(dimSize(x, 3)),
          e.f64(op.getTheta().convertToDouble()),
          e.f64(op.getYarnFactor().convertToDouble()),
          e.f64(op.getYarnLow().convertToDouble()),
          e.f64(op.getYarnHigh().convertToDouble()),
          e.f64(op.getYarnScale().convertToDouble()),
          e.i32(op.getInterleaved() ? 1 : 0)};
}

LogicalResult lowerRope(RopeOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  Value x = op.getInput();
  return e.call("moert_rope",
                {e.buffer(x), e.optionalBuffer(op.getPositions()), *out},
                ropeScalars(e, op, x));
}

LogicalResult lowerRopeGrad(RopeGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  Value dy = op.getResultGrad();
  SmallVector<Value> sizes = ropeScalars(e, op, dy);
  return e.call("moert_rope_grad",
                {e.buffer(dy), e.optionalBuffer(op.getPositions()), (*out)[0]},
                sizes);
}

/// The sizes and attributes every attention call takes: batch, seq, heads,
/// kvHeads, headDim, vDim, causal, scale.
template <typename Op>
SmallVector<Value> attentionScalars(EntryBuilder &e, Op op) {
  Value q = op.getQ();
  return {e.i64(dimSize(q, 0)),          e.i64(dimSize(q, 1)),
          e.i64(dimSize(q, 2)),          e.i64(dimSize(op.getK(), 2)),
          e.i64(dimSize(q, 3)),          e.i64(dimSize(op.getV(), 3)),
          e.i32(op.getCausal() ? 1 : 0), e.f32(op.getEffectiveScale())};
}

LogicalResult lowerAttention(AttentionOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  Value q = op.getQ();
  return e.call("moert_attention",
                {e.buffer(q), e.buffer(op.getK()), e.buffer(op.getV()), *out},
                attentionScalars(e, op));
}

/// The caches are the caller's buffers (arguments of @decode), written in
/// place.
LogicalResult lowerCachedAttention(CachedAttentionOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  Value q = op.getQ();
  return e.call("moert_cached_attention",
                {e.buffer(q), e.buffer(op.getK()), e.buffer(op.getV()),
                 e.buffer(op.getKCache()), e.buffer(op.getVCache()),
                 e.buffer(op.getPositions()), *out},
                {e.i64(dimSize(q, 0)), e.i64(dimSize(q, 1)),
                 e.i64(dimSize(op.getKCache(), 1)), e.i64(dimSize(q, 2)),
                 e.i64(dimSize(op.getK(), 2)), e.i64(dimSize(q, 3)),
                 e.i64(dimSize(op.getV(), 3)), e.f32(op.getEffectiveScale())});
}

LogicalResult lowerAttentionGrad(AttentionGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  Value q = op.getQ();
  return e.call("moert_attention_grad",
                {e.buffer(op.getResultGrad()), e.buffer(q), e.buffer(op.getK()),
                 e.buffer(op.getV()), (*out)[0], (*out)[1], (*out)[2]},
                attentionScalars(e, op));
}

/// The sizes every concat and split call takes: the whole tensor's rows,
/// the two parts' widths, and how many whole rows share a part's row (the
/// heads a broadcast part spans, else 1).
SmallVector<Value> concatScalars(EntryBuilder &e, Value whole, Value lhs,
                                 Value rhs) {
  auto type = cast<RankedTensorType>(whole.getType());
  int64_t rank = type.getRank();
  auto repeat = [&](Value part) -> int64_t {
    if (rank < 2 || dimSize(part, rank - 2) != 1)
      return 1;
    return type.getDimSize(rank - 2);
  };
  return {e.i64(numElements(whole) / type.getDimSize(rank - 1)),
          e.i64(dimSize(lhs, -1)), e.i64(dimSize(rhs, -1)), e.i64(repeat(lhs)),
          e.i64(repeat(rhs))};
}

LogicalResult lowerConcat(ConcatOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  return e.call("moert_concat",
                {e.buffer(op.getLhs()), e.buffer(op.getRhs()), *out},
                concatScalars(e, op.getResult(), op.getLhs(), op.getRhs()));
}

LogicalResult lowerConcatGrad(ConcatGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  return e.call("moert_split",
                {e.buffer(op.getResultGrad()), (*out)[0], (*out)[1]},
                concatScalars(e, op.getResultGrad(), op.getLhs(), op.getRhs()));
}

LogicalResult lowerSplit(SplitOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  return e.call("moert_split", {e.buffer(op.getInput()), (*out)[0], (*out)[1]},
                concatScalars(e, op.getInput(), op.getLhs(), op.getRhs()));
}

} // namespace

void populateDenseLowerings(LoweringTable &table) {
  table.add(lowerEmbedding);
  table.add(lowerEmbeddingGrad);
  table.add(lowerRMSNorm);
  table.add(lowerRMSNormGrad);
  table.add(lowerLinear);
  table.add(lowerLinearGrad);
  table.add(lowerMLP);
  table.add(lowerMLPGrad);
  table.add(lowerSharedExperts);
  table.add(lowerSharedExpertsGrad);
  table.add(lowerAdd);
  table.add(lowerRope);
  table.add(lowerRopeGrad);
  table.add(lowerAttention);
  table.add(lowerAttentionGrad);
  table.add(lowerCachedAttention);
  table.add(lowerConcat);
  table.add(lowerConcatGrad);
  table.add(lowerSplit);
}

} // namespace mlir::moe::lowering
