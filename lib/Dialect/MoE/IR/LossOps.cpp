//===- LossOps.cpp - Verifiers of the losses ------------------------------===//
//
// Cross-entropy, the router's aux and z losses (with their folds to zero
// when the coefficient is zero), and their gradient ops.
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
// Gradients
//===----------------------------------------------------------------------===//

LogicalResult CrossEntropyGradOp::verify() {
  if (failed(verifyCrossEntropy(*this, getLogits(), getLabels())))
    return failure();
  return expectGradTypes(*this, {{getLogitsGrad(), getLogits(), "logits"}});
}

LogicalResult AuxLossGradOp::verify() {
  if (failed(verifyAuxLoss(*this, getLogits(), getIndices(), getCoefficient())))
    return failure();
  return expectGradTypes(*this, {{getLogitsGrad(), getLogits(), "logits"}});
}

LogicalResult ZLossGradOp::verify() {
  if (failed(verifyZLoss(*this, getLogits(), getCoefficient())))
    return failure();
  return expectGradTypes(*this, {{getLogitsGrad(), getLogits(), "logits"}});
}
