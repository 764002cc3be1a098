//===- EntryBuilder.cpp - One model function -> one runtime entry point ---===//
//
// The builder of EntryBuilder.h: the entry's signature (ctx, weights,
// [grads,] inputs..., outputs...), the weights blob's layout and the
// manifest record of the entry (moe.entry: params, inputs, outputs,
// comm_bytes, storage), buffers for results (the caller's output buffers
// for returned values, the gradients blob for weight gradients, else an
// allocation that moe-plan-memory places), runtime calls, and the
// lowerings that are about buffers rather than kernels: weights, their
// gradients, reshapes.
//
//===----------------------------------------------------------------------===//

#include "EntryBuilder.h"

#include "../BufferBytes.h"
#include "../BufferPointer.h"
#include "moe/Runtime/CApi.h"
#include "moe/Runtime/ModelABI.h"
#include "moe/Transforms/RuntimeABI.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe::lowering {

int64_t numElements(Value v) {
  return cast<ShapedType>(v.getType()).getNumElements();
}

int64_t dimSize(Value v, int64_t d) {
  ArrayRef<int64_t> shape = cast<ShapedType>(v.getType()).getShape();
  return shape[d < 0 ? d + static_cast<int64_t>(shape.size()) : d];
}

FailureOr<MemRefType> storageBufferType(Type type, Location loc,
                                        Type floatStorage, bool isOffsets) {
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor || !tensor.hasStaticShape())
    return emitError(loc) << "cannot lower " << type
                          << " to a runtime buffer: expected a statically "
                             "shaped tensor";
  Type elem = tensor.getElementType();
  if (isOffsets ? !elem.isSignlessInteger(64)
                : !elem.isF32() && !elem.isSignlessInteger(32))
    return emitError(loc) << "the runtime computes in f32 with i32 ids, "
                             "but got "
                          << type;
  if (elem.isF32() && tensor.getRank() > 0)
    elem = floatStorage;
  auto buffer = MemRefType::get(tensor.getShape(), elem);
  if (!bufferBytes(buffer))
    return emitError(loc) << "the buffer of " << type
                          << " would hold more than 2^63 bytes";
  return buffer;
}

namespace {

/// Copies moe-partition's `moe.split` and `moe.global_shape` from `attrs`
/// into manifest fields "split" and "global_shape".
void appendShardRecord(Builder &b, DictionaryAttr attrs,
                       SmallVectorImpl<NamedAttribute> &fields) {
  if (Attribute split = attrs.get(MoEDialect::getSplitAttrName()))
    fields.push_back(b.getNamedAttr("split", split));
  if (Attribute shape = attrs.get(MoEDialect::getGlobalShapeAttrName()))
    fields.push_back(b.getNamedAttr("global_shape", shape));
  if (Attribute table = attrs.get(MoEDialect::getPlacementAttrName()))
    fields.push_back(b.getNamedAttr("placement", table));
}

/// The expert-count slot (the order in which `moert_permute` reports its
/// per-expert token counts) of each routed-expert layer whose router takes
/// an expert bias, keyed by the bias value: the training driver balances
/// load by nudging that bias from the layer's measured counts.
DenseMap<Value, int64_t> balancedBiases(func::FuncOp model) {
  DenseMap<Value, int64_t> slots;
  int64_t slot = 0;
  for (PermuteOp permute : model.getBody().getOps<PermuteOp>()) {
    // Through a capacity drop and its resharding to the local tokens.
    Value indices = permute.getIndices();
    while (Operation *def = indices.getDefiningOp()) {
      if (!isa<DropOverCapacityOp, shard::AllSliceOp, shard::AllGatherOp>(def))
        break;
      indices = def->getOperand(0);
    }
    auto router = indices.getDefiningOp<RouterOp>();
    if (router && router.getExpertBias())
      slots.try_emplace(router.getExpertBias(), slot);
    ++slot;
  }
  return slots;
}

/// Names the inputs and outputs of the (tokens, labels) -> (logits, loss)
/// convention of `@forward`; other functions get input<i>/output<i>.
/// `attrs` are the argument or result attributes (moe-partition's split).
ArrayAttr describeValues(Builder &b, TypeRange types, Type floatStorage,
                         ArrayRef<DictionaryAttr> attrs, bool isForward,
                         ArrayRef<StringRef> forwardNames, StringRef prefix) {
  SmallVector<Attribute> entries;
  for (auto [i, type] : llvm::enumerate(types)) {
    auto shaped = cast<ShapedType>(type);
    Type elem =
        storageBufferType(type, UnknownLoc::get(b.getContext()), floatStorage)
            ->getElementType();
    std::string name = isForward && i < forwardNames.size()
                           ? forwardNames[i].str()
                           : (prefix + Twine(i)).str();
    SmallVector<NamedAttribute> fields = {
        b.getNamedAttr("name", b.getStringAttr(name)),
        b.getNamedAttr("shape", b.getDenseI64ArrayAttr(shaped.getShape())),
        b.getNamedAttr("dtype", b.getStringAttr(elem.isBF16()  ? "BF16"
                                                : elem.isF32() ? "F32"
                                                               : "I32")),
    };
    if (i < attrs.size() && attrs[i])
      appendShardRecord(b, attrs[i], fields);
    entries.push_back(b.getDictionaryAttr(fields));
  }
  return b.getArrayAttr(entries);
}

} // namespace

