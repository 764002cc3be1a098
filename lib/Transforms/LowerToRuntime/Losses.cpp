//===- Losses.cpp - Lowering of the losses --------------------------------===//
//
// Cross-entropy (one ignore_index per function: the executable feeds one
// label convention) with its label count, the router's aux and z losses,
// and their gradients; each loss writes one f32 scalar.
//
//===----------------------------------------------------------------------===//

#include "EntryBuilder.h"

namespace mlir::moe::lowering {
namespace {

LogicalResult lowerCrossEntropy(CrossEntropyOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getLoss());
  if (failed(out))
    return failure();
  auto ignore = static_cast<int64_t>(op.getIgnoreIndex());
  if (failed(e.recordIgnoreIndex(op, ignore)))
    return failure();
  return e.call("moert_cross_entropy",
                {e.buffer(op.getLogits()), e.buffer(op.getLabels()),
                 e.optionalBuffer(op.getCount()), *out},
                {e.i64(numElements(op.getLabels())),
                 e.i64(dimSize(op.getLogits(), -1)), e.i64(ignore)});
}

LogicalResult lowerLabelCount(LabelCountOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getCount());
  if (failed(out))
    return failure();
  return e.call("moert_label_count", {e.buffer(op.getLabels()), *out},
                {e.i64(numElements(op.getLabels())),
                 e.i64(static_cast<int64_t>(op.getIgnoreIndex()))});
}

LogicalResult lowerCrossEntropyGrad(CrossEntropyGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  return e.call("moert_cross_entropy_grad",
                {e.buffer(op.getLogits()), e.buffer(op.getLabels()),
                 e.optionalBuffer(op.getCount()), (*out)[0]},
                {e.i64(numElements(op.getLabels())),
                 e.i64(dimSize(op.getLogits(), -1)),
                 e.i64(static_cast<int64_t>(op.getIgnoreIndex()))});
}

LogicalResult lowerAuxLoss(AuxLossOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getLoss());
  if (failed(out))
    return failure();
  int64_t experts = dimSize(op.getLogits(), -1);
  return e.call("moert_aux_loss",
                {e.buffer(op.getLogits()), e.buffer(op.getIndices()), *out},
                {e.i64(numElements(op.getLogits()) / experts), e.i64(experts),
                 e.i64(dimSize(op.getIndices(), -1)),
                 e.i32(op.getScoring() == ScoreFunc::sigmoid ? 1 : 0),
                 e.f32(op.getCoefficient().convertToDouble())});
}

LogicalResult lowerAuxLossGrad(AuxLossGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t experts = dimSize(op.getLogits(), -1);
  return e.call(
      "moert_aux_loss_grad",
      {e.buffer(op.getLogits()), e.buffer(op.getIndices()), (*out)[0]},
      {e.i64(numElements(op.getLogits()) / experts), e.i64(experts),
       e.i64(dimSize(op.getIndices(), -1)),
       e.i32(op.getScoring() == ScoreFunc::sigmoid ? 1 : 0),
       e.f32(op.getCoefficient().convertToDouble())});
}

LogicalResult lowerZLoss(ZLossOp op, EntryBuilder &e) {
  auto out = e.resultBuffer(op.getLoss());
  if (failed(out))
    return failure();
  int64_t experts = dimSize(op.getLogits(), -1);
  return e.call("moert_z_loss", {e.buffer(op.getLogits()), *out},
                {e.i64(numElements(op.getLogits()) / experts), e.i64(experts),
                 e.f32(op.getCoefficient().convertToDouble())});
}

LogicalResult lowerZLossGrad(ZLossGradOp op, EntryBuilder &e) {
  auto out = e.resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t experts = dimSize(op.getLogits(), -1);
  return e.call("moert_z_loss_grad", {e.buffer(op.getLogits()), (*out)[0]},
                {e.i64(numElements(op.getLogits()) / experts), e.i64(experts),
                 e.f32(op.getCoefficient().convertToDouble())});
}

} // namespace

void populateLossLowerings(LoweringTable &table) {
  table.add(lowerCrossEntropy);
  table.add(lowerLabelCount);
  table.add(lowerCrossEntropyGrad);
  table.add(lowerAuxLoss);
  table.add(lowerAuxLossGrad);
  table.add(lowerZLoss);
  table.add(lowerZLossGrad);
}

} // namespace mlir::moe::lowering
