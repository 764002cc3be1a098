//===- RuntimeCalls.h - The runtime calls, for the compiler ----*- C++ -*-===//
//
// The compiler's reading of include/moe/Runtime/CApiCalls.def, the table of
// runtime calls that the runtime's CApi.h is checked against too: the
// function type of each call as the lowered IR spells it (the context and
// every buffer an !llvm.ptr, then i64 / i32 / f32 / f64 scalars, no result).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TRANSFORMS_RUNTIMECALLS_H
#define MOE_TRANSFORMS_RUNTIMECALLS_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/ADT/StringRef.h"

#include <optional>

namespace mlir::moe {

/// The prototype of runtime call `name` in the table, or nullopt when the
/// table has no such call.
std::optional<FunctionType> runtimeCallType(MLIRContext *context,
                                            llvm::StringRef name);

/// Whether `name` is the name of a runtime call (the `moert_` prefix).
inline bool isRuntimeCallName(llvm::StringRef name) {
  return name.starts_with("moert_");
}

} // namespace mlir::moe

#endif // MOE_TRANSFORMS_RUNTIMECALLS_H