FailureOr<bool> EntryBuilder::place(BlobLayout &blob, Operation *op,
                                    StringAttr name, Type tensorType,
                                    StringRef overflow,
                                    SmallVectorImpl<NamedAttribute> &fields) {
  auto type = bufferTypeFor(tensorType, op->getLoc());
  if (failed(type))
    return failure();
  if (blob.offsets.count(name.getValue()))
    return false;
  std::optional<int64_t> end;
  if (auto bytes = alignedBytes(*bufferBytes(*type), MOE_BUFFER_ALIGNMENT))
    end = llvm::checkedAdd(blob.bytes, *bytes);
  if (!end)
    return op->emitOpError(overflow);
  blob.offsets[name.getValue()] = blob.bytes;
  fields.assign({
      b.getNamedAttr("name", name),
      b.getNamedAttr(
          "dtype",
          b.getStringAttr(type->getElementType().isBF16() ? "BF16" : "F32")),
      b.getNamedAttr("shape", b.getDenseI64ArrayAttr(type->getShape())),
      b.getNamedAttr("offset", b.getI64IntegerAttr(blob.bytes)),
  });
  blob.bytes = *end;
  return true;
}

LogicalResult EntryBuilder::layOutWeights() {
  DenseMap<Value, int64_t> balanced = balancedBiases(model);
  for (ParamOp param : model.getBody().getOps<ParamOp>()) {
    SmallVector<NamedAttribute> fields;
    FailureOr<bool> placed =
        place(weightsLayout, param, param.getNameAttr(), param.getType(),
              "ends past 2^63 bytes of weights: the weights blob cannot be "
              "laid out",
              fields);
    if (failed(placed))
      return failure();
    if (!*placed)
      continue;
    appendShardRecord(b, param->getAttrDictionary(), fields);
    if (auto it = balanced.find(param.getResult()); it != balanced.end())
      fields.push_back(
          b.getNamedAttr("balances_layer", b.getI64IntegerAttr(it->second)));
    weightsLayout.records.push_back(b.getDictionaryAttr(fields));
  }
  return success();
}

/// The caches of a decode or prefill function, laid out in a blob of their
/// own in the order the function names them.
LogicalResult EntryBuilder::layOutCaches() {
  for (KVCacheOp cacheOp : model.getBody().getOps<KVCacheOp>()) {
    SmallVector<NamedAttribute> fields;
    FailureOr<bool> placed =
        place(cacheLayout, cacheOp, cacheOp.getNameAttr(), cacheOp.getType(),
              "ends past 2^63 bytes of caches: the cache blob cannot be laid "
              "out",
              fields);
    if (failed(placed))
      return failure();
    if (*placed)
      cacheLayout.records.push_back(b.getDictionaryAttr(fields));
  }
  return success();
}

