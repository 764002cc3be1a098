//===- Pipelines.cpp - Named pass pipelines -------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

void mlir::moe::buildLowerToLLVMPipeline(OpPassManager &pm, bool trainStep,
                                          StringRef storage) {
  pm.addPass(createExpandCapacity());
  pm.addPass(createLowerExperts());
  if (trainStep)
    pm.addPass(createBuildTrainStep());
  LowerToRuntimeOptions lowering;
  lowering.storage = storage.str();
  pm.addPass(createLowerToRuntime(lowering));
  pm.addPass(createPlanMemory());
  pm.addPass(createExportManifest());
  pm.addPass(createResolveAddresses());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // Reshapes and views become strided metadata before memref->LLVM.
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createArithToLLVMConversionPass());
  ConvertFuncToLLVMPassOptions funcOptions;
  funcOptions.useBarePtrCallConv = true;
  pm.addPass(createConvertFuncToLLVMPass(funcOptions));
  pm.addPass(createReconcileUnrealizedCastsPass());
  // The memref descriptors built around every runtime call's pointer fold
  // away: a quarter of the IR for LLVM to translate and compile.
  pm.addPass(createCanonicalizerPass());
}

void mlir::moe::buildPartitionPipeline(OpPassManager &pm, StringRef mesh,
                                        int64_t replicaSlots) {
  if (!mesh.empty()) {
    AssignMeshOptions options;
    options.mesh = mesh.str();
    pm.addPass(createAssignMesh(options));
  }
  pm.addPass(createExpandCapacity());
  pm.addPass(createShard());
  PartitionOptions partition;
  partition.replicaSlots = replicaSlots;
  pm.addPass(createPartition(partition));
}

namespace {
struct MoEPipelineOptions
    : public mlir::PassPipelineOptions<MoEPipelineOptions> {
  Option<std::string> mesh{
      *this, "mesh",
      llvm::cl::desc("Mesh as axis=size pairs, e.g. dp=2,ep=2 (default: "
                     "moe-opt's --mesh, else the module's moe.mesh)")};
  Option<int64_t> replicaSlots{
      *this, "replica-slots",
      llvm::cl::desc("Expert slots per EP rank beyond E/n, for replicas of "
                     "hot experts (moe-partition)"),
      llvm::cl::init(0)};
  Option<bool> trainStep{
      *this, "train-step",
      llvm::cl::desc("Also build the training step (moe-build-train-step)"),
      llvm::cl::init(false)};
  Option<std::string> storage{
      *this, "storage",
      llvm::cl::desc("Storage type of floating-point tensors: f32 or bf16 "
                     "(moe-lower-to-runtime)"),
      llvm::cl::init("f32")};
};
} // namespace

void mlir::moe::registerMoEPipelines(const std::string *defaultMesh) {
  PassPipelineRegistration<MoEPipelineOptions>(
      "moe-pipeline",
      "The whole compiler: record the mesh, choose shardings, partition into "
      "the per-rank program, then lower it to the LLVM dialect "
      "(moe-lower-to-llvm)",
      [defaultMesh](OpPassManager &pm, const MoEPipelineOptions &options) {
        std::string mesh = options.mesh;
        if (mesh.empty() && defaultMesh)
          mesh = *defaultMesh;
        buildPartitionPipeline(pm, mesh, options.replicaSlots);
        buildLowerToLLVMPipeline(pm, options.trainStep, options.storage);
      });
  PassPipelineRegistration<>(
      "moe-lower-to-llvm",
      "Expand the experts, lower model functions to runtime calls, plan "
      "their memory, embed the manifest and convert everything to the LLVM "
      "dialect",
      [](OpPassManager &pm) { buildLowerToLLVMPipeline(pm); });
}
