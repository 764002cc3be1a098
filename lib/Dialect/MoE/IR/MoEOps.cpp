//===- MoEOps.cpp - moe dialect op verifiers, folders, patterns -----------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/STLExtras.h"

#include <cmath>
#include <tuple>

using namespace mlir;
using namespace mlir::moe;

//===----------------------------------------------------------------------===//
// Shape checks shared by the verifiers
//===----------------------------------------------------------------------===//

static ArrayRef<int64_t> shapeOf(Value v) {
  return cast<ShapedType>(v.getType()).getShape();
}

static std::string formatShape(ArrayRef<int64_t> shape) {
  std::string s = "[";
  llvm::raw_string_ostream os(s);
  llvm::interleaveComma(shape, os);
  os << "]";
  return s;
}

/// "expects <what> of shape [want] (<why>), but got [got]".
static LogicalResult expectShape(Operation *op, StringRef what, Value value,
                                 ArrayRef<int64_t> want, StringRef why) {
  ArrayRef<int64_t> got = shapeOf(value);
  if (got == want)
    return success();
  return op->emitOpError() << "expects " << what << " of shape "
                           << formatShape(want) << " (" << why << "), but got "
                           << formatShape(got);
}

static LogicalResult expectRank(Operation *op, StringRef what, Value value,
                                int64_t rank, StringRef layout) {
  int64_t got = shapeOf(value).size();
  if (got == rank)
    return success();
  return op->emitOpError() << "expects " << what << " of rank " << rank << " ("
                           << layout << "), but got rank " << got;
}

static LogicalResult expectAtLeastRank1(Operation *op, StringRef what,
                                        Value value) {
  if (!shapeOf(value).empty())
    return success();
  return op->emitOpError() << "expects " << what
                           << " of rank >= 1 ([..., features]), but got rank 0";
}

static LogicalResult expectSameType(Operation *op, Value result, Value like,
                                    StringRef likeName) {
  if (result.getType() == like.getType())
    return success();
  return op->emitOpError() << "expects the result type to equal the "
                           << likeName << " type " << like.getType()
                           << ", but got " << result.getType();
}

static LogicalResult expectPositive(Operation *op, StringRef what, double v) {
  if (v > 0.0)
    return success();
  return op->emitOpError() << "expects " << what << " > 0, but got " << v;
}

static LogicalResult expectNonNegative(Operation *op, StringRef what,
                                       double v) {
  if (v >= 0.0)
    return success();
  return op->emitOpError() << "expects " << what << " >= 0, but got " << v;
}

/// `leading` followed by `last`.
static SmallVector<int64_t> withLastDim(ArrayRef<int64_t> leading,
                                        int64_t last) {
  SmallVector<int64_t> shape(leading);
  shape.push_back(last);
  return shape;
}

/// Checks a SwiGLU FFN's weights: gate/up [F, H], down [H, F] for `input`
/// [..., H]; the result has the input's type.
static LogicalResult verifySwiGLU(Operation *op, Value input, Value gate,
                                  Value up, Value down, Value result) {
  if (failed(expectAtLeastRank1(op, "input", input)) ||
      failed(expectRank(op, "gate_weight", gate, 2, "[intermediate, hidden]")))
    return failure();
  int64_t hidden = shapeOf(input).back();
  int64_t inter = shapeOf(gate)[0];
  if (failed(expectShape(op, "gate_weight", gate, {inter, hidden},
                         "[intermediate, hidden]")) ||
      failed(expectShape(op, "up_weight", up, {inter, hidden},
                         "the shape of gate_weight")) ||
      failed(expectShape(op, "down_weight", down, {hidden, inter},
                         "[hidden, intermediate]")))
    return failure();
  return expectSameType(op, result, input, "input");
}

/// The scoring function as a bare keyword: `softmax` or `sigmoid`.
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
template <typename OpT> static bool firstOfKindInBlock(Operation *op) {
  for (Operation *prev = op->getPrevNode(); prev; prev = prev->getPrevNode())
    if (isa<OpT>(prev))
      return false;
  return true;
}

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

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

