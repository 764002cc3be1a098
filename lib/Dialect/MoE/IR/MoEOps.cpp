//===- MoEOps.cpp - The moe ops: definitions, weights ---------------------===//
//
// The generated op definitions and the verifiers of the weights (moe.param,
// moe.param_grad); the other ops' verifiers, folds and patterns live by
// family in DenseOps.cpp, ExpertOps.cpp and LossOps.cpp.
//
//===----------------------------------------------------------------------===//

#include "VerifyUtils.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/PatternMatch.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::detail;

static ParseResult parseScoreFunc(OpAsmParser &parser, ScoreFuncAttr &attr) {
  SMLoc loc = parser.getCurrentLocation();
  StringRef keyword;
  if (parser.parseKeyword(&keyword))
    return failure();
  std::optional<ScoreFunc> value = symbolizeScoreFunc(keyword);
  if (!value)
    return parser.emitError(loc) << "expected a scoring function (softmax or "
                                    "sigmoid), but got '"
                                 << keyword << "'";
  attr = ScoreFuncAttr::get(parser.getContext(), *value);
  return success();
}

static void printScoreFunc(OpAsmPrinter &printer, Operation *,
                           ScoreFuncAttr attr) {
  printer << stringifyScoreFunc(attr.getValue());
}

//===----------------------------------------------------------------------===//
// ParamOp
//===----------------------------------------------------------------------===//

static constexpr StringLiteral kExpertPlaceholder = "{e}";

bool ParamOp::isStackedExperts() {
  return getName().contains(kExpertPlaceholder);
}

std::string ParamOp::getExpertName(int64_t expert) {
  StringRef name = getName();
  size_t pos = name.find(kExpertPlaceholder);
  if (pos == StringRef::npos)
    return name.str();
  return (name.take_front(pos) + Twine(expert) +
          name.drop_front(pos + kExpertPlaceholder.size()))
      .str();
}

/// Whether `op` is the first op of its kind in its block. Checks that span
/// the block (unique names) run once, from that op: every op's scan stops at
/// the previous op of its kind, so a block of n ops costs O(n) in all, where
/// a scan of the whole block from each op cost O(n^2) on deep models.
LogicalResult ParamOp::verify() {
  StringRef name = getName();
  if (name.empty())
    return emitOpError("expects a non-empty parameter name");
  size_t placeholders = name.count(kExpertPlaceholder);
  if (placeholders > 1)
    return emitOpError() << "expects at most one '{e}' placeholder in '" << name
                         << "', but got " << placeholders;
  int64_t rank = getType().getRank();
  if (placeholders == 1 && rank < 2)
    return emitOpError() << "expects the stacked-experts parameter '" << name
                         << "' to have rank >= 2 ([experts, ...]), but got "
                            "rank "
                         << rank;
  // Names are unique within a block: checked once, by the block's first
  // parameter.
  if (!firstOfKindInBlock<ParamOp>(*this))
    return success();
  llvm::SmallDenseMap<StringAttr, ParamOp, 64> declared;
  for (auto param : getOperation()->getBlock()->getOps<ParamOp>()) {
    auto [it, inserted] = declared.try_emplace(param.getNameAttr(), param);
    if (inserted)
      continue;
    InFlightDiagnostic diag = param.emitOpError() << "redeclares parameter '"
                                                  << param.getName() << "'";
    diag.attachNote(it->second.getLoc()) << "first declared here";
    return diag;
  }
  return success();
}

LogicalResult ParamGradOp::verify() {
  // The weight and any other gradient of it live in the same block: the
  // block's first gradient checks them all, in one pass over the block.
  if (!firstOfKindInBlock<ParamGradOp>(*this))
    return success();
  Block &block = *(*this)->getBlock();
  llvm::SmallDenseMap<StringAttr, ParamOp, 64> params;
  for (auto param : block.getOps<ParamOp>())
    params.try_emplace(param.getNameAttr(), param);
  llvm::SmallDenseSet<StringAttr, 64> seen;
  for (auto grad : block.getOps<ParamGradOp>()) {
    if (!seen.insert(grad.getNameAttr()).second)
      return grad.emitOpError()
             << "repeats the gradient of weight \"" << grad.getName() << "\"";
    ParamOp param = params.lookup(grad.getNameAttr());
    if (!param)
      return grad.emitOpError()
             << "names no moe.param of its block: \"" << grad.getName() << "\"";
    if (failed(expectGradTypes(
            grad, {{grad.getGrad(), param.getResult(), "the weight"}})))
      return failure();
  }
  return success();
}

#define GET_OP_CLASSES
#include "moe/Dialect/MoE/IR/MoEOps.cpp.inc"
