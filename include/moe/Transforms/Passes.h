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

/// What the compiler pipeline is asked for; everything else it decides from
/// the module, the same way in moec and in moe-opt's --moe-pipeline.
struct CompilerPipelineOptions {
  /// A mesh to record (moe-assign-mesh); empty: the module's moe.mesh, if
  /// any. A module with a mesh is partitioned unless it is already.
  std::string mesh;
  /// Spare expert slots per EP rank (moe-partition).
  int64_t replicaSlots = 0;
  /// Build the training step when the model returns a scalar loss.
  bool trainStep = true;
  /// Storage type of floating-point tensors: "f32" or "bf16".
  std::string storage = "f32";
  /// ZeRO stage of the training step (moe-build-train-step's `zero`).
  int64_t zeroStage = 0;
  /// Activation recompute in the training step: "none" or "full"
  /// (moe-build-train-step's `recompute`).
  std::string recompute = "none";
  /// Sequences @decode and @prefill generate together (moe-build-decode's
  /// `batch`); 0 builds neither.
  int64_t decodeBatch = 1;
  /// Positions of their key/value cache; 0: the model's sequence length.
  int64_t maxSeq = 0;
};

/// The whole compiler, the one pipeline moec runs: canonicalize; record the
/// mesh when one is given; partition a module with a mesh into the per-rank
/// program (moe-expand-capacity, moe-shard, moe-partition, each leaving a
/// module without a mesh or already partitioned as it is); derive @prefill
/// and @decode from a module without a mesh (moe-build-decode); then
/// buildLowerToLLVMPipeline.
void buildCompilerPipeline(OpPassManager &pm,
                           const CompilerPipelineOptions &options);

/// The first part of buildCompilerPipeline: canonicalize, record `mesh`
/// when not empty, then moe-expand-capacity, moe-shard, moe-partition.
void buildPartitionPipeline(OpPassManager &pm, llvm::StringRef mesh,
                            int64_t replicaSlots = 0);

/// The training step on the per-rank program: moe-shard-weights (ZeRO
/// stages 2 and 3), moe-expand-capacity, moe-lower-experts and, with
/// `trainStep`, moe-build-train-step.
void buildTrainStepPipeline(OpPassManager &pm, bool trainStep,
                            int64_t zeroStage, llvm::StringRef recompute);

/// moe-lower-to-runtime, moe-check-runtime-calls, moe-plan-memory and
/// moe-export-manifest: afterwards the module holds the manifest, with
/// every buffer's bytes.
void buildPlanMemoryPipeline(OpPassManager &pm, llvm::StringRef storage);

/// buildTrainStepPipeline, buildPlanMemoryPipeline, then
/// moe-resolve-addresses and the upstream conversions to the LLVM dialect
/// (memrefs passed as bare pointers): the module is ready for translation
/// to LLVM IR.
void buildLowerToLLVMPipeline(OpPassManager &pm, bool trainStep = false,
                              llvm::StringRef storage = "f32",
                              int64_t zeroStage = 0,
                              llvm::StringRef recompute = "none");

/// Every dialect the compiler reads or produces, for both tools.
void registerCompilerDialects(DialectRegistry &registry);

/// Registers the named pipelines with the pass registry, for moe-opt:
/// `moe-pipeline` (buildCompilerPipeline: exactly what moec runs, with the
/// same defaults) and `moe-lower-to-llvm`. `defaultMesh`, when given, is the
/// mesh of a `moe-pipeline` without one (moe-opt's `--mesh`, as moec's); it
/// is read when the pipeline is built.
void registerMoEPipelines(const std::string *defaultMesh = nullptr);

} // namespace mlir::moe

#endif // MOE_TRANSFORMS_PASSES_H
