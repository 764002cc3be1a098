//===- moe-opt.cpp - the moe compiler's pass driver -----------------------===//
//
// Parses, verifies and transforms MoE models written in the moe dialect; any
// pass can be run alone so the IR between pipeline stages can be read.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/Transforms/Passes.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

/// `moe-opt --mesh dp=2,ep=2 --moe-pipeline`: the same flag as moec's.
static llvm::cl::opt<std::string>
    meshFlag("mesh",
             llvm::cl::desc("Mesh for --moe-pipeline when it names none, "
                            "e.g. dp=2,ep=2 (as moec --mesh)"),
             llvm::cl::value_desc("axis=size,..."));

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  mlir::moe::registerCompilerDialects(registry);

  mlir::registerTransformsPasses(); // canonicalize, cse, ...
  mlir::shard::registerShardPasses();
  mlir::moe::registerMoEPasses();
  mlir::moe::registerMoEPipelines(&meshFlag.getValue());

  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "MoE compiler pass driver\n", registry));
}
