//===- AssignMesh.cpp - record the mesh a model is compiled for -----------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Support/MeshShape.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe {
#define GEN_PASS_DEF_ASSIGNMESH
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Replaces any symbol `name` in `module` by a fresh `shard.grid @name`.
void replaceGrid(ModuleOp module, StringRef name, ArrayRef<int64_t> shape) {
  if (Operation *old = SymbolTable::lookupSymbolIn(module, name))
    old->erase();
  OpBuilder builder = OpBuilder::atBlockBegin(module.getBody());
  shard::GridOp::create(builder, module.getLoc(), name, shape);
}

struct AssignMeshPass : mlir::moe::impl::AssignMeshBase<AssignMeshPass> {
  using AssignMeshBase::AssignMeshBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    std::string error;
    std::optional<::moe::MeshShape> shape =
        ::moe::MeshShape::parse(mesh, error);
    if (shape)
      error = shape->validate(worldSize);
    if (!error.empty()) {
      emitError(module.getLoc()) << "invalid mesh: " << error;
      return signalPassFailure();
    }

    auto attr = MeshAttr::get(&getContext(), shape->dp, shape->cp, shape->tp,
                              shape->ep, shape->etp, shape->sp);
    if (failed(verifyModelFitsMesh(module, attr)))
      return signalPassFailure();
    module->setAttr(MoEDialect::getMeshAttrName(), attr);

    // Created in reverse so that @mesh comes first in the module.
    replaceGrid(module, "expert_mesh",
                {shape->expertDataParallelSize(), shape->ep, shape->tp});
    replaceGrid(module, "mesh", {shape->dp, shape->cp, shape->tp});
  }
};

} // namespace
