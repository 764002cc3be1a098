//===- Passes.h - moe compiler passes ---------------------------*- C++ -*-===//

#ifndef MOE_TRANSFORMS_PASSES_H
#define MOE_TRANSFORMS_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"

namespace mlir::moe {

#define GEN_PASS_DECL
#include "moe/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "moe/Transforms/Passes.h.inc"

/// moe-lower-experts, moe-lower-to-runtime, moe-plan-memory,
/// moe-export-manifest, then the
/// upstream conversions to the LLVM dialect (memrefs passed as bare
/// pointers): the module is ready for translation to LLVM IR.
void buildLowerToLLVMPipeline(OpPassManager &pm);

/// Registers the named pipelines (`moe-lower-to-llvm`) with the pass
/// registry, for moe-opt.
void registerMoEPipelines();

} // namespace mlir::moe

#endif // MOE_TRANSFORMS_PASSES_H
