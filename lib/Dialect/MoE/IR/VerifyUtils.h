//===- VerifyUtils.h - Checks shared by the moe op verifiers ----*- C++ -*-===//
//
// Private to lib/Dialect/MoE/IR: the shape checks every verifier uses, so
// that messages read "expects <what> of shape [..] (<why>), but got [..]".
// The verifiers themselves live by op family: DenseOps.cpp, ExpertOps.cpp,
// LossOps.cpp (each op's gradient op beside it), weights in MoEOps.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_DIALECT_MOE_IR_VERIFYUTILS_H
#define MOE_LIB_DIALECT_MOE_IR_VERIFYUTILS_H

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "llvm/ADT/STLExtras.h"

#include <initializer_list>
#include <string>
#include <tuple>

namespace mlir::moe::detail {

inline ArrayRef<int64_t> shapeOf(Value v) {
  return cast<ShapedType>(v.getType()).getShape();
}

inline std::string formatShape(ArrayRef<int64_t> shape) {
  std::string s = "[";
  llvm::raw_string_ostream os(s);
  llvm::interleaveComma(shape, os);
  os << "]";
  return s;
}

/// "expects <what> of shape [want] (<why>), but got [got]".
inline LogicalResult expectShape(Operation *op, StringRef what, Value value,
                                 ArrayRef<int64_t> want, StringRef why) {
  ArrayRef<int64_t> got = shapeOf(value);
  if (got == want)
    return success();
  return op->emitOpError() << "expects " << what << " of shape "
                           << formatShape(want) << " (" << why << "), but got "
                           << formatShape(got);
}

inline LogicalResult expectRank(Operation *op, StringRef what, Value value,
                                int64_t rank, StringRef layout) {
  int64_t got = shapeOf(value).size();
  if (got == rank)
    return success();
  return op->emitOpError() << "expects " << what << " of rank " << rank << " ("
                           << layout << "), but got rank " << got;
}

inline LogicalResult expectAtLeastRank1(Operation *op, StringRef what,
                                        Value value) {
  if (!shapeOf(value).empty())
    return success();
  return op->emitOpError() << "expects " << what
                           << " of rank >= 1 ([..., features]), but got rank 0";
}

inline LogicalResult expectSameType(Operation *op, Value result, Value like,
                                    StringRef likeName) {
  if (result.getType() == like.getType())
    return success();
  return op->emitOpError() << "expects the result type to equal the "
                           << likeName << " type " << like.getType()
                           << ", but got " << result.getType();
}

inline LogicalResult expectPositive(Operation *op, StringRef what, double v) {
  if (v > 0.0)
    return success();
  return op->emitOpError() << "expects " << what << " > 0, but got " << v;
}

inline LogicalResult expectNonNegative(Operation *op, StringRef what,
                                       double v) {
  if (v >= 0.0)
    return success();
  return op->emitOpError() << "expects " << what << " >= 0, but got " << v;
}

/// `leading` followed by `last`.
inline SmallVector<int64_t> withLastDim(ArrayRef<int64_t> leading,
                                        int64_t last) {
  SmallVector<int64_t> shape(leading);
  shape.push_back(last);
  return shape;
}

/// Checks a SwiGLU FFN's weights: gate/up [F, H], down [H, F] for `input`
/// [..., H]; the result has the input's type.
inline LogicalResult verifySwiGLU(Operation *op, Value input, Value gate,
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
/// Checks that each cotangent has its primal's type.
inline LogicalResult expectGradTypes(
    Operation *op,
    std::initializer_list<std::tuple<Value, Value, StringRef>> gradPrimalName) {
  for (auto [grad, primal, name] : gradPrimalName)
    if (grad.getType() != primal.getType())
      return op->emitOpError()
             << "expects the gradient of " << name << " to have its type "
             << primal.getType() << ", but got " << grad.getType();
  return success();
}

template <typename OpT> inline bool firstOfKindInBlock(Operation *op) {
  for (Operation *prev = op->getPrevNode(); prev; prev = prev->getPrevNode())
    if (isa<OpT>(prev))
      return false;
  return true;
}

/// Emits "cannot shard over the mesh: <what> (<count>) is not divisible by
/// <axis> = <size>" at `op` unless `size` divides `count`.
inline LogicalResult expectDivisible(Operation *op, StringRef what,
                                     int64_t count, StringRef axis,
                                     int64_t size) {
  if (count % size == 0)
    return success();
  return emitError(op->getLoc())
         << "cannot shard over the mesh: " << what << " (" << count
         << ") is not divisible by " << axis << " = " << size;
}

inline bool hasRank(Value v, size_t rank) {
  return cast<ShapedType>(v.getType()).getShape().size() == rank;
}

/// A SwiGLU FFN whose gate weight is [inter, hidden] is column- then
/// row-parallel over tp: tp must divide inter.
inline LogicalResult expectFFNFitsMesh(Operation *op, Value gate,
                                       StringRef what, MeshAttr mesh) {
  if (!hasRank(gate, 2))
    return success();
  return expectDivisible(op, what,
                         cast<ShapedType>(gate.getType()).getShape()[0], "tp",
                         mesh.getTp());
}

} // namespace mlir::moe::detail

#endif // MOE_LIB_DIALECT_MOE_IR_VERIFYUTILS_H
