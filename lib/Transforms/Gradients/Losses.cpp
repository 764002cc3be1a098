//===- Losses.cpp - Gradient rules of the losses --------------------------===//
//
// The losses reach the returned loss through sums only, so each is seeded
// with gradient 1 and gives its logits their gradient op.
//
//===----------------------------------------------------------------------===//

#include "GradientRules.h"

namespace mlir::moe::gradients {
namespace {

LogicalResult gradCrossEntropy(CrossEntropyOp ce, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  ctx.give(ce.getLogits(),
           CrossEntropyGradOp::create(b, loc, ce.getLogits().getType(),
                                      ce.getLogits(), ce.getLabels(),
                                      ce.getCount(), ce.getIgnoreIndexAttr()));
  return success();
}

LogicalResult gradAuxLoss(AuxLossOp aux, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  ctx.give(aux.getLogits(),
           AuxLossGradOp::create(b, loc, aux.getLogits().getType(),
                                 aux.getLogits(), aux.getIndices(),
                                 aux.getScoringAttr(),
                                 aux.getCoefficientAttr()));
  return success();
}

LogicalResult gradZLoss(ZLossOp z, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  ctx.give(z.getLogits(),
           ZLossGradOp::create(b, loc, z.getLogits().getType(), z.getLogits(),
                               z.getCoefficientAttr()));
  return success();
}

} // namespace

void populateLossGradients(GradientRules &rules) {
  rules.add(gradCrossEntropy);
  rules.add(gradAuxLoss);
  rules.add(gradZLoss);
}

const GradientRules &allGradientRules() {
  static const GradientRules rules = [] {
    GradientRules r;
    populateDenseGradients(r);
    populateExpertGradients(r);
    populateCollectiveGradients(r);
    populateLossGradients(r);
    return r;
  }();
  return rules;
}

} // namespace mlir::moe::gradients
