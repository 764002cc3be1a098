//===- Dense.cpp - Sharding rules of the dense ops ------------------------===//
//
// Weights are whole unless a rule splits them; activations keep the token
// layout (batch over dp, sequence over cp). Tensor parallelism: a projection
// whose output is reshaped into attention heads is column parallel, one
// whose input features are split is row parallel; the SwiGLU FFNs split
// their intermediate features. Context parallelism (Ulysses): heads reshaped
// for attention trade the sequence split for a head split, and back.
//
//===----------------------------------------------------------------------===//

#include "ShardingRules.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"

namespace mlir::moe::sharding {
namespace {

/// Whether `v` (a [..., heads * head_dim] projection reshaped to heads)
/// reaches a moe.attention through head-wise ops (the q/k norms, RoPE, and
/// MLA's split of each head and concat of its parts).
bool feedsAttention(Value v) {
  for (Operation *user : v.getUsers()) {
    if (isa<AttentionOp>(user))
      return true;
    if (isa<RMSNormOp, RopeOp, SplitOp>(user) && user->getOperand(0) == v &&
        llvm::any_of(user->getResults(), feedsAttention))
      return true;
    if (isa<ConcatOp>(user) && feedsAttention(user->getResult(0)))
      return true;
  }
  return false;
}

/// Whether `part` (an operand of `whole`'s concat or split) is broadcast in
/// the dimension before the last.
bool isBroadcastPart(Value part, Value whole) {
  ArrayRef<int64_t> p = cast<ShapedType>(part.getType()).getShape();
  ArrayRef<int64_t> w = cast<ShapedType>(whole.getType()).getShape();
  return w.size() >= 2 && p[w.size() - 2] == 1 && w[w.size() - 2] != 1;
}

LogicalResult shardParam(ParamOp, ShardingChooser &) {
  return success(); // decided by the weight's first user
}

LogicalResult shardEmbedding(EmbeddingOp op, ShardingChooser &s) {
  // Each rank looks up its own tokens: under sequence parallelism, its
  // slice of the sequence over tp too.
  s.param(op.getTable(), s.replicated(op.getTable()));
  s.need(op, 0, s.activationLayout(rankOf(op.getTokens())));
  s.produce(op.getResult(),
            s.withLastDim(s.activationLayout(rankOf(op.getResult())), {}));
  return success();
}

LogicalResult shardRMSNorm(RMSNormOp op, ShardingChooser &s) {
  // Normalises over the last dimension, which must be whole.
  s.param(op.getWeight(), s.replicated(op.getWeight()));
  ShardingSpec in = s.withLastDim(s.spec(op.getInput()), {});
  s.need(op, 0, in);
  s.produce(op.getResult(), in);
  return success();
}

LogicalResult shardLinear(LinearOp op, ShardingChooser &s) {
  ShardingSpec in = s.spec(op.getInput());
  Axes contracted = in.dims.back();
  Value weight = op.getWeight();
  if (!contracted.empty()) {
    // Row parallel: each rank contracts its slice of the input features; the
    // partial sums are all-reduced over those axes (moe-partition).
    if (op.getBias())
      return op.emitOpError("row-parallel projection with a bias is not "
                            "supported yet");
    ShardingSpec w = s.replicated(weight);
    w.dims[1] = contracted;
    s.param(weight, w);
    s.produce(op.getResult(), s.withLastDim(in, {}));
    return success();
  }
  // Column parallel when the output is split into attention heads: each
  // rank computes its heads' features.
  Axes out;
  int64_t features = cast<ShapedType>(op.getType()).getShape().back();
  for (Operation *user : op.getResult().getUsers())
    if (auto expand = dyn_cast<tensor::ExpandShapeOp>(user))
      if (s.getMesh().getTp() > 1 && feedsAttention(expand.getResult()) &&
          features % s.getMesh().getTp() == 0)
        out = s.tpAxes();
  if (!out.empty()) {
    // Sequence-parallel tokens are gathered over tp first.
    in = ShardingChooser::gatheredOverTp(in);
    s.need(op, 0, in);
  }
  ShardingSpec w = s.replicated(weight);
  w.dims[0] = out;
  s.param(weight, w);
  if (Value bias = op.getBias()) {
    ShardingSpec b = s.replicated(bias);
    b.dims[0] = out;
    s.param(bias, b);
  }
  s.produce(op.getResult(), s.withLastDim(in, out));
  return success();
}

LogicalResult shardExpandShape(tensor::ExpandShapeOp op, ShardingChooser &s) {
  // A split source dimension splits the first result dimension of its group.
  ShardingSpec in = s.spec(op.getSrc());
  ShardingSpec out = ShardingSpec::replicated(op.getResultType().getRank());
  for (auto [src, group] : llvm::enumerate(op.getReassociationIndices()))
    out.dims[group.front()] = in.dims[src];
  s.produce(op.getResult(), out);
  // Ulysses context parallelism: heads reshaped for attention trade their
  // sequence split for a head split (all-to-all over cp), so that RoPE and
  // attention see whole sequences.
  // A single head (MLA's shared rotary key) keeps the sequence split; the
  // head-wise op after it gathers the sequence.
  int64_t rank = out.dims.size();
  if (s.getMesh().getCp() > 1 && rank == 4 &&
      op.getResultType().getDimSize(2) % s.getMesh().getCp() == 0 &&
      feedsAttention(op.getResult()) &&
      llvm::is_contained(out.dims[1], kCpAxis)) {
    ShardingSpec heads = out;
    llvm::erase(heads.dims[1], kCpAxis);
    heads.dims[2].push_back(kCpAxis);
    s.reshardForUsers(op.getResult(), heads);
  }
  return success();
}

LogicalResult shardCollapseShape(tensor::CollapseShapeOp op,
                                 ShardingChooser &s) {
  // Attention output goes back to the token layout (the inverse Ulysses
  // all-to-all); a collapsed group keeps the split of its first dimension.
  ShardingSpec in = s.spec(op.getSrc());
  int64_t rank = in.dims.size();
  if (rank >= 2 && s.getMesh().getCp() > 1 &&
      !llvm::is_contained(in.dims[1], kCpAxis)) {
    for (auto &axes : in.dims)
      llvm::erase(axes, kCpAxis);
    in.dims[1].push_back(kCpAxis);
  }
  ShardingSpec out = ShardingSpec::replicated(op.getResultType().getRank());
  for (auto [dst, group] : llvm::enumerate(op.getReassociationIndices())) {
    for (int64_t d : ArrayRef<int64_t>(group).drop_front())
      in.dims[d].clear(); // only the group's leading dimension stays split
    out.dims[dst] = in.dims[group.front()];
  }
  s.need(op, 0, in);
  s.produce(op.getResult(), out);
  return success();
}

LogicalResult shardRope(RopeOp op, ShardingChooser &s) {
  // Positions are global sequence indices: the sequence must be whole.
  ShardingSpec in = s.spec(op.getInput());
  in.dims[1].clear();
  s.need(op, 0, in);
  s.produce(op.getResult(), in);
  return success();
}

LogicalResult shardAttention(AttentionOp op, ShardingChooser &s) {
  ShardingSpec q = s.spec(op.getQ());
  q.dims[1].clear();
  s.need(op, 0, q);
  s.need(op, 1, q);
  s.need(op, 2, q);
  s.produce(op.getResult(), q);
  return success();
}

LogicalResult shardConcat(ConcatOp op, ShardingChooser &s) {
  // The last dimension is whole; the layout is that of an operand not
  // broadcast, and a broadcast operand is whole in its broadcast dimension.
  Value result = op.getResult();
  Value lead = isBroadcastPart(op.getLhs(), result) ? op.getRhs() : op.getLhs();
  ShardingSpec out = s.withLastDim(s.spec(lead), {});
  for (auto [i, part] : llvm::enumerate(op->getOperands())) {
    ShardingSpec need = out;
    if (isBroadcastPart(part, result))
      need.dims[need.dims.size() - 2].clear();
    s.need(op, i, need);
  }
  s.produce(result, out);
  return success();
}

LogicalResult shardSplit(SplitOp op, ShardingChooser &s) {
  ShardingSpec in = s.withLastDim(s.spec(op.getInput()), {});
  s.need(op, 0, in);
  s.produce(op.getLhs(), in);
  s.produce(op.getRhs(), in);
  return success();
}

LogicalResult shardAdd(AddOp op, ShardingChooser &s) {
  // The sum takes the layout of the operand split over more axes: slicing
  // the other costs no communication (and after a tensor-parallel block's
  // partial sums, its all-reduce and slice become one reduce-scatter).
  ShardingSpec lhs = s.spec(op.getLhs()), rhs = s.spec(op.getRhs());
  auto splits = [](const ShardingSpec &spec) {
    size_t n = 0;
    for (const auto &axes : spec.dims)
      n += axes.size();
    return n;
  };
  ShardingSpec out = splits(rhs) > splits(lhs) ? rhs : lhs;
  s.need(op, 0, out);
  s.need(op, 1, out);
  s.produce(op.getResult(), out);
  return success();
}

/// Tensor-parallel SwiGLU FFN (the dense MLP, the shared experts).
LogicalResult shardFFN(Operation *op, ShardingChooser &s, Value input,
                       Value gate, Value up, Value down, Value sharedGate) {
  // Tensor parallel SwiGLU: gate/up column parallel, down row parallel over
  // the intermediate features; moe-partition all-reduces the output.
  // Sequence-parallel tokens are gathered over tp first.
  int64_t inter = cast<ShapedType>(gate.getType()).getShape()[0];
  Axes split = inter % s.getMesh().getTp() == 0 ? s.tpAxes() : Axes{};
  ShardingSpec tokens = s.withLastDim(s.spec(input), {});
  if (!split.empty())
    tokens = ShardingChooser::gatheredOverTp(tokens);
  s.need(op, 0, tokens);
  ShardingSpec columns = s.replicated(gate), rows = s.replicated(down);
  columns.dims[0] = split;
  rows.dims[1] = split;
  s.param(gate, columns);
  s.param(up, columns);
  s.param(down, rows);
  if (sharedGate)
    s.param(sharedGate, s.replicated(sharedGate));
  s.produce(op->getResult(0), tokens);
  return success();
}

LogicalResult shardMLP(MLPOp op, ShardingChooser &s) {
  return shardFFN(op, s, op.getInput(), op.getGateWeight(), op.getUpWeight(),
                  op.getDownWeight(), Value());
}

LogicalResult shardSharedExperts(SharedExpertsOp op, ShardingChooser &s) {
  return shardFFN(op, s, op.getInput(), op.getGateWeight(), op.getUpWeight(),
                  op.getDownWeight(), op.getSharedGate());
}

} // namespace

void populateDenseShardings(ShardingRules &rules) {
  rules.add(shardParam);
  rules.add(shardEmbedding);
  rules.add(shardRMSNorm);
  rules.add(shardLinear);
  rules.add(shardExpandShape);
  rules.add(shardCollapseShape);
  rules.add(shardRope);
  rules.add(shardAttention);
  rules.add(shardConcat);
  rules.add(shardSplit);
  rules.add(shardAdd);
  rules.add(shardMLP);
  rules.add(shardSharedExperts);
}

} // namespace mlir::moe::sharding
