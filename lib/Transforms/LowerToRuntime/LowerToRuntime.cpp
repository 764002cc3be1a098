//===- LowerToRuntime.cpp - moe ops on tensors -> runtime calls on buffers ===//
//
// Rewrites each model function `@f` into the entry point `@moe_entry_f`
// (include/moe/Runtime/ModelABI.h): every tensor becomes a memref, every
// model-level op one or more calls of the runtime's C API
// (include/moe/Runtime/CApi.h), every weight a view into the weights blob.
// Intermediate results get a `memref.alloc` each; moe-plan-memory places
// them in the arena afterwards. Results the function returns are written
// straight into the caller's output buffers. EntryBuilder.h says where each
// op family's lowering lives.
//
//===----------------------------------------------------------------------===//

#include "EntryBuilder.h"

#include "../ShardingSpec.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"

namespace mlir::moe {
#define GEN_PASS_DEF_LOWERTORUNTIME
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct LowerToRuntimePass
    : mlir::moe::impl::LowerToRuntimeBase<LowerToRuntimePass> {
  using LowerToRuntimeBase::LowerToRuntimeBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    Type floatStorage;
    if (storage == "f32")
      floatStorage = Float32Type::get(&getContext());
    else if (storage == "bf16")
      floatStorage = BFloat16Type::get(&getContext());
    else {
      module.emitError() << "unknown storage '" << storage
                         << "' (expected f32 or bf16)";
      return signalPassFailure();
    }
    for (func::FuncOp model : modelFunctions(module)) {
      if (failed(lowering::EntryBuilder(model, floatStorage,
                                        lowering::allLowerings())
                     .build()))
        return signalPassFailure();
      model.erase();
    }
    // The grids' collectives are runtime calls now; their group ids carry
    // the axes.
    for (auto grid : llvm::make_early_inc_range(module.getOps<shard::GridOp>()))
      grid.erase();
  }
};

} // namespace
