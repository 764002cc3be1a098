//===- ShardModel.cpp - choose a sharding for every value -----------------===//
//
// Decides how every tensor of a model function is laid out over the mesh and
// writes the decision as upstream `shard.shard` annotations, which
// moe-partition then implements. The rules follow Megatron-Core and
// torchtitan (see the pass description in Passes.td); they are applied in
// one forward walk, each op choosing its result's sharding and the sharding
// it needs of each operand from its operands' shardings.
//
//===----------------------------------------------------------------------===//

#include "ShardingSpec.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::moe {
#define GEN_PASS_DEF_SHARD
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

using Axes = SmallVector<int16_t, 2>;

int64_t rankOf(Value v) { return cast<ShapedType>(v.getType()).getRank(); }

class ShardingChooser {
public:
  ShardingChooser(MeshAttr mesh) : mesh(mesh) {}

  LogicalResult run(func::FuncOp fn);

private:
  /// The token layout of a [batch, seq, ...] activation: batch over dp,
  /// sequence over cp, the rest replicated.
  ShardingSpec tokenLayout(int64_t rank) const {
    ShardingSpec spec = ShardingSpec::replicated(rank);
    if (rank >= 1 && mesh.getDp() > 1)
      spec.dims[0] = {kDpAxis};
    if (rank >= 2 && mesh.getCp() > 1)
      spec.dims[1] = {kCpAxis};
    return spec;
  }
  ShardingSpec withLastDim(ShardingSpec spec, Axes axes) const {
    spec.dims.back() = axes;
    return spec;
  }
  Axes tpAxes() const { return mesh.getTp() > 1 ? Axes{kTpAxis} : Axes{}; }

  /// The sharding users of `v` see (after any resharding annotation). A
  /// copy, never a reference into `seen`, which moves its entries as it
  /// grows.
  ShardingSpec spec(Value v) const { return seen.find(v)->second; }
  void produce(Value v, ShardingSpec s) {
    produced[v] = s;
    seen[v] = std::move(s);
  }
  /// `v`, as its users see it, is resharded to `s` for all of them.
  void reshardForUsers(Value v, ShardingSpec s) { seen[v] = std::move(s); }
  /// Operand `index` of `op` is needed as `s`.
  void need(Operation *op, unsigned index, ShardingSpec s) {
    needs.push_back({op, index, std::move(s)});
  }
  /// A weight gets the sharding its (first) user needs.
  void param(Value weight, ShardingSpec s) {
    if (!produced.count(weight))
      produce(weight, s);
  }
  ShardingSpec replicated(Value v) const {
    return ShardingSpec::replicated(rankOf(v));
  }

  LogicalResult visit(Operation *op);
  LogicalResult visitLinear(LinearOp op);
  LogicalResult visitExpand(tensor::ExpandShapeOp op);
  LogicalResult visitCollapse(tensor::CollapseShapeOp op);
  LogicalResult visitFFN(Operation *op, Value input, Value gate, Value up,
                         Value down, Value sharedGate);
  void materialize(func::FuncOp fn);

  /// Whether `v` (a [..., heads * head_dim] projection reshaped to heads)
  /// reaches a moe.attention through head-wise ops.
  static bool feedsAttention(Value v);

  MeshAttr mesh;
  llvm::MapVector<Value, ShardingSpec> produced;
  DenseMap<Value, ShardingSpec> seen;
  struct Need {
    Operation *op;
    unsigned index;
    ShardingSpec spec;
  };
  SmallVector<Need> needs;
};

bool ShardingChooser::feedsAttention(Value v) {
  for (Operation *user : v.getUsers()) {
    if (isa<AttentionOp>(user))
      return true;
    if (isa<RMSNormOp, RopeOp>(user) && user->getOperand(0) == v &&
        feedsAttention(user->getResult(0)))
      return true;
  }
  return false;
}

LogicalResult ShardingChooser::run(func::FuncOp fn) {
  for (BlockArgument arg : fn.getArguments())
    produce(arg, tokenLayout(rankOf(arg)));
  for (Operation &op : fn.getBody().front())
    if (failed(visit(&op)))
      return failure();
  materialize(fn);
  return success();
}

