//===- Losses.cpp - Sharding rules of the losses and results --------------===//
//
// Cross-entropy keeps the token layout: each rank adds up its own tokens'
// share of the mean (moe-partition), so no rank holds the whole logits.
// The router losses and the capacity drop see every token, and a function's
// results are whole on every rank: each operand is gathered, each result
// replicated.
//
//===----------------------------------------------------------------------===//

#include "ShardingRules.h"

namespace mlir::moe::sharding {
namespace {

template <typename Op> LogicalResult shardWhole(Op op, ShardingChooser &s) {
  for (OpOperand &operand : op->getOpOperands())
    s.need(op, operand.getOperandNumber(), s.replicated(operand.get()));
  for (Value result : op->getResults())
    s.produce(result, s.replicated(result));
  return success();
}

/// Logits [batch, seq, ..., vocab] in the activation layout (the token
/// layout, and the sequence split over tp too under sequence parallelism)
/// with the vocabulary whole, labels in the same layout; the loss is the
/// same everywhere.
LogicalResult shardCrossEntropy(CrossEntropyOp op, ShardingChooser &s) {
  int64_t rank = rankOf(op.getLogits());
  if (rank < 3)
    return shardWhole(op, s); // no [batch, seq] token dimensions to keep
  s.need(op, 0, s.withLastDim(s.activationLayout(rank), {}));
  s.need(op, 1, s.activationLayout(rank - 1));
  s.produce(op.getLoss(), s.replicated(op.getLoss()));
  return success();
}

} // namespace

void populateLossShardings(ShardingRules &rules) {
  rules.add(shardCrossEntropy);
  rules.add(shardWhole<AuxLossOp>);
  rules.add(shardWhole<ZLossOp>);
  rules.add(shardWhole<DropOverCapacityOp>);
  rules.add(shardWhole<func::ReturnOp>);
}

} // namespace mlir::moe::sharding