static LogicalResult verifyEmbedding(Operation *op, Value tokens,
                                     Value table, Value result) {
  if (failed(expectRank(op, "table", table, 2, "[vocab, hidden]")))
    return failure();
  auto tableType = cast<ShapedType>(table.getType());
  SmallVector<int64_t> want =
      withLastDim(shapeOf(tokens), tableType.getShape()[1]);
  if (failed(expectShape(op, "result", result, want,
                         "the tokens' shape followed by the hidden size")))
    return failure();
  Type resultElement = cast<ShapedType>(result.getType()).getElementType();
  if (resultElement != tableType.getElementType())
    return op->emitOpError()
           << "expects the result element type to equal the table's "
           << tableType.getElementType() << ", but got " << resultElement;
  return success();
}

LogicalResult EmbeddingOp::verify() {
  return verifyEmbedding(*this, getTokens(), getTable(), getResult());
}

static LogicalResult verifyRMSNorm(Operation *op, Value input, Value weight,
                                   APFloat eps, Value result) {
  if (failed(expectAtLeastRank1(op, "input", input)) ||
      failed(expectShape(op, "weight", weight, {shapeOf(input).back()},
                         "the last dimension of input")) ||
      failed(expectPositive(op, "eps", eps.convertToDouble())))
    return failure();
  return expectSameType(op, result, input, "input");
}

LogicalResult RMSNormOp::verify() {
  return verifyRMSNorm(*this, getInput(), getWeight(), getEps(), getResult());
}

static LogicalResult verifyLinear(Operation *op, Value input, Value weight,
                                  Value bias, Value result) {
  if (failed(expectAtLeastRank1(op, "input", input)) ||
      failed(expectRank(op, "weight", weight, 2, "[out, in]")))
    return failure();
  ArrayRef<int64_t> in = shapeOf(input);
  ArrayRef<int64_t> w = shapeOf(weight);
  if (in.back() != w[1])
    return op->emitOpError() << "expects the input's last dimension to equal "
                                "the weight's in dimension "
                             << w[1] << ", but got " << in.back();
  if (bias && failed(expectShape(op, "bias", bias, {w[0]},
                                 "the weight's out dimension")))
    return failure();
  return expectShape(op, "result", result, withLastDim(in.drop_back(), w[0]),
                     "the input's leading dimensions followed by out");
}

LogicalResult LinearOp::verify() {
  return verifyLinear(*this, getInput(), getWeight(), getBias(), getResult());
}

static LogicalResult verifyRope(Operation *op, Value input, Value positions,
                                APFloat theta, Value result) {
  if (failed(expectRank(op, "input", input, 4,
                        "[batch, seq, heads, head_dim]")))
    return failure();
  ArrayRef<int64_t> x = shapeOf(input);
  if (x[3] % 2 != 0)
    return op->emitOpError() << "expects an even head_dim, but got " << x[3];
  if (positions && failed(expectShape(op, "positions", positions,
                                      {x[0], x[1]}, "[batch, seq] of input")))
    return failure();
  if (failed(expectPositive(op, "theta", theta.convertToDouble())))
    return failure();
  return expectSameType(op, result, input, "input");
}

LogicalResult RopeOp::verify() {
  return verifyRope(*this, getInput(), getPositions(), getTheta(),
                    getResult());
}

static LogicalResult verifyAttention(Operation *op, Value qv, Value kv,
                                     Value vv, std::optional<APFloat> scale,
                                     Value result) {
  if (failed(expectRank(op, "q", qv, 4, "[batch, seq, heads, head_dim]")) ||
      failed(expectRank(op, "k", kv, 4, "[batch, seq, kv_heads, head_dim]")))
    return failure();
  ArrayRef<int64_t> q = shapeOf(qv);
  ArrayRef<int64_t> k = shapeOf(kv);
  if (failed(expectShape(op, "k", kv, {q[0], q[1], k[2], q[3]},
                         "batch, seq and head_dim of q")) ||
      failed(expectShape(op, "v", vv, k, "the shape of k")))
    return failure();
  if (q[2] % k[2] != 0)
    return op->emitOpError()
           << "expects the number of query heads (" << q[2]
           << ") to be a multiple of the number of key/value heads (" << k[2]
           << ")";
  if (scale && failed(expectPositive(op, "scale", scale->convertToDouble())))
    return failure();
  return expectSameType(op, result, qv, "q");
}

/// `scale` if set, else 1/sqrt(head_dim of q).
static double effectiveScale(std::optional<APFloat> scale, Value q) {
  if (scale)
    return scale->convertToDouble();
  return 1.0 / std::sqrt(static_cast<double>(shapeOf(q)[3]));
}

