//===- ShardingSpec.h - Shardings shared by moe-shard and moe-partition --===//
//
// The sharding of one tensor value on one of the two grids moe-assign-mesh
// creates: for every tensor dimension, the grid axes it is split over (major
// first), as the upstream `shard.sharding` op's split_axes. A dimension with
// no axes is replicated. Only axes of size > 1 are ever listed, so a
// 1-rank axis never appears in the IR.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TRANSFORMS_SHARDINGSPEC_H
#define MOE_LIB_TRANSFORMS_SHARDINGSPEC_H

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/ADT/SmallVector.h"

namespace mlir::moe {

/// The two grids of moe-assign-mesh, over the same ranks.
inline constexpr llvm::StringLiteral kDenseGrid = "mesh";         // dp, cp, tp
inline constexpr llvm::StringLiteral kExpertGrid = "expert_mesh"; // edp, ep, tp
enum DenseAxis : int16_t { kDpAxis = 0, kCpAxis = 1, kTpAxis = 2 };
enum ExpertAxis : int16_t { kEdpAxis = 0, kEpAxis = 1, kExpertTpAxis = 2 };

/// The mesh-axis name of `axis` of grid `grid` ("dp", "cp", "tp", "edp",
/// "ep"), or "" for an unknown grid or axis.
llvm::StringRef meshAxisName(llvm::StringRef grid, int16_t axis);

struct ShardingSpec {
  std::string grid = kDenseGrid.str();
  llvm::SmallVector<llvm::SmallVector<int16_t, 2>, 4> dims;

  static ShardingSpec replicated(int64_t rank,
                                 llvm::StringRef grid = kDenseGrid) {
    ShardingSpec spec;
    spec.grid = grid.str();
    spec.dims.resize(rank);
    return spec;
  }
  /// Reads a `shard.sharding` value (no halos or explicit offsets).
  static FailureOr<ShardingSpec> fromValue(Value sharding, Location loc);

  bool isReplicated() const {
    return llvm::all_of(dims, [](const auto &axes) { return axes.empty(); });
  }
  bool operator==(const ShardingSpec &other) const {
    return grid == other.grid && dims == other.dims;
  }
  bool operator!=(const ShardingSpec &other) const {
    return !(*this == other);
  }

  /// Creates the `shard.sharding` op of this spec.
  Value materialize(OpBuilder &b, Location loc) const;
  /// `moe.split` attribute: per dimension the mesh-axis names.
  ArrayAttr splitNames(Builder &b) const;
};

/// The shape of the grid named `grid` in the module of `from`.
FailureOr<llvm::SmallVector<int64_t>> gridShape(Operation *from,
                                                llvm::StringRef grid);

/// Shard of `global` under `spec` on a grid of `shape`; a diagnostic at
/// `loc` when a split does not divide its dimension.
FailureOr<RankedTensorType> localType(RankedTensorType global,
                                      const ShardingSpec &spec,
                                      llvm::ArrayRef<int64_t> shape,
                                      Location loc);

/// The model functions of `module`: defined functions that are not lowered
/// entry points (no `moe.entry`).
llvm::SmallVector<func::FuncOp> modelFunctions(ModuleOp module);

/// Attribute names the partitioner leaves for the manifest.
inline constexpr llvm::StringLiteral kSplitAttr = "moe.split";
inline constexpr llvm::StringLiteral kGlobalShapeAttr = "moe.global_shape";
inline constexpr llvm::StringLiteral kPlacementAttr =
    MoEDialect::getPlacementAttrName();

} // namespace mlir::moe

#endif // MOE_LIB_TRANSFORMS_SHARDINGSPEC_H
