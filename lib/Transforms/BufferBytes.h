//===- BufferBytes.h - Byte sizes of buffers, never wrapped -----*- C++ -*-===//
//
// A real model's per-rank buffers reach tens of GiB; an absurd shape (a typo
// in a batch size) could make a byte count wrap past 2^63. Every byte count
// the lowering and the memory plan compute goes through these, so such a
// model is a diagnostic, never a wrapped offset.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TRANSFORMS_BUFFERBYTES_H
#define MOE_LIB_TRANSFORMS_BUFFERBYTES_H

#include "mlir/IR/BuiltinTypes.h"
#include "llvm/Support/CheckedArithmetic.h"

#include <optional>

namespace mlir::moe {

/// Bytes of a statically shaped `type`, or nullopt if they exceed INT64_MAX.
inline std::optional<int64_t> bufferBytes(ShapedType type) {
  std::optional<int64_t> bytes =
      static_cast<int64_t>(type.getElementTypeBitWidth() / 8);
  for (int64_t d : type.getShape())
    if (bytes)
      bytes = llvm::checkedMul(*bytes, d);
  return bytes;
}

/// `bytes` rounded up to a multiple of `alignment`, or nullopt on overflow.
inline std::optional<int64_t> alignedBytes(int64_t bytes, int64_t alignment) {
  std::optional<int64_t> padded = llvm::checkedAdd(bytes, alignment - 1);
  if (!padded)
    return std::nullopt;
  return *padded / alignment * alignment;
}

} // namespace mlir::moe

#endif // MOE_LIB_TRANSFORMS_BUFFERBYTES_H
