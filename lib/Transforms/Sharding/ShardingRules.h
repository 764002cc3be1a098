//===- ShardingRules.h - The sharding rule of each op -----------*- C++ -*-===//
//
// Private to moe-shard. The pass walks a model function once, forward
// (ShardingChooser::run); each op's rule, registered by its family, chooses
// its results' shardings and the sharding it needs of each operand from its
// operands' shardings (Megatron-Core and torchtitan layouts, see the pass
// description in Passes.td):
//
//   Dense.cpp        the ops of DenseOps.td, weights and reshapes (column or
//                    row parallel projections, Ulysses head splits)
//   Experts.cpp      the ops of ExpertOps.td
//   Losses.cpp       the ops of LossOps.td and the function's results
//                    (whole everywhere)
//
// An op without a rule is a diagnostic naming it. ShardingChooser.cpp holds
// the walk, the writing of the choices as shard.shard annotations, and the
// pass.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TRANSFORMS_SHARDING_SHARDINGRULES_H
#define MOE_LIB_TRANSFORMS_SHARDING_SHARDINGRULES_H

#include "../OpRules.h"
#include "../ShardingSpec.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/MapVector.h"

#include <functional>

namespace mlir::moe::sharding {

using Axes = SmallVector<int16_t, 2>;

inline int64_t rankOf(Value v) {
  return cast<ShapedType>(v.getType()).getRank();
}

class ShardingChooser;
/// Op -> its rule of this pass, filled by the family files.
using ShardingRules = OpRules<ShardingChooser>;

/// The choices of one model function, made op by op.
class ShardingChooser {
public:
  ShardingChooser(MeshAttr mesh, const ShardingRules &rules)
      : mesh(mesh), rules(rules) {}

  LogicalResult run(func::FuncOp fn);

  // --- For the rules -------------------------------------------------------

  MeshAttr getMesh() const { return mesh; }
  /// The token layout of a [batch, seq, ...] activation: batch over dp,
  /// sequence over cp, the rest replicated.
  ShardingSpec tokenLayout(int64_t rank) const;
  /// The layout of the activations between tensor-parallel blocks: the
  /// token layout, with the sequence split over tp as well under sequence
  /// parallelism (after cp: each cp rank's part split again).
  ShardingSpec activationLayout(int64_t rank) const;
  /// `spec` with tp taken out of every dimension but the last: the
  /// sequence-parallel tokens gathered for a tensor-parallel block.
  static ShardingSpec gatheredOverTp(ShardingSpec spec) {
    for (Axes &axes : MutableArrayRef(spec.dims).drop_back())
      llvm::erase(axes, kTpAxis);
    return spec;
  }
  static ShardingSpec withLastDim(ShardingSpec spec, Axes axes) {
    spec.dims.back() = axes;
    return spec;
  }
  /// {tp} when the mesh has tensor parallelism, else no axis.
  Axes tpAxes() const { return mesh.getTp() > 1 ? Axes{kTpAxis} : Axes{}; }
  static ShardingSpec replicated(Value v) {
    return ShardingSpec::replicated(rankOf(v));
  }

  /// The sharding users of `v` see (after any resharding annotation). A
  /// copy, never a reference into the map, which moves its entries as it
  /// grows.
  ShardingSpec spec(Value v) const { return seen.find(v)->second; }
  /// `v` is produced in `s` (and its users see it so, unless resharded).
  void produce(Value v, ShardingSpec s) {
    produced[v] = s;
    seen[v] = std::move(s);
  }
  /// `v`, as its users see it, is resharded to `s` for all of them.
  void reshardForUsers(Value v, ShardingSpec s) { seen[v] = std::move(s); }
  /// Operand `index` of `op` is needed as `s`.
  void need(Operation *op, unsigned index, ShardingSpec s) {
    needs.push_back({op, index, std::move(s)});
  }
  /// A weight gets the sharding its (first) user needs.
  void param(Value weight, ShardingSpec s) {
    if (!produced.count(weight))
      produce(weight, s);
  }

private:
  LogicalResult visit(Operation *op);
  void materialize(func::FuncOp fn);

  MeshAttr mesh;
  const ShardingRules &rules;
  llvm::MapVector<Value, ShardingSpec> produced;
  DenseMap<Value, ShardingSpec> seen;
  struct Need {
    Operation *op;
    unsigned index;
    ShardingSpec spec;
  };
  SmallVector<Need> needs;
};

void populateDenseShardings(ShardingRules &rules);
void populateExpertShardings(ShardingRules &rules);
void populateLossShardings(ShardingRules &rules);

/// Every rule above.
const ShardingRules &allShardingRules();

} // namespace mlir::moe::sharding

#endif // MOE_LIB_TRANSFORMS_SHARDING_SHARDINGRULES_H
