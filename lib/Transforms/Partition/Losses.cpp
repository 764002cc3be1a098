//===- Losses.cpp - Partition rules of the losses -------------------------===//
//
// The losses see their inputs gathered (moe-shard needs them whole), so
// each computes the same on every rank, locally.
//
//===----------------------------------------------------------------------===//

#include "PartitionRules.h"

namespace mlir::moe::partition {

void populateLossPartitions(PartitionRules &rules) {
  rules.add(partitionLocally<CrossEntropyOp>);
  rules.add(partitionLocally<AuxLossOp>);
  rules.add(partitionLocally<ZLossOp>);
}

} // namespace mlir::moe::partition
