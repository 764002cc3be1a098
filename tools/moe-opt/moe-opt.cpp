//===- moe-opt.cpp - the moe compiler's pass driver -----------------------===//
//
// Parses, verifies and transforms MoE models written in the moe dialect; any
// pass can be run alone so the IR between pipeline stages can be read.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/Transforms/Passes.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
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
  registry.insert<mlir::moe::MoEDialect, mlir::arith::ArithDialect,
                  mlir::func::FuncDialect, mlir::LLVM::LLVMDialect,
                  mlir::memref::MemRefDialect, mlir::tensor::TensorDialect,
                  mlir::shard::ShardDialect>();

  mlir::registerTransformsPasses(); // canonicalize, cse, ...
  mlir::shard::registerShardPasses();
  mlir::moe::registerMoEPasses();
  mlir::moe::registerMoEPipelines(&meshFlag.getValue());

  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "MoE compiler pass driver\n", registry));
}
