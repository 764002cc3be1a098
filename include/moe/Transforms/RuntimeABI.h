//===- RuntimeABI.h - Names shared by the lowering passes -------*- C++ -*-===//
//
// The compiler side of include/moe/Runtime/ModelABI.h.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TRANSFORMS_RUNTIMEABI_H
#define MOE_TRANSFORMS_RUNTIMEABI_H

#include "llvm/ADT/StringRef.h"

namespace mlir::moe {

/// `@f` lowers to the entry point `@moe_entry_f`.
inline constexpr llvm::StringLiteral kEntryPrefix = "moe_entry_";
/// The exported NUL-terminated JSON manifest.
inline constexpr llvm::StringLiteral kManifestSymbol = "moe_model_manifest";

} // namespace mlir::moe

#endif // MOE_TRANSFORMS_RUNTIMEABI_H
