//===- BuildDecode.cpp - @prefill and @decode from @forward ---------------===//
//
// Specialises the logits half of the forward to T new tokens of N sequences
// at given positions, with the causal attentions reading and writing a
// key/value cache (Passes.td states the contract).
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEAttrs.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/SetVector.h"

#include <algorithm>

namespace mlir::moe {
#define GEN_PASS_DEF_BUILDDECODE
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The ops of `fn`'s single block that `root` depends on.
llvm::SmallPtrSet<Operation *, 32> sliceOf(Value root) {
  llvm::SmallPtrSet<Operation *, 32> slice;
  SmallVector<Value> worklist = {root};
  while (!worklist.empty()) {
    Operation *def = worklist.pop_back_val().getDefiningOp();
    if (!def || !slice.insert(def).second)
      continue;
    llvm::append_range(worklist, def->getOperands());
  }
  return slice;
}

/// Rewrites the forward's [B, S, ...] values as [N, T, ...] ones.
class Specializer {
public:
  Specializer(func::FuncOp forward, int64_t batch, int64_t seq,
              int64_t newBatch, int64_t cacheLen)
      : forward(forward), b(forward), batch(batch), seq(seq),
        newBatch(newBatch), cacheLen(cacheLen) {}

  /// Builds `@name` for `tokens` new tokens a sequence, after the forward.
  FailureOr<func::FuncOp> build(StringRef name, int64_t tokens);

private:
  Type retype(Type type) const {
    auto tensor = dyn_cast<RankedTensorType>(type);
    if (!tensor || tensor.getRank() < 2 || tensor.getDimSize(0) != batch ||
        tensor.getDimSize(1) != seq)
      return type;
    SmallVector<int64_t> shape(tensor.getShape());
    shape[0] = newBatch;
    shape[1] = newTokens;
    return tensor.clone(shape);
  }
  LogicalResult specialize(Operation *op);
  LogicalResult cacheAttention(AttentionOp op);

