//===- BuildTrainStep.cpp - The training step: loss and weight gradients --===//
//
// Builds `@train_step` from a model function `@forward`: the forward ops that
// the loss needs, then reverse-mode differentiation of the loss with respect
// to every weight, each gradient ending in a `moe.param_grad`.
//
// The pass runs on the per-rank program (after moe-partition), so the
// backward is itself a per-rank program. Its collectives follow from two
// rules:
//
//  * A collective's backward is its transpose: all_gather <-> all_slice,
//    all_to_all <-> the inverse all_to_all, all_reduce -> identity,
//    moe.dispatch <-> moe.combine.
//  * Every value is known to be the same on all ranks along some mesh axes
//    and to vary along the others (the "varying" axes: its split axes, and
//    those of the values it was computed from). Where an op combines a value
//    that is the same along an axis with one that varies along it, each
//    rank computes a different share of the first value's gradient, and the
//    shares are summed over that axis (an all_reduce). This is where the
//    data-parallel gradient all-reduce of replicated weights, the
//    expert-data-parallel one of expert weights and the tensor-parallel
//    all-reduce in front of column-parallel projections come from.
//
// The gradient of a value the same on all ranks of an axis is therefore the
// whole gradient on each of them; the loss, the same everywhere (computed
// from gathered inputs, or each rank's share of it summed over the ranks),
// seeds the backward with 1. Each op's own rule
// (which gradient ops it needs) lives with its family in Gradients/.
//
//===----------------------------------------------------------------------===//

#include "CollectiveFusion.h"
#include "Gradients/GradientRules.h"
#include "ShardingSpec.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Support/MeshShape.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/MapVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_BUILDTRAINSTEP
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Mesh axes along which a per-rank value may differ between ranks.
enum Vary : unsigned { kDp = 1, kCp = 2, kTp = 4, kEp = 8 };

unsigned varyBit(StringRef axisName) {
  std::optional<::moe::MeshAxis> axis = ::moe::parseAxis(axisName);
  if (!axis)
    return 0;
  switch (*axis) {
  case ::moe::MeshAxis::DP:
    return kDp;
  case ::moe::MeshAxis::CP:
    return kCp;
  case ::moe::MeshAxis::TP:
    return kTp;
  case ::moe::MeshAxis::EP:
    return kEp;
  case ::moe::MeshAxis::EDP:
    break; // the replicas of an expert: nothing is split over edp
  }
  return 0;
}

unsigned varyBit(StringRef grid, int16_t axis) {
  return varyBit(meshAxisName(grid, axis));
}

/// The axes named in a `moe.split` attribute.
unsigned varyingOfSplit(Attribute split) {
  unsigned bits = 0;
  if (auto dims = dyn_cast_if_present<ArrayAttr>(split))
    for (Attribute dim : dims)
      if (auto names = dyn_cast<ArrayAttr>(dim))
        for (Attribute name : names)
          if (auto s = dyn_cast<StringAttr>(name))
            bits |= varyBit(s.getValue());
  return bits;
}

bool isFloatTensor(Value v) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  return type && isa<FloatType>(type.getElementType());
}

bool isScalar(Value v) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  return type && type.getRank() == 0;
}

bool isActivation(Value v) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  return type && type.getRank() > 0 && isa<FloatType>(type.getElementType());
}

/// `op` if it gathers a weight whole from its slices (moe-shard-weights).
shard::AllGatherOp weightGather(Operation *op) {
  auto gather = dyn_cast<shard::AllGatherOp>(op);
  return gather && gather.getInput().getDefiningOp<ParamOp>()
             ? gather
             : shard::AllGatherOp();
}

/// A weight, or a weight gathered whole: never recomputed, and no
/// checkpoint.
bool isWeight(Operation *op) { return isa<ParamOp>(op) || weightGather(op); }

/// A run [begin, end) of the forward's ops that reads, of the activations
/// computed before it, a single one (its checkpoint).
struct Segment {
  size_t begin, end;
};

