//===- Experts.cpp - Sharding rules of routing and the experts ------------===//
//
// The router is replicated and sees whole hidden vectors of the local
// tokens; the routed experts' weights split their expert dimension over ep
// on @expert_mesh (replicated over edp, and over tp unless expert tensor
// parallelism splits their intermediate features over it), their tokens
// stay in the token layout (moe-partition turns that into the dispatch and
// combine).
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
  // Expert tensor parallelism: each expert's FFN column then row parallel
  // over tp, on the tokens gathered over tp (moe-partition sums the
  // outputs' partial sums over tp).
  bool etp = s.getMesh().getEtp() > 1;
  ShardingSpec tokens = s.withLastDim(s.spec(op.getInput()), {});
  if (etp)
    tokens = ShardingChooser::gatheredOverTp(tokens);
  s.need(op, 0, tokens);
  s.need(op, 1, tokens);
  s.need(op, 2, tokens);
  ShardingSpec experts = ShardingSpec::replicated(3, kExpertGrid);
  if (s.getMesh().getEp() > 1)
    experts.dims[0] = {kEpAxis};
  ShardingSpec columns = experts, rows = experts;
  if (etp) {
    columns.dims[1] = {kExpertTpAxis};
    rows.dims[2] = {kExpertTpAxis};
  }
  s.param(op.getGateWeight(), columns);
  s.param(op.getUpWeight(), columns);
  s.param(op.getDownWeight(), rows);
  s.produce(op.getResult(), tokens);
  return success();
}

} // namespace

void populateExpertShardings(ShardingRules &rules) {
  rules.add(shardRouter);
  rules.add(shardExperts);
}

} // namespace mlir::moe::sharding
