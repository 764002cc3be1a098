//===- OpRules.h - An op's rule, found by the op's type ---------*- C++ -*-===//
//
// Private to lib/Transforms. Each pass that treats ops one by one (moe-shard,
// moe-partition, moe-build-train-step, moe-lower-to-runtime) keeps its
// per-op rules in one of these tables, filled by the op families' files
// (`rules.add(shardLinear)`), instead of a central switch; the pass looks
// the op up and reports an op without a rule by name.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TRANSFORMS_OPRULES_H
#define MOE_LIB_TRANSFORMS_OPRULES_H

#include "mlir/IR/Operation.h"
#include "llvm/ADT/DenseMap.h"

#include <functional>

namespace mlir::moe {

/// Op type -> its rule, a function of the op and the pass's `Context`.
template <typename Context> class OpRules {
public:
  using Rule = std::function<LogicalResult(Operation *, Context &)>;

  template <typename Op> void add(LogicalResult (*rule)(Op, Context &)) {
    rules[TypeID::get<Op>()] = [rule](Operation *op, Context &context) {
      return rule(cast<Op>(op), context);
    };
  }
  /// The rule of `op`, or null.
  const Rule *lookup(Operation *op) const {
    auto it = rules.find(op->getName().getTypeID());
    return it == rules.end() ? nullptr : &it->second;
  }

private:
  DenseMap<TypeID, Rule> rules;
};

} // namespace mlir::moe

#endif // MOE_LIB_TRANSFORMS_OPRULES_H
