//===- DenseOps.cpp - Verifiers of the dense ops --------------------------===//
//
// Embedding, RMSNorm, linear, RoPE, attention, the dense MLP and add, and
// their gradient ops (the forward's shape rules on the primal operands, each
// cotangent of its primal's type).
//
//===----------------------------------------------------------------------===//

#include "VerifyUtils.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::detail;

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

static LogicalResult verifyEmbedding(Operation *op, Value tokens, Value table,
                                     Value result) {
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
                                APFloat theta, double yarnFactor,
                                double yarnLow, double yarnHigh,
                                double yarnScale, Value result) {
  if (failed(
          expectRank(op, "input", input, 4, "[batch, seq, heads, head_dim]")))
    return failure();
  ArrayRef<int64_t> x = shapeOf(input);
  if (x[3] % 2 != 0)
    return op->emitOpError() << "expects an even head_dim, but got " << x[3];
  if (positions && failed(expectShape(op, "positions", positions, {x[0], x[1]},
                                      "[batch, seq] of input")))
    return failure();
  if (failed(expectPositive(op, "theta", theta.convertToDouble())) ||
      failed(expectPositive(op, "yarn_scale", yarnScale)))
    return failure();
  if (!(yarnFactor >= 1.0))
    return op->emitOpError()
           << "expects yarn_factor >= 1, but got " << yarnFactor;
  if (!(yarnLow >= 0.0 && yarnHigh >= yarnLow))
    return op->emitOpError() << "expects 0 <= yarn_low <= yarn_high, but got "
                             << yarnLow << " and " << yarnHigh;
  return expectSameType(op, result, input, "input");
}

LogicalResult RopeOp::verify() {
  return verifyRope(*this, getInput(), getPositions(), getTheta(),
                    getYarnFactor().convertToDouble(),
                    getYarnLow().convertToDouble(),
                    getYarnHigh().convertToDouble(),
                    getYarnScale().convertToDouble(), getResult());
}