LogicalResult AttentionOp::verify() {
  return verifyAttention(*this, getQ(), getK(), getV(), getScale(),
                         getResult());
}

double AttentionOp::getEffectiveScale() {
  return effectiveScale(getScale(), getQ());
}

LogicalResult MLPOp::verify() {
  return verifySwiGLU(*this, getInput(), getGateWeight(), getUpWeight(),
                      getDownWeight(), getResult());
}

OpFoldResult AddOp::fold(FoldAdaptor adaptor) {
  // Commutative: a constant operand is canonicalised to the right.
  auto rhs = dyn_cast_if_present<SplatElementsAttr>(adaptor.getRhs());
  if (rhs && rhs.getSplatValue<APFloat>().isZero())
    return getLhs();
  return {};
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

int64_t RouterOp::getNumExperts() {
  return getGateWeight().getType().getShape()[0];
}

LogicalResult RouterOp::verify() {
  if (failed(expectAtLeastRank1(*this, "input", getInput())) ||
      failed(expectRank(*this, "gate_weight", getGateWeight(), 2,
                        "[experts, hidden]")))
    return failure();
  ArrayRef<int64_t> x = getInput().getType().getShape();
  int64_t experts = getNumExperts();
  if (failed(expectShape(*this, "gate_weight", getGateWeight(),
                         {experts, x.back()}, "[experts, hidden]")))
    return failure();

  int64_t topK = getTopK(), nGroup = getNGroup(), topKGroup = getTopkGroup();
  if (topK < 1)
    return emitOpError() << "expects top_k >= 1, but got " << topK;
  if (topK > experts)
    return emitOpError() << "expects top_k <= the number of experts ("
                         << experts << "), but got " << topK;
  if (nGroup < 1 || experts % nGroup != 0)
    return emitOpError() << "expects n_group to be a positive divisor of the "
                            "number of experts ("
                         << experts << "), but got " << nGroup;
  if (topKGroup < 1 || topKGroup > nGroup)
    return emitOpError() << "expects topk_group in [1, n_group = " << nGroup
                         << "], but got " << topKGroup;
  int64_t eligible = topKGroup * (experts / nGroup);
  if (topK > eligible)
    return emitOpError() << "expects top_k <= the " << eligible
                         << " experts of the topk_group = " << topKGroup
                         << " kept groups, but got " << topK;
  if (getExpertBias() &&
      failed(expectShape(*this, "expert_bias", getExpertBias(), {experts},
                         "one bias per expert")))
    return failure();
  if (failed(expectPositive(*this, "route_scale",
                            getRouteScale().convertToDouble())))
    return failure();

  ArrayRef<int64_t> tokens = x.drop_back();
  if (failed(expectShape(*this, "weights", getWeights(),
                         withLastDim(tokens, topK),
                         "the input's token dimensions followed by top_k")) ||
      failed(expectShape(*this, "indices", getIndices(),
                         withLastDim(tokens, topK),
                         "the input's token dimensions followed by top_k")) ||
      failed(expectShape(*this, "logits", getLogits(),
                         withLastDim(tokens, experts),
                         "the input's token dimensions followed by experts")))
    return failure();
  if (!getLogits().getType().getElementType().isF32())
    return emitOpError() << "expects f32 logits, but got element type "
                         << getLogits().getType().getElementType();
  return success();
}

namespace {
/// Group-limited routing that keeps every group is plain top-k routing.
struct DropTrivialExpertGroups : OpRewritePattern<RouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RouterOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getNGroup() == 1 || op.getTopkGroup() != op.getNGroup())
      return failure();
    rewriter.modifyOpInPlace(op, [&] {
      op.setNGroup(1);
      op.setTopkGroup(1);
    });
    return success();
  }
};
} // namespace

void RouterOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                           MLIRContext *context) {
  results.add<DropTrivialExpertGroups>(context);
}

int64_t ExpertsOp::getNumExperts() {
  return getGateWeight().getType().getShape()[0];
}

int64_t ExpertsOp::getTopK() {
  return getWeights().getType().getShape().back();
}

