//===- Dense.cpp - Gradient rules of the dense ops ------------------------===//
//
// Embedding, RMSNorm, linear (and its bias), RoPE, attention, concat, the
// dense MLP and the shared experts: each its gradient op; add passes its
// gradient to both operands; a split's gradient is the concat of its parts'
// gradients; a reshape's gradient is the inverse reshape.
//
//===----------------------------------------------------------------------===//

#include "GradientRules.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"

namespace mlir::moe::gradients {
namespace {

LogicalResult gradEmbedding(EmbeddingOp e, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  ctx.give(e.getTable(), EmbeddingGradOp::create(b, loc, e.getTable().getType(),
                                                 dy, e.getTokens()));
  return success();
}

LogicalResult gradRMSNorm(RMSNormOp n, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  auto g = RMSNormGradOp::create(b, loc, n.getInput().getType(),
                                 n.getWeight().getType(), dy, n.getInput(),
                                 n.getWeight(), n.getEpsAttr());
  ctx.give(n.getInput(), g.getInputGrad());
  ctx.give(n.getWeight(), g.getWeightGrad());
  return success();
}

LogicalResult gradLinear(LinearOp l, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  Value bias = l.getBias();
  auto g = LinearGradOp::create(
      b, loc, l.getInput().getType(), l.getWeight().getType(),
      bias ? bias.getType() : Type(), dy, l.getInput(), l.getWeight(), bias);
  ctx.give(l.getInput(), g.getInputGrad());
  ctx.give(l.getWeight(), g.getWeightGrad());
  if (bias)
    ctx.give(bias, g.getBiasGrad());
  return success();
}

LogicalResult gradRope(RopeOp r, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  ctx.give(r.getInput(),
           RopeGradOp::create(b, loc, r.getInput().getType(), dy,
                              r.getPositions(), r.getThetaAttr(),
                              r.getYarnFactorAttr(), r.getYarnLowAttr(),
                              r.getYarnHighAttr(), r.getYarnScaleAttr(),
                              r.getInterleavedAttr()));
  return success();
}

LogicalResult gradAttention(AttentionOp a, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  auto g = AttentionGradOp::create(
      b, loc, a.getQ().getType(), a.getK().getType(), a.getV().getType(), dy,
      a.getQ(), a.getK(), a.getV(), a.getCausalAttr(), a.getScaleAttr());
  ctx.give(a.getQ(), g.getQGrad());
  ctx.give(a.getK(), g.getKGrad());
  ctx.give(a.getV(), g.getVGrad());
  return success();
}

LogicalResult gradConcat(ConcatOp c, GradientContext &ctx) {
  auto g = ConcatGradOp::create(ctx.b, ctx.loc, c.getLhs().getType(),
                                c.getRhs().getType(), ctx.dy(), c.getLhs(),
                                c.getRhs());
  ctx.give(c.getLhs(), g.getLhsGrad());
  ctx.give(c.getRhs(), g.getRhsGrad());
  return success();
}

LogicalResult gradSplit(SplitOp s, GradientContext &ctx) {
  Value dLhs = ctx.resultGrads[0], dRhs = ctx.resultGrads[1];
  if (!dLhs || !dRhs)
    return s.emitOpError("has no gradient of its ")
           << (dLhs ? "rhs" : "lhs")
           << ": the loss must depend on both parts of a split";
  ctx.give(s.getInput(), ConcatOp::create(ctx.b, ctx.loc,
                                          s.getInput().getType(), dLhs, dRhs));
  return success();
}

LogicalResult gradMLP(MLPOp m, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  auto g = MLPGradOp::create(
      b, loc, m.getInput().getType(), m.getGateWeight().getType(),
      m.getUpWeight().getType(), m.getDownWeight().getType(), dy, m.getInput(),
      m.getGateWeight(), m.getUpWeight(), m.getDownWeight());
  ctx.give(m.getInput(), g.getInputGrad());
  ctx.give(m.getGateWeight(), g.getGateWeightGrad());
  ctx.give(m.getUpWeight(), g.getUpWeightGrad());
  ctx.give(m.getDownWeight(), g.getDownWeightGrad());
  return success();
}

LogicalResult gradSharedExperts(SharedExpertsOp s, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  Value gate = s.getSharedGate();
  auto g = SharedExpertsGradOp::create(
      b, loc, s.getInput().getType(), s.getGateWeight().getType(),
      s.getUpWeight().getType(), s.getDownWeight().getType(),
      gate ? gate.getType() : Type(), dy, s.getInput(), s.getGateWeight(),
      s.getUpWeight(), s.getDownWeight(), gate);
  ctx.give(s.getInput(), g.getInputGrad());
  ctx.give(s.getGateWeight(), g.getGateWeightGrad());
  ctx.give(s.getUpWeight(), g.getUpWeightGrad());
  ctx.give(s.getDownWeight(), g.getDownWeightGrad());
  if (gate)
    ctx.give(gate, g.getSharedGateGrad());
  return success();
}

LogicalResult gradAdd(AddOp a, GradientContext &ctx) {
  Value dy = ctx.dy();
  ctx.give(a.getLhs(), dy);
  ctx.give(a.getRhs(), dy);
  return success();
}

LogicalResult gradExpandShape(tensor::ExpandShapeOp e, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  ctx.give(e.getSrc(),
           tensor::CollapseShapeOp::create(b, loc, e.getSrcType(), dy,
                                           e.getReassociationIndices()));
  return success();
}

LogicalResult gradCollapseShape(tensor::CollapseShapeOp c,
                                GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  ctx.give(c.getSrc(),
           tensor::ExpandShapeOp::create(b, loc, c.getSrcType(), dy,
                                         c.getReassociationIndices()));
  return success();
}

} // namespace

void populateDenseGradients(GradientRules &rules) {
  rules.add(gradEmbedding);
  rules.add(gradRMSNorm);
  rules.add(gradLinear);
  rules.add(gradRope);
  rules.add(gradAttention);
  rules.add(gradConcat);
  rules.add(gradSplit);
  rules.add(gradMLP);
  rules.add(gradSharedExperts);
  rules.add(gradAdd);
  rules.add(gradExpandShape);
  rules.add(gradCollapseShape);
}

} // namespace mlir::moe::gradients
