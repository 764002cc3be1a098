//===- ResolveAddresses.cpp - Buffer pointers as argument offsets ---------===//
//
// After moe-plan-memory every buffer a runtime call takes is a view of one
// of the entry's byte blobs (weights, arena, gradients) at a constant offset,
// or an argument itself, possibly reshaped. Its pointer is then that
// argument's pointer plus the offset: one getelementptr, instead of a memref
// descriptor built per call and taken apart again by the LLVM conversion.
// On a 94-layer model this is most of the IR that conversion and LLVM's
// code generator would otherwise see.
//
//===----------------------------------------------------------------------===//

#include "BufferPointer.h"

#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_RESOLVEADDRESSES
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// A buffer's address: an entry argument's pointer plus `bytes`.
struct Address {
  BlockArgument base;
  int64_t bytes = 0;
};

/// The address of dense buffer `buffer`, when it is an entry argument seen
/// through constant-offset views and reshapes; nullopt otherwise.
std::optional<Address> addressOf(Value buffer, Block &entry) {
  int64_t bytes = 0;
  while (true) {
    if (auto arg = dyn_cast<BlockArgument>(buffer)) {
      if (arg.getOwner() != &entry)
        return std::nullopt;
      return Address{arg, bytes};
    }
    Operation *op = buffer.getDefiningOp();
    if (auto view = dyn_cast<memref::ViewOp>(op)) {
      std::optional<int64_t> shift = getConstantIntValue(view.getByteShift());
      if (!shift)
        return std::nullopt;
      bytes += *shift;
      buffer = view.getSource();
    } else if (isa<memref::ExpandShapeOp, memref::CollapseShapeOp>(op)) {
      // Reshapes of dense buffers keep the first element where it was.
      buffer = op->getOperand(0);
    } else {
      return std::nullopt;
    }
  }
}

void resolve(func::FuncOp fn) {
  Block &entry = fn.getBody().front();
  OpBuilder b(fn.getContext());
  auto ptrType = LLVM::LLVMPointerType::get(fn.getContext());
  // Each argument's pointer, made once at the top of the entry.
  DenseMap<BlockArgument, Value> basePointers;
  auto basePointer = [&](BlockArgument arg, Location loc) {
    Value &ptr = basePointers[arg];
    if (!ptr) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(&entry);
      ptr = bufferPointer(b, loc, arg);
    }
    return ptr;
  };

  SmallVector<LLVM::IntToPtrOp> pointers;
  fn.walk([&](LLVM::IntToPtrOp op) { pointers.push_back(op); });
  llvm::SetVector<Operation *> maybeDead;
  for (LLVM::IntToPtrOp op : pointers) {
    Value buffer = pointedBuffer(op);
    if (!buffer)
      continue;
    std::optional<Address> address = addressOf(buffer, entry);
    if (!address)
      continue;
    Location loc = op.getLoc();
    Value base = basePointer(address->base, loc);
    Value ptr = base;
    if (address->bytes != 0) {
      b.setInsertionPoint(op);
      Value offset = LLVM::ConstantOp::create(
          b, loc, b.getI64Type(), b.getI64IntegerAttr(address->bytes));
      ptr = LLVM::GEPOp::create(b, loc, ptrType, b.getI8Type(), base,
                                ValueRange{offset});
    }
    op.getResult().replaceAllUsesWith(ptr);
    maybeDead.insert(op);
  }
  // The casts, extractions, views and reshapes that only fed the pointers.
  while (!maybeDead.empty()) {
    Operation *op = maybeDead.pop_back_val();
    if (!op->use_empty() || !isPure(op))
      continue;
    for (Value operand : op->getOperands())
      if (Operation *def = operand.getDefiningOp())
        maybeDead.insert(def);
    op->erase();
  }
}

struct ResolveAddressesPass
    : mlir::moe::impl::ResolveAddressesBase<ResolveAddressesPass> {
  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>())
      if (!fn.isExternal())
        resolve(fn);
  }
};

} // namespace