/// Checks stacked expert weights for tokens of width `hidden`: gate/up
/// [E, F, H] and down [E, H, F], with E and F taken from gate (already
/// checked to be rank 3).
static LogicalResult verifyStackedExpertWeights(Operation *op, Value gate,
                                                Value up, Value down,
                                                int64_t hidden) {
  ArrayRef<int64_t> shape = shapeOf(gate);
  int64_t experts = shape[0], inter = shape[1];
  if (failed(expectShape(op, "gate_weight", gate, {experts, inter, hidden},
                         "[experts, intermediate, hidden]")) ||
      failed(expectShape(op, "up_weight", up, shape,
                         "the shape of gate_weight")))
    return failure();
  return expectShape(op, "down_weight", down, {experts, hidden, inter},
                     "[experts, hidden, intermediate]");
}

LogicalResult ExpertsOp::verify() {
  if (failed(expectAtLeastRank1(*this, "input", getInput())) ||
      failed(expectRank(*this, "gate_weight", getGateWeight(), 3,
                        "[experts, intermediate, hidden]")) ||
      failed(expectAtLeastRank1(*this, "weights", getWeights())))
    return failure();
  ArrayRef<int64_t> x = getInput().getType().getShape();
  int64_t experts = getNumExperts();
  if (failed(verifyStackedExpertWeights(*this, getGateWeight(), getUpWeight(),
                                        getDownWeight(), x.back())))
    return failure();
  int64_t topK = getTopK();
  if (failed(expectShape(*this, "weights", getWeights(),
                         withLastDim(x.drop_back(), topK),
                         "the input's token dimensions followed by top_k")) ||
      failed(expectShape(*this, "indices", getIndices(),
                         getWeights().getType().getShape(),
                         "the shape of weights")))
    return failure();
  if (topK > experts)
    return emitOpError() << "expects top_k (the last dimension of weights) <= "
                            "the number of experts ("
                         << experts << "), but got " << topK;
  if (std::optional<APFloat> cf = getCapacityFactor())
    if (failed(expectPositive(*this, "capacity_factor", cf->convertToDouble())))
      return failure();
  return expectSameType(*this, getResult(), getInput(), "input");
}

/// T * K for token dimensions `tokens` and top-k `topK`.
static int64_t slotCount(ArrayRef<int64_t> tokens, int64_t topK) {
  int64_t n = topK;
  for (int64_t d : tokens)
    n *= d;
  return n;
}

LogicalResult DropOverCapacityOp::verify() {
  if (failed(expectAtLeastRank1(*this, "indices", getIndices())))
    return failure();
  if (static_cast<int64_t>(getNumExperts()) < 1)
    return emitOpError() << "expects num_experts >= 1, but got "
                         << static_cast<int64_t>(getNumExperts());
  if (static_cast<int64_t>(getCapacity()) < 1)
    return emitOpError() << "expects capacity >= 1, but got "
                         << static_cast<int64_t>(getCapacity());
  return expectSameType(*this, getKept(), getIndices(), "indices");
}

LogicalResult PermuteOp::verify() {
  if (failed(expectAtLeastRank1(*this, "input", getInput())) ||
      failed(expectAtLeastRank1(*this, "indices", getIndices())))
    return failure();
  int64_t experts = static_cast<int64_t>(getNumExperts());
  if (experts < 1)
    return emitOpError() << "expects num_experts >= 1, but got " << experts;
  ArrayRef<int64_t> x = getInput().getType().getShape();
  ArrayRef<int64_t> indices = getIndices().getType().getShape();
  if (failed(expectShape(*this, "indices", getIndices(),
                         withLastDim(x.drop_back(), indices.back()),
                         "the input's token dimensions followed by top_k")))
    return failure();
  int64_t slots = slotCount(x.drop_back(), indices.back());
  if (failed(expectShape(*this, "permuted", getPermuted(), {slots, x.back()},
                         "[tokens * top_k, hidden]")) ||
      failed(expectShape(*this, "offsets", getOffsets(), {experts + 1},
                         "[num_experts + 1]")) ||
      failed(expectShape(*this, "row_to_slot", getRowToSlot(), {slots},
                         "[tokens * top_k]")))
    return failure();
  if (getPermuted().getType().getElementType() !=
      getInput().getType().getElementType())
    return emitOpError("expects permuted to have the element type of input");
  return success();
}

