//===- Pipelines.cpp - Named pass pipelines -------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

void mlir::moe::registerCompilerDialects(DialectRegistry &registry) {
  registry.insert<MoEDialect, arith::ArithDialect, func::FuncDialect,
                  LLVM::LLVMDialect, memref::MemRefDialect,
                  tensor::TensorDialect, shard::ShardDialect>();
}

void mlir::moe::buildCompilerPipeline(OpPassManager &pm,
                                      const CompilerPipelineOptions &options) {
  buildPartitionPipeline(pm, options.mesh, options.replicaSlots);
  BuildDecodeOptions decode;
  decode.batch = options.decodeBatch;
  decode.maxSeq = options.maxSeq;
  pm.addPass(createBuildDecode(decode));
  buildLowerToLLVMPipeline(pm, options.trainStep, options.storage,
                           options.zeroStage, options.recompute);
}

void mlir::moe::buildPartitionPipeline(OpPassManager &pm, StringRef mesh,
                                       int64_t replicaSlots) {
  pm.addPass(createCanonicalizerPass());
  if (!mesh.empty()) {
    AssignMeshOptions assign;
    assign.mesh = mesh.str();
    pm.addPass(createAssignMesh(assign));
  }
  pm.addPass(createExpandCapacity());
  ShardOptions shard;
  shard.ifMeshed = true;
  pm.addPass(createShard(shard));
  PartitionOptions partition;
  partition.replicaSlots = replicaSlots;
  partition.ifMeshed = true;
  pm.addPass(createPartition(partition));
}

void mlir::moe::buildTrainStepPipeline(OpPassManager &pm, bool trainStep,
                                       int64_t zeroStage, StringRef recompute) {
  if (trainStep && zeroStage >= 2) {
    ShardWeightsOptions weights;
    weights.stage = zeroStage;
    pm.addPass(createShardWeights(weights));
  }
  pm.addPass(createExpandCapacity());
  pm.addPass(createLowerExperts());
  if (trainStep) {
    BuildTrainStepOptions train;
    train.ifLoss = true;
    train.zeroStage = zeroStage;
    train.recompute = recompute.str();
    pm.addPass(createBuildTrainStep(train));
  }
}

void mlir::moe::buildPlanMemoryPipeline(OpPassManager &pm, StringRef storage) {
  LowerToRuntimeOptions lowering;
  lowering.storage = storage.str();
  pm.addPass(createLowerToRuntime(lowering));
  pm.addPass(createCheckRuntimeCalls());
  pm.addPass(createPlanMemory());
  pm.addPass(createExportManifest());
}

void mlir::moe::buildLowerToLLVMPipeline(OpPassManager &pm, bool trainStep,
                                         StringRef storage, int64_t zeroStage,
                                         StringRef recompute) {
  buildTrainStepPipeline(pm, trainStep, zeroStage, recompute);
  buildPlanMemoryPipeline(pm, storage);
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
      llvm::cl::desc("Build the training step when the model returns a "
                     "scalar loss (moe-build-train-step; default true, as "
                     "moec)"),
      llvm::cl::init(true)};
  Option<std::string> storage{
      *this, "storage",
      llvm::cl::desc("Storage type of floating-point tensors: f32 or bf16 "
                     "(moe-lower-to-runtime)"),
      llvm::cl::init("f32")};
  Option<int64_t> zeroStage{
      *this, "zero",
      llvm::cl::desc("ZeRO stage: 0; 1 to split the optimizer state over "
                     "the data-parallel replicas (moe-build-train-step); 2 "
                     "to split the gradients too, 3 the weights too "
                     "(moe-shard-weights)"),
      llvm::cl::init(0)};
  Option<int64_t> decodeBatch{
      *this, "decode-batch",
      llvm::cl::desc("Sequences @decode and @prefill generate together "
                     "(moe-build-decode); 0 builds neither"),
      llvm::cl::init(1)};
  Option<int64_t> maxSeq{
      *this, "max-seq",
      llvm::cl::desc("Positions of the key/value cache of @decode "
                     "(moe-build-decode); 0: the model's sequence length"),
      llvm::cl::init(0)};
  Option<std::string> recompute{
      *this, "recompute",
      llvm::cl::desc("Activation recompute: none, or full to recompute each "
                     "block's forward in the backward (moe-build-train-step)"),
      llvm::cl::init("none")};
};
} // namespace

void mlir::moe::registerMoEPipelines(const std::string *defaultMesh) {
  PassPipelineRegistration<MoEPipelineOptions>(
      "moe-pipeline",
      "The whole compiler, exactly as moec runs it: record the mesh, "
      "partition a model with a mesh into the per-rank program, build the "
      "training step, lower to the LLVM dialect (moe-lower-to-llvm)",
      [defaultMesh](OpPassManager &pm, const MoEPipelineOptions &options) {
        CompilerPipelineOptions compiler;
        compiler.mesh = options.mesh;
        if (compiler.mesh.empty() && defaultMesh)
          compiler.mesh = *defaultMesh;
        compiler.replicaSlots = options.replicaSlots;
        compiler.trainStep = options.trainStep;
        compiler.storage = options.storage;
        compiler.zeroStage = options.zeroStage;
        compiler.recompute = options.recompute;
        compiler.decodeBatch = options.decodeBatch;
        compiler.maxSeq = options.maxSeq;
        buildCompilerPipeline(pm, compiler);
      });
  PassPipelineRegistration<>(
      "moe-lower-to-llvm",
      "Expand the experts, lower model functions to runtime calls, plan "
      "their memory, embed the manifest and convert everything to the LLVM "
      "dialect",
      [](OpPassManager &pm) { buildLowerToLLVMPipeline(pm); });
}