FailureOr<func::FuncOp> EntryBuilder::build() {
  if (!model.getBody().hasOneBlock())
    return model.emitOpError("a model function must have a single block");
  if (failed(layOutWeights()) || failed(layOutCaches()))
    return failure();

  // Signature: (ctx, weights, [grads,] inputs..., outputs...); a training
  // step writes its gradients into a blob laid out like the weights.
  MLIRContext *context = model.getContext();
  bool hasGrads = !model.getBody().getOps<ParamGradOp>().empty();
  SmallVector<Type> argTypes = {
      LLVM::LLVMPointerType::get(context),
      MemRefType::get({weightsLayout.bytes}, b.getI8Type())};
  if (hasGrads)
    argTypes.push_back(argTypes.back());
  // A decode or prefill function reads and writes its caches in a blob the
  // caller keeps between calls.
  bool hasCache = !cacheLayout.records.empty();
  if (hasCache)
    argTypes.push_back(MemRefType::get({cacheLayout.bytes}, b.getI8Type()));
  unsigned firstInputArg = argTypes.size();
  for (Type type : llvm::concat<const Type>(model.getArgumentTypes(),
                                            model.getResultTypes())) {
    auto buffer = bufferTypeFor(type, model.getLoc());
    if (failed(buffer))
      return failure();
    argTypes.push_back(*buffer);
  }
  firstOutputArg = firstInputArg + model.getNumArguments();

  std::string name = (kEntryPrefix + model.getSymName()).str();
  if (SymbolTable::lookupNearestSymbolFrom(model, b.getStringAttr(name)))
    return model.emitOpError("cannot create the entry point '")
           << name << "': the symbol exists";
  entry = func::FuncOp::create(b, loc, name,
                               b.getFunctionType(argTypes, TypeRange{}));
  Block *body = entry.addEntryBlock();
  b.setInsertionPointToStart(body);
  ctx = body->getArgument(0);
  weights = body->getArgument(1);
  if (hasGrads)
    grads = body->getArgument(2);
  if (hasCache)
    cache = body->getArgument(firstInputArg - 1);
  for (auto [i, arg] : llvm::enumerate(model.getArguments()))
    mapping.map(arg, body->getArgument(firstInputArg + i));
  // Every later call reads and writes floating-point tensors in this type.
  if (failed(call(
          "moert_set_storage", ValueRange{},
          {i32(floatStorage.isBF16() ? MOERT_DTYPE_BF16 : MOERT_DTYPE_F32)})))
    return failure();
  Operation *terminator = model.getBody().front().getTerminator();
  for (auto [i, value] : llvm::enumerate(terminator->getOperands()))
    returnedAt.try_emplace(value, firstOutputArg + i);

  for (Operation &op : model.getBody().front())
    if (failed(lowerOp(&op)))
      return failure();

  // The driver's names for the inputs and outputs of the model function,
  // of its training and evaluation steps, and of decode and prefill.
  bool lossOnly = hasGrads || model.getSymName() == "eval_step";
  bool isForward = model.getSymName() == "forward" || lossOnly || hasCache;
  static constexpr StringRef kModelInputs[] = {"tokens", "labels"};
  static constexpr StringRef kDecodeInputs[] = {"tokens", "positions"};
  static constexpr StringRef kOutputs[] = {"logits", "loss"};
  ArrayRef<StringRef> inputNames = hasCache ? kDecodeInputs : kModelInputs;
  ArrayRef<StringRef> outputNames =
      lossOnly ? ArrayRef(kOutputs).drop_front() : ArrayRef(kOutputs);
  SmallVector<DictionaryAttr> argAttrs, resultAttrs;
  model.getAllArgAttrs(argAttrs);
  model.getAllResultAttrs(resultAttrs);
  SmallVector<NamedAttribute> manifest = {
      b.getNamedAttr("function", model.getSymNameAttr()),
      b.getNamedAttr("params", b.getArrayAttr(weightsLayout.records)),
      b.getNamedAttr("weights_bytes", b.getI64IntegerAttr(weightsLayout.bytes)),
      b.getNamedAttr("comm_bytes", b.getI64IntegerAttr(commBytes)),
      b.getNamedAttr("inputs",
                     describeValues(b, model.getArgumentTypes(), floatStorage,
                                    argAttrs, isForward, inputNames, "input")),
      b.getNamedAttr("outputs",
                     describeValues(b, model.getResultTypes(), floatStorage,
                                    resultAttrs, isForward, outputNames,
                                    "output")),
  };
  if (ignoreIndex)
    manifest.push_back(
        b.getNamedAttr("ignore_index", b.getI64IntegerAttr(*ignoreIndex)));
  if (hasGrads)
    manifest.push_back(b.getNamedAttr("grads", b.getBoolAttr(true)));
  if (hasCache) {
    manifest.push_back(
        b.getNamedAttr("caches", b.getArrayAttr(cacheLayout.records)));
    manifest.push_back(
        b.getNamedAttr("cache_bytes", b.getI64IntegerAttr(cacheLayout.bytes)));
  }
  manifest.push_back(b.getNamedAttr(
      "storage", b.getStringAttr(floatStorage.isBF16() ? "BF16" : "F32")));
  entry->setAttr(MoEDialect::getEntryAttrName(), b.getDictionaryAttr(manifest));
  return entry;
}