static LogicalResult verifyGroupedSwiGLU(Operation *op, Value permuted,
                                         Value offsets, Value gate, Value up,
                                         Value down, Value result) {
  if (failed(expectRank(op, "permuted", permuted, 2, "[rows, hidden]")) ||
      failed(expectRank(op, "gate_weight", gate, 3,
                        "[experts, intermediate, hidden]")))
    return failure();
  int64_t experts = shapeOf(gate)[0];
  if (failed(verifyStackedExpertWeights(op, gate, up, down,
                                        shapeOf(permuted)[1])))
    return failure();
  int64_t numOffsets = shapeOf(offsets)[0];
  if (experts < 1 || numOffsets < experts + 1 ||
      (numOffsets - 1) % experts != 0)
    return op->emitOpError()
           << "expects offsets of shape [segments * experts + 1] with "
              "segments >= 1 and "
           << experts << " experts, but got [" << numOffsets << "]";
  return expectSameType(op, result, permuted, "permuted");
}

LogicalResult GroupedSwiGLUOp::verify() {
  return verifyGroupedSwiGLU(*this, getPermuted(), getOffsets(),
                             getGateWeight(), getUpWeight(), getDownWeight(),
                             getResult());
}

static LogicalResult verifyUnpermute(Operation *op, Value expertOut,
                                     Value rowToSlot, Value weightsValue,
                                     Value result) {
  if (failed(expectRank(op, "expert_out", expertOut, 2, "[rows, hidden]")) ||
      failed(expectAtLeastRank1(op, "weights", weightsValue)))
    return failure();
  ArrayRef<int64_t> rows = shapeOf(expertOut);
  ArrayRef<int64_t> weights = shapeOf(weightsValue);
  int64_t slots = slotCount(weights.drop_back(), weights.back());
  if (rows[0] != slots)
    return op->emitOpError() << "expects expert_out to have one row per "
                                "token-slot of weights ("
                             << slots << "), but got " << rows[0];
  if (failed(expectShape(op, "row_to_slot", rowToSlot, {slots},
                         "[tokens * top_k]")) ||
      failed(expectShape(op, "result", result,
                         withLastDim(weights.drop_back(), rows[1]),
                         "the weights' token dimensions followed by hidden")))
    return failure();
  if (cast<ShapedType>(result.getType()).getElementType() !=
      cast<ShapedType>(expertOut.getType()).getElementType())
    return op->emitOpError("expects the result to have the element type of "
                           "expert_out");
  return success();
}

LogicalResult UnpermuteOp::verify() {
  return verifyUnpermute(*this, getExpertOut(), getRowToSlot(), getWeights(),
                         getResult());
}

LogicalResult SharedExpertsOp::verify() {
  if (failed(verifySwiGLU(*this, getInput(), getGateWeight(), getUpWeight(),
                          getDownWeight(), getResult())))
    return failure();
  if (getSharedGate())
    return expectShape(*this, "shared_gate", getSharedGate(),
                       {1, getInput().getType().getShape().back()},
                       "[1, hidden]");
  return success();
}

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

static LogicalResult verifyCrossEntropy(Operation *op, Value logits,
                                        Value labels) {
  if (failed(expectAtLeastRank1(op, "logits", logits)))
    return failure();
  return expectShape(op, "labels", labels, shapeOf(logits).drop_back(),
                     "the logits' shape without the vocabulary dimension");
}

LogicalResult CrossEntropyOp::verify() {
  return verifyCrossEntropy(*this, getLogits(), getLabels());
}

/// A rank-0 f32 zero, the value of a loss whose coefficient is 0.
static Attribute zeroLoss(Value loss) {
  return DenseElementsAttr::get(cast<ShapedType>(loss.getType()), 0.0f);
}

static LogicalResult verifyAuxLoss(Operation *op, Value logitsValue,
                                   Value indices, APFloat coefficient) {
  if (failed(expectAtLeastRank1(op, "logits", logitsValue)) ||
      failed(expectAtLeastRank1(op, "indices", indices)))
    return failure();
  ArrayRef<int64_t> logits = shapeOf(logitsValue);
  int64_t topK = shapeOf(indices).back();
  if (failed(expectShape(op, "indices", indices,
                         withLastDim(logits.drop_back(), topK),
                         "the logits' token dimensions followed by top_k")))
    return failure();
  if (topK > logits.back())
    return op->emitOpError()
           << "expects top_k (the last dimension of indices) <= the number "
              "of experts ("
           << logits.back() << "), but got " << topK;
  return expectNonNegative(op, "coefficient", coefficient.convertToDouble());
}

LogicalResult AuxLossOp::verify() {
  return verifyAuxLoss(*this, getLogits(), getIndices(), getCoefficient());
}

