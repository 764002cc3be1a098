//===- Collectives.cpp - Gradient rules of the collectives ----------------===//
//
// A collective's gradient is its transpose, which delivers the whole
// gradient: all_gather <-> all_slice, all_to_all <-> the inverse
// all_to_all, all_reduce -> identity, reduce_scatter -> all_gather.
//
//===----------------------------------------------------------------------===//

#include "GradientRules.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"

namespace mlir::moe::gradients {
namespace {

LogicalResult gradAllGather(shard::AllGatherOp g, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  ctx.giveExact(g.getInput(), shard::AllSliceOp::create(
                                  b, loc, g.getInput().getType(), g.getGrid(),
                                  g.getGridAxes(), dy, g.getGatherAxis()));
  return success();
}

LogicalResult gradAllSlice(shard::AllSliceOp s, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  ctx.giveExact(s.getInput(), shard::AllGatherOp::create(
                                  b, loc, s.getInput().getType(), s.getGrid(),
                                  s.getGridAxes(), dy, s.getSliceAxis()));
  return success();
}

LogicalResult gradAllToAll(shard::AllToAllOp a, GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  ctx.giveExact(a.getInput(),
                shard::AllToAllOp::create(b, loc, a.getInput().getType(),
                                          a.getGrid(), a.getGridAxes(), dy,
                                          a.getConcatAxis(), a.getSplitAxis()));
  return success();
}

LogicalResult gradAllReduce(shard::AllReduceOp r, GradientContext &ctx) {
  Value dy = ctx.dy();
  ctx.giveExact(r.getInput(), dy);
  return success();
}

/// Each rank's input is a partial sum of the whole result: its gradient is
/// the whole result's, gathered.
LogicalResult gradReduceScatter(shard::ReduceScatterOp r,
                                GradientContext &ctx) {
  OpBuilder &b = ctx.b;
  Location loc = ctx.loc;
  Value dy = ctx.dy();
  ctx.giveExact(r.getInput(), shard::AllGatherOp::create(
                                  b, loc, r.getInput().getType(), r.getGrid(),
                                  r.getGridAxes(), dy, r.getScatterAxis()));
  return success();
}

} // namespace

void populateCollectiveGradients(GradientRules &rules) {
  rules.add(gradAllGather);
  rules.add(gradAllSlice);
  rules.add(gradAllToAll);
  rules.add(gradAllReduce);
  rules.add(gradReduceScatter);
}

} // namespace mlir::moe::gradients