static LogicalResult verifyAttention(Operation *op, Value qv, Value kv,
                                     Value vv, std::optional<APFloat> scale,
                                     Value result) {
  if (failed(expectRank(op, "q", qv, 4, "[batch, seq, heads, head_dim]")) ||
      failed(expectRank(op, "k", kv, 4, "[batch, seq, kv_heads, head_dim]")) ||
      failed(expectRank(op, "v", vv, 4, "[batch, seq, kv_heads, v_head_dim]")))
    return failure();
  ArrayRef<int64_t> q = shapeOf(qv);
  ArrayRef<int64_t> k = shapeOf(kv);
  int64_t vDim = shapeOf(vv)[3];
  if (failed(expectShape(op, "k", kv, {q[0], q[1], k[2], q[3]},
                         "batch, seq and head_dim of q")) ||
      failed(expectShape(op, "v", vv, {k[0], k[1], k[2], vDim},
                         "batch, seq and kv_heads of k")))
    return failure();
  if (q[2] % k[2] != 0)
    return op->emitOpError()
           << "expects the number of query heads (" << q[2]
           << ") to be a multiple of the number of key/value heads (" << k[2]
           << ")";
  if (scale && failed(expectPositive(op, "scale", scale->convertToDouble())))
    return failure();
  return expectShape(op, "the result", result, {q[0], q[1], q[2], vDim},
                     "the heads of q, the head size of v");
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

LogicalResult KVCacheOp::verify() {
  if (getName().empty())
    return emitOpError("expects a non-empty cache name");
  return expectRank(*this, "the cache", getResult(), 4,
                    "[batch, cache_len, kv_heads, head_dim]");
}

LogicalResult CachedAttentionOp::verify() {
  if (failed(verifyAttention(*this, getQ(), getK(), getV(), getScale(),
                             getResult())) ||
      failed(expectRank(*this, "k_cache", getKCache(), 4,
                        "[batch, cache_len, kv_heads, head_dim]")))
    return failure();
  ArrayRef<int64_t> q = shapeOf(getQ());
  ArrayRef<int64_t> k = shapeOf(getK());
  int64_t cacheLen = shapeOf(getKCache())[1];
  if (failed(expectShape(*this, "k_cache", getKCache(),
                         {q[0], cacheLen, k[2], q[3]},
                         "batch of q, kv_heads and head_dim of k")) ||
      failed(expectShape(*this, "v_cache", getVCache(),
                         {q[0], cacheLen, k[2], shapeOf(getV())[3]},
                         "the k_cache's batch, length and heads, the head "
                         "size of v")) ||
      failed(expectShape(*this, "positions", getPositions(), {q[0], q[1]},
                         "batch and new tokens of q")))
    return failure();
  if (cacheLen < q[1])
    return emitOpError() << "expects a cache of at least the " << q[1]
                         << " new tokens, but it holds " << cacheLen;
  return success();
}

double CachedAttentionOp::getEffectiveScale() {
  return effectiveScale(getScale(), getQ());
}

/// Checks `lhs` [..., A] and `rhs` [..., B] beside each other as `whole`
/// [..., A + B], an operand broadcast in the dimension before the last when
/// it has 1 there.
static LogicalResult verifyConcat(Operation *op, Value lhs, Value rhs,
                                  Value whole, StringRef wholeName) {
  ArrayRef<int64_t> shape = shapeOf(whole);
  if (shape.empty())
    return op->emitOpError() << "expects " << wholeName
                             << " of rank >= 1 ([..., features]), but got "
                                "rank 0";
  int64_t rank = shape.size();
  int64_t widths = 0;
  for (auto [name, part] : {std::pair<StringRef, Value>{"lhs", lhs},
                            std::pair<StringRef, Value>{"rhs", rhs}}) {
    ArrayRef<int64_t> got = shapeOf(part);
    SmallVector<int64_t> want(shape.drop_back());
    if (int64_t(got.size()) == rank) {
      if (rank >= 2 && got[rank - 2] == 1)
        want[rank - 2] = 1; // broadcast over this dimension
      want.push_back(got.back());
    }
    if (failed(expectShape(op, name, part, want,
                           "the leading dimensions of " + wholeName.str() +
                               ", or 1 in the one before the last")))
      return failure();
    widths += got.back();
  }
  if (widths != shape.back())
    return op->emitOpError()
           << "expects the last dimensions of lhs and rhs to add up to the "
           << wholeName << "'s (" << shape.back() << "), but got " << widths;
  return success();
}

LogicalResult ConcatOp::verify() {
  return verifyConcat(*this, getLhs(), getRhs(), getResult(), "result");
}

LogicalResult SplitOp::verify() {
  if (failed(verifyConcat(*this, getLhs(), getRhs(), getInput(), "input")))
    return failure();
  ArrayRef<int64_t> in = shapeOf(getInput());
  for (auto [name, part] : {std::pair<StringRef, Value>{"lhs", getLhs()},
                            std::pair<StringRef, Value>{"rhs", getRhs()}})
    if (failed(expectShape(*this, name, part,
                           withLastDim(in.drop_back(), shapeOf(part).back()),
                           "the leading dimensions of input")))
      return failure();
  return success();
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
// Gradients
//===----------------------------------------------------------------------===//

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
  if (failed(verifyLinear(*this, getInput(), getWeight(), getBias(),
                          getResultGrad())))
    return failure();
  if (static_cast<bool>(getBias()) != static_cast<bool>(getBiasGrad()))
    return emitOpError("expects bias_grad exactly when bias is given");
  if (getBias() &&
      failed(expectGradTypes(*this, {{getBiasGrad(), getBias(), "bias"}})))
    return failure();
  return expectGradTypes(*this, {{getInputGrad(), getInput(), "input"},
                                 {getWeightGrad(), getWeight(), "weight"}});
}

LogicalResult RopeGradOp::verify() {
  return verifyRope(*this, getResultGrad(), getPositions(), getTheta(),
                    getYarnFactor().convertToDouble(),
                    getYarnLow().convertToDouble(),
                    getYarnHigh().convertToDouble(),
                    getYarnScale().convertToDouble(), getInputGrad());
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

LogicalResult ConcatGradOp::verify() {
  if (failed(verifyConcat(*this, getLhs(), getRhs(), getResultGrad(),
                          "result_grad")))
    return failure();
  return expectGradTypes(*this, {{getLhsGrad(), getLhs(), "lhs"},
                                 {getRhsGrad(), getRhs(), "rhs"}});
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

//===----------------------------------------------------------------------===//
// What the mesh must divide (MeshFitOpInterface)
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::verifyFitsMesh(MeshAttr mesh) {
  ArrayRef<int64_t> tokens = getTokens().getType().getShape();
  bool ok = true;
  if (!tokens.empty())
    ok &= succeeded(expectDivisible(*this, "the batch size", tokens[0], "dp",
                                    mesh.getDp()));
  // Sequence parallelism splits each cp rank's part again over tp.
  if (tokens.size() >= 2 && mesh.getSp())
    ok &= succeeded(expectDivisible(*this, "the sequence length", tokens[1],
                                    "cp * tp (sequence parallel)",
                                    mesh.getCp() * mesh.getTp()));
  else if (tokens.size() >= 2)
    ok &= succeeded(expectDivisible(*this, "the sequence length", tokens[1],
                                    "cp", mesh.getCp()));
  return success(ok);
}

LogicalResult AttentionOp::verifyFitsMesh(MeshAttr mesh) {
  if (!hasRank(getQ(), 4) || !hasRank(getK(), 4))
    return success();
  ArrayRef<int64_t> q = getQ().getType().getShape();
  ArrayRef<int64_t> k = getK().getType().getShape();
  // TP splits heads; Ulysses CP then splits each rank's heads again.
  int64_t headShards = mesh.getTp() * mesh.getCp();
  bool ok = succeeded(
      expectDivisible(*this, "the sequence length", q[1], "cp", mesh.getCp()));
  ok &= succeeded(expectDivisible(*this, "the number of query heads", q[2],
                                  "tp * cp", headShards));
  ok &= succeeded(expectDivisible(*this, "the number of key/value heads", k[2],
                                  "tp * cp", headShards));
  return success(ok);
}

LogicalResult MLPOp::verifyFitsMesh(MeshAttr mesh) {
  return expectFFNFitsMesh(*this, getGateWeight(), "the MLP intermediate size",
                           mesh);
}