/// The forward's segments between the points where a single activation is
/// live (weights, inputs, integers and scalars aside): a transformer's
/// residual stream between two blocks. The ops before the first such point
/// (the embedding) and after the last (the head and the loss) belong to no
/// segment.
SmallVector<Segment> checkpointSegments(ArrayRef<Operation *> ops) {
  DenseMap<Operation *, size_t> index;
  for (auto [i, op] : llvm::enumerate(ops))
    index[op] = i;
  // dying[i]: the activations whose last forward use is op i.
  std::vector<SmallVector<Value, 2>> dying(ops.size());
  DenseMap<Value, size_t> lastUse;
  for (auto [i, op] : llvm::enumerate(ops)) {
    if (isWeight(op))
      continue; // weights are never recomputed
    for (Value result : op->getResults()) {
      if (!isActivation(result))
        continue;
      size_t last = i;
      for (Operation *user : result.getUsers())
        if (auto it = index.find(user); it != index.end())
          last = std::max(last, it->second);
      if (last > i) {
        dying[last].push_back(result);
        lastUse[result] = last;
      }
    }
  }
  // (op after which only `value` is live, value), one per value.
  SmallVector<std::pair<size_t, Value>> cuts;
  DenseSet<Value> live;
  for (auto [i, op] : llvm::enumerate(ops)) {
    for (Value v : dying[i])
      live.erase(v);
    for (Value result : op->getResults())
      if (lastUse.count(result))
        live.insert(result);
    if (live.size() == 1 &&
        (cuts.empty() || cuts.back().second != *live.begin()))
      cuts.push_back({i, *live.begin()});
  }
  SmallVector<Segment> segments;
  for (size_t k = 0; k + 1 < cuts.size(); ++k)
    segments.push_back({cuts[k].first + 1, cuts[k + 1].first + 1});
  return segments;
}

/// A weight the forward gathers whole (moe-shard-weights) is gathered again
/// in front of the first backward op that reads it, so that the forward's
/// copy dies with the forward op reading it instead of living until the
/// backward. `forwardOps` are the training step's forward ops; every other
/// op is the backward's, a recomputed block's forward ops included.
void regatherWeights(ArrayRef<Operation *> forwardOps) {
  DenseSet<Operation *> inForward(forwardOps.begin(), forwardOps.end());
  for (Operation *op : forwardOps) {
    shard::AllGatherOp gather = weightGather(op);
    if (!gather)
      continue;
    SmallVector<OpOperand *> backward;
    for (OpOperand &use : gather.getResult().getUses())
      if (!inForward.contains(use.getOwner()))
        backward.push_back(&use);
    if (backward.empty())
      continue;
    Operation *first = backward.front()->getOwner();
    for (OpOperand *use : backward)
      if (use->getOwner()->isBeforeInBlock(first))
        first = use->getOwner();
    OpBuilder b(first);
    Value again = b.clone(*gather)->getResult(0);
    for (OpOperand *use : backward)
      use->set(again);
  }
}

/// The index of the model function's one scalar loss among its results.
FailureOr<unsigned> lossResult(func::FuncOp forward) {
  auto ret = cast<func::ReturnOp>(forward.getBody().front().getTerminator());
  std::optional<unsigned> lossAt;
  for (auto [i, v] : llvm::enumerate(ret.getOperands()))
    if (isScalar(v) && isFloatTensor(v)) {
      if (lossAt)
        return forward.emitOpError("returns more than one scalar loss; the "
                                   "training step needs exactly one");
      lossAt = i;
    }
  if (!lossAt)
    return forward.emitOpError("returns no scalar loss to train on");
  return *lossAt;
}

class TrainStepBuilder {
public:
  /// `regather`: gather the weights the forward gathers again for the
  /// backward (ZeRO stage 3) rather than keep the forward's copies (2).
  TrainStepBuilder(func::FuncOp forward, StringRef name, bool recompute,
                   bool regather)
      : forward(forward), name(name), recompute(recompute), regather(regather),
        b(forward) {}

