//===- Partition.cpp - sharded model -> per-rank SPMD program -------------===//
//
// Implements the shardings moe-shard chose: every value gets its local
// (per-rank) type, every resharding annotation becomes the collective that
// performs it, and ops whose local computation differs from the global one
// get their communication: row-parallel projections and tensor-parallel
// FFNs all-reduce their partial sums, expert-parallel experts dispatch their
// tokens to the experts' ranks and combine the results.
//
//===----------------------------------------------------------------------===//

#include "ShardingSpec.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::moe {
#define GEN_PASS_DEF_PARTITION
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

class Partitioner {
public:
  Partitioner(func::FuncOp fn, int64_t replicaSlots)
      : fn(fn), b(fn), replicaSlots(replicaSlots) {}
  LogicalResult run();

private:
  /// Local value and sharding of every global value.
  struct Local {
    Value value;
    ShardingSpec spec;
  };

  FailureOr<RankedTensorType> localTypeOf(Value global,
                                          const ShardingSpec &spec,
                                          Location loc);
  /// The sharding annotated on `global` as produced (its only user), or
  /// replicated for scalars.
  FailureOr<ShardingSpec> producedSpec(Value global);

  LogicalResult partition(Operation *op);
  LogicalResult partitionParam(ParamOp op);
  LogicalResult reshard(shard::ShardOp op);
  LogicalResult partitionLinear(LinearOp op);
  LogicalResult partitionFFN(Operation *op, Value gate);
  LogicalResult partitionExperts(ExpertsOp op);
  LogicalResult partitionReturn(func::ReturnOp op);
  /// Clones `op` on local operands with local result types.
  FailureOr<Operation *> cloneLocal(Operation *op);
  Value allReduce(Value v, StringRef grid, ArrayRef<int16_t> axes);

  /// Product of the sizes of `axes` of `grid`.
  FailureOr<int64_t> groupSize(StringRef grid, ArrayRef<int16_t> axes,
                               Location loc);

  func::FuncOp fn;
  OpBuilder b;
  int64_t replicaSlots;
  /// The MoE layer (placement table) of every moe.experts, in order, and of
  /// the moe.param each of them takes its expert weights from.
  DenseMap<Operation *, int64_t> expertsLayer;
  DenseMap<Value, int64_t> expertWeightLayer;
  DenseMap<Value, Local> locals;
  llvm::StringMap<SmallVector<int64_t>> grids;
  SmallVector<Type> resultTypes;
  SmallVector<Attribute> resultSplits;
};

FailureOr<RankedTensorType>
Partitioner::localTypeOf(Value global, const ShardingSpec &spec,
                         Location loc) {
  auto type = cast<RankedTensorType>(global.getType());
  auto it = grids.find(spec.grid);
  if (it == grids.end()) {
    auto shape = gridShape(fn, spec.grid);
    if (failed(shape))
      return failure();
    it = grids.try_emplace(spec.grid, *shape).first;
  }
  return localType(type, spec, it->second, loc);
}

FailureOr<int64_t> Partitioner::groupSize(StringRef grid,
                                          ArrayRef<int16_t> axes,
                                          Location loc) {
  auto it = grids.find(grid);
  if (it == grids.end()) {
    auto shape = gridShape(fn, grid);
    if (failed(shape))
      return failure();
    it = grids.try_emplace(grid, *shape).first;
  }
  int64_t size = 1;
  for (int16_t axis : axes)
    size *= it->second[axis];
  return size;
}

FailureOr<ShardingSpec> Partitioner::producedSpec(Value global) {
  auto type = cast<RankedTensorType>(global.getType());
  for (Operation *user : global.getUsers())
    if (auto annotation = dyn_cast<shard::ShardOp>(user))
      if (!annotation.getAnnotateForUsers())
        return ShardingSpec::fromValue(annotation.getSharding(),
                                       annotation.getLoc());
  if (type.getRank() == 0)
    return ShardingSpec::replicated(0);
  return emitError(global.getLoc(), "value has no sharding annotation; run "
                                    "moe-shard first");
}

FailureOr<Operation *> Partitioner::cloneLocal(Operation *op) {
  IRMapping mapping;
  for (Value operand : op->getOperands())
    mapping.map(operand, locals.lookup(operand).value);
  Operation *clone = b.clone(*op, mapping);
  for (auto [g, l] : llvm::zip(op->getResults(), clone->getResults())) {
    auto spec = producedSpec(g);
    if (failed(spec))
      return failure();
    auto type = localTypeOf(g, *spec, op->getLoc());
    if (failed(type))
      return failure();
    l.setType(*type);
    locals[g] = {l, *spec};
  }
  return clone;
}

