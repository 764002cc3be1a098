//===- Dense.cpp - Lowering of the dense layers ---------------------------===//
//
// Embedding, RMSNorm, linear (with and without bias), the dense SwiGLU MLP
// and elementwise add, and their gradients: one runtime call each, with the
// row count folded from the leading dimensions.
//
//===----------------------------------------------------------------------===//

#include "EntryBuilder.h"

namespace mlir::moe::lowering {
namespace {

LogicalResult lowerEmbedding(EntryBuilder &e, EmbeddingOp op) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  return e.call("moert_embedding",
                {e.buffer(op.getTokens()), e.buffer(op.getTable()), *out},
                {e.i64(numElements(op.getTokens())),
                 e.i64(dimSize(op.getTable(), 0)),
                 e.i64(dimSize(op.getTable(), 1))});
}

LogicalResult lowerEmbeddingGrad(EntryBuilder &e, EmbeddingGradOp op) {
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

LogicalResult lowerRMSNorm(EntryBuilder &e, RMSNormOp op) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t dim = dimSize(op.getInput(), -1);
  return e.call("moert_rms_norm",
                {e.buffer(op.getInput()), e.buffer(op.getWeight()), *out},
                {e.i64(numElements(op.getInput()) / dim), e.i64(dim),
                 e.f32(op.getEps().convertToDouble())});
}

LogicalResult lowerRMSNormGrad(EntryBuilder &e, RMSNormGradOp op) {
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

LogicalResult lowerLinear(EntryBuilder &e, LinearOp op) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t in = dimSize(op.getInput(), -1);
  SmallVector<Value> sizes = {e.i64(numElements(op.getInput()) / in), e.i64(in),
                              e.i64(dimSize(op.getWeight(), 0))};
  if (Value bias = op.getBias())
    return e.call("moert_linear_bias",
                  {e.buffer(op.getInput()), e.buffer(op.getWeight()),
                   e.buffer(bias), *out},
                  sizes);
  return e.call("moert_linear",
                {e.buffer(op.getInput()), e.buffer(op.getWeight()), *out},
                sizes);
}

LogicalResult lowerLinearGrad(EntryBuilder &e, LinearGradOp op) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t in = dimSize(op.getInput(), -1);
  return e.call("moert_linear_grad",
                {e.buffer(op.getResultGrad()), e.buffer(op.getInput()),
                 e.buffer(op.getWeight()), (*out)[0], (*out)[1]},
                {e.i64(numElements(op.getInput()) / in), e.i64(in),
                 e.i64(dimSize(op.getWeight(), 0))});
}

LogicalResult lowerMLP(EntryBuilder &e, MLPOp op) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  return e.call("moert_mlp",
                {e.buffer(op.getInput()), e.buffer(op.getGateWeight()),
                 e.buffer(op.getUpWeight()), e.buffer(op.getDownWeight()),
                 *out},
                {e.i64(numElements(op.getInput()) / hidden), e.i64(hidden),
                 e.i64(dimSize(op.getGateWeight(), 0))});
}

LogicalResult lowerMLPGrad(EntryBuilder &e, MLPGradOp op) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  SmallVector<Value> buffers = {
      e.buffer(op.getResultGrad()), e.buffer(op.getInput()),
      e.buffer(op.getGateWeight()), e.buffer(op.getUpWeight()),
      e.buffer(op.getDownWeight())};
  llvm::append_range(buffers, *out);
  return e.call("moert_mlp_grad", buffers,
                {e.i64(numElements(op.getInput()) / hidden), e.i64(hidden),
                 e.i64(dimSize(op.getGateWeight(), 0))});
}

LogicalResult lowerAdd(EntryBuilder &e, AddOp op) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  // Scalars (loss terms) stay f32 whatever the storage.
  bool scalar = cast<RankedTensorType>(op.getType()).getRank() == 0;
  return e.call(scalar ? "moert_add_f32" : "moert_add",
                {e.buffer(op.getLhs()), e.buffer(op.getRhs()), *out},
                {e.i64(numElements(op.getResult()))});
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
  table.add(lowerAdd);
}

} // namespace mlir::moe::lowering
