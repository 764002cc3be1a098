//===- Losses.cpp - Partition rules of the losses -------------------------===//
//
// Cross-entropy over tokens split between ranks: each rank divides the sum
// over its tokens by the number of labels counted on all of them (its
// moe.label_count summed over the token axes), and the shares are summed
// over the same axes. The router losses see their inputs gathered
// (moe-shard needs them whole), so each computes the same on every rank,
// locally.
//
//===----------------------------------------------------------------------===//

#include "PartitionRules.h"

namespace mlir::moe::partition {
namespace {

LogicalResult partitionCrossEntropy(CrossEntropyOp op, Partitioner &p) {
  Partitioner::Local logits = p.local(op.getLogits());
  SmallVector<int16_t> tokenAxes;
  for (ArrayRef<int16_t> dim : ArrayRef(logits.spec.dims).drop_back())
    llvm::append_range(tokenAxes, dim);
  if (tokenAxes.empty())
    return partitionLocally(op, p);
  OpBuilder &b = p.builder();
  Location loc = op.getLoc();
  Value labels = p.local(op.getLabels()).value;
  Type scalar = op.getLoss().getType();
  Value count =
      LabelCountOp::create(b, loc, scalar, labels, op.getIgnoreIndexAttr());
  count = p.allReduce(count, logits.spec.grid, tokenAxes);
  Value share = CrossEntropyOp::create(b, loc, scalar, logits.value, labels,
                                       count, op.getIgnoreIndexAttr());
  Value loss = p.allReduce(share, logits.spec.grid, tokenAxes);
  p.setLocal(op.getLoss(), {loss, ShardingSpec::replicated(0)});
  return success();
}

} // namespace

void populateLossPartitions(PartitionRules &rules) {
  rules.add(partitionCrossEntropy);
  rules.add(partitionLocally<AuxLossOp>);
  rules.add(partitionLocally<ZLossOp>);
}

} // namespace mlir::moe::partition
