//===- Experts.cpp - Sharding rules of routing and the experts ------------===//
//
// The router is replicated and sees whole hidden vectors of the local
// tokens; the routed experts' weights split their expert dimension over ep
// on @expert_mesh (replicated over edp and tp), their tokens stay in the
// token layout (moe-partition turns that into the dispatch and combine).
//
//===----------------------------------------------------------------------===//

#include "ShardingRules.h"

namespace mlir::moe::sharding {
namespace {

LogicalResult shardRouter(RouterOp op, ShardingChooser &s) {
  s.param(op.getGateWeight(), s.replicated(op.getGateWeight()));
  if (Value bias = op.getExpertBias())
    s.param(bias, s.replicated(bias));
  ShardingSpec tokens = s.withLastDim(s.spec(op.getInput()), {});
  s.need(op, 0, tokens);
  for (Value result : op->getResults())
    s.produce(result, tokens);
  return success();
}

LogicalResult shardExperts(ExpertsOp op, ShardingChooser &s) {
  ShardingSpec tokens = s.withLastDim(s.spec(op.getInput()), {});
  s.need(op, 0, tokens);
  s.need(op, 1, tokens);
  s.need(op, 2, tokens);
  ShardingSpec experts = ShardingSpec::replicated(3, kExpertGrid);
  if (s.getMesh().getEp() > 1)
    experts.dims[0] = {kEpAxis};
  for (Value w : {op.getGateWeight(), op.getUpWeight(), op.getDownWeight()})
    s.param(w, experts);
  s.produce(op.getResult(), tokens);
  return success();
}

} // namespace

void populateExpertShardings(ShardingRules &rules) {
  rules.add(shardRouter);
  rules.add(shardExperts);
}

} // namespace mlir::moe::sharding