  FailureOr<func::FuncOp> build();

private:
  LogicalResult readMesh();
  void analyse(Operation *op);
  LogicalResult backward(Operation *op);
  /// Clones the ops of `segment` (weights aside) at the builder's point;
  /// the clones take over the originals' gradients, and `recomputed` maps
  /// each original to its clone.
  void recomputeSegment(ArrayRef<Operation *> segment,
                        DenseMap<Operation *, Operation *> &recomputed);

  /// All ranks of the EP group's dp x cp ranks vary together: a value that
  /// varies along every nontrivial one of dp and cp also varies along ep.
  unsigned closure(unsigned bits) const {
    if (dpCpBits && (bits & dpCpBits) == dpCpBits)
      bits |= epBits;
    return bits;
  }
  unsigned varying(Value v) const { return closure(vary.lookup(v)); }

  /// Adds `grad` to the gradient of `primal`, computed by an op whose
  /// results vary along `opVarying`.
  void contribute(Value primal, Value grad, unsigned opVarying);
  /// The whole gradient of `primal` (shares summed over their axes), or a
  /// null value when the loss does not depend on it.
  Value gradient(Value primal);
  Value allReduce(Value v, StringRef grid, ArrayRef<int16_t> axes);
  Value sumShares(Value share, unsigned axes, unsigned primalVarying);
  Value add(Value lhs, Value rhs);
  unsigned opVarying(Operation *op) const;

  func::FuncOp forward;
  std::string name;
  bool recompute;
  bool regather;
  OpBuilder b;
  func::FuncOp step;
  Location loc = forward.getLoc();

  DenseMap<Value, unsigned> vary;
  unsigned dpCpBits = 0, epBits = 0;
  bool edpTrivial = true;

  struct Cotangent {
    Value whole;
    /// Shares still to be summed over the axes of the key.
    llvm::SmallMapVector<unsigned, Value, 2> shares;
  };
  DenseMap<Value, Cotangent> cotangents;
  /// Scalars that reach the loss through sums only: their gradient is 1.
  DenseSet<Value> lossTerms;
  llvm::StringMap<ParamOp> params;
};

LogicalResult TrainStepBuilder::readMesh() {
  auto module = forward->getParentOfType<ModuleOp>();
  if (!module.lookupSymbol(kDenseGrid))
    return success(); // a 1-rank program: nothing varies
  auto dense = gridShape(forward, kDenseGrid);
  if (failed(dense))
    return failure();
  if ((*dense)[kDpAxis] > 1)
    dpCpBits |= kDp;
  if ((*dense)[kCpAxis] > 1)
    dpCpBits |= kCp;
  if (module.lookupSymbol(kExpertGrid)) {
    auto expert = gridShape(forward, kExpertGrid);
    if (failed(expert))
      return failure();
    if ((*expert)[kEpAxis] > 1)
      epBits = kEp;
    edpTrivial = (*expert)[kEdpAxis] == 1;
  }
  return success();
}

unsigned TrainStepBuilder::opVarying(Operation *op) const {
  unsigned bits = 0;
  for (Value v : op->getOperands())
    bits |= vary.lookup(v);
  return bits;
}

void TrainStepBuilder::analyse(Operation *op) {
  unsigned bits = opVarying(op);
  if (auto param = dyn_cast<ParamOp>(op))
    bits = varyingOfSplit(param->getAttr(MoEDialect::getSplitAttrName()));
  else if (auto gather = dyn_cast<shard::AllGatherOp>(op))
    for (int16_t axis : gather.getGridAxes())
      bits &= ~varyBit(gather.getGrid(), axis);
  else if (auto reduce = dyn_cast<shard::AllReduceOp>(op))
    for (int16_t axis : reduce.getGridAxes())
      bits &= ~varyBit(reduce.getGrid(), axis);
  else if (auto slice = dyn_cast<shard::AllSliceOp>(op))
    for (int16_t axis : slice.getGridAxes())
      bits |= varyBit(slice.getGrid(), axis);
  else if (auto scatter = dyn_cast<shard::ReduceScatterOp>(op))
    for (int16_t axis : scatter.getGridAxes())
      bits |= varyBit(scatter.getGrid(), axis);
  for (Value result : op->getResults())
    vary[result] = bits;
}

