//===- Attention.cpp - Lowering of RoPE and attention ---------------------===//
//
// Rotary embeddings (with or without explicit positions) and attention on
// [batch, seq, heads, headDim] buffers, and their gradients.
//
//===----------------------------------------------------------------------===//

#include "EntryBuilder.h"

namespace mlir::moe::lowering {
namespace {

LogicalResult lowerRope(RopeOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  Value x = op.getInput();
  SmallVector<Value> sizes = {e.i64(dimSize(x, 0)), e.i64(dimSize(x, 1)),
                              e.i64(dimSize(x, 2)), e.i64(dimSize(x, 3)),
                              e.f64(op.getTheta().convertToDouble())};
  return e.call("moert_rope",
                {e.buffer(x), e.optionalBuffer(op.getPositions()), *out},
                sizes);
}

LogicalResult lowerRopeGrad(RopeGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  Value dy = op.getResultGrad();
  SmallVector<Value> sizes = {e.i64(dimSize(dy, 0)), e.i64(dimSize(dy, 1)),
                              e.i64(dimSize(dy, 2)), e.i64(dimSize(dy, 3)),
                              e.f64(op.getTheta().convertToDouble())};
  return e.call("moert_rope_grad",
                {e.buffer(dy), e.optionalBuffer(op.getPositions()), (*out)[0]},
                sizes);
}

LogicalResult lowerAttention(AttentionOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  Value q = op.getQ();
  return e.call("moert_attention",
                {e.buffer(q), e.buffer(op.getK()), e.buffer(op.getV()), *out},
                {e.i64(dimSize(q, 0)), e.i64(dimSize(q, 1)),
                 e.i64(dimSize(q, 2)), e.i64(dimSize(op.getK(), 2)),
                 e.i64(dimSize(q, 3)), e.i32(op.getCausal() ? 1 : 0),
                 e.f32(op.getEffectiveScale())});
}

LogicalResult lowerAttentionGrad(AttentionGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  Value q = op.getQ();
  return e.call("moert_attention_grad",
                {e.buffer(op.getResultGrad()), e.buffer(q), e.buffer(op.getK()),
                 e.buffer(op.getV()), (*out)[0], (*out)[1], (*out)[2]},
                {e.i64(dimSize(q, 0)), e.i64(dimSize(q, 1)),
                 e.i64(dimSize(q, 2)), e.i64(dimSize(op.getK(), 2)),
                 e.i64(dimSize(q, 3)), e.i32(op.getCausal() ? 1 : 0),
                 e.f32(op.getEffectiveScale())});
}

} // namespace

void populateAttentionLowerings(LoweringTable &table) {
  table.add(lowerRope);
  table.add(lowerRopeGrad);
  table.add(lowerAttention);
  table.add(lowerAttentionGrad);
}

} // namespace mlir::moe::lowering
