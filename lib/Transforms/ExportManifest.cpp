//===- ExportManifest.cpp - Embed the entry point's manifest --------------===//
//
// Turns the `moe.entry` dictionaries of the planned entry points (the model
// function, and the training step when there is one), the module's mesh and
// its vocabulary into the JSON manifest of include/moe/Runtime/ModelABI.h,
// exported as the NUL-terminated global `moe_model_manifest`.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEAttrs.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Runtime/ModelABI.h"
#include "moe/Support/MeshShape.h"
#include "moe/Transforms/Passes.h"
#include "moe/Transforms/RuntimeABI.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/JSON.h"

namespace mlir::moe {
#define GEN_PASS_DEF_EXPORTMANIFEST
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

llvm::json::Array shapeJson(Attribute attr) {
  llvm::json::Array shape;
  for (int64_t d : cast<DenseI64ArrayAttr>(attr).asArrayRef())
    shape.push_back(d);
  return shape;
}

/// moe.split: per dimension, an array of mesh axis names.
llvm::json::Array splitJson(ArrayAttr split) {
  llvm::json::Array dims;
  for (Attribute dim : split) {
    llvm::json::Array axes;
    for (Attribute axis : cast<ArrayAttr>(dim))
      axes.push_back(cast<StringAttr>(axis).getValue().str());
    dims.push_back(std::move(axes));
  }
  return dims;
}

/// params/inputs/outputs: arrays of dictionaries with string, integer and
/// shape fields, copied field by field.
llvm::json::Array tableJson(Attribute attr, StringRef defaultDtype) {
  llvm::json::Array rows;
  for (Attribute row : cast<ArrayAttr>(attr)) {
    llvm::json::Object object;
    object["dtype"] = defaultDtype.str();
    for (NamedAttribute field : cast<DictionaryAttr>(row)) {
      StringRef key = field.getName().getValue();
      if (auto s = dyn_cast<StringAttr>(field.getValue()))
        object[key] = s.getValue().str();
      else if (auto i = dyn_cast<IntegerAttr>(field.getValue()))
        object[key] = i.getInt();
      else if (auto split = dyn_cast<ArrayAttr>(field.getValue()))
        object[key] = splitJson(split);
      else
        object[key] = shapeJson(field.getValue());
    }
    rows.push_back(std::move(object));
  }
  return rows;
}

/// The largest planned buffer of an entry, as moe-plan-memory recorded it:
/// {"bytes": N, "at": "model.mlir:12:7"}.
std::optional<llvm::json::Object> largestBufferJson(DictionaryAttr dict) {
  auto largest = dict.getAs<DictionaryAttr>("largest_buffer");
  if (!largest)
    return std::nullopt;
  return llvm::json::Object{
      {"bytes", cast<IntegerAttr>(largest.get("bytes")).getInt()},
      {"at", cast<StringAttr>(largest.get("at")).getValue().str()}};
}

/// The largest collective scratch of an entry (0 when not recorded).
int64_t commBytes(DictionaryAttr dict) {
  auto bytes = dict.getAs<IntegerAttr>("comm_bytes");
  return bytes ? bytes.getInt() : 0;
}

DictionaryAttr entryDict(func::FuncOp entry) {
  return entry->getAttrOfType<DictionaryAttr>(MoEDialect::getEntryAttrName());
}

LogicalResult checkEntry(func::FuncOp entry) {
  DictionaryAttr dict = entryDict(entry);
  for (StringRef key : {"function", "params", "weights_bytes", "inputs",
                        "outputs", "arena_bytes", "unplanned_bytes"})
    if (!dict.contains(key))
      return entry.emitOpError("has no '")
             << key << "' in its moe.entry description; run "
             << "moe-lower-to-runtime and moe-plan-memory first";
  return success();
}

/// The training or evaluation step's part of the manifest; its weights must
/// be laid out as the model function's, since all run on one weights blob.
FailureOr<llvm::json::Object> stepJson(func::FuncOp model, func::FuncOp step) {
  DictionaryAttr dict = entryDict(step), modelDict = entryDict(model);
  if (dict.get("params") != modelDict.get("params") ||
      dict.get("weights_bytes") != modelDict.get("weights_bytes"))
    return step.emitOpError("lays out its weights differently from ")
           << model.getSymName();
  auto integer = [&](StringRef key) {
    return cast<IntegerAttr>(dict.get(key)).getInt();
  };
  llvm::json::Object json{
      {"function", cast<StringAttr>(dict.get("function")).getValue().str()},
      {"entry", step.getSymName().str()},
      {"arena_bytes", integer("arena_bytes")},
      {"unplanned_bytes", integer("unplanned_bytes")},
      {"comm_bytes", commBytes(dict)},
      {"inputs", tableJson(dict.get("inputs"), "F32")},
      {"outputs", tableJson(dict.get("outputs"), "F32")},
  };
  if (auto largest = largestBufferJson(dict))
    json["largest_buffer"] = std::move(*largest);
  return json;
}

/// A decode or prefill entry's part: a step's, with its key/value caches
/// (laid out in a blob of their own, shared by the two entries).
FailureOr<llvm::json::Object> generationJson(func::FuncOp model,
                                             func::FuncOp fn) {
  FailureOr<llvm::json::Object> json = stepJson(model, fn);
  if (failed(json))
    return failure();
  DictionaryAttr dict = entryDict(fn);
  (*json)["caches"] = tableJson(dict.get("caches"), "F32");
  (*json)["cache_bytes"] = cast<IntegerAttr>(dict.get("cache_bytes")).getInt();
  return json;
}

/// The entries beside the model function's, each under its manifest key.
struct SideEntries {
  func::FuncOp trainStep, evalStep, decode, prefill;
};

FailureOr<std::string> manifestJson(ModuleOp module, func::FuncOp entry,
                                    SideEntries side) {
  DictionaryAttr dict = entryDict(entry);

  auto integer = [&](StringRef key) {
    return cast<IntegerAttr>(dict.get(key)).getInt();
  };
  llvm::json::Object manifest{
      {"format", "moe-model/1"},
      {"function", cast<StringAttr>(dict.get("function")).getValue().str()},
      {"entry", entry.getSymName().str()},
      {"weights_bytes", integer("weights_bytes")},
      {"arena_bytes", integer("arena_bytes")},
      {"unplanned_bytes", integer("unplanned_bytes")},
      {"comm_bytes", commBytes(dict)},
      {"params", tableJson(dict.get("params"), "F32")},
      {"inputs", tableJson(dict.get("inputs"), "F32")},
      {"outputs", tableJson(dict.get("outputs"), "F32")},
  };
  if (dict.contains("ignore_index"))
    manifest["ignore_index"] = integer("ignore_index");
  if (auto largest = largestBufferJson(dict))
    manifest["largest_buffer"] = std::move(*largest);
  if (auto storage = dict.getAs<StringAttr>("storage"))
    manifest["storage"] = storage.getValue().str();
  for (auto [key, fn] : {std::pair{"train_step", side.trainStep},
                         std::pair{"eval_step", side.evalStep}}) {
    if (!fn)
      continue;
    FailureOr<llvm::json::Object> step = stepJson(entry, fn);
    if (failed(step))
      return failure();
    manifest[key] = std::move(*step);
  }
  for (auto [key, fn] :
       {std::pair{"decode", side.decode}, std::pair{"prefill", side.prefill}}) {
    if (!fn)
      continue;
    FailureOr<llvm::json::Object> step = generationJson(entry, fn);
    if (failed(step))
      return failure();
    manifest[key] = std::move(*step);
  }
  if (side.decode && side.prefill &&
      entryDict(side.decode).get("caches") !=
          entryDict(side.prefill).get("caches")) {
    side.prefill.emitOpError("lays out its caches differently from ")
        << side.decode.getSymName();
    return failure();
  }
  if (auto chars = module->getAttrOfType<StringAttr>(
          MoEDialect::getVocabCharsAttrName()))
    manifest["vocab_chars"] = chars.getValue().str();
  if (auto config =
          module->getAttrOfType<StringAttr>(MoEDialect::getHFConfigAttrName()))
    manifest["hf_config"] = config.getValue().str();
  MeshAttr mesh =
      module->getAttrOfType<MeshAttr>(MoEDialect::getMeshAttrName());
  ::moe::MeshShape shape;
  if (mesh)
    shape = {mesh.getDp(), mesh.getCp(), mesh.getTp(),
             mesh.getEp(), mesh.getSp(), mesh.getEtp()};
  llvm::json::Object meshSizes;
  for (::moe::MeshAxis axis : ::moe::kMeshAxes)
    meshSizes[::moe::axisName(axis)] = shape.size(axis);
  if (shape.etp > 1)
    meshSizes["etp"] = shape.etp;
  if (shape.sp)
    meshSizes["sp"] = true;
  manifest["mesh"] = std::move(meshSizes);
  if (auto stage = module->getAttrOfType<IntegerAttr>(
          MoEDialect::getZeroStageAttrName()))
    manifest["zero_stage"] = stage.getInt();
  if (auto mode = module->getAttrOfType<StringAttr>(
          MoEDialect::getRecomputeAttrName())) {
    // A recomputing training step runs each block's routing twice; its
    // expert counts and dropped slots are those of the first run, which
    // are the forward entry's calls, in the same order.
    manifest["recompute"] = mode.getValue().str();
    int64_t permutes = 0, drops = 0;
    entry.walk([&](func::CallOp call) {
      permutes += call.getCallee() == "moert_permute";
      drops += call.getCallee() == "moert_drop_over_capacity";
    });
    manifest["forward_routing_calls"] =
        llvm::json::Object{{"permute", permutes}, {"drop", drops}};
  }
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::json::Value(std::move(manifest));
  return text;
}

struct ExportManifestPass
    : mlir::moe::impl::ExportManifestBase<ExportManifestPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    // The model function's entry, a training step's (the one that writes
    // gradients), an evaluation step's (moe-build-train-step's), and
    // decode's and prefill's (the ones with caches, moe-build-decode's).
    SmallVector<func::FuncOp> models, steps, evals, decodes, prefills;
    for (auto fn : module.getOps<func::FuncOp>()) {
      DictionaryAttr dict = entryDict(fn);
      if (!dict)
        continue;
      if (failed(checkEntry(fn)))
        return signalPassFailure();
      StringRef function = cast<StringAttr>(dict.get("function")).getValue();
      if (dict.get("grads"))
        steps.push_back(fn);
      else if (function == "eval_step")
        evals.push_back(fn);
      else if (dict.get("caches"))
        (function == "prefill" ? prefills : decodes).push_back(fn);
      else
        models.push_back(fn);
    }
    if (models.size() != 1 || steps.size() > 1 || evals.size() > steps.size() ||
        decodes.size() > 1 || prefills.size() > decodes.size()) {
      module.emitError() << "expected one lowered model entry point, at "
                            "most one training step, an evaluation step "
                            "only beside it, at most one decode entry and a "
                            "prefill entry only beside it "
                            "(moe-lower-to-runtime), found "
                         << models.size() << ", " << steps.size() << ", "
                         << evals.size() << ", " << decodes.size() << " and "
                         << prefills.size();
      return signalPassFailure();
    }
    auto first = [](ArrayRef<func::FuncOp> fns) {
      return fns.empty() ? func::FuncOp() : fns.front();
    };
    SideEntries side{first(steps), first(evals), first(decodes),
                     first(prefills)};
    FailureOr<std::string> json = manifestJson(module, models.front(), side);
    if (failed(json))
      return signalPassFailure();

    if (Operation *old = module.lookupSymbol(kManifestSymbol))
      old->erase();
    OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
    std::string bytes = *json;
    bytes.push_back('\0');
    auto type = LLVM::LLVMArrayType::get(b.getI8Type(), bytes.size());
    LLVM::GlobalOp::create(b, module.getLoc(), type, /*isConstant=*/true,
                           LLVM::Linkage::External, kManifestSymbol,
                           b.getStringAttr(bytes));
  }
};

} // namespace