Value TrainStepBuilder::add(Value lhs, Value rhs) {
  if (!lhs)
    return rhs;
  return AddOp::create(b, loc, lhs.getType(), lhs, rhs).getResult();
}

Value TrainStepBuilder::allReduce(Value v, StringRef grid,
                                  ArrayRef<int16_t> axes) {
  return shard::AllReduceOp::create(b, loc, v.getType(), grid, axes, v,
                                    shard::ReductionKind::Sum)
      .getResult();
}

Value TrainStepBuilder::sumShares(Value share, unsigned axes,
                                  unsigned primalVarying) {
  if (axes & kTp)
    share = allReduce(share, kDenseGrid, {kTpAxis});
  unsigned dpCp = axes & (kDp | kCp);
  if (dpCp && (primalVarying & kEp)) {
    // An expert weight: the same on the ranks of its expert-data-parallel
    // group, whose ranks together cover dp x cp with the EP group.
    if (!edpTrivial)
      share = allReduce(share, kExpertGrid, {kEdpAxis});
  } else if (dpCp) {
    SmallVector<int16_t, 2> dense;
    if (dpCp & kDp)
      dense.push_back(kDpAxis);
    if (dpCp & kCp)
      dense.push_back(kCpAxis);
    share = allReduce(share, kDenseGrid, dense);
  } else if (axes & kEp) {
    share = allReduce(share, kExpertGrid, {kEpAxis});
  }
  return share;
}

void TrainStepBuilder::contribute(Value primal, Value grad,
                                  unsigned opVaryingBits) {
  if (!grad || !isFloatTensor(primal))
    return;
  Cotangent &cot = cotangents[primal];
  unsigned axes = closure(opVaryingBits) & ~varying(primal);
  if (!axes) {
    cot.whole = add(cot.whole, grad);
    return;
  }
  Value &share = cot.shares[axes];
  share = add(share, grad);
}

Value TrainStepBuilder::gradient(Value primal) {
  auto it = cotangents.find(primal);
  if (it == cotangents.end())
    return {};
  Cotangent &cot = it->second;
  for (auto [axes, share] : cot.shares)
    cot.whole = add(cot.whole, sumShares(share, axes, varying(primal)));
  cot.shares.clear();
  return cot.whole;
}

LogicalResult TrainStepBuilder::backward(Operation *op) {
  loc = op->getLoc();
  unsigned bits = vary.lookup(op->getResult(0));
  auto give = [&](Value primal, Value grad) { contribute(primal, grad, bits); };
  // A collective's transpose already delivers the whole gradient.
  auto giveExact = [&](Value primal, Value grad) {
    contribute(primal, grad, vary.lookup(primal));
  };
  const gradients::GradientRules::Rule *rule =
      gradients::allGradientRules().lookup(op);

  // Scalar losses: sums of loss ops, each with gradient 1.
  if (op->getNumResults() == 1 && isScalar(op->getResult(0))) {
    if (!lossTerms.contains(op->getResult(0)))
      return success();
    if (auto add = dyn_cast<AddOp>(op)) {
      lossTerms.insert(add.getLhs());
      lossTerms.insert(add.getRhs());
      return success();
    }
    // A loss summed over the ranks that split its tokens: each rank's share
    // has gradient 1 too (the sum's transpose).
    if (auto reduce = dyn_cast<shard::AllReduceOp>(op)) {
      lossTerms.insert(reduce.getInput());
      return success();
    }
    if (!rule || !isa<CrossEntropyOp, AuxLossOp, ZLossOp>(op))
      return op->emitOpError("is not differentiable: a loss must be a "
                             "sum of moe loss ops");
    gradients::GradientContext ctx{b, loc, {}, give, giveExact};
    return (*rule)(op, ctx);
  }

  if (auto param = dyn_cast<ParamOp>(op)) {
    if (Value grad = gradient(param.getResult()))
      ParamGradOp::create(b, loc, param.getNameAttr(), grad);
    return success();
  }

  SmallVector<Value> grads;
  bool any = false;
  for (Value result : op->getResults()) {
    grads.push_back(isFloatTensor(result) ? gradient(result) : Value());
    any |= static_cast<bool>(grads.back());
  }
  if (!any)
    return success();
  if (!rule)
    return op->emitOpError("has no gradient (moe-build-train-step)");
  gradients::GradientContext ctx{b, loc, grads, give, giveExact};
  return (*rule)(op, ctx);
}