LogicalResult ShardingChooser::visit(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](ParamOp) { return success(); }) // decided by the user
      .Case([&](EmbeddingOp op) {
        param(op.getTable(), replicated(op.getTable()));
        produce(op.getResult(),
                withLastDim(tokenLayout(rankOf(op.getResult())), {}));
        return success();
      })
      .Case([&](RMSNormOp op) {
        // Normalises over the last dimension, which must be whole.
        param(op.getWeight(), replicated(op.getWeight()));
        ShardingSpec in = withLastDim(spec(op.getInput()), {});
        need(op, 0, in);
        produce(op.getResult(), in);
        return success();
      })
      .Case([&](LinearOp op) { return visitLinear(op); })
      .Case([&](tensor::ExpandShapeOp op) { return visitExpand(op); })
      .Case([&](tensor::CollapseShapeOp op) { return visitCollapse(op); })
      .Case([&](RopeOp op) {
        // Positions are global sequence indices: the sequence must be whole.
        ShardingSpec in = spec(op.getInput());
        in.dims[1].clear();
        need(op, 0, in);
        produce(op.getResult(), in);
        return success();
      })
      .Case([&](AttentionOp op) {
        ShardingSpec q = spec(op.getQ());
        q.dims[1].clear();
        need(op, 0, q);
        need(op, 1, q);
        need(op, 2, q);
        produce(op.getResult(), q);
        return success();
      })
      .Case([&](AddOp op) {
        need(op, 1, spec(op.getLhs()));
        produce(op.getResult(), spec(op.getLhs()));
        return success();
      })
      .Case([&](RouterOp op) {
        param(op.getGateWeight(), replicated(op.getGateWeight()));
        if (Value bias = op.getExpertBias())
          param(bias, replicated(bias));
        ShardingSpec tokens = withLastDim(spec(op.getInput()), {});
        need(op, 0, tokens);
        for (Value result : op->getResults())
          produce(result, tokens);
        return success();
      })
      .Case([&](ExpertsOp op) {
        ShardingSpec tokens = withLastDim(spec(op.getInput()), {});
        need(op, 0, tokens);
        need(op, 1, tokens);
        need(op, 2, tokens);
        ShardingSpec experts = ShardingSpec::replicated(3, kExpertGrid);
        if (mesh.getEp() > 1)
          experts.dims[0] = {kEpAxis};
        for (Value w : {op.getGateWeight(), op.getUpWeight(),
                        op.getDownWeight()})
          param(w, experts);
        produce(op.getResult(), tokens);
        return success();
      })
      .Case([&](MLPOp op) {
        return visitFFN(op, op.getInput(), op.getGateWeight(),
                        op.getUpWeight(), op.getDownWeight(), Value());
      })
      .Case([&](SharedExpertsOp op) {
        return visitFFN(op, op.getInput(), op.getGateWeight(),
                        op.getUpWeight(), op.getDownWeight(),
                        op.getSharedGate());
      })
      .Case<CrossEntropyOp, AuxLossOp, ZLossOp, DropOverCapacityOp,
            func::ReturnOp>(
          [&](Operation *op) {
            // Losses and the capacity drop see every token; the outputs are
            // whole on every rank.
            for (OpOperand &operand : op->getOpOperands())
              need(op, operand.getOperandNumber(),
                   replicated(operand.get()));
            for (Value result : op->getResults())
              produce(result, replicated(result));
            return success();
          })
      .Default([](Operation *op) {
        return op->emitOpError("has no sharding rule (moe-shard)");
      });
}

LogicalResult ShardingChooser::visitLinear(LinearOp op) {
  ShardingSpec in = spec(op.getInput());
  Axes contracted = in.dims.back();
  Value weight = op.getWeight();
  if (!contracted.empty()) {
    // Row parallel: each rank contracts its slice of the input features; the
    // partial sums are all-reduced over those axes (moe-partition).
    if (op.getBias())
      return op.emitOpError("row-parallel projection with a bias is not "
                            "supported yet");
    ShardingSpec w = replicated(weight);
    w.dims[1] = contracted;
    param(weight, w);
    produce(op.getResult(), withLastDim(in, {}));
    return success();
  }
  // Column parallel when the output is split into attention heads: each
  // rank computes its heads' features.
  Axes out;
  int64_t features = cast<ShapedType>(op.getType()).getShape().back();
  for (Operation *user : op.getResult().getUsers())
    if (auto expand = dyn_cast<tensor::ExpandShapeOp>(user))
      if (mesh.getTp() > 1 && feedsAttention(expand.getResult()) &&
          features % mesh.getTp() == 0)
        out = tpAxes();
  ShardingSpec w = replicated(weight);
  w.dims[0] = out;
  param(weight, w);
  if (Value bias = op.getBias()) {
    ShardingSpec b = replicated(bias);
    b.dims[0] = out;
    param(bias, b);
  }
  produce(op.getResult(), withLastDim(in, out));
  return success();
}

