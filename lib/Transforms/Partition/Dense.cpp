//===- Dense.cpp - Partition rules of the dense ops -----------------------===//
//
// Row-parallel projections and the tensor-parallel SwiGLU FFNs (dense MLP,
// shared experts) all-reduce their partial sums; an expanding reshape is
// rebuilt for its local shape; the other dense ops compute the same on local
// operands.
//
//===----------------------------------------------------------------------===//

#include "PartitionRules.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"

namespace mlir::moe::partition {
namespace {

LogicalResult partitionLinear(LinearOp op, Partitioner &p) {
  auto clone = p.cloneLocal(op);
  if (failed(clone))
    return failure();
  ShardingSpec in = p.local(op.getInput()).spec;
  ArrayRef<int16_t> contracted = in.dims.back();
  if (!contracted.empty()) {
    // Row parallel: partial sums over the split input features.
    Partitioner::Local out = p.local(op.getResult());
    out.value = p.allReduce(out.value, in.grid, contracted);
    p.setLocal(op.getResult(), out);
  }
  return success();
}

/// Tensor-parallel SwiGLU FFNs: partial sums over the split intermediate
/// features.
LogicalResult partitionFFN(Operation *op, Value gate, Partitioner &p) {
  auto clone = p.cloneLocal(op);
  if (failed(clone))
    return failure();
  ShardingSpec weights = p.local(gate).spec;
  ArrayRef<int16_t> split = weights.dims[0];
  if (!split.empty()) {
    Partitioner::Local out = p.local(op->getResult(0));
    out.value = p.allReduce(out.value, weights.grid, split);
    p.setLocal(op->getResult(0), out);
  }
  return success();
}

LogicalResult partitionMLP(MLPOp op, Partitioner &p) {
  return partitionFFN(op, op.getGateWeight(), p);
}

LogicalResult partitionSharedExperts(SharedExpertsOp op, Partitioner &p) {
  return partitionFFN(op, op.getGateWeight(), p);
}

LogicalResult partitionExpandShape(tensor::ExpandShapeOp op, Partitioner &p) {
  OpBuilder &b = p.builder();
  // The static output shape is an attribute: build a fresh op.
  auto spec = p.producedSpec(op.getResult());
  if (failed(spec))
    return failure();
  auto type = p.localTypeOf(op.getResult(), *spec, op.getLoc());
  if (failed(type))
    return failure();
  Value local = tensor::ExpandShapeOp::create(b, op.getLoc(), *type,
                                              p.local(op.getSrc()).value,
                                              op.getReassociationIndices());
  p.setLocal(op.getResult(), {local, *spec});
  return success();
}

} // namespace

void populateDensePartitions(PartitionRules &rules) {
  rules.add(partitionLinear);
  rules.add(partitionMLP);
  rules.add(partitionSharedExperts);
  rules.add(partitionExpandShape);
  rules.add(partitionLocally<tensor::CollapseShapeOp>);
  rules.add(partitionLocally<EmbeddingOp>);
  rules.add(partitionLocally<RMSNormOp>);
  rules.add(partitionLocally<RopeOp>);
  rules.add(partitionLocally<AttentionOp>);
  rules.add(partitionLocally<ConcatOp>);
  rules.add(partitionLocally<SplitOp>);
  rules.add(partitionLocally<AddOp>);
}

} // namespace mlir::moe::partition