void TrainStepBuilder::recomputeSegment(
    ArrayRef<Operation *> segment,
    DenseMap<Operation *, Operation *> &recomputed) {
  IRMapping mapping;
  for (Operation *op : segment) {
    if (isWeight(op))
      continue;
    Operation *copy = b.clone(*op, mapping);
    analyse(copy);
    recomputed[op] = copy;
    for (auto [original, again] :
         llvm::zip(op->getResults(), copy->getResults())) {
      if (auto it = cotangents.find(original); it != cotangents.end()) {
        Cotangent moved = std::move(it->second);
        cotangents.erase(it);
        cotangents[again] = std::move(moved);
      }
      if (lossTerms.contains(original))
        lossTerms.insert(again);
    }
  }
}

FailureOr<func::FuncOp> TrainStepBuilder::build() {
  if (!forward.getBody().hasOneBlock())
    return forward.emitOpError("a model function must have a single block");
  if (failed(readMesh()))
    return failure();
  FailureOr<unsigned> lossAt = lossResult(forward);
  if (failed(lossAt))
    return failure();
  Value loss = forward.getBody().front().getTerminator()->getOperand(*lossAt);
  if (SymbolTable::lookupNearestSymbolFrom(forward, b.getStringAttr(name)))
    return forward.emitOpError("cannot create '")
           << name << "': the symbol exists";

  // (inputs) -> loss, with the forward's argument attributes (moe.split).
  b.setInsertionPointAfter(forward);
  step = func::FuncOp::create(
      b, loc, name,
      b.getFunctionType(forward.getArgumentTypes(), {loss.getType()}));
  if (ArrayAttr argAttrs = forward.getAllArgAttrs())
    step.setAllArgAttrs(argAttrs);
  if (DictionaryAttr attrs = forward.getResultAttrDict(*lossAt))
    step.setResultAttrs(0, attrs);
  Block *body = step.addEntryBlock();
  IRMapping mapping;
  for (auto [from, to] :
       llvm::zip(forward.getArguments(), body->getArguments())) {
    mapping.map(from, to);
    vary[to] = varyingOfSplit(forward.getArgAttr(
        from.getArgNumber(), MoEDialect::getSplitAttrName()));
  }
  b.setInsertionPointToEnd(body);
  SmallVector<Operation *> cloned;
  for (Operation &op : forward.getBody().front().without_terminator()) {
    Operation *copy = b.clone(op, mapping);
    analyse(copy);
    cloned.push_back(copy);
  }
  Value stepLoss = mapping.lookup(loss);
  func::ReturnOp::create(b, loc, stepLoss);

  // The backward, in reverse program order, in front of the return. Under
  // recompute, each segment's ops run again just before their backward,
  // which reads the recomputed activations: the forward's own die at their
  // last forward use, and only the checkpoints live until the backward.
  b.setInsertionPoint(body->getTerminator());
  lossTerms.insert(stepLoss);
  SmallVector<Segment> segments;
  if (recompute)
    segments = checkpointSegments(cloned);
  DenseMap<Operation *, Operation *> recomputed;
  for (size_t i = cloned.size(); i-- > 0;) {
    if (!segments.empty() && i + 1 == segments.back().end)
      recomputeSegment(
          ArrayRef(cloned).slice(segments.back().begin,
                                 segments.back().end - segments.back().begin),
          recomputed);
    Operation *op = recomputed.lookup(cloned[i]);
    if (failed(backward(op ? op : cloned[i])))
      return failure();
    if (!segments.empty() && i == segments.back().begin)
      segments.pop_back();
  }

  if (regather)
    regatherWeights(cloned);
  sinkAllReduces(*body);
  fuseReduceScatters(*body);

  // Drop the forward values the loss does not need (e.g. returned logits
  // that no loss reads).
  for (Operation &op : llvm::make_early_inc_range(llvm::reverse(*body)))
    if (isOpTriviallyDead(&op))
      op.erase();
  return step;
}