Value Partitioner::allReduce(Value v, StringRef grid, ArrayRef<int16_t> axes) {
  return shard::AllReduceOp::create(b, v.getLoc(), v.getType(), grid, axes, v,
                                    shard::ReductionKind::Sum)
      .getResult();
}

LogicalResult Partitioner::reshard(shard::ShardOp op) {
  Local from = locals.lookup(op.getSrc());
  auto target = ShardingSpec::fromValue(op.getSharding(), op.getLoc());
  if (failed(target))
    return failure();
  if (!op.getAnnotateForUsers() || from.spec == *target) {
    locals[op.getResult()] = {from.value, *target};
    return success();
  }
  if (from.spec.grid != target->grid)
    return op.emitOpError("resharding between grids is not supported");
  // One grid axis at a time: an axis leaving a dimension is gathered, an axis
  // arriving is sliced, an axis moving between dimensions is an all-to-all.
  // A moving axis must be the minor split of its source dimension and
  // becomes the minor split of its destination.
  Location loc = op.getLoc();
  ShardingSpec current = from.spec;
  Value value = from.value;
  StringRef grid = current.grid;
  auto dimOf = [](const ShardingSpec &spec, int16_t axis) -> int64_t {
    for (auto [d, axes] : llvm::enumerate(spec.dims))
      if (llvm::is_contained(axes, axis))
        return d;
    return -1;
  };
  auto unsupported = [&] {
    InFlightDiagnostic diag = op.emitOpError("cannot reshard ");
    diag << op.getSrc().getType() << " between these shardings";
    return diag;
  };
  for (int16_t axis = 0; axis < 3; ++axis) {
    int64_t src = dimOf(current, axis), dst = dimOf(*target, axis);
    if (src == dst)
      continue;
    if (src >= 0 && current.dims[src].back() != axis)
      return unsupported();
    ShardingSpec next = current;
    if (src >= 0)
      next.dims[src].pop_back();
    if (dst >= 0)
      next.dims[dst].push_back(axis);
    auto type = localTypeOf(op.getSrc(), next, loc);
    if (failed(type))
      return failure();
    if (src >= 0 && dst >= 0)
      value = shard::AllToAllOp::create(b, loc, *type, grid, {axis}, value,
                                        APInt(64, dst), APInt(64, src))
                  .getResult();
    else if (src >= 0)
      value = shard::AllGatherOp::create(b, loc, *type, grid, {axis}, value,
                                         APInt(64, src))
                  .getResult();
    else
      value = shard::AllSliceOp::create(b, loc, *type, value, grid, {axis},
                                        dst)
                  .getResult();
    current = std::move(next);
  }
  if (current != *target)
    return unsupported();
  locals[op.getResult()] = {value, current};
  return success();
}

LogicalResult Partitioner::partitionLinear(LinearOp op) {
  auto clone = cloneLocal(op);
  if (failed(clone))
    return failure();
  ShardingSpec in = locals.lookup(op.getInput()).spec;
  ArrayRef<int16_t> contracted = in.dims.back();
  if (!contracted.empty()) {
    // Row parallel: partial sums over the split input features.
    Local &out = locals[op.getResult()];
    out.value = allReduce(out.value, in.grid, contracted);
  }
  return success();
}

LogicalResult Partitioner::partitionFFN(Operation *op, Value gate) {
  auto clone = cloneLocal(op);
  if (failed(clone))
    return failure();
  ShardingSpec weights = locals.lookup(gate).spec;
  ArrayRef<int16_t> split = weights.dims[0];
  if (!split.empty()) {
    Local &out = locals[op->getResult(0)];
    out.value = allReduce(out.value, weights.grid, split);
  }
  return success();
}

/// The capacity drop that produced routed `indices`, through resharding
/// annotations; null when the routing is dropless.
static DropOverCapacityOp droppedBy(Value indices) {
  while (auto shard = indices.getDefiningOp<shard::ShardOp>())
    indices = shard.getSrc();
  return indices.getDefiningOp<DropOverCapacityOp>();
}

