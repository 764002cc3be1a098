//===- BufferPointer.h - The bare pointer of a buffer ------------*- C++
//-*-===//
//
// Runtime calls take bare pointers to dense buffers. moe-lower-to-runtime
// builds each as the chain below, and moe-resolve-addresses recognises the
// chain to replace it: both use these two functions, so the shape is written
// once.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TRANSFORMS_BUFFERPOINTER_H
#define MOE_LIB_TRANSFORMS_BUFFERPOINTER_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Builders.h"

namespace mlir::moe {

/// `buffer`'s aligned pointer as an !llvm.ptr:
/// extract_aligned_pointer_as_index, index_cast to i64, inttoptr.
inline Value bufferPointer(OpBuilder &b, Location loc, Value buffer) {
  Value index = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, buffer);
  Value address = arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  return LLVM::IntToPtrOp::create(
      b, loc, LLVM::LLVMPointerType::get(b.getContext()), address);
}

/// The buffer whose pointer `ptr` is, when bufferPointer built it; null
/// otherwise.
inline Value pointedBuffer(LLVM::IntToPtrOp ptr) {
  auto cast = ptr.getArg().getDefiningOp<arith::IndexCastOp>();
  if (!cast)
    return {};
  auto extract =
      cast.getIn().getDefiningOp<memref::ExtractAlignedPointerAsIndexOp>();
  return extract ? extract.getSource() : Value();
}

} // namespace mlir::moe

#endif // MOE_LIB_TRANSFORMS_BUFFERPOINTER_H
