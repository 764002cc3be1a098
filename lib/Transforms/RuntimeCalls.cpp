//===- RuntimeCalls.cpp - The runtime calls' prototypes, for the compiler -===//
//
// Expands include/moe/Runtime/CApiCalls.def into a table of operand kinds,
// and checks the calls a lowered module makes against it
// (moe-check-runtime-calls).
//
//===----------------------------------------------------------------------===//

#include "moe/Transforms/RuntimeCalls.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMTypes.h"
#include "llvm/ADT/StringMap.h"

#include <initializer_list>
#include <vector>

namespace mlir::moe {
#define GEN_PASS_DEF_CHECKRUNTIMECALLS
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

enum class Kind { Pointer, I64, I32, F32, F64 };

/// Call name -> operand kinds after the context, from the table.
const llvm::StringMap<std::vector<Kind>> &table() {
  static const llvm::StringMap<std::vector<Kind>> calls = [] {
    llvm::StringMap<std::vector<Kind>> map;
#define MOERT_IN(T, name) Kind::Pointer
#define MOERT_OUT(T, name) Kind::Pointer
#define MOERT_I64(name) Kind::I64
#define MOERT_I32(name) Kind::I32
#define MOERT_F32(name) Kind::F32
#define MOERT_F64(name) Kind::F64
#define MOERT_CALL(name, ...) map[#name] = {__VA_ARGS__};
#include "moe/Runtime/CApiCalls.def"
#undef MOERT_CALL
#undef MOERT_IN
#undef MOERT_OUT
#undef MOERT_I64
#undef MOERT_I32
#undef MOERT_F32
#undef MOERT_F64
    return map;
  }();
  return calls;
}

Type typeOf(MLIRContext *context, Kind kind) {
  switch (kind) {
  case Kind::Pointer:
    return LLVM::LLVMPointerType::get(context);
  case Kind::I64:
    return IntegerType::get(context, 64);
  case Kind::I32:
    return IntegerType::get(context, 32);
  case Kind::F32:
    return Float32Type::get(context);
  case Kind::F64:
    return Float64Type::get(context);
  }
  return {};
}

struct CheckRuntimeCallsPass
    : mlir::moe::impl::CheckRuntimeCallsBase<CheckRuntimeCallsPass> {
  void runOnOperation() override {
    MLIRContext *context = &getContext();
    bool failed = false;
    getOperation().walk([&](Operation *op) {
      StringRef callee;
      TypeRange operands;
      if (auto call = dyn_cast<func::CallOp>(op)) {
        callee = call.getCallee();
        operands = call.getOperandTypes();
      } else if (auto fn = dyn_cast<func::FuncOp>(op)) {
        if (!fn.isDeclaration())
          return;
        callee = fn.getSymName();
        operands = fn.getArgumentTypes();
        if (isRuntimeCallName(callee) && fn.getNumResults() != 0) {
          fn.emitOpError("declares runtime call '")
              << callee << "' with results; every runtime call returns void";
          failed = true;
          return;
        }
      } else {
        return;
      }
      if (!isRuntimeCallName(callee))
        return;
      std::optional<FunctionType> expected = runtimeCallType(context, callee);
      if (!expected) {
        op->emitOpError("names runtime call '")
            << callee << "', which include/moe/Runtime/CApiCalls.def lacks";
        failed = true;
        return;
      }
      if (TypeRange(expected->getInputs()) != operands) {
        op->emitOpError("passes runtime call '")
            << callee << "' operands (" << operands
            << ") unlike its prototype in CApiCalls.def ("
            << expected->getInputs() << ")";
        failed = true;
      }
    });
    if (failed)
      signalPassFailure();
  }
};

} // namespace

std::optional<FunctionType> mlir::moe::runtimeCallType(MLIRContext *context,
                                                       StringRef name) {
  auto it = table().find(name);
  if (it == table().end())
    return std::nullopt;
  SmallVector<Type> inputs = {LLVM::LLVMPointerType::get(context)}; // ctx
  for (Kind kind : it->second)
    inputs.push_back(typeOf(context, kind));
  return FunctionType::get(context, inputs, {});
}
