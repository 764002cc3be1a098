//===- Experts.cpp - Gradient rules of routing and the experts ------------===//
//
// The router's gradient flows through the selected scores only (and the
// logits when a loss reads them); permute, grouped SwiGLU and unpermute have
// gradient ops; dispatch and combine are each other's transpose, with the
// same counts. moe.experts must be expanded (moe-lower-experts) first.
//
//===----------------------------------------------------------------------===//

#include "GradientRules.h"

namespace mlir::moe::gradients {
namespace {

LogicalResult gradRouter(RouterOp r, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dWeights = ctx.resultGrads[0], dLogits = ctx.resultGrads[2];
  if (!dWeights)
    return r.emitOpError("has no gradient of its weights: the routed "
                         "experts must use them");
  auto g = RouterGradOp::create(
      b, loc, r.getInput().getType(), r.getGateWeight().getType(), dWeights,
      r.getInput(), r.getGateWeight(), r.getLogits(), r.getIndices(), dLogits,
      r.getScoringAttr(), r.getNormTopkProbAttr(), r.getRouteScaleAttr());
  ctx.give(r.getInput(), g.getInputGrad());
  ctx.give(r.getGateWeight(), g.getGateWeightGrad());
  return success();
}

LogicalResult gradPermute(PermuteOp p, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  int64_t topK = p.getIndices().getType().getShape().back();
  ctx.give(p.getInput(),
           PermuteGradOp::create(b, loc, p.getInput().getType(), dy,
                                 p.getRowToSlot(), b.getI64IntegerAttr(topK)));
  return success();
}

LogicalResult gradGroupedSwiGLU(GroupedSwiGLUOp s, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  auto g = GroupedSwiGLUGradOp::create(
      b, loc, s.getPermuted().getType(), s.getGateWeight().getType(),
      s.getUpWeight().getType(), s.getDownWeight().getType(), dy,
      s.getPermuted(), s.getOffsets(), s.getGateWeight(), s.getUpWeight(),
      s.getDownWeight());
  ctx.give(s.getPermuted(), g.getPermutedGrad());
  ctx.give(s.getGateWeight(), g.getGateWeightGrad());
  ctx.give(s.getUpWeight(), g.getUpWeightGrad());
  ctx.give(s.getDownWeight(), g.getDownWeightGrad());
  return success();
}

LogicalResult gradUnpermute(UnpermuteOp u, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  auto g = UnpermuteGradOp::create(
      b, loc, u.getExpertOut().getType(), u.getWeights().getType(), dy,
      u.getExpertOut(), u.getRowToSlot(), u.getWeights());
  ctx.give(u.getExpertOut(), g.getExpertOutGrad());
  ctx.give(u.getWeights(), g.getWeightsGrad());
  return success();
}

LogicalResult gradDispatch(DispatchOp d, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  // The rows went out through the dispatch; their gradients come back
  // through the combine with the same counts.
  ctx.giveExact(d.getPermuted(),
                CombineOp::create(b, loc, d.getPermuted().getType(), dy,
                                  d.getReceivedOffsets(), d.getOffsets(),
                                  d.getGridAttr(), d.getGridAxesAttr(),
                                  d.getPlacementAttr()));
  return success();
}

LogicalResult gradCombine(CombineOp c, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  auto back = DispatchOp::create(b, loc, c.getExpertOut().getType(),
                                 c.getReceivedOffsets().getType(), dy,
                                 c.getOffsets(), c.getGridAttr(),
                                 c.getGridAxesAttr(), c.getPlacementAttr());
  ctx.giveExact(c.getExpertOut(), back.getReceived());
  return success();
}

LogicalResult gradExperts(ExpertsOp e, GradientContext &ctx) {
  return e.emitOpError("must be expanded by moe-expand-capacity and "
                       "moe-lower-experts before moe-build-train-step");
}

} // namespace

void populateExpertGradients(GradientRules &rules) {
  rules.add(gradRouter);
  rules.add(gradPermute);
  rules.add(gradGroupedSwiGLU);
  rules.add(gradUnpermute);
  rules.add(gradDispatch);
  rules.add(gradCombine);
  rules.add(gradExperts);
}

} // namespace mlir::moe::gradients