LogicalResult Partitioner::partitionExperts(ExpertsOp op) {
  ShardingSpec weights = locals.lookup(op.getGateWeight()).spec;
  ArrayRef<int16_t> epAxes = weights.dims[0];
  if (epAxes.empty())
    return cloneLocal(op);
  if (op.getCapacityFactor())
    return op.emitOpError("has a capacity_factor: run moe-expand-capacity "
                          "before moe-shard");
  // permute -> dispatch -> grouped SwiGLU on the local experts -> combine ->
  // unpermute.
  Location loc = op.getLoc();
  Value x = locals.lookup(op.getInput()).value;
  Value indices = locals.lookup(op.getIndices()).value;
  Value routerWeights = locals.lookup(op.getWeights()).value;
  Value gate = locals.lookup(op.getGateWeight()).value;
  auto xType = cast<RankedTensorType>(x.getType());
  int64_t experts = op.getNumExperts();
  // The expert slots of each rank (partitionParam).
  int64_t localExperts = cast<ShapedType>(gate.getType()).getShape()[0];
  auto ranks = groupSize(weights.grid, epAxes, op.getLoc());
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
  IntegerAttr placement = b.getI64IntegerAttr(expertsLayer.lookup(op));
  auto rowsType = RankedTensorType::get({slots, hidden}, f32);
  // A source rank sends a token at most min(top_k, local experts) times;
  // with a capacity drop, no expert receives more than its capacity.
  int64_t capacity =
      groupSize * (slots / topK) * std::min(topK, localExperts);
  if (auto drop = droppedBy(op.getIndices()))
    capacity = std::min(capacity,
                        localExperts * static_cast<int64_t>(drop.getCapacity()));
  auto recvType = RankedTensorType::get({capacity, hidden}, f32);

  auto permute = PermuteOp::create(
      b, loc, rowsType, offsetsType,
      RankedTensorType::get({slots}, b.getI32Type()), x, indices, experts);
  auto dispatch = DispatchOp::create(
      b, loc, recvType, slotOffsetsType, permute.getPermuted(),
      permute.getOffsets(), weights.grid, b.getDenseI16ArrayAttr(epAxes),
      placement);
  Value expertOut = GroupedSwiGLUOp::create(
      b, loc, recvType, dispatch.getReceived(), dispatch.getReceivedOffsets(),
      gate, locals.lookup(op.getUpWeight()).value,
      locals.lookup(op.getDownWeight()).value);
  Value back = CombineOp::create(b, loc, rowsType, expertOut,
                                 dispatch.getReceivedOffsets(),
                                 permute.getOffsets(), weights.grid,
                                 b.getDenseI16ArrayAttr(epAxes), placement);
  auto spec = producedSpec(op.getResult());
  if (failed(spec))
    return failure();
  auto outType = localTypeOf(op.getResult(), *spec, loc);
  if (failed(outType))
    return failure();
  Value out = UnpermuteOp::create(b, loc, *outType, back,
                                  permute.getRowToSlot(), routerWeights);
  locals[op.getResult()] = {out, *spec};
  return success();
}

LogicalResult Partitioner::partitionReturn(func::ReturnOp op) {
  SmallVector<Value> values;
  for (Value v : op.getOperands()) {
    Local local = locals.lookup(v);
    values.push_back(local.value);
    resultTypes.push_back(local.value.getType());
    resultSplits.push_back(local.spec.splitNames(b));
  }
  func::ReturnOp::create(b, op.getLoc(), values);
  return success();
}

LogicalResult Partitioner::partition(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](shard::ShardingOp) { return success(); })
      .Case([&](shard::ShardOp op) { return reshard(op); })
      .Case([&](ParamOp op) { return partitionParam(op); })
      .Case([&](LinearOp op) { return partitionLinear(op); })
      .Case([&](MLPOp op) { return partitionFFN(op, op.getGateWeight()); })
      .Case([&](SharedExpertsOp op) {
        return partitionFFN(op, op.getGateWeight());
      })
      .Case([&](ExpertsOp op) { return partitionExperts(op); })
      .Case([&](func::ReturnOp op) { return partitionReturn(op); })
      .Case([&](tensor::ExpandShapeOp op) -> LogicalResult {
        // The static output shape is an attribute: build a fresh op.
        auto spec = producedSpec(op.getResult());
        if (failed(spec))
          return failure();
        auto type = localTypeOf(op.getResult(), *spec, op.getLoc());
        if (failed(type))
          return failure();
        Value local = tensor::ExpandShapeOp::create(
            b, op.getLoc(), *type, locals.lookup(op.getSrc()).value,
            op.getReassociationIndices());
        locals[op.getResult()] = {local, *spec};
        return success();
      })
      .Case<EmbeddingOp, RMSNormOp, RopeOp, AttentionOp, AddOp, RouterOp,
            CrossEntropyOp, AuxLossOp, ZLossOp, DropOverCapacityOp,
            tensor::CollapseShapeOp>(
          [&](Operation *op) { return cloneLocal(op); })
      .Default([](Operation *op) {
        return op->emitOpError("has no partitioning rule (moe-partition)");
      });
}

