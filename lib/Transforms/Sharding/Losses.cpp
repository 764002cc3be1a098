//===- Losses.cpp - Sharding rules of the losses and results --------------===//
//
// The losses and the capacity drop see every token, and a function's
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

} // namespace

void populateLossShardings(ShardingRules &rules) {
  rules.add(shardWhole<CrossEntropyOp>);
  rules.add(shardWhole<AuxLossOp>);
  rules.add(shardWhole<ZLossOp>);
  rules.add(shardWhole<DropOverCapacityOp>);
  rules.add(shardWhole<func::ReturnOp>);
}

} // namespace mlir::moe::sharding
