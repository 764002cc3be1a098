//===- Collectives.cpp - Lowering of the collectives ----------------------===//
//
// moe-partition's collectives: the upstream shard.all_reduce /
// all_gather / all_slice / all_to_all, the shard.reduce_scatter of
// moe-build-train-step (ZeRO stage 3 gradients) and the expert-parallel
// moe.dispatch and moe.combine, each one runtime call on the runtime group
// (MOERT_GROUP_*) of its grid axes, with the element type first and the
// layout around the collective's dimension after the pointers.
//
//===----------------------------------------------------------------------===//

#include "EntryBuilder.h"

#include "../ShardingSpec.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "moe/Runtime/CApi.h"
#include <initializer_list>

namespace mlir::moe::lowering {
namespace {

/// The runtime group (MOERT_GROUP_*) of `axes` of `grid`.
FailureOr<Value> groupOf(EntryBuilder &e, Operation *op, StringRef grid,
                         ArrayRef<int16_t> axes) {
  SmallVector<int16_t> sorted(axes);
  llvm::sort(sorted);
  auto is = [&](std::initializer_list<int16_t> want) {
    return ArrayRef<int16_t>(sorted) == ArrayRef<int16_t>(want);
  };
  std::optional<int32_t> id;
  if (grid == kDenseGrid) {
    if (is({kDpAxis}))
      id = MOERT_GROUP_DP;
    else if (is({kCpAxis}))
      id = MOERT_GROUP_CP;
    else if (is({kTpAxis}))
      id = MOERT_GROUP_TP;
    else if (is({kDpAxis, kCpAxis}))
      id = MOERT_GROUP_DP_CP;
  } else if (grid == kExpertGrid) {
    if (is({kEpAxis}))
      id = MOERT_GROUP_EP;
    else if (is({kEdpAxis}))
      id = MOERT_GROUP_EDP;
    else if (is({kExpertTpAxis}))
      id = MOERT_GROUP_TP;
  }
  if (!id)
    return op->emitOpError("has no runtime communicator for these axes of @")
           << grid << " (the runtime has dp, cp, tp, dp x cp on @" << kDenseGrid
           << " and ep, edp, tp on @" << kExpertGrid << ")";
  return e.i32(*id);
}

/// MOERT_DTYPE_* of the buffer of tensor `v`.
Value dtypeOf(EntryBuilder &e, Value v) {
  Type elem = cast<MemRefType>(e.buffer(v).getType()).getElementType();
  if (elem.isBF16())
    return e.i32(MOERT_DTYPE_BF16);
  if (elem.isF32())
    return e.i32(MOERT_DTYPE_F32);
  return e.i32(elem.isSignlessInteger(64) ? MOERT_DTYPE_I64 : MOERT_DTYPE_I32);
}

/// (outer, mid, inner) of `v` around dimension `axis`.
SmallVector<Value> axisLayout(EntryBuilder &e, Value v, int64_t axis) {
  ArrayRef<int64_t> shape = cast<ShapedType>(v.getType()).getShape();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d)
    outer *= shape[d];
  for (int64_t d = axis + 1; d < static_cast<int64_t>(shape.size()); ++d)
    inner *= shape[d];
  return {e.i64(outer), e.i64(shape[axis]), e.i64(inner)};
}

/// all_gather and all_slice: one input, one result, the layout of the input
/// around `axis`.
template <typename Op>
LogicalResult lowerAxisCollective(EntryBuilder &e, Op op, StringRef callee,
                                  int64_t axis) {
  auto out = e.resultBuffer(op.getResult());
  auto g = groupOf(e, op, op.getGrid(), op.getGridAxes());
  if (failed(out) || failed(g))
    return failure();
  SmallVector<Value> scalars = {*g, dtypeOf(e, op.getInput())};
  llvm::append_range(scalars, axisLayout(e, op.getInput(), axis));
  return e.call(callee, {e.buffer(op.getInput()), *out}, scalars, 2);
}

/// The runtime's placement table id: -1 for the fixed split.
int64_t placementOf(std::optional<uint64_t> placement) {
  return placement ? static_cast<int64_t>(*placement) : -1;
}

LogicalResult lowerAllReduce(shard::AllReduceOp op, EntryBuilder &e) {
  if (op.getReduction() != shard::ReductionKind::Sum ||
      op.getInput().getType() != op.getResult().getType())
    return op.emitOpError("only sums without a change of type reach the "
                          "runtime");
  auto out = e.resultBuffer(op.getResult());
  auto g = groupOf(e, op, op.getGrid(), op.getGridAxes());
  if (failed(out) || failed(g))
    return failure();
  return e.call(
      "moert_all_reduce_sum", {e.buffer(op.getInput()), *out},
      {*g, dtypeOf(e, op.getInput()), e.i64(numElements(op.getInput()))},
      /*scalarsFirst=*/2);
}

/// Whether `axis` of `v` has a dimension other than 1 before it: then the
/// pieces along it are not contiguous, and a collective reorders them
/// through scratch.
bool piecesStrided(Value v, int64_t axis) {
  return llvm::any_of(cast<ShapedType>(v.getType()).getShape().take_front(axis),
                      [](int64_t d) { return d != 1; });
}

LogicalResult lowerAllGather(shard::AllGatherOp op, EntryBuilder &e) {
  // Gathered into scratch, then reordered.
  int64_t axis = op.getGatherAxis().getSExtValue();
  if (piecesStrided(op.getInput(), axis))
    e.needCommScratch(op.getResult());
  return lowerAxisCollective(e, op, "moert_all_gather", axis);
}

LogicalResult lowerAllSlice(shard::AllSliceOp op, EntryBuilder &e) {
  return lowerAxisCollective(e, op, "moert_all_slice",
                             op.getSliceAxis().getSExtValue());
}

LogicalResult lowerReduceScatter(shard::ReduceScatterOp op, EntryBuilder &e) {
  if (op.getReduction() != shard::ReductionKind::Sum)
    return op.emitOpError("only sums reach the runtime");
  // Each rank's piece is packed contiguously first.
  int64_t axis = op.getScatterAxis().getSExtValue();
  if (piecesStrided(op.getInput(), axis))
    e.needCommScratch(op.getInput());
  return lowerAxisCollective(e, op, "moert_reduce_scatter_sum", axis);
}

LogicalResult lowerAllToAll(shard::AllToAllOp op, EntryBuilder &e) {
  e.needCommScratch(op.getInput(), /*copies=*/2); // packed and received pieces
  auto out = e.resultBuffer(op.getResult());
  auto g = groupOf(e, op, op.getGrid(), op.getGridAxes());
  if (failed(out) || failed(g))
    return failure();
  SmallVector<Value> scalars = {*g, dtypeOf(e, op.getInput())};
  llvm::append_range(
      scalars, axisLayout(e, op.getInput(), op.getSplitAxis().getSExtValue()));
  llvm::append_range(scalars, axisLayout(e, op.getResult(),
                                         op.getConcatAxis().getSExtValue()));
  return e.call("moert_all_to_all", {e.buffer(op.getInput()), *out}, scalars,
                2);
}

LogicalResult lowerDispatch(DispatchOp op, EntryBuilder &e) {
  // Rows leave in slot order, staged when a placement reorders them.
  e.needCommScratch(op.getPermuted());
  auto received = e.resultBuffer(op.getReceived());
  auto receivedOffsets = e.resultBuffer(op.getReceivedOffsets());
  auto g = groupOf(e, op, op.getGrid(), op.getGridAxes());
  if (failed(received) || failed(receivedOffsets) || failed(g))
    return failure();
  return e.call("moert_dispatch",
                {e.buffer(op.getPermuted()), e.buffer(op.getOffsets()),
                 *received, *receivedOffsets},
                {*g, e.i64(placementOf(op.getPlacement())),
                 e.i64(dimSize(op.getOffsets(), 0) - 1),
                 e.i64(dimSize(op.getReceivedOffsets(), 0) - 1),
                 e.i64(dimSize(op.getPermuted(), 1)),
                 e.i64(dimSize(op.getReceived(), 0))},
                2);
}

LogicalResult lowerCombine(CombineOp op, EntryBuilder &e) {
  e.needCommScratch(op.getResult());
  auto out = e.resultBuffer(op.getResult());
  auto g = groupOf(e, op, op.getGrid(), op.getGridAxes());
  if (failed(out) || failed(g))
    return failure();
  return e.call("moert_combine",
                {e.buffer(op.getExpertOut()), e.buffer(op.getReceivedOffsets()),
                 e.buffer(op.getOffsets()), *out},
                {*g, e.i64(placementOf(op.getPlacement())),
                 e.i64(dimSize(op.getOffsets(), 0) - 1),
                 e.i64(dimSize(op.getReceivedOffsets(), 0) - 1),
                 e.i64(dimSize(op.getExpertOut(), 1))},
                2);
}

} // namespace

void populateCollectiveLowerings(LoweringTable &table) {
  table.add(lowerAllReduce);
  table.add(lowerAllGather);
  table.add(lowerAllSlice);
  table.add(lowerReduceScatter);
  table.add(lowerAllToAll);
  table.add(lowerDispatch);
  table.add(lowerCombine);
}

} // namespace mlir::moe::lowering
