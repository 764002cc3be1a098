//===- Experts.cpp - Lowering of routing and the experts ------------------===//
//
// The router (with or without expert bias), the capacity drop, the
// permutation by expert, the grouped SwiGLU over expert segments and the
// weighted unpermute, and their gradients. A
// moe.experts op reaching this pass is an error: moe-lower-experts expands
// it first.
//
//===----------------------------------------------------------------------===//

#include "EntryBuilder.h"

namespace mlir::moe::lowering {
namespace {

LogicalResult lowerRouter(RouterOp op, EntryBuilder &e) {
  auto weightsOut = e.resultBuffer(op.getWeights());
  auto indicesOut = e.resultBuffer(op.getIndices());
  auto logitsOut = e.resultBuffer(op.getLogits());
  if (failed(weightsOut) || failed(indicesOut) || failed(logitsOut))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  SmallVector<Value> scalars = {
      e.i64(numElements(op.getInput()) / hidden),
      e.i64(hidden),
      e.i64(op.getNumExperts()),
      e.i64(op.getTopK()),
      e.i32(op.getScoring() == ScoreFunc::sigmoid ? 1 : 0),
      e.i32(op.getNormTopkProb() ? 1 : 0),
      e.f32(op.getRouteScale().convertToDouble()),
      e.i64(op.getNGroup()),
      e.i64(op.getTopkGroup()),
      e.i64(op.getGroupTop())};
  return e.call("moert_router",
                {e.buffer(op.getInput()), e.buffer(op.getGateWeight()),
                 e.optionalBuffer(op.getExpertBias()), *weightsOut, *indicesOut,
                 *logitsOut},
                scalars);
}

LogicalResult lowerRouterGrad(RouterGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  return e.call("moert_router_grad",
                {e.buffer(op.getWeightsGrad()),
                 e.optionalBuffer(op.getLogitsGrad()), e.buffer(op.getInput()),
                 e.buffer(op.getGateWeight()), e.buffer(op.getLogits()),
                 e.buffer(op.getIndices()), (*out)[0], (*out)[1]},
                {e.i64(numElements(op.getInput()) / hidden), e.i64(hidden),
                 e.i64(dimSize(op.getGateWeight(), 0)),
                 e.i64(dimSize(op.getIndices(), -1)),
                 e.i32(op.getScoring() == ScoreFunc::sigmoid ? 1 : 0),
                 e.i32(op.getNormTopkProb() ? 1 : 0),
                 e.f32(op.getRouteScale().convertToDouble())});
}

/// Only the expert pipeline of moe-lower-experts reaches the runtime.
LogicalResult lowerExperts(ExpertsOp op, EntryBuilder &e) {
  if (op.getCapacityFactor())
    return op.emitOpError("has a capacity_factor: run moe-expand-capacity "
                          "and moe-lower-experts before moe-lower-to-runtime");
  return op.emitOpError("must be expanded by moe-lower-experts before "
                        "moe-lower-to-runtime");
}

LogicalResult lowerDropOverCapacity(DropOverCapacityOp op, EntryBuilder &e) {
  auto kept = e.resultBuffer(op.getKept());
  if (failed(kept))
    return failure();
  int64_t topK = dimSize(op.getIndices(), -1);
  return e.call("moert_drop_over_capacity", {e.buffer(op.getIndices()), *kept},
                {e.i64(numElements(op.getIndices()) / topK), e.i64(topK),
                 e.i64(op.getNumExperts()), e.i64(op.getCapacity())});
}

LogicalResult lowerPermute(PermuteOp op, EntryBuilder &e) {
  auto permuted = e.resultBuffer(op.getPermuted());
  auto offsets = e.resultBuffer(op.getOffsets());
  auto rowToSlot = e.resultBuffer(op.getRowToSlot());
  if (failed(permuted) || failed(offsets) || failed(rowToSlot))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  return e.call("moert_permute",
                {e.buffer(op.getInput()), e.buffer(op.getIndices()), *permuted,
                 *offsets, *rowToSlot},
                {e.i64(numElements(op.getInput()) / hidden),
                 e.i64(dimSize(op.getIndices(), -1)), e.i64(hidden),
                 e.i64(op.getNumExperts())});
}

LogicalResult lowerPermuteGrad(PermuteGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInputGrad(), -1);
  return e.call(
      "moert_permute_grad",
      {e.buffer(op.getPermutedGrad()), e.buffer(op.getRowToSlot()), (*out)[0]},
      {e.i64(numElements(op.getInputGrad()) / hidden),
       e.i64(static_cast<int64_t>(op.getTopK())), e.i64(hidden)});
}

LogicalResult lowerGroupedSwiGLU(GroupedSwiGLUOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  return e.call("moert_grouped_swiglu",
                {e.buffer(op.getPermuted()), e.buffer(op.getOffsets()),
                 e.buffer(op.getGateWeight()), e.buffer(op.getUpWeight()),
                 e.buffer(op.getDownWeight()), *out},
                {e.i64(dimSize(op.getPermuted(), 0)),
                 e.i64(dimSize(op.getOffsets(), 0) - 1),
                 e.i64(dimSize(op.getGateWeight(), 0)),
                 e.i64(dimSize(op.getPermuted(), 1)),
                 e.i64(dimSize(op.getGateWeight(), 1))});
}

LogicalResult lowerGroupedSwiGLUGrad(GroupedSwiGLUGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  SmallVector<Value> buffers = {
      e.buffer(op.getResultGrad()), e.buffer(op.getPermuted()),
      e.buffer(op.getOffsets()),    e.buffer(op.getGateWeight()),
      e.buffer(op.getUpWeight()),   e.buffer(op.getDownWeight())};
  llvm::append_range(buffers, *out);
  return e.call("moert_grouped_swiglu_grad", buffers,
                {e.i64(dimSize(op.getPermuted(), 0)),
                 e.i64(dimSize(op.getOffsets(), 0) - 1),
                 e.i64(dimSize(op.getGateWeight(), 0)),
                 e.i64(dimSize(op.getPermuted(), 1)),
                 e.i64(dimSize(op.getGateWeight(), 1))});
}

LogicalResult lowerUnpermute(UnpermuteOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t topK = dimSize(op.getWeights(), -1);
  return e.call("moert_unpermute_combine",
                {e.buffer(op.getExpertOut()), e.buffer(op.getRowToSlot()),
                 e.buffer(op.getWeights()), *out},
                {e.i64(numElements(op.getWeights()) / topK), e.i64(topK),
                 e.i64(dimSize(op.getExpertOut(), 1))});
}

LogicalResult lowerUnpermuteGrad(UnpermuteGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t topK = dimSize(op.getWeights(), -1);
  return e.call("moert_unpermute_grad",
                {e.buffer(op.getResultGrad()), e.buffer(op.getExpertOut()),
                 e.buffer(op.getRowToSlot()), e.buffer(op.getWeights()),
                 (*out)[0], (*out)[1]},
                {e.i64(numElements(op.getWeights()) / topK), e.i64(topK),
                 e.i64(dimSize(op.getExpertOut(), 1))});
}

} // namespace

void populateExpertLowerings(LoweringTable &table) {
  table.add(lowerRouter);
  table.add(lowerRouterGrad);
  table.add(lowerExperts);
  table.add(lowerDropOverCapacity);
  table.add(lowerPermute);
  table.add(lowerPermuteGrad);
  table.add(lowerGroupedSwiGLU);
  table.add(lowerGroupedSwiGLUGrad);
  table.add(lowerUnpermute);
  table.add(lowerUnpermuteGrad);
}

} // namespace mlir::moe::lowering
