//===- ShardingChooser.cpp - choose a sharding for every value ------------===//
//
// moe-shard: decides how every tensor of a model function is laid out over
// the mesh and writes the decision as upstream `shard.shard` annotations,
// which moe-partition then implements. The rules follow Megatron-Core and
// torchtitan (see the pass description in Passes.td); they are applied in
// one forward walk, each op choosing its result's sharding and the sharding
// it needs of each operand from its operands' shardings (ShardingRules.h
// says where each op's rule lives).
//
//===----------------------------------------------------------------------===//

#include "ShardingRules.h"

#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"

namespace mlir::moe {
#define GEN_PASS_DEF_SHARD
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

namespace mlir::moe::sharding {

ShardingSpec ShardingChooser::tokenLayout(int64_t rank) const {
  ShardingSpec spec = ShardingSpec::replicated(rank);
  if (rank >= 1 && mesh.getDp() > 1)
    spec.dims[0] = {kDpAxis};
  if (rank >= 2 && mesh.getCp() > 1)
    spec.dims[1] = {kCpAxis};
  return spec;
}

ShardingSpec ShardingChooser::activationLayout(int64_t rank) const {
  ShardingSpec spec = tokenLayout(rank);
  if (rank >= 2 && mesh.getSp())
    spec.dims[1].push_back(kTpAxis);
  return spec;
}

LogicalResult ShardingChooser::run(func::FuncOp fn) {
  for (BlockArgument arg : fn.getArguments())
    produce(arg, tokenLayout(rankOf(arg)));
  for (Operation &op : fn.getBody().front())
    if (failed(visit(&op)))
      return failure();
  materialize(fn);
  return success();
}

LogicalResult ShardingChooser::visit(Operation *op) {
  if (const ShardingRules::Rule *rule = rules.lookup(op))
    return (*rule)(op, *this);
  return op->emitOpError("has no sharding rule (moe-shard)");
}

void ShardingChooser::materialize(func::FuncOp fn) {
  OpBuilder b(fn.getContext());
  Block &body = fn.getBody().front();
  // Every value: its sharding as produced, then (where different) as its
  // users see it.
  for (auto &[value, producedSpec] : produced) {
    if (rankOf(value) == 0)
      continue;
    if (auto arg = dyn_cast<BlockArgument>(value))
      b.setInsertionPointToStart(&body);
    else
      b.setInsertionPointAfter(value.getDefiningOp());
    Location loc = value.getLoc();
    Value annotated = shard::ShardOp::create(
        b, loc, value, producedSpec.materialize(b, loc), false);
    value.replaceAllUsesExcept(annotated, annotated.getDefiningOp());
    // A copy: inserting `annotated` below may grow `seen` and move its
    // entries.
    ShardingSpec users = seen.find(value)->second;
    if (users != producedSpec) {
      Value resharded = shard::ShardOp::create(b, loc, annotated,
                                               users.materialize(b, loc), true);
      annotated.replaceAllUsesExcept(resharded, resharded.getDefiningOp());
    }
    seen[annotated] = std::move(users);
  }
  // Operands needed in another sharding than their users see.
  for (Need &n : needs) {
    OpOperand &operand = n.op->getOpOperand(n.index);
    Value v = operand.get();
    if (rankOf(v) == 0)
      continue;
    auto annotation = v.getDefiningOp<shard::ShardOp>();
    if (!annotation)
      continue;
    FailureOr<ShardingSpec> current =
        ShardingSpec::fromValue(annotation.getSharding(), v.getLoc());
    if (succeeded(current) && *current == n.spec)
      continue;
    b.setInsertionPoint(n.op);
    Location loc = n.op->getLoc();
    operand.set(
        shard::ShardOp::create(b, loc, v, n.spec.materialize(b, loc), true));
  }
}

const ShardingRules &allShardingRules() {
  static const ShardingRules rules = [] {
    ShardingRules r;
    populateDenseShardings(r);
    populateExpertShardings(r);
    populateLossShardings(r);
    return r;
  }();
  return rules;
}

} // namespace mlir::moe::sharding

using namespace mlir;
using namespace mlir::moe;

namespace {

struct ShardPass : mlir::moe::impl::ShardBase<ShardPass> {
  using ShardBase::ShardBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto mesh = module->getAttrOfType<MeshAttr>(MoEDialect::getMeshAttrName());
    if (ifMeshed &&
        (!mesh || module->hasAttr(MoEDialect::getPartitionedAttrName())))
      return; // one rank, or partitioned already
    if (!mesh) {
      emitError(module.getLoc(), "the module has no moe.mesh; run "
                                 "moe-assign-mesh first");
      return signalPassFailure();
    }
    for (func::FuncOp fn : modelFunctions(module)) {
      if (!fn.getBody().hasOneBlock()) {
        fn.emitOpError("a model function must have a single block");
        return signalPassFailure();
      }
      if (failed(sharding::ShardingChooser(mesh, sharding::allShardingRules())
                     .run(fn)))
        return signalPassFailure();
    }
  }
};

} // namespace