/// The moe.param a value is, through resharding annotations; null if none.
static ParamOp paramOf(Value value) {
  while (auto shard = value.getDefiningOp<shard::ShardOp>())
    value = shard.getSrc();
  return value.getDefiningOp<ParamOp>();
}

/// A weight takes its local block; the expert weights of an expert-parallel
/// layer take one row per expert slot instead: E/n + replicaSlots of them.
LogicalResult Partitioner::partitionParam(ParamOp op) {
  auto clone = cloneLocal(op);
  if (failed(clone))
    return failure();
  Local &local = locals[op.getResult()];
  (*clone)->setAttr(kSplitAttr, local.spec.splitNames(b));
  (*clone)->setAttr(kGlobalShapeAttr,
                    b.getDenseI64ArrayAttr(op.getType().getShape()));
  auto layer = expertWeightLayer.find(op.getResult());
  if (layer == expertWeightLayer.end() || local.spec.dims.empty() ||
      local.spec.dims[0].empty())
    return success();
  auto type = cast<RankedTensorType>(local.value.getType());
  int64_t experts = op.getType().getShape()[0];
  int64_t slots = type.getShape()[0] + replicaSlots;
  if (slots > experts)
    return op.emitOpError() << "cannot have " << slots
                            << " expert slots per rank (replica-slots "
                            << replicaSlots << "): the layer has " << experts
                            << " experts";
  SmallVector<int64_t> shape(type.getShape());
  shape[0] = slots;
  local.value.setType(type.clone(shape));
  (*clone)->setAttr(kPlacementAttr, b.getI64IntegerAttr(layer->second));
  return success();
}

LogicalResult Partitioner::run() {
  Block &body = fn.getBody().front();
  if (replicaSlots < 0)
    return fn.emitOpError() << "replica-slots is " << replicaSlots
                            << ", expected 0 or more";
  for (Operation &op : body)
    if (auto experts = dyn_cast<ExpertsOp>(op)) {
      int64_t layer = static_cast<int64_t>(expertsLayer.size());
      expertsLayer[experts] = layer;
      for (Value w : {experts.getGateWeight(), experts.getUpWeight(),
                      experts.getDownWeight()})
        if (ParamOp param = paramOf(w))
          expertWeightLayer[param.getResult()] = layer;
    }
  // Arguments first: their local types make the new signature.
  SmallVector<Type> argTypes;
  SmallVector<ShardingSpec> argSpecs;
  for (BlockArgument arg : body.getArguments()) {
    auto spec = producedSpec(arg);
    if (failed(spec))
      return failure();
    auto type = localTypeOf(arg, *spec, arg.getLoc());
    if (failed(type))
      return failure();
    argTypes.push_back(*type);
    argSpecs.push_back(*spec);
  }
  auto local = func::FuncOp::create(b, fn.getLoc(), fn.getSymName(),
                                    b.getFunctionType(argTypes, {}));
  for (NamedAttribute attr : fn->getDiscardableAttrs())
    local->setAttr(attr.getName(), attr.getValue());
  Block *localBody = local.addEntryBlock();
  for (auto [i, arg] : llvm::enumerate(body.getArguments())) {
    locals[arg] = {localBody->getArgument(i), argSpecs[i]};
    local.setArgAttr(i, kSplitAttr, argSpecs[i].splitNames(b));
    local.setArgAttr(
        i, kGlobalShapeAttr,
        b.getDenseI64ArrayAttr(cast<ShapedType>(arg.getType()).getShape()));
  }
  b.setInsertionPointToStart(localBody);
  for (Operation &op : body)
    if (failed(partition(&op))) {
      local.erase();
      return failure();
    }
  local.setFunctionType(b.getFunctionType(argTypes, resultTypes));
  for (auto [i, split] : llvm::enumerate(resultSplits))
    local.setResultAttr(i, kSplitAttr, split);
  fn.erase();
  return success();
}

struct PartitionPass : mlir::moe::impl::PartitionBase<PartitionPass> {
  using PartitionBase::PartitionBase;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (ifMeshed && (!module->hasAttr(MoEDialect::getMeshAttrName()) ||
                     module->hasAttr(MoEDialect::getPartitionedAttrName())))
      return; // one rank, or partitioned already
    for (func::FuncOp fn : modelFunctions(module)) {
      if (!fn.getBody().hasOneBlock()) {
        fn.emitOpError("a model function must have a single block");
        return signalPassFailure();
      }
      if (failed(Partitioner(fn, replicaSlots).run()))
        return signalPassFailure();
    }
    module->setAttr(MoEDialect::getPartitionedAttrName(),
                    UnitAttr::get(&getContext()));
  }
};

} // namespace