  func::FuncOp forward;
  OpBuilder b;
  int64_t batch, seq, newBatch, cacheLen;
  int64_t newTokens = 0;
  IRMapping mapping;
  Value positions;
  int64_t attentions = 0;
};

FailureOr<func::FuncOp> Specializer::build(StringRef name, int64_t tokens) {
  newTokens = tokens;
  mapping.clear();
  attentions = 0;
  Value logits = forward.getBody().front().getTerminator()->getOperand(0);
  Type ids = b.getI32Type();
  auto inputType = RankedTensorType::get({newBatch, tokens}, ids);
  auto type =
      b.getFunctionType({inputType, inputType}, retype(logits.getType()));
  b.setInsertionPointAfter(forward);
  auto fn = func::FuncOp::create(b, forward.getLoc(), name, type);
  Block *body = fn.addEntryBlock();
  b.setInsertionPointToStart(body);
  mapping.map(forward.getArgument(0), body->getArgument(0));
  positions = body->getArgument(1);

  // Every weight, in the forward's order: the entries share one weights
  // blob, laid out from the order in which a function names its weights.
  for (ParamOp param : forward.getBody().getOps<ParamOp>())
    b.clone(*param, mapping);
  llvm::SmallPtrSet<Operation *, 32> slice = sliceOf(logits);
  for (Operation &op : forward.getBody().front())
    if (slice.contains(&op) && !isa<ParamOp>(op) && failed(specialize(&op)))
      return failure();
  func::ReturnOp::create(b, forward.getLoc(), mapping.lookup(logits));
  if (failed(verify(fn)))
    return fn.emitOpError("is not a valid specialisation of @")
           << forward.getSymName() << " to " << newBatch << " x " << tokens
           << " tokens: a value of the logits' computation is not laid out "
           << "as [batch, seq, ...]";
  return fn;
}

LogicalResult Specializer::specialize(Operation *op) {
  for (Value operand : op->getOperands())
    if (!mapping.contains(operand))
      return op->emitOpError("is needed for the logits but reads ")
             << operand << ", which decoding does not have (the labels?)";
  if (auto attention = dyn_cast<AttentionOp>(op))
    return cacheAttention(attention);
  // One sequence's tokens must not take another's expert capacity: the
  // experts are dropless (moe-expand-capacity's drop is skipped).
  if (auto drop = dyn_cast<DropOverCapacityOp>(op)) {
    mapping.map(drop.getResult(), mapping.lookup(drop->getOperand(0)));
    return success();
  }
  if (auto expand = dyn_cast<tensor::ExpandShapeOp>(op)) {
    auto result = tensor::ExpandShapeOp::create(
        b, op->getLoc(), cast<RankedTensorType>(retype(expand.getType())),
        mapping.lookup(expand.getSrc()), expand.getReassociationIndices());
    mapping.map(expand.getResult(), result.getResult());
    return success();
  }
  if (auto collapse = dyn_cast<tensor::CollapseShapeOp>(op)) {
    auto result = tensor::CollapseShapeOp::create(
        b, op->getLoc(), mapping.lookup(collapse.getSrc()),
        collapse.getReassociationIndices());
    mapping.map(collapse.getResult(), result.getResult());
    return success();
  }
  Operation *clone = b.clone(*op, mapping);
  for (OpResult result : clone->getResults())
    result.setType(retype(result.getType()));
  if (auto rope = dyn_cast<RopeOp>(clone); rope && !rope.getPositions())
    rope.getPositionsMutable().assign(positions);
  if (auto experts = dyn_cast<ExpertsOp>(clone))
    experts.removeCapacityFactorAttr();
  return success();
}

LogicalResult Specializer::cacheAttention(AttentionOp op) {
  if (!op.getCausal())
    return op.emitOpError("is not causal: a model that attends to later "
                          "tokens cannot generate one token at a time");
  Value k = mapping.lookup(op.getK()), v = mapping.lookup(op.getV());
  auto cacheType = [&](Value of) {
    auto type = cast<RankedTensorType>(of.getType());
    SmallVector<int64_t> shape(type.getShape());
    shape[0] = newBatch;
    shape[1] = cacheLen;
    return type.clone(shape);
  };
  std::string prefix = "layers." + std::to_string(attentions++);
  Location loc = op.getLoc();
  Value keys = KVCacheOp::create(b, loc, cacheType(k), prefix + ".keys");
  Value values = KVCacheOp::create(b, loc, cacheType(v), prefix + ".values");
  auto cached = CachedAttentionOp::create(b, loc, retype(op.getType()),
                                          mapping.lookup(op.getQ()), k, v, keys,
                                          values, positions, op.getScaleAttr());
  mapping.map(op.getResult(), cached.getResult());
  return success();
}

struct BuildDecodePass : mlir::moe::impl::BuildDecodeBase<BuildDecodePass> {
  using BuildDecodeBase::BuildDecodeBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (batch == 0 || !forward || forward.isExternal() ||
        module->hasAttr(MoEDialect::getMeshAttrName()))
      return;
    if (batch < 0 || maxSeq < 0) {
      module.emitError() << "moe-build-decode: batch and max-seq must not be "
                            "negative, got "
                         << batch << " and " << maxSeq;
      return signalPassFailure();
    }
    for (StringRef name : {"prefill", "decode"})
      if (module.lookupSymbol(name)) {
        module.emitError() << "moe-build-decode: the module has a @" << name
                           << " already";
        return signalPassFailure();
      }
    // (tokens [B, S] i32, ...) -> (logits [B, S, V], ...)
    FunctionType type = forward.getFunctionType();
    auto tokens = type.getNumInputs()
                      ? dyn_cast<RankedTensorType>(type.getInput(0))
                      : RankedTensorType();
    auto logits = type.getNumResults()
                      ? dyn_cast<RankedTensorType>(type.getResult(0))
                      : RankedTensorType();
    if (!forward.getBody().hasOneBlock() || !tokens || tokens.getRank() != 2 ||
        !tokens.getElementType().isInteger(32) || !logits ||
        logits.getRank() != 3 ||
        logits.getShape().take_front(2) != tokens.getShape()) {
      forward.emitWarning("moe-build-decode: not (tokens [B, S] i32, ...) -> "
                          "(logits [B, S, V], ...); no @decode is built");
      return;
    }
    int64_t seq = tokens.getDimSize(1);
    int64_t cacheLen = maxSeq ? maxSeq : seq;
    Specializer specializer(forward, tokens.getDimSize(0), seq, batch,
                            cacheLen);
    // Prefill's chunk is the largest that divides the cache and is no
    // longer than the forward's sequence: chunks then tile the cache.
    int64_t chunk = std::min(seq, cacheLen);
    while (cacheLen % chunk != 0)
      --chunk;
    // @decode goes after @prefill: each is inserted right after @forward.
    if (failed(specializer.build("decode", 1)) ||
        failed(specializer.build("prefill", chunk)))
      return signalPassFailure();
  }
};

} // namespace
