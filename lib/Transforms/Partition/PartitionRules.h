//===- PartitionRules.h - The partition rule of each op ---------*- C++ -*-===//
//
// Private to moe-partition. The Partitioner rewrites a sharded model
// function (moe-shard's annotations) into the program one rank runs: every
// value takes its local (per-rank) type, and each op's rule, registered by
// its family, emits its local computation and the communication it needs:
//
//   Partitioner.cpp  weights (local blocks, expert slots), resharding
//                    annotations (all_gather / all_slice / all_to_all, one
//                    grid axis at a time), results; the walk and the pass
//   Dense.cpp        row-parallel linear and tensor-parallel FFNs all-reduce
//                    their partial sums; reshapes; the rest run locally
//   Experts.cpp      expert-parallel experts: permute -> dispatch -> grouped
//                    SwiGLU on the local experts -> combine -> unpermute
//   Losses.cpp       the losses run locally (on gathered inputs)
//
// An op without a rule is a diagnostic naming it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TRANSFORMS_PARTITION_PARTITIONRULES_H
#define MOE_LIB_TRANSFORMS_PARTITION_PARTITIONRULES_H

#include "../OpRules.h"
#include "../ShardingSpec.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

#include <functional>

namespace mlir::moe::partition {

class Partitioner;
/// Op -> its rule of this pass, filled by the family files.
using PartitionRules = OpRules<Partitioner>;

/// Rewrites one model function into its per-rank program.
class Partitioner {
public:
  Partitioner(func::FuncOp fn, int64_t replicaSlots,
              const PartitionRules &rules)
      : fn(fn), b(fn), replicaSlots(replicaSlots), rules(rules) {}
  LogicalResult run();

  // --- For the rules -------------------------------------------------------

  /// The local value of a global value and its sharding.
  struct Local {
    Value value;
    ShardingSpec spec;
  };

  OpBuilder &builder() { return b; }
  Local local(Value global) const { return locals.lookup(global); }
  void setLocal(Value global, Local local) { locals[global] = local; }
  /// The local type of `global` under sharding `spec`.
  FailureOr<RankedTensorType>
  localTypeOf(Value global, const ShardingSpec &spec, Location loc);
  /// The sharding annotated on `global` as produced (its only user), or
  /// replicated for scalars.
  FailureOr<ShardingSpec> producedSpec(Value global);
  /// Clones `op` on local operands with local result types.
  FailureOr<Operation *> cloneLocal(Operation *op);
  /// The sum of `v` over `axes` of `grid`.
  Value allReduce(Value v, StringRef grid, ArrayRef<int16_t> axes);
  /// Product of the sizes of `axes` of `grid`.
  FailureOr<int64_t> groupSize(StringRef grid, ArrayRef<int16_t> axes,
                               Location loc);
  /// The MoE layer (placement table) of a moe.experts op.
  int64_t expertsLayer(Operation *experts) const {
    return layers.lookup(experts);
  }
  int64_t getReplicaSlots() const { return replicaSlots; }
  /// The layer whose expert weights `weight` (a moe.param result) is, if
  /// any.
  std::optional<int64_t> expertWeightLayer(Value weight) const;
  /// The local function's results (partitioning func.return).
  void addResult(Type type, Attribute split) {
    resultTypes.push_back(type);
    resultSplits.push_back(split);
  }

private:
  LogicalResult partition(Operation *op);

  func::FuncOp fn;
  OpBuilder b;
  int64_t replicaSlots;
  const PartitionRules &rules;
  DenseMap<Operation *, int64_t> layers;
  DenseMap<Value, int64_t> weightLayers;
  DenseMap<Value, Local> locals;
  llvm::StringMap<SmallVector<int64_t>> grids;
  SmallVector<Type> resultTypes;
  SmallVector<Attribute> resultSplits;
};

/// The rule of an op whose local computation is the global one on local
/// operands.
template <typename Op> LogicalResult partitionLocally(Op op, Partitioner &p) {
  return failure(failed(p.cloneLocal(op)));
}

void populateStructuralPartitions(PartitionRules &rules);
void populateDensePartitions(PartitionRules &rules);
void populateExpertPartitions(PartitionRules &rules);
void populateLossPartitions(PartitionRules &rules);

/// Every rule above.
const PartitionRules &allPartitionRules();

} // namespace mlir::moe::partition

#endif // MOE_LIB_TRANSFORMS_PARTITION_PARTITIONRULES_H