LogicalResult ShardingChooser::visitExpand(tensor::ExpandShapeOp op) {
  // A split source dimension splits the first result dimension of its group.
  ShardingSpec in = spec(op.getSrc());
  ShardingSpec out = ShardingSpec::replicated(op.getResultType().getRank());
  for (auto [src, group] : llvm::enumerate(op.getReassociationIndices()))
    out.dims[group.front()] = in.dims[src];
  produce(op.getResult(), out);
  // Ulysses context parallelism: heads reshaped for attention trade their
  // sequence split for a head split (all-to-all over cp), so that RoPE and
  // attention see whole sequences.
  int64_t rank = out.dims.size();
  if (mesh.getCp() > 1 && rank == 4 && feedsAttention(op.getResult()) &&
      llvm::is_contained(out.dims[1], kCpAxis)) {
    ShardingSpec heads = out;
    llvm::erase(heads.dims[1], kCpAxis);
    heads.dims[2].push_back(kCpAxis);
    reshardForUsers(op.getResult(), heads);
  }
  return success();
}

LogicalResult ShardingChooser::visitCollapse(tensor::CollapseShapeOp op) {
  // Attention output goes back to the token layout (the inverse Ulysses
  // all-to-all); a collapsed group keeps the split of its first dimension.
  ShardingSpec in = spec(op.getSrc());
  int64_t rank = in.dims.size();
  if (rank >= 2 && mesh.getCp() > 1 &&
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
  need(op, 0, in);
  produce(op.getResult(), out);
  return success();
}

LogicalResult ShardingChooser::visitFFN(Operation *op, Value input,
                                        Value gate, Value up, Value down,
                                        Value sharedGate) {
  // Tensor parallel SwiGLU: gate/up column parallel, down row parallel over
  // the intermediate features; moe-partition all-reduces the output.
  ShardingSpec tokens = withLastDim(spec(input), {});
  need(op, 0, tokens);
  int64_t inter = cast<ShapedType>(gate.getType()).getShape()[0];
  Axes split = inter % mesh.getTp() == 0 ? tpAxes() : Axes{};
  ShardingSpec columns = replicated(gate), rows = replicated(down);
  columns.dims[0] = split;
  rows.dims[1] = split;
  param(gate, columns);
  param(up, columns);
  param(down, rows);
  if (sharedGate)
    param(sharedGate, replicated(sharedGate));
  produce(op->getResult(0), tokens);
  return success();
}

void ShardingChooser::materialize(func::FuncOp fn) {
  OpBuilder b(fn.getContext());
  Block &body = fn.getBody().front();
  // Every value: its sharding as produced, then (where different) as its
  // users see it.
  for (auto &[value, producedSpec] : produced) {
    if (rankOf(value) == 0)
      continue;
    if (auto arg = dyn_cast<BlockArgument>(value))
      b.setInsertionPointToStart(&body);
    else
      b.setInsertionPointAfter(value.getDefiningOp());
    Location loc = value.getLoc();
    Value annotated = shard::ShardOp::create(
        b, loc, value, producedSpec.materialize(b, loc), false);
    value.replaceAllUsesExcept(annotated, annotated.getDefiningOp());
    // A copy: inserting `annotated` below may grow `seen` and move its
    // entries.
    ShardingSpec users = seen.find(value)->second;
    if (users != producedSpec) {
      Value resharded = shard::ShardOp::create(
          b, loc, annotated, users.materialize(b, loc), true);
      annotated.replaceAllUsesExcept(resharded, resharded.getDefiningOp());
    }
    seen[annotated] = std::move(users);
  }
  // Operands needed in another sharding than their users see.
  for (Need &n : needs) {
    OpOperand &operand = n.op->getOpOperand(n.index);
    Value v = operand.get();
    if (rankOf(v) == 0)
      continue;
    auto annotation = v.getDefiningOp<shard::ShardOp>();
    if (!annotation)
      continue;
    FailureOr<ShardingSpec> current =
        ShardingSpec::fromValue(annotation.getSharding(), v.getLoc());
    if (succeeded(current) && *current == n.spec)
      continue;
    b.setInsertionPoint(n.op);
    Location loc = n.op->getLoc();
    operand.set(shard::ShardOp::create(b, loc, v, n.spec.materialize(b, loc),
                                       true));
  }
}

struct ShardPass : mlir::moe::impl::ShardBase<ShardPass> {
  using ShardBase::ShardBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto mesh = module->getAttrOfType<MeshAttr>(MoEDialect::getMeshAttrName());
    if (ifMeshed &&
        (!mesh || module->hasAttr(MoEDialect::getPartitionedAttrName())))
      return; // one rank, or partitioned already
    if (!mesh) {
      emitError(module.getLoc(), "the module has no moe.mesh; run "
                                 "moe-assign-mesh first");
      return signalPassFailure();
    }
    for (func::FuncOp fn : modelFunctions(module)) {
      if (!fn.getBody().hasOneBlock()) {
        fn.emitOpError("a model function must have a single block");
        return signalPassFailure();
      }
      if (failed(ShardingChooser(mesh).run(fn)))
        return signalPassFailure();
    }
  }
};

} // namespace
