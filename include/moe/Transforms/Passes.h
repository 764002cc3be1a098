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

/// moe-lower-experts, moe-build-train-step (with `trainStep`),
/// moe-lower-to-runtime, moe-plan-memory, moe-export-manifest, then the
/// upstream conversions to the LLVM dialect (memrefs passed as bare
/// pointers): the module is ready for translation to LLVM IR.
void buildLowerToLLVMPipeline(OpPassManager &pm, bool trainStep = false,
                              llvm::StringRef storage = "f32");

/// moe-assign-mesh (with `mesh`; skipped when `mesh` is empty, keeping the
/// module's moe.mesh), moe-shard, moe-partition (with `replicaSlots` spare
/// expert slots per EP rank): the per-rank program.
void buildPartitionPipeline(OpPassManager &pm, llvm::StringRef mesh,
                            int64_t replicaSlots = 0);

/// Registers the named pipelines with the pass registry, for moe-opt:
/// `moe-lower-to-llvm`, and `moe-pipeline{mesh=...}` (partition, then lower
/// to LLVM). `defaultMesh`, when given, is the mesh of a `moe-pipeline`
/// without one (moe-opt's `--mesh`); it is read when the pipeline is built.
void registerMoEPipelines(const std::string *defaultMesh = nullptr);

} // namespace mlir::moe

#endif // MOE_TRANSFORMS_PASSES_H
