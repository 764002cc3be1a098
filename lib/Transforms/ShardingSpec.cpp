//===- ShardingSpec.cpp - Shardings shared by moe-shard and moe-partition -===//

#include "ShardingSpec.h"

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Support/MeshShape.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/SymbolTable.h"

using namespace mlir;
using namespace mlir::moe;

StringRef mlir::moe::meshAxisName(StringRef grid, int16_t axis) {
  if (axis < 0 || axis > 2)
    return "";
  if (grid == kDenseGrid)
    return ::moe::axisName(::moe::kDenseGridAxes[axis]);
  if (grid == kExpertGrid)
    return ::moe::axisName(::moe::kExpertGridAxes[axis]);
  return "";
}

FailureOr<ShardingSpec> ShardingSpec::fromValue(Value sharding,
                                                Location loc) {
  auto op = sharding.getDefiningOp<shard::ShardingOp>();
  if (!op)
    return emitError(loc, "expected a sharding defined by shard.sharding");
  if (!op.getStaticHaloSizes().empty() ||
      !op.getStaticShardedDimsOffsets().empty() ||
      !op.getDynamicHaloSizes().empty() ||
      !op.getDynamicShardedDimsOffsets().empty())
    return emitError(loc, "halo sizes and explicit shard offsets are not "
                          "supported by moe-partition");
  ShardingSpec spec;
  spec.grid = op.getGrid().str();
  for (shard::GridAxesAttr axes : op.getSplitAxes().getAxes())
    spec.dims.emplace_back(axes.asArrayRef().begin(), axes.asArrayRef().end());
  return spec;
}

Value ShardingSpec::materialize(OpBuilder &b, Location loc) const {
  SmallVector<shard::GridAxesAttr> axes;
  for (const auto &dim : dims)
    axes.push_back(b.getDenseI16ArrayAttr(dim));
  if (axes.empty())
    axes.push_back(b.getDenseI16ArrayAttr({}));
  return shard::ShardingOp::create(
             b, loc, FlatSymbolRefAttr::get(b.getContext(), grid), axes,
             ArrayRef<int64_t>{}, ArrayRef<int64_t>{})
      .getResult();
}

ArrayAttr ShardingSpec::splitNames(Builder &b) const {
  SmallVector<Attribute> result;
  for (const auto &dim : dims) {
    SmallVector<Attribute> names;
    for (int16_t axis : dim)
      names.push_back(b.getStringAttr(meshAxisName(grid, axis)));
    result.push_back(b.getArrayAttr(names));
  }
  return b.getArrayAttr(result);
}

FailureOr<SmallVector<int64_t>> mlir::moe::gridShape(Operation *from,
                                                     StringRef grid) {
  auto module = from->getParentOfType<ModuleOp>();
  auto op = module ? module.lookupSymbol<shard::GridOp>(grid) : nullptr;
  if (!op)
    return from->emitError() << "no shard.grid @" << grid
                             << " in the module; run moe-assign-mesh first";
  return SmallVector<int64_t>(op.getShape());
}

FailureOr<RankedTensorType> mlir::moe::localType(RankedTensorType global,
                                                 const ShardingSpec &spec,
                                                 ArrayRef<int64_t> shape,
                                                 Location loc) {
  if (spec.dims.size() > static_cast<size_t>(global.getRank()))
    return emitError(loc) << "a sharding of " << spec.dims.size()
                          << " dimensions does not fit " << global;
  SmallVector<int64_t> local(global.getShape());
  for (auto [d, axes] : llvm::enumerate(spec.dims)) {
    int64_t parts = 1;
    for (int16_t axis : axes) {
      if (axis < 0 || axis >= static_cast<int64_t>(shape.size()))
        return emitError(loc) << "grid axis " << axis << " is out of range";
      parts *= shape[axis];
    }
    if (local[d] % parts != 0)
      return emitError(loc) << "dimension " << d << " of " << global
                            << " does not split into " << parts << " shards";
    local[d] /= parts;
  }
  return RankedTensorType::get(local, global.getElementType());
}

SmallVector<func::FuncOp> mlir::moe::modelFunctions(ModuleOp module) {
  SmallVector<func::FuncOp> models;
  for (auto fn : module.getOps<func::FuncOp>())
    if (!fn.isDeclaration() && !fn->hasAttr(MoEDialect::getEntryAttrName()))
      models.push_back(fn);
  return models;
}
