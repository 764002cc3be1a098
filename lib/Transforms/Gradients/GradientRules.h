//===- GradientRules.h - The gradient rule of each op -----------*- C++ -*-===//
//
// Private to moe-build-train-step. The reverse-mode rule of an op lives with
// its family and is registered in a GradientRules table, so the pass itself
// only walks the program and routes the gradients (BuildTrainStep.cpp: which
// gradients are shares to be summed over which mesh axes):
//
//   Dense.cpp        the ops of DenseOps.td, the shared experts, reshapes
//   Experts.cpp      the routing and expert ops of ExpertOps.td (dispatch
//                    and combine are each other's transpose)
//   Collectives.cpp  all_gather <-> all_slice, all_to_all, all_reduce
//   Losses.cpp       the ops of LossOps.td (gradient 1 seeds them)
//
// A rule builds the gradient ops of one forward op at the end of the
// backward (GradientContext::b) and hands each operand's gradient to give()
// (or giveExact() for a collective's transpose, which already delivers the
// whole gradient). An op without a rule is a diagnostic naming it.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TRANSFORMS_GRADIENTS_GRADIENTRULES_H
#define MOE_LIB_TRANSFORMS_GRADIENTS_GRADIENTRULES_H

#include "../OpRules.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLFunctionalExtras.h"

#include <functional>

namespace mlir::moe::gradients {

/// What a rule sees of the backward under construction.
struct GradientContext {
  OpBuilder &b;
  Location loc;
  /// The gradient of each result of the op (null where the loss does not
  /// depend on it; empty for a loss op, whose gradient is 1).
  ArrayRef<Value> resultGrads;
  /// Adds `grad` to the gradient of `primal` as a share computed on this
  /// rank (summed over the mesh axes the op varies along but `primal` does
  /// not).
  llvm::function_ref<void(Value primal, Value grad)> give;
  /// Adds `grad` as the whole gradient of `primal` on this rank.
  llvm::function_ref<void(Value primal, Value grad)> giveExact;

  /// The gradient of the first result.
  Value dy() const { return resultGrads.empty() ? Value() : resultGrads[0]; }
};

/// Op -> its gradient rule, filled by the family files.
using GradientRules = OpRules<GradientContext>;

void populateDenseGradients(GradientRules &rules);
void populateExpertGradients(GradientRules &rules);
void populateCollectiveGradients(GradientRules &rules);
void populateLossGradients(GradientRules &rules);

/// Every rule above.
const GradientRules &allGradientRules();

} // namespace mlir::moe::gradients

#endif // MOE_LIB_TRANSFORMS_GRADIENTS_GRADIENTRULES_H