LogicalResult EntryBuilder::lowerOp(Operation *op) {
  b.setInsertionPointToEnd(&entry.getBody().front());
  loc = op->getLoc();
  if (auto ret = dyn_cast<func::ReturnOp>(op))
    return lowerReturn(ret);
  if (const LoweringTable::Rule *lower = lowerings.lookup(op))
    return (*lower)(op, *this);
  return op->emitOpError(
      "has no lowering to runtime calls (moe-lower-to-runtime)");
}

FailureOr<Value> EntryBuilder::resultBuffer(Value tensor) {
  auto permute = tensor.getDefiningOp<PermuteOp>();
  auto dispatch = tensor.getDefiningOp<DispatchOp>();
  auto type =
      bufferTypeFor(tensor.getType(), loc,
                    (permute && tensor == permute.getOffsets()) ||
                        (dispatch && tensor == dispatch.getReceivedOffsets()));
  if (failed(type))
    return failure();
  Value buffer;
  auto it = returnedAt.find(tensor);
  auto gradOf = tensor.hasOneUse()
                    ? dyn_cast<ParamGradOp>(*tensor.getUsers().begin())
                    : ParamGradOp();
  if (it != returnedAt.end() && outputsWritten.insert(it->second).second)
    buffer = entry.getArgument(it->second);
  else if (gradOf && grads)
    buffer = weightView(grads, gradOf.getName(), tensor.getType());
  else
    buffer = alloc(*type);
  mapping.map(tensor, buffer);
  return buffer;
}

LogicalResult EntryBuilder::call(StringRef callee, ValueRange buffers,
                                 ValueRange scalars, unsigned leadingScalars) {
  SmallVector<Value> args = {ctx};
  llvm::append_range(args, scalars.take_front(leadingScalars));
  scalars = scalars.drop_front(leadingScalars);
  // Runtime functions take bare pointers to dense row-major data.
  for (Value buffer : buffers)
    args.push_back(isa<LLVM::LLVMPointerType>(buffer.getType())
                       ? buffer
                       : bufferPointer(b, loc, buffer));
  llvm::append_range(args, scalars);

  auto module = entry->getParentOfType<ModuleOp>();
  auto type = b.getFunctionType(TypeRange(ValueRange(args)), {});
  auto decl = module.lookupSymbol<func::FuncOp>(callee);
  if (!decl) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToEnd(module.getBody());
    decl = func::FuncOp::create(b, loc, callee, type);
    decl.setPrivate();
  } else if (decl.getFunctionType() != type) {
    return emitError(loc) << "runtime function '" << callee
                          << "' is already declared with type "
                          << decl.getFunctionType() << ", not " << type;
  }
  func::CallOp::create(b, loc, decl, args);
  return success();
}

Value EntryBuilder::absent() {
  return LLVM::ZeroOp::create(b, loc, LLVM::LLVMPointerType::get(b.getContext()));
}

FailureOr<SmallVector<Value>> EntryBuilder::resultBuffers(Operation *op) {
  SmallVector<Value> buffers;
  for (Value result : op->getResults()) {
    auto out = resultBuffer(result);
    if (failed(out))
      return failure();
    buffers.push_back(*out);
  }
  return buffers;
}

Value EntryBuilder::view(Value blob, const BlobLayout &layout, StringRef name,
                         Type tensorType) {
  // The types were checked when the blob was laid out.
  MemRefType type = *bufferTypeFor(tensorType, loc);
  Value offset =
      arith::ConstantIndexOp::create(b, loc, layout.offsets.lookup(name));
  return memref::ViewOp::create(b, loc, type, blob, offset, ValueRange{});
}

Value EntryBuilder::i64(int64_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 64).getResult();
}
Value EntryBuilder::i32(int64_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 32).getResult();
}
Value EntryBuilder::f32(double v) {
  return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                        APFloat(static_cast<float>(v)))
      .getResult();
}
Value EntryBuilder::f64(double v) {
  return arith::ConstantFloatOp::create(b, loc, b.getF64Type(), APFloat(v))
      .getResult();
}

