//===- ShardWeights.cpp - ZeRO stages 2 and 3: weights split over dp x cp -===//
//
// moe-shard-weights: on the per-rank program, every weight the ranks of the
// data-parallel plane (dp x cp) hold whole is split over them as well: each
// rank keeps one slice, and the ops that read the weight read the whole
// block from an all-gather: one right in front of each of them (stage 3),
// or one right after the weight, whose result the training step keeps for
// the backward (stage 2). The gradient needs nothing more:
// moe-build-train-step sums the gathered weight's gradient over the plane
// and the all-gather's transpose slices it, so each rank holds the
// gradient, master weights and AdamW state of its slice only.
//
//===----------------------------------------------------------------------===//

#include "ShardingSpec.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"

namespace mlir::moe {
#define GEN_PASS_DEF_SHARDWEIGHTS
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The data-parallel axes of the dense grid (size > 1), major first.
SmallVector<int16_t, 2> planeAxes(ArrayRef<int64_t> dense) {
  SmallVector<int16_t, 2> axes;
  for (int16_t axis : {kDpAxis, kCpAxis})
    if (dense[axis] > 1)
      axes.push_back(axis);
  return axes;
}

/// True when `split` (a weight's moe.split) names no axis but tp: the
/// weight is the same on every rank of the data-parallel plane. Expert
/// weights split over ep (and replicated over edp) keep their layout.
bool wholeOnPlane(ArrayAttr split) {
  for (Attribute dim : split)
    for (Attribute name : cast<ArrayAttr>(dim))
      if (cast<StringAttr>(name).getValue() !=
          meshAxisName(kDenseGrid, kTpAxis))
        return false;
  return true;
}

/// Splits `param` over `axes` (of `parts` ranks) along its first dimension
/// that divides, and gathers it in front of each op that uses it (`perUse`),
/// or once, right after it. A weight with no such dimension stays whole.
void shardWeight(ParamOp param, ArrayRef<int16_t> axes, int64_t parts,
                 bool perUse) {
  auto type = cast<RankedTensorType>(param.getType());
  auto split = param->getAttrOfType<ArrayAttr>(kSplitAttr);
  if (!split || !wholeOnPlane(split))
    return;
  const auto *dim = llvm::find_if(
      type.getShape(), [&](int64_t size) { return size % parts == 0; });
  if (dim == type.getShape().end())
    return;
  int64_t d = dim - type.getShape().begin();

  OpBuilder b(param);
  SmallVector<Attribute> names(split.begin(), split.end());
  names.resize(type.getRank(), b.getArrayAttr({}));
  SmallVector<Attribute> dimNames(cast<ArrayAttr>(names[d]).getValue());
  for (int16_t axis : axes)
    dimNames.push_back(b.getStringAttr(meshAxisName(kDenseGrid, axis)));
  names[d] = b.getArrayAttr(dimNames);
  param->setAttr(kSplitAttr, b.getArrayAttr(names));

  SmallVector<int64_t> shape(type.getShape());
  shape[d] /= parts;
  param.getResult().setType(type.clone(shape));
  auto gather = [&] {
    return shard::AllGatherOp::create(b, param.getLoc(), type, kDenseGrid,
                                      axes, param, APInt(64, d))
        .getResult();
  };
  if (!perUse) {
    b.setInsertionPointAfter(param);
    Value whole = gather();
    param.getResult().replaceAllUsesExcept(whole, whole.getDefiningOp());
    return;
  }
  // One gather per user, so that no whole weight outlives the op reading it.
  SmallVector<Operation *> users(param->getUsers());
  llvm::sort(users,
             [](Operation *x, Operation *y) { return x->isBeforeInBlock(y); });
  users.erase(llvm::unique(users), users.end());
  for (Operation *user : users) {
    b.setInsertionPoint(user);
    user->replaceUsesOfWith(param, gather());
  }
}

struct ShardWeightsPass
    : public mlir::moe::impl::ShardWeightsBase<ShardWeightsPass> {
  using ShardWeightsBase::ShardWeightsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (!module->hasAttr(MoEDialect::getPartitionedAttrName())) {
      module.emitError("moe-shard-weights: the module is not partitioned; "
                       "run moe-partition first");
      return signalPassFailure();
    }
    auto grid = module.lookupSymbol<shard::GridOp>(kDenseGrid);
    if (!grid) {
      module.emitError() << "moe-shard-weights: no shard.grid @" << kDenseGrid
                         << " in the module; run moe-assign-mesh first";
      return signalPassFailure();
    }
    ArrayRef<int64_t> dense = grid.getShape();
    SmallVector<int16_t, 2> axes = planeAxes(dense);
    if (stage != 2 && stage != 3) {
      module.emitError() << "moe-shard-weights: stage is " << stage.getValue()
                         << ", expected 2 or 3";
      return signalPassFailure();
    }
    if (axes.empty()) {
      module.emitError() << "moe-shard-weights: ZeRO stage "
                         << stage.getValue()
                         << " splits the weights over the data-parallel "
                            "axes, but the mesh has dp = 1 and cp = 1";
      return signalPassFailure();
    }
    int64_t parts = 1;
    for (int16_t axis : axes)
      parts *= dense[axis];
    for (func::FuncOp fn : modelFunctions(module))
      for (ParamOp param : llvm::make_early_inc_range(fn.getOps<ParamOp>()))
        shardWeight(param, axes, parts, /*perUse=*/stage == 3);
  }
};

} // namespace