OpFoldResult AuxLossOp::fold(FoldAdaptor) {
  if (getCoefficient().isZero())
    return zeroLoss(getLoss());
  return {};
}

static LogicalResult verifyZLoss(Operation *op, Value logits,
                                 APFloat coefficient) {
  if (failed(expectAtLeastRank1(op, "logits", logits)))
    return failure();
  return expectNonNegative(op, "coefficient", coefficient.convertToDouble());
}

LogicalResult ZLossOp::verify() {
  return verifyZLoss(*this, getLogits(), getCoefficient());
}

OpFoldResult ZLossOp::fold(FoldAdaptor) {
  if (getCoefficient().isZero())
    return zeroLoss(getLoss());
  return {};
}

//===----------------------------------------------------------------------===//
// Gradients: the forward op's shape rules on the primal operands, with the
// result's cotangent in place of the result, and every other cotangent of
// its primal's type.
//===----------------------------------------------------------------------===//

/// Checks that each cotangent has its primal's type.
static LogicalResult
expectGradTypes(Operation *op,
                std::initializer_list<std::tuple<Value, Value, StringRef>>
                    gradPrimalName) {
  for (auto [grad, primal, name] : gradPrimalName)
    if (grad.getType() != primal.getType())
      return op->emitOpError()
             << "expects the gradient of " << name << " to have its type "
             << primal.getType() << ", but got " << grad.getType();
  return success();
}

LogicalResult EmbeddingGradOp::verify() {
  return verifyEmbedding(*this, getTokens(), getTableGrad(), getResultGrad());
}

LogicalResult RMSNormGradOp::verify() {
  if (failed(verifyRMSNorm(*this, getInput(), getWeight(), getEps(),
                           getResultGrad())))
    return failure();
  return expectGradTypes(*this, {{getInputGrad(), getInput(), "input"},
                                 {getWeightGrad(), getWeight(), "weight"}});
}

LogicalResult LinearGradOp::verify() {
  if (failed(verifyLinear(*this, getInput(), getWeight(), Value(),
                          getResultGrad())))
    return failure();
  return expectGradTypes(*this, {{getInputGrad(), getInput(), "input"},
                                 {getWeightGrad(), getWeight(), "weight"}});
}

LogicalResult RopeGradOp::verify() {
  return verifyRope(*this, getResultGrad(), getPositions(), getTheta(),
                    getInputGrad());
}

LogicalResult AttentionGradOp::verify() {
  if (failed(verifyAttention(*this, getQ(), getK(), getV(), getScale(),
                             getResultGrad())))
    return failure();
  return expectGradTypes(*this, {{getQGrad(), getQ(), "q"},
                                 {getKGrad(), getK(), "k"},
                                 {getVGrad(), getV(), "v"}});
}

double AttentionGradOp::getEffectiveScale() {
  return effectiveScale(getScale(), getQ());
}

LogicalResult MLPGradOp::verify() {
  if (failed(verifySwiGLU(*this, getInput(), getGateWeight(), getUpWeight(),
                          getDownWeight(), getResultGrad())))
    return failure();
  return expectGradTypes(
      *this, {{getInputGrad(), getInput(), "input"},
              {getGateWeightGrad(), getGateWeight(), "gate_weight"},
              {getUpWeightGrad(), getUpWeight(), "up_weight"},
              {getDownWeightGrad(), getDownWeight(), "down_weight"}});
}

LogicalResult SharedExpertsGradOp::verify() {
  if (failed(verifySwiGLU(*this, getInput(), getGateWeight(), getUpWeight(),
                          getDownWeight(), getResultGrad())))
    return failure();
  if (static_cast<bool>(getSharedGate()) !=
      static_cast<bool>(getSharedGateGrad()))
    return emitOpError("expects shared_gate_grad exactly when shared_gate is "
                       "given");
  if (getSharedGate() &&
      (failed(expectShape(*this, "shared_gate", getSharedGate(),
                          {1, shapeOf(getInput()).back()}, "[1, hidden]")) ||
       failed(expectGradTypes(
           *this, {{getSharedGateGrad(), getSharedGate(), "shared_gate"}}))))
    return failure();
  return expectGradTypes(
      *this, {{getInputGrad(), getInput(), "input"},
              {getGateWeightGrad(), getGateWeight(), "gate_weight"},
              {getUpWeightGrad(), getUpWeight(), "up_weight"},
              {getDownWeightGrad(), getDownWeight(), "down_weight"}});
}