/// `@eval_step`: the forward returning its loss alone, so that evaluating
/// during training never materialises the logits the forward returns
/// (gathered whole on every rank).
LogicalResult buildEvalStep(func::FuncOp forward, StringRef name) {
  FailureOr<unsigned> lossAt = lossResult(forward);
  if (failed(lossAt))
    return failure();
  if (SymbolTable::lookupNearestSymbolFrom(
          forward, StringAttr::get(forward.getContext(), name)))
    return forward.emitOpError("cannot create '")
           << name << "': the symbol exists";
  OpBuilder b(forward);
  b.setInsertionPointAfter(forward);
  auto eval = cast<func::FuncOp>(b.clone(*forward));
  eval.setSymName(name);
  auto evalRet = cast<func::ReturnOp>(eval.getBody().front().getTerminator());
  Value loss = evalRet.getOperand(*lossAt);
  DictionaryAttr lossAttrs = forward.getResultAttrDict(*lossAt);
  evalRet->setOperands(loss);
  eval.setFunctionType(
      b.getFunctionType(eval.getArgumentTypes(), {loss.getType()}));
  eval.setAllResultAttrs(ArrayRef<DictionaryAttr>{
      lossAttrs ? lossAttrs : b.getDictionaryAttr({})});
  Block &body = eval.getBody().front();
  for (Operation &op : llvm::make_early_inc_range(llvm::reverse(body)))
    if (isOpTriviallyDead(&op))
      op.erase();
  return success();
}

struct BuildTrainStepPass
    : public mlir::moe::impl::BuildTrainStepBase<BuildTrainStepPass> {
  using BuildTrainStepBase::BuildTrainStepBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>(fromFunction);
    if (ifLoss && !(forward && !forward.isExternal() &&
                    llvm::any_of(forward.getResultTypes(), [](Type type) {
                      auto tensor = dyn_cast<RankedTensorType>(type);
                      return tensor && tensor.getRank() == 0 &&
                             isa<FloatType>(tensor.getElementType());
                    })))
      return; // nothing to train on: the forward alone is compiled
    if (!forward || forward.isExternal()) {
      module.emitError() << "moe-build-train-step: no model function @"
                         << fromFunction;
      return signalPassFailure();
    }
    if (recompute != "none" && recompute != "full") {
      module.emitError() << "moe-build-train-step: recompute is '"
                         << recompute.getValue() << "', expected none or full";
      return signalPassFailure();
    }
    bool full = recompute == "full";
    if (failed(recordZeroStage(module)) ||
        failed(TrainStepBuilder(forward, stepFunction, full, zeroStage != 2)
                   .build()) ||
        failed(buildEvalStep(forward, evalFunction)))
      return signalPassFailure();
    if (full)
      module->setAttr(MoEDialect::getRecomputeAttrName(),
                      StringAttr::get(module.getContext(), "full"));
  }

  LogicalResult recordZeroStage(ModuleOp module) {
    if (zeroStage == 0)
      return success();
    if (zeroStage < 1 || zeroStage > 3)
      return emitError(module.getLoc())
             << "moe-build-train-step: ZeRO stage " << zeroStage.getValue()
             << " does not exist; the stages are 1 (optimizer state split "
                "over the data-parallel replicas), 2 and 3 (gradients and "
                "weights too, moe-shard-weights)";
    auto mesh = module->getAttrOfType<MeshAttr>(MoEDialect::getMeshAttrName());
    if (!mesh || mesh.getDp() * mesh.getCp() == 1)
      return emitError(module.getLoc())
             << "moe-build-train-step: ZeRO stage " << zeroStage.getValue()
             << " splits the optimizer state over the data-parallel axes, "
                "but the mesh has dp = 1 and cp = 1";
    module->setAttr(MoEDialect::getZeroStageAttrName(),
                    IntegerAttr::get(IntegerType::get(module.getContext(), 64),
                                     zeroStage.getValue()));
    return success();
  }
};

} // namespace
