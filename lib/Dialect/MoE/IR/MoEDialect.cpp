//===- MoEDialect.cpp - the moe dialect, its attributes and the mesh ------===//

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Support/MeshShape.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/JSON.h"

using namespace mlir;
using namespace mlir::moe;

#include "moe/Dialect/MoE/IR/MoEEnums.cpp.inc"
#include "moe/Dialect/MoE/IR/MoEOpsDialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/Dialect/MoE/IR/MoEAttrs.cpp.inc"

void MoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "moe/Dialect/MoE/IR/MoEOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "moe/Dialect/MoE/IR/MoEAttrs.cpp.inc"
      >();
}

#include "moe/Dialect/MoE/IR/MoEInterfaces.cpp.inc"

Operation *MoEDialect::materializeConstant(OpBuilder &builder, Attribute value,
                                           Type type, Location loc) {
  return arith::ConstantOp::materialize(builder, value, type, loc);
}

//===----------------------------------------------------------------------===//
// Mesh
//===----------------------------------------------------------------------===//

LogicalResult MeshAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               int64_t dp, int64_t cp, int64_t tp, int64_t ep,
                               int64_t etp, bool sp) {
  // One set of mesh rules for the compiler and the runtime's --mesh flag.
  std::string problem = ::moe::MeshShape{dp, cp, tp, ep, sp, etp}.validate();
  if (!problem.empty())
    return emitError() << problem;
  return success();
}

LogicalResult mlir::moe::verifyModelFitsMesh(Operation *module, MeshAttr mesh) {
  // Runs before the nested ops' own verifiers (the module attribute is
  // checked on entry): each op's check guards its shape accesses.
  bool ok = true;
  module->walk(
      [&](MeshFitOpInterface op) { ok &= succeeded(op.verifyFitsMesh(mesh)); });
  return success(ok);
}

/// `moe.split` and `moe.global_shape` (moe-partition's record of how a
/// value is sharded), on `op` or on one of its arguments or results.
static LogicalResult verifyShardRecord(Operation *op, NamedAttribute attr) {
  StringRef name = attr.getName().getValue();
  if (name == MoEDialect::getGlobalShapeAttrName()) {
    auto shape = dyn_cast<DenseI64ArrayAttr>(attr.getValue());
    if (!shape ||
        llvm::any_of(shape.asArrayRef(), [](int64_t d) { return d < 0; }))
      return op->emitError()
             << "'" << name << "' must be an array of non-negative sizes";
    return success();
  }
  auto dims = dyn_cast<ArrayAttr>(attr.getValue());
  auto isAxisList = [](Attribute dim) {
    auto axes = dyn_cast<ArrayAttr>(dim);
    return axes && llvm::all_of(axes, [](Attribute axis) {
             auto s = dyn_cast<StringAttr>(axis);
             return s && ::moe::parseAxis(s.getValue().str()).has_value();
           });
  };
  if (!dims || !llvm::all_of(dims, isAxisList))
    return op->emitError() << "'" << name
                           << "' must list, per dimension, mesh axis names "
                              "(dp, cp, tp, ep, edp)";
  return success();
}

static bool isShardRecord(StringRef name) {
  return name == MoEDialect::getSplitAttrName() ||
         name == MoEDialect::getGlobalShapeAttrName();
}

LogicalResult MoEDialect::verifyRegionArgAttribute(Operation *op, unsigned,
                                                   unsigned,
                                                   NamedAttribute attr) {
  if (!isShardRecord(attr.getName().getValue()))
    return op->emitError() << "unknown moe dialect argument attribute '"
                           << attr.getName().getValue() << "'";
  return verifyShardRecord(op, attr);
}

LogicalResult MoEDialect::verifyRegionResultAttribute(Operation *op, unsigned,
                                                      unsigned,
                                                      NamedAttribute attr) {
  if (attr.getName().getValue() != getSplitAttrName())
    return op->emitError() << "unknown moe dialect result attribute '"
                           << attr.getName().getValue() << "'";
  return verifyShardRecord(op, attr);
}

LogicalResult MoEDialect::verifyOperationAttribute(Operation *op,
                                                   NamedAttribute attr) {
  StringRef name = attr.getName().getValue();
  if (isShardRecord(name)) {
    if (!isa<ParamOp>(op))
      return op->emitError() << "'" << name << "' must be on a moe.param";
    return verifyShardRecord(op, attr);
  }
  if (name == getPlacementAttrName()) {
    auto table = dyn_cast<IntegerAttr>(attr.getValue());
    if (!isa<ParamOp>(op) || !table || table.getInt() < 0)
      return op->emitError() << "'" << name
                             << "' must be a non-negative integer on a "
                                "moe.param";
    return success();
  }
  if (name == getPartitionedAttrName()) {
    if (!isa<ModuleOp>(op) || !isa<UnitAttr>(attr.getValue()))
      return op->emitError() << "'" << name
                             << "' must be a unit attribute on a "
                                "builtin.module";
    return success();
  }
  if (name == getZeroStageAttrName()) {
    auto stage = dyn_cast<IntegerAttr>(attr.getValue());
    if (!isa<ModuleOp>(op) || !stage || stage.getInt() < 1 ||
        stage.getInt() > 3)
      return op->emitError() << "'" << name
                             << "' must be the integer 1, 2 or 3 on a "
                                "builtin.module (a ZeRO stage)";
    return success();
  }
  if (name == getRecomputeAttrName()) {
    auto mode = dyn_cast<StringAttr>(attr.getValue());
    if (!isa<ModuleOp>(op) || !mode || mode.getValue() != "full")
      return op->emitError() << "'" << name
                             << "' must be the string \"full\" on a "
                                "builtin.module";
    return success();
  }
  if (name == getVocabCharsAttrName()) {
    auto chars = dyn_cast<StringAttr>(attr.getValue());
    if (!isa<ModuleOp>(op) || !chars)
      return op->emitError()
             << "'" << name << "' must be a string on a builtin.module";
    if (chars.getValue().empty())
      return op->emitError() << "'" << name << "' must not be empty";
    return success();
  }
  if (name == getHFConfigAttrName()) {
    auto text = dyn_cast<StringAttr>(attr.getValue());
    if (!isa<ModuleOp>(op) || !text)
      return op->emitError()
             << "'" << name << "' must be a string on a builtin.module";
    llvm::Expected<llvm::json::Value> config =
        llvm::json::parse(text.getValue());
    if (!config || !config->getAsObject()) {
      if (!config)
        llvm::consumeError(config.takeError());
      return op->emitError() << "'" << name << "' must hold a JSON object";
    }
    return success();
  }
  if (name == getEntryAttrName()) {
    if (!isa<FunctionOpInterface>(op) || !isa<DictionaryAttr>(attr.getValue()))
      return op->emitError()
             << "'" << name << "' must be a dictionary on a function";
    return success();
  }
  if (name != getMeshAttrName())
    return op->emitError() << "unknown moe dialect attribute '" << name << "'";
  if (!isa<ModuleOp>(op))
    return op->emitError() << "'" << getMeshAttrName()
                           << "' must be attached to a builtin.module";
  auto mesh = dyn_cast<MeshAttr>(attr.getValue());
  if (!mesh)
    return op->emitError() << "'" << getMeshAttrName()
                           << "' must be a #moe.mesh attribute, but got "
                           << attr.getValue();
  // A partitioned module's shapes are per-rank shards.
  if (op->hasAttr(getPartitionedAttrName()))
    return success();
  return verifyModelFitsMesh(op, mesh);
}
