//===- Experts.cpp - Partition rules of routing and the experts -----------===//
//
// An expert-parallel moe.experts becomes moe.permute -> moe.dispatch (token
// counts, then a variable all-to-all over ep) -> moe.grouped_swiglu on the
// local experts -> moe.combine -> moe.unpermute, the dispatch and combine
// of the L-th layer using run-time placement table L; without ep it runs
// locally. Under expert tensor parallelism the output is then summed over
// tp. The router and the capacity drop run locally (replicated).
//
//===----------------------------------------------------------------------===//

#include "PartitionRules.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"

#include <algorithm>

namespace mlir::moe::partition {
namespace {

/// The capacity drop that produced routed `indices`, through resharding
/// annotations; null when the routing is dropless.
DropOverCapacityOp droppedBy(Value indices) {
  while (auto shard = indices.getDefiningOp<shard::ShardOp>())
    indices = shard.getSrc();
  return indices.getDefiningOp<DropOverCapacityOp>();
}

/// Under expert tensor parallelism each tp rank's experts give partial sums
/// of the output (their slice of the intermediate features): summed over
/// tp.
LogicalResult sumExpertTensorParallel(ExpertsOp op, Partitioner &p) {
  if (p.local(op.getGateWeight()).spec.dims[1].empty())
    return success();
  Partitioner::Local out = p.local(op.getResult());
  out.value = p.allReduce(out.value, kDenseGrid, {kTpAxis});
  p.setLocal(op.getResult(), out);
  return success();
}

LogicalResult dispatchExperts(ExpertsOp op, Partitioner &p) {
  OpBuilder &b = p.builder();
  ShardingSpec weights = p.local(op.getGateWeight()).spec;
  ArrayRef<int16_t> epAxes = weights.dims[0];
  if (epAxes.empty())
    return partitionLocally(op, p);
  if (op.getCapacityFactor())
    return op.emitOpError("has a capacity_factor: run moe-expand-capacity "
                          "before moe-shard");
  // permute -> dispatch -> grouped SwiGLU on the local experts -> combine ->
  // unpermute.
  Location loc = op.getLoc();
  Value x = p.local(op.getInput()).value;
  Value indices = p.local(op.getIndices()).value;
  Value routerWeights = p.local(op.getWeights()).value;
  Value gate = p.local(op.getGateWeight()).value;
  auto xType = cast<RankedTensorType>(x.getType());
  int64_t experts = op.getNumExperts();
  // The expert slots of each rank (partitionParam).
  int64_t localExperts = cast<ShapedType>(gate.getType()).getShape()[0];
  auto ranks = p.groupSize(weights.grid, epAxes, op.getLoc());
  if (failed(ranks))
    return failure();
  int64_t groupSize = *ranks;
  int64_t hidden = xType.getShape().back();
  int64_t topK = op.getTopK();
  int64_t slots = xType.getNumElements() / hidden * topK;
  Type f32 = xType.getElementType();
  auto offsetsType = RankedTensorType::get({experts + 1}, b.getI64Type());
  auto slotOffsetsType =
      RankedTensorType::get({groupSize * localExperts + 1}, b.getI64Type());
  IntegerAttr placement = b.getI64IntegerAttr(p.expertsLayer(op));
  auto rowsType = RankedTensorType::get({slots, hidden}, f32);
  // A source rank sends a token at most min(top_k, local experts) times;
  // with a capacity drop, no expert receives more than its capacity.
  int64_t capacity = groupSize * (slots / topK) * std::min(topK, localExperts);
  if (auto drop = droppedBy(op.getIndices()))
    capacity = std::min(capacity, localExperts *
                                      static_cast<int64_t>(drop.getCapacity()));
  auto recvType = RankedTensorType::get({capacity, hidden}, f32);

  auto permute = PermuteOp::create(
      b, loc, rowsType, offsetsType,
      RankedTensorType::get({slots}, b.getI32Type()), x, indices, experts);
  auto dispatch = DispatchOp::create(b, loc, recvType, slotOffsetsType,
                                     permute.getPermuted(),
                                     permute.getOffsets(), weights.grid,
                                     b.getDenseI16ArrayAttr(epAxes), placement);
  Value expertOut = GroupedSwiGLUOp::create(
      b, loc, recvType, dispatch.getReceived(), dispatch.getReceivedOffsets(),
      gate, p.local(op.getUpWeight()).value, p.local(op.getDownWeight()).value);
  Value back = CombineOp::create(b, loc, rowsType, expertOut,
                                 dispatch.getReceivedOffsets(),
                                 permute.getOffsets(), weights.grid,
                                 b.getDenseI16ArrayAttr(epAxes), placement);
  auto spec = p.producedSpec(op.getResult());
  if (failed(spec))
    return failure();
  auto outType = p.localTypeOf(op.getResult(), *spec, loc);
  if (failed(outType))
    return failure();
  Value out = UnpermuteOp::create(b, loc, *outType, back,
                                  permute.getRowToSlot(), routerWeights);
  p.setLocal(op.getResult(), {out, *spec});
  return success();
}

LogicalResult partitionExperts(ExpertsOp op, Partitioner &p) {
  if (failed(dispatchExperts(op, p)))
    return failure();
  return sumExpertTensorParallel(op, p);
}

} // namespace

void populateExpertPartitions(PartitionRules &rules) {
  rules.add(partitionExperts);
  rules.add(partitionLocally<RouterOp>);
  rules.add(partitionLocally<DropOverCapacityOp>);
}

} // namespace mlir::moe::partition