LogicalResult RouterGradOp::verify() {
  if (failed(expectAtLeastRank1(*this, "input", getInput())) ||
      failed(expectRank(*this, "gate_weight", getGateWeight(), 2,
                        "[experts, hidden]")) ||
      failed(expectAtLeastRank1(*this, "indices", getIndices())))
    return failure();
  ArrayRef<int64_t> x = shapeOf(getInput());
  int64_t experts = shapeOf(getGateWeight())[0];
  int64_t topK = shapeOf(getIndices()).back();
  ArrayRef<int64_t> tokens = x.drop_back();
  if (failed(expectShape(*this, "gate_weight", getGateWeight(),
                         {experts, x.back()}, "[experts, hidden]")) ||
      failed(expectShape(*this, "logits", getLogits(),
                         withLastDim(tokens, experts),
                         "the input's token dimensions followed by experts")) ||
      failed(expectShape(*this, "indices", getIndices(),
                         withLastDim(tokens, topK),
                         "the input's token dimensions followed by top_k")) ||
      failed(expectShape(*this, "weights_grad", getWeightsGrad(),
                         withLastDim(tokens, topK), "the shape of indices")) ||
      failed(expectPositive(*this, "route_scale",
                            getRouteScale().convertToDouble())))
    return failure();
  if (topK > experts)
    return emitOpError() << "expects top_k <= the number of experts ("
                         << experts << "), but got " << topK;
  if (getLogitsGrad() &&
      failed(expectGradTypes(*this,
                             {{getLogitsGrad(), getLogits(), "logits"}})))
    return failure();
  return expectGradTypes(
      *this, {{getInputGrad(), getInput(), "input"},
              {getGateWeightGrad(), getGateWeight(), "gate_weight"}});
}

LogicalResult PermuteGradOp::verify() {
  if (failed(expectRank(*this, "permuted_grad", getPermutedGrad(), 2,
                        "[rows, hidden]")) ||
      failed(expectAtLeastRank1(*this, "input_grad", getInputGrad())))
    return failure();
  int64_t topK = static_cast<int64_t>(getTopK());
  if (topK < 1)
    return emitOpError() << "expects top_k >= 1, but got " << topK;
  ArrayRef<int64_t> input = shapeOf(getInputGrad());
  int64_t slots = slotCount(input.drop_back(), topK);
  if (failed(expectShape(*this, "permuted_grad", getPermutedGrad(),
                         {slots, input.back()},
                         "[tokens * top_k, hidden] of input_grad")))
    return failure();
  return expectShape(*this, "row_to_slot", getRowToSlot(), {slots},
                     "[tokens * top_k]");
}

LogicalResult UnpermuteGradOp::verify() {
  if (failed(verifyUnpermute(*this, getExpertOut(), getRowToSlot(),
                             getWeights(), getResultGrad())))
    return failure();
  return expectGradTypes(
      *this, {{getExpertOutGrad(), getExpertOut(), "expert_out"},
              {getWeightsGrad(), getWeights(), "weights"}});
}

LogicalResult GroupedSwiGLUGradOp::verify() {
  if (failed(verifyGroupedSwiGLU(*this, getPermuted(), getOffsets(),
                                 getGateWeight(), getUpWeight(),
                                 getDownWeight(), getResultGrad())))
    return failure();
  return expectGradTypes(
      *this, {{getPermutedGrad(), getPermuted(), "permuted"},
              {getGateWeightGrad(), getGateWeight(), "gate_weight"},
              {getUpWeightGrad(), getUpWeight(), "up_weight"},
              {getDownWeightGrad(), getDownWeight(), "down_weight"}});
}

LogicalResult CrossEntropyGradOp::verify() {
  if (failed(verifyCrossEntropy(*this, getLogits(), getLabels())))
    return failure();
  return expectGradTypes(*this, {{getLogitsGrad(), getLogits(), "logits"}});
}

LogicalResult AuxLossGradOp::verify() {
  if (failed(verifyAuxLoss(*this, getLogits(), getIndices(),
                           getCoefficient())))
    return failure();
  return expectGradTypes(*this, {{getLogitsGrad(), getLogits(), "logits"}});
}

