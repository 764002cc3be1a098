//===- Pipelines.cpp - Named pass pipelines -------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

void mlir::moe::buildLowerToLLVMPipeline(OpPassManager &pm) {
  pm.addPass(createLowerExperts());
  pm.addPass(createLowerToRuntime());
  pm.addPass(createPlanMemory());
  pm.addPass(createExportManifest());
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
}

void mlir::moe::registerMoEPipelines() {
  PassPipelineRegistration<>(
      "moe-lower-to-llvm",
      "Expand the experts, lower model functions to runtime calls, plan "
      "their memory, embed the manifest and convert everything to the LLVM "
      "dialect",
      buildLowerToLLVMPipeline);
}
