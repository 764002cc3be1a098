//===- Partitioner.cpp - sharded model -> per-rank SPMD program -----------===//
//
// moe-partition: implements the shardings moe-shard chose. Every value gets
// its local (per-rank) type, every resharding annotation becomes the
// collective that performs it, and ops whose local computation differs from
// the global one get their communication from their family's rule
// (PartitionRules.h says where each lives).
//
//===----------------------------------------------------------------------===//

#include "PartitionRules.h"

#include "../CollectiveFusion.h"

#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/IRMapping.h"

namespace mlir::moe {
#define GEN_PASS_DEF_PARTITION
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

namespace mlir::moe::partition {

namespace {

/// The moe.param a value is, through resharding annotations; null if none.
ParamOp paramOf(Value value) {
  while (auto shard = value.getDefiningOp<shard::ShardOp>())
    value = shard.getSrc();
  return value.getDefiningOp<ParamOp>();
}

} // namespace

FailureOr<RankedTensorType>
Partitioner::localTypeOf(Value global, const ShardingSpec &spec, Location loc) {
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

FailureOr<int64_t>
Partitioner::groupSize(StringRef grid, ArrayRef<int16_t> axes, Location loc) {
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
  auto sum = [&](Value in, ArrayRef<int16_t> over) -> Value {
    return shard::AllReduceOp::create(b, v.getLoc(), v.getType(), grid, over,
                                      in, shard::ReductionKind::Sum)
        .getResult();
  };
  // The runtime's groups are one axis, or dp x cp: tp together with other
  // axes (a sequence-parallel loss's token axes) is summed in two steps.
  if (axes.size() > 1 && llvm::is_contained(axes, kTpAxis)) {
    SmallVector<int16_t> rest(axes);
    llvm::erase(rest, kTpAxis);
    return sum(sum(v, rest), {kTpAxis});
  }
  return sum(v, axes);
}

LogicalResult Partitioner::run() {
  Block &body = fn.getBody().front();
  if (replicaSlots < 0)
    return fn.emitOpError()
           << "replica-slots is " << replicaSlots << ", expected 0 or more";
  for (Operation &op : body)
    if (auto experts = dyn_cast<ExpertsOp>(op)) {
      int64_t layer = static_cast<int64_t>(layers.size());
      layers[experts] = layer;
      for (Value w : {experts.getGateWeight(), experts.getUpWeight(),
                      experts.getDownWeight()})
        if (ParamOp param = paramOf(w))
          weightLayers[param.getResult()] = layer;
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
  fuseReduceScatters(*localBody);
  mergeDuplicateGathers(*localBody);
  fn.erase();
  return success();
}

LogicalResult Partitioner::partition(Operation *op) {
  if (const PartitionRules::Rule *rule = rules.lookup(op))
    return (*rule)(op, *this);
  return op->emitOpError("has no partitioning rule (moe-partition)");
}

std::optional<int64_t> Partitioner::expertWeightLayer(Value weight) const {
  auto it = weightLayers.find(weight);
  if (it == weightLayers.end())
    return std::nullopt;
  return it->second;
}

namespace {

LogicalResult partitionShard(shard::ShardOp op, Partitioner &p) {
  OpBuilder &b = p.builder();
  Partitioner::Local from = p.local(op.getSrc());
  auto target = ShardingSpec::fromValue(op.getSharding(), op.getLoc());
  if (failed(target))
    return failure();
  if (!op.getAnnotateForUsers() || from.spec == *target) {
    p.setLocal(op.getResult(), {from.value, *target});
    return success();
  }
  if (from.spec.grid != target->grid)
    return op.emitOpError("resharding between grids is not supported");
  // One grid axis at a time: an axis leaving a dimension is gathered, an axis
  // arriving is sliced, an axis moving between dimensions is an all-to-all.
  // An axis leaves only as the minor split of its dimension, and arrives
  // only once the splits before it in the target are there: so a sequence
  // split over (cp, tp) is gathered tp first, and sliced cp first.
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
  // Whether `axis` can move now, from `src` to `dst` (-1: none).
  auto ready = [&](int16_t axis, int64_t src, int64_t dst) {
    if (src >= 0 && current.dims[src].back() != axis)
      return false;
    if (dst < 0)
      return true;
    ArrayRef<int16_t> want = target->dims[dst];
    size_t at = llvm::find(want, axis) - want.begin();
    ArrayRef<int16_t> have = current.dims[dst];
    return have.size() == at && llvm::equal(have, want.take_front(at));
  };
  for (bool moved = true; moved;) {
    moved = false;
    for (int16_t axis = 0; axis < 3; ++axis) {
      int64_t src = dimOf(current, axis), dst = dimOf(*target, axis);
      if (src == dst || !ready(axis, src, dst))
        continue;
      ShardingSpec next = current;
      if (src >= 0)
        next.dims[src].pop_back();
      if (dst >= 0)
        next.dims[dst].push_back(axis);
      auto type = p.localTypeOf(op.getSrc(), next, loc);
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
        value =
            shard::AllSliceOp::create(b, loc, *type, value, grid, {axis}, dst)
                .getResult();
      current = std::move(next);
      moved = true;
    }
  }
  if (current != *target)
    return unsupported();
  p.setLocal(op.getResult(), {value, current});
  return success();
}

/// A weight takes its local block; the expert weights of an expert-parallel
/// layer take one row per expert slot instead: E/n + p.getReplicaSlots() of
/// them.
LogicalResult partitionParam(ParamOp op, Partitioner &p) {
  OpBuilder &b = p.builder();
  auto clone = p.cloneLocal(op);
  if (failed(clone))
    return failure();
  Partitioner::Local local = p.local(op.getResult());
  (*clone)->setAttr(kSplitAttr, local.spec.splitNames(b));
  (*clone)->setAttr(kGlobalShapeAttr,
                    b.getDenseI64ArrayAttr(op.getType().getShape()));
  std::optional<int64_t> layer = p.expertWeightLayer(op.getResult());
  if (!layer || local.spec.dims.empty() || local.spec.dims[0].empty())
    return success();
  auto type = cast<RankedTensorType>(local.value.getType());
  int64_t experts = op.getType().getShape()[0];
  int64_t slots = type.getShape()[0] + p.getReplicaSlots();
  if (slots > experts)
    return op.emitOpError()
           << "cannot have " << slots
           << " expert slots per rank (replica-slots " << p.getReplicaSlots()
           << "): the layer has " << experts << " experts";
  SmallVector<int64_t> shape(type.getShape());
  shape[0] = slots;
  local.value.setType(type.clone(shape));
  p.setLocal(op.getResult(), local);
  (*clone)->setAttr(kPlacementAttr, b.getI64IntegerAttr(*layer));
  return success();
}

LogicalResult partitionReturn(func::ReturnOp op, Partitioner &p) {
  OpBuilder &b = p.builder();
  SmallVector<Value> values;
  for (Value v : op.getOperands()) {
    Partitioner::Local local = p.local(v);
    values.push_back(local.value);
    p.addResult(local.value.getType(), local.spec.splitNames(b));
  }
  func::ReturnOp::create(b, op.getLoc(), values);
  return success();
}

LogicalResult partitionSharding(shard::ShardingOp, Partitioner &) {
  return success(); // the sharding values of the annotations
}

} // namespace

void populateStructuralPartitions(PartitionRules &rules) {
  rules.add(partitionSharding);
  rules.add(partitionShard);
  rules.add(partitionParam);
  rules.add(partitionReturn);
}

const PartitionRules &allPartitionRules() {
  static const PartitionRules rules = [] {
    PartitionRules r;
    populateStructuralPartitions(r);
    populateDensePartitions(r);
    populateExpertPartitions(r);
    populateLossPartitions(r);
    return r;
  }();
  return rules;
}

} // namespace mlir::moe::partition

using namespace mlir;
using namespace mlir::moe;

namespace {

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
      if (failed(partition::Partitioner(fn, replicaSlots,
                                        partition::allPartitionRules())
                     .run()))
        return signalPassFailure();
    }
    module->setAttr(MoEDialect::getPartitionedAttrName(),
                    UnitAttr::get(&getContext()));
  }
};

} // namespace
