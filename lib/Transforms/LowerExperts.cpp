//===- LowerExperts.cpp - moe.experts -> permute, grouped FFN, unpermute --===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::moe {
#define GEN_PASS_DEF_LOWEREXPERTS
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Replaces dropless `op` with permute -> grouped SwiGLU -> unpermute.
void expand(ExpertsOp op) {
  IRRewriter rewriter(op);
  Location loc = op.getLoc();
  RankedTensorType input = op.getInput().getType();
  int64_t experts = op.getNumExperts();
  int64_t hidden = input.getShape().back();
  int64_t slots = input.getNumElements() / hidden * op.getTopK();

  auto rowsType =
      RankedTensorType::get({slots, hidden}, input.getElementType());
  auto permute = PermuteOp::create(
      rewriter, loc, rowsType,
      RankedTensorType::get({experts + 1}, rewriter.getI64Type()),
      RankedTensorType::get({slots}, rewriter.getI32Type()), op.getInput(),
      op.getIndices(), experts);
  Value expertOut = GroupedSwiGLUOp::create(
      rewriter, loc, rowsType, permute.getPermuted(), permute.getOffsets(),
      op.getGateWeight(), op.getUpWeight(), op.getDownWeight());
  rewriter.replaceOpWithNewOp<UnpermuteOp>(op, op.getType(), expertOut,
                                           permute.getRowToSlot(),
                                           op.getWeights());
}

// A plain walk rather than the greedy driver: nothing else in the module is
// folded or erased, so the pass does exactly what it says.
struct LowerExpertsPass : mlir::moe::impl::LowerExpertsBase<LowerExpertsPass> {
  void runOnOperation() override {
    SmallVector<ExpertsOp> dropless;
    getOperation()->walk([&](ExpertsOp op) {
      if (!op.getCapacityFactor())
        dropless.push_back(op);
    });
    for (ExpertsOp op : dropless)
      expand(op);
  }
};

} // namespace