LogicalResult ZLossGradOp::verify() {
  if (failed(verifyZLoss(*this, getLogits(), getCoefficient())))
    return failure();
  return expectGradTypes(*this, {{getLogitsGrad(), getLogits(), "logits"}});
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

//===----------------------------------------------------------------------===//
// Expert-parallel dispatch and combine
//===----------------------------------------------------------------------===//

/// Checks that `grid` names a shard.grid and `axes` are distinct axes of it
/// whose sizes multiply into a group size n dividing `experts`, and, with a
/// placement, that the [n * slots + 1] received offsets give every rank the
/// same number of slots, enough for all experts.
static LogicalResult verifyExpertGroup(Operation *op,
                                       SymbolTableCollection &symbols,
                                       FlatSymbolRefAttr grid,
                                       ArrayRef<int16_t> axes,
                                       int64_t experts, bool placed,
                                       int64_t receivedOffsets) {
  auto gridOp = symbols.lookupNearestSymbolFrom<shard::GridOp>(op, grid);
  if (!gridOp)
    return op->emitOpError() << "expects " << grid
                             << " to name a shard.grid";
  ArrayRef<int64_t> shape = gridOp.getShape();
  int64_t size = 1;
  llvm::SmallDenseSet<int16_t> seen;
  for (int16_t axis : axes) {
    if (axis < 0 || axis >= static_cast<int64_t>(shape.size()))
      return op->emitOpError() << "grid axis " << axis << " is out of range "
                               << "for " << grid << " of rank "
                               << shape.size();
    if (!seen.insert(axis).second)
      return op->emitOpError() << "repeats grid axis " << axis;
    size *= shape[axis];
  }
  if (experts % size != 0)
    return op->emitOpError() << experts << " experts do not split over the "
                             << size << " ranks of grid_axes";
  if (!placed)
    return success();
  int64_t slots = (receivedOffsets - 1) / size;
  if ((receivedOffsets - 1) % size != 0)
    return op->emitOpError()
           << "expects received_offsets of shape [ranks * slots + 1] for the "
           << size << " ranks of grid_axes, but got [" << receivedOffsets
           << "]";
  if (slots * size < experts)
    return op->emitOpError() << slots << " expert slots per rank on " << size
                             << " ranks cannot hold " << experts << " experts";
  return success();
}

/// Both ops move [rows, H] tensors (`rows` in, `other` out) whose experts are
/// given by [experts + 1] offsets, and received offsets of the same shape.
static LogicalResult verifyExpertExchange(Operation *op, StringRef what,
                                          Value rows, StringRef otherName,
                                          Value other, Value offsets,
                                          Value receivedOffsets, bool placed) {
  if (failed(expectRank(op, what, rows, 2, "[rows, hidden]")) ||
      failed(expectRank(op, otherName, other, 2, "[rows, hidden]")))
    return failure();
  if (shapeOf(rows)[1] != shapeOf(other)[1] ||
      cast<ShapedType>(rows.getType()).getElementType() !=
          cast<ShapedType>(other.getType()).getElementType())
    return op->emitOpError() << "expects " << otherName
                             << " to have the hidden size and element type of "
                             << what;
  if (shapeOf(offsets)[0] < 2)
    return op->emitOpError("expects offsets of shape [experts + 1] with at "
                           "least one expert");
  // With a placement the slots per rank set the size (verifyExpertGroup).
  if (placed)
    return success();
  return expectShape(op, "received_offsets", receivedOffsets,
                     shapeOf(offsets), "the shape of offsets");
}

LogicalResult DispatchOp::verify() {
  return verifyExpertExchange(*this, "permuted", getPermuted(), "received",
                              getReceived(), getOffsets(), getReceivedOffsets(),
                              getPlacement().has_value());
}

LogicalResult
DispatchOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  return verifyExpertGroup(*this, symbolTable, getGridAttr(), getGridAxes(),
                           shapeOf(getOffsets())[0] - 1,
                           getPlacement().has_value(),
                           shapeOf(getReceivedOffsets())[0]);
}

LogicalResult CombineOp::verify() {
  return verifyExpertExchange(*this, "expert_out", getExpertOut(), "result",
                              getResult(), getOffsets(), getReceivedOffsets(),
                              getPlacement().has_value());
}

LogicalResult CombineOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  return verifyExpertGroup(*this, symbolTable, getGridAttr(), getGridAxes(),
                           shapeOf(getOffsets())[0] - 1,
                           getPlacement().has_value(),
                           shapeOf(getReceivedOffsets())[0]);
}