Value EntryBuilder::alloc(MemRefType type) {
  return memref::AllocOp::create(b, loc, type, ValueRange{},
                                 b.getI64IntegerAttr(MOE_BUFFER_ALIGNMENT))
      .getResult();
}

LogicalResult EntryBuilder::copy(Value src, Value dst) {
  auto type = cast<MemRefType>(src.getType());
  int64_t bytes = type.getNumElements() * type.getElementTypeBitWidth() / 8;
  return call("moert_copy", {src, dst}, {i64(bytes)});
}

void EntryBuilder::needCommScratch(Value v, int64_t copies) {
  auto type = bufferTypeFor(v.getType(), loc);
  if (succeeded(type))
    commBytes = std::max(commBytes, copies * type->getNumElements() *
                                        type->getElementTypeBitWidth() / 8);
}

LogicalResult EntryBuilder::recordIgnoreIndex(Operation *op, int64_t ignore) {
  if (ignoreIndex && *ignoreIndex != ignore)
    return op->emitOpError("uses ignore_index ")
           << ignore << " but an earlier cross_entropy uses " << *ignoreIndex
           << "; the executable feeds one label convention";
  ignoreIndex = ignore;
  return success();
}

LogicalResult EntryBuilder::lowerReturn(func::ReturnOp op) {
  // A returned value not computed into its output buffer (a weight, a
  // reshaped value, an input, or the same value returned twice) is copied.
  for (auto [i, value] : llvm::enumerate(op.getOperands())) {
    Value out = entry.getArgument(firstOutputArg + i);
    if (buffer(value) != out && failed(copy(buffer(value), out)))
      return failure();
  }
  func::ReturnOp::create(b, loc);
  return success();
}

namespace {

LogicalResult lowerParam(ParamOp op, EntryBuilder &e) {
  Location loc = e.location();
  if (failed(e.bufferTypeFor(op.getType(), loc)))
    return failure();
  e.map(op.getResult(),
        e.weightView(e.weightsBlob(), op.getName(), op.getType()));
  return success();
}

LogicalResult lowerKVCache(KVCacheOp op, EntryBuilder &e) {
  e.map(op.getResult(), e.cacheView(op.getName(), op.getType()));
  return success();
}

/// Most gradients are computed straight into their slot of the gradients
/// blob (resultBuffer); one that is not (a reshape, an input) is copied.
LogicalResult lowerParamGrad(ParamGradOp op, EntryBuilder &e) {
  if (!e.hasWeight(op.getName()))
    return op.emitOpError("names no weight of the function");
  Value grad = e.buffer(op.getGrad());
  if (auto view = grad.getDefiningOp<memref::ViewOp>();
      view && view.getSource() == e.gradsBlob())
    return success();
  return e.copy(
      grad, e.weightView(e.gradsBlob(), op.getName(), op.getGrad().getType()));
}

// Reshapes are views: no copy, and the buffer stays live while they are.
LogicalResult lowerExpandShape(tensor::ExpandShapeOp op, EntryBuilder &e) {
  OpBuilder &b = e.builder();
  Location loc = e.location();
  auto type = e.bufferTypeFor(op.getType(), loc);
  if (failed(type))
    return failure();
  e.map(op.getResult(),
        memref::ExpandShapeOp::create(b, loc, *type, e.buffer(op.getSrc()),
                                      op.getReassociationIndices())
            .getResult());
  return success();
}

LogicalResult lowerCollapseShape(tensor::CollapseShapeOp op, EntryBuilder &e) {
  OpBuilder &b = e.builder();
  Location loc = e.location();
  auto type = e.bufferTypeFor(op.getType(), loc);
  if (failed(type))
    return failure();
  e.map(op.getResult(),
        memref::CollapseShapeOp::create(b, loc, *type, e.buffer(op.getSrc()),
                                        op.getReassociationIndices())
            .getResult());
  return success();
}

} // namespace

void populateEntryLowerings(LoweringTable &table) {
  table.add(lowerParam);
  table.add(lowerParamGrad);
  table.add(lowerKVCache);
  table.add(lowerExpandShape);
  table.add(lowerCollapseShape);
}

const LoweringTable &allLowerings() {
  static const LoweringTable table = [] {
    LoweringTable t;
    populateEntryLowerings(t);
    populateDenseLowerings(t);
    populateExpertLowerings(t);
    populateCollectiveLowerings(t);
    populateLossLowerings(t);
    return t;
  }();
  return table;
}

} // namespace mlir::moe::lowering
