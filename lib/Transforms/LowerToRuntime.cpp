//===- LowerToRuntime.cpp - moe ops on tensors -> runtime calls on buffers ===//
//
// Rewrites each model function `@f` into the entry point `@moe_entry_f`
// (include/moe/Runtime/ModelABI.h): every tensor becomes a memref, every
// model-level op one or more calls of the runtime's C API
// (include/moe/Runtime/CApi.h), every weight a view into the weights blob.
// Intermediate results get a `memref.alloc` each; moe-plan-memory places
// them in the arena afterwards. Results the function returns are written
// straight into the caller's output buffers.
//
//===----------------------------------------------------------------------===//

#include "BufferBytes.h"
#include "BufferPointer.h"
#include "ShardingSpec.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Runtime/CApi.h"
#include "moe/Runtime/ModelABI.h"
#include "moe/Transforms/Passes.h"
#include "moe/Transforms/RuntimeABI.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::moe {
#define GEN_PASS_DEF_LOWERTORUNTIME
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

int64_t numElements(Value v) {
  return cast<ShapedType>(v.getType()).getNumElements();
}

/// Size of dimension `d` of `v`; negative `d` counts from the end.
int64_t dimSize(Value v, int64_t d) {
  ArrayRef<int64_t> shape = cast<ShapedType>(v.getType()).getShape();
  return shape[d < 0 ? d + static_cast<int64_t>(shape.size()) : d];
}

/// The memref a tensor becomes: same shape; f32 or i32 (what the runtime
/// computes in) except for i64 expert offsets (moe.permute, moe.dispatch).
/// `floatStorage` is the element type of floating-point tensors of rank >= 1
/// (f32, or bf16 under storage=bf16); scalars (the losses) stay f32.
FailureOr<MemRefType> storageBufferType(Type type, Location loc,
                                        Type floatStorage,
                                        bool isOffsets = false) {
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

/// Builds one entry point from one model function.
class EntryBuilder {
public:
  /// `floatStorage`: f32 or bf16 (see bufferTypeFor).
  EntryBuilder(func::FuncOp model, Type floatStorage)
      : model(model), b(model), floatStorage(floatStorage) {}

  /// Creates `@moe_entry_<name>` next to the model function; the caller
  /// erases the model function on success.
  FailureOr<func::FuncOp> build();

private:
  LogicalResult layOutWeights();
  LogicalResult lowerOp(Operation *op);
  LogicalResult lowerReturn(func::ReturnOp op);

  // One method per op (or op family).
  LogicalResult lower(ParamOp op);
  LogicalResult lower(EmbeddingOp op);
  LogicalResult lower(RMSNormOp op);
  LogicalResult lower(LinearOp op);
  LogicalResult lower(RopeOp op);
  LogicalResult lower(AttentionOp op);
  LogicalResult lower(MLPOp op);
  LogicalResult lower(AddOp op);
  LogicalResult lower(RouterOp op);
  LogicalResult lower(ExpertsOp op);
  LogicalResult lower(DropOverCapacityOp op);
  LogicalResult lower(PermuteOp op);
  LogicalResult lower(GroupedSwiGLUOp op);
  LogicalResult lower(UnpermuteOp op);
  LogicalResult lower(DispatchOp op);
  LogicalResult lower(CombineOp op);
  LogicalResult lower(shard::AllReduceOp op);
  LogicalResult lower(shard::AllGatherOp op);
  LogicalResult lower(shard::AllSliceOp op);
  LogicalResult lower(shard::AllToAllOp op);
  /// The runtime group (MOERT_GROUP_*) of `axes` of `grid`.
  FailureOr<Value> group(Operation *op, StringRef grid,
                         ArrayRef<int16_t> axes);
  /// MOERT_DTYPE_* of the buffer of tensor `v`.
  Value dtype(Value v);
  FailureOr<MemRefType> bufferTypeFor(Type type, Location at,
                                      bool isOffsets = false) {
    return storageBufferType(type, at, floatStorage, isOffsets);
  }

  /// (outer, mid, inner) of `v` around dimension `axis`.
  SmallVector<Value> axisLayout(Value v, int64_t axis);
  template <typename Op>
  LogicalResult lowerAxisCollective(Op op, StringRef callee, int64_t axis);
  LogicalResult lower(SharedExpertsOp op);
  LogicalResult lower(CrossEntropyOp op);
  LogicalResult lower(AuxLossOp op);
  LogicalResult lower(ZLossOp op);
  LogicalResult lower(tensor::ExpandShapeOp op);
  LogicalResult lower(tensor::CollapseShapeOp op);
  // Gradients (moe-build-train-step).
  LogicalResult lower(EmbeddingGradOp op);
  LogicalResult lower(RMSNormGradOp op);
  LogicalResult lower(LinearGradOp op);
  LogicalResult lower(RopeGradOp op);
  LogicalResult lower(AttentionGradOp op);
  LogicalResult lower(MLPGradOp op);
  LogicalResult lower(SharedExpertsGradOp op);
  LogicalResult lower(RouterGradOp op);
  LogicalResult lower(PermuteGradOp op);
  LogicalResult lower(UnpermuteGradOp op);
  LogicalResult lower(GroupedSwiGLUGradOp op);
  LogicalResult lower(CrossEntropyGradOp op);
  LogicalResult lower(AuxLossGradOp op);
  LogicalResult lower(ZLossGradOp op);
  LogicalResult lower(ParamGradOp op);
  /// Result buffers of every result of `op`, in order.
  FailureOr<SmallVector<Value>> resultBuffers(Operation *op);
  /// The view of weight `name`'s slot in blob `blob` (weights or grads).
  Value weightView(Value blob, StringRef name, Type tensorType);

  /// The buffer of `tensor`: the caller's output buffer when the function
  /// returns it, else a new allocation. Maps `tensor` to it.
  FailureOr<Value> resultBuffer(Value tensor);
  Value buffer(Value tensor) { return mapping.lookup(tensor); }
  /// dst = src, by the runtime (moert_copy): the buffers may be device
  /// memory that compiled host code must not touch.
  LogicalResult copy(Value src, Value dst) {
    auto type = cast<MemRefType>(src.getType());
    int64_t bytes =
        type.getNumElements() * type.getElementTypeBitWidth() / 8;
    return call("moert_copy", {src, dst}, {i64(bytes)});
  }
  Value alloc(MemRefType type) {
    return memref::AllocOp::create(b, loc, type, ValueRange{},
                                   b.getI64IntegerAttr(MOE_BUFFER_ALIGNMENT))
        .getResult();
  }

  Value i64(int64_t v) {
    return arith::ConstantIntOp::create(b, loc, v, 64).getResult();
  }
  Value i32(int64_t v) {
    return arith::ConstantIntOp::create(b, loc, v, 32).getResult();
  }
  Value f32(double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(static_cast<float>(v)))
        .getResult();
  }
  Value f64(double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF64Type(), APFloat(v))
        .getResult();
  }

  /// Calls runtime function `callee` with the context, the pointers of
  /// `buffers` (inputs then outputs) and `scalars`, of which the first
  /// `leadingScalars` (a collective's group and element type) go before the
  /// pointers.
  LogicalResult call(StringRef callee, ValueRange buffers, ValueRange scalars,
                     unsigned leadingScalars = 0);

  /// A collective needs `copies` scratch buffers of the size of tensor `v`
  /// (include/moe/Runtime/TensorCollectives.h allocates them for the call and
  /// frees them after): the manifest's comm_bytes is the largest such need.
  void needCommScratch(Value v, int64_t copies = 1) {
    auto type = bufferTypeFor(v.getType(), loc);
    if (succeeded(type))
      commBytes = std::max(commBytes, copies * type->getNumElements() *
                                          type->getElementTypeBitWidth() / 8);
  }

  func::FuncOp model;
  func::FuncOp entry;
  OpBuilder b;
  Type floatStorage;
  Location loc = model.getLoc();
  IRMapping mapping;
  Value ctx, weights;
  /// The gradients blob (laid out like the weights) of a training step.
  Value grads;

  /// Weight name -> byte offset in the blob; the manifest's param list.
  llvm::StringMap<int64_t> weightOffsets;
  SmallVector<Attribute> params;
  int64_t weightsBytes = 0;
  int64_t commBytes = 0;
  /// Returned tensor -> index of the output argument that receives it.
  DenseMap<Value, unsigned> returnedAt;
  DenseSet<unsigned> outputsWritten;
  unsigned firstOutputArg = 0;
  std::optional<int64_t> ignoreIndex;
};

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

LogicalResult EntryBuilder::layOutWeights() {
  DenseMap<Value, int64_t> balanced = balancedBiases(model);
  for (ParamOp param : model.getBody().getOps<ParamOp>()) {
    auto type = bufferTypeFor(param.getType(), param.getLoc());
    if (failed(type))
      return failure();
    if (weightOffsets.count(param.getName()))
      continue;
    weightOffsets[param.getName()] = weightsBytes;
    SmallVector<NamedAttribute> fields = {
        b.getNamedAttr("name", param.getNameAttr()),
        b.getNamedAttr("dtype", b.getStringAttr(type->getElementType().isBF16()
                                                    ? "BF16"
                                                    : "F32")),
        b.getNamedAttr("shape", b.getDenseI64ArrayAttr(type->getShape())),
        b.getNamedAttr("offset", b.getI64IntegerAttr(weightsBytes)),
    };
    appendShardRecord(b, param->getAttrDictionary(), fields);
    if (auto it = balanced.find(param.getResult()); it != balanced.end())
      fields.push_back(b.getNamedAttr("balances_layer",
                                      b.getI64IntegerAttr(it->second)));
    params.push_back(b.getDictionaryAttr(fields));
    std::optional<int64_t> end;
    if (auto bytes = alignedBytes(*bufferBytes(*type), MOE_BUFFER_ALIGNMENT))
      end = llvm::checkedAdd(weightsBytes, *bytes);
    if (!end)
      return param.emitOpError("ends past 2^63 bytes of weights: the "
                               "weights blob cannot be laid out");
    weightsBytes = *end;
  }
  return success();
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
    Type elem = storageBufferType(type, UnknownLoc::get(b.getContext()),
                                  floatStorage)
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

FailureOr<func::FuncOp> EntryBuilder::build() {
  if (!model.getBody().hasOneBlock())
    return model.emitOpError("a model function must have a single block");
  if (failed(layOutWeights()))
    return failure();

  // Signature: (ctx, weights, [grads,] inputs..., outputs...); a training
  // step writes its gradients into a blob laid out like the weights.
  MLIRContext *context = model.getContext();
  bool hasGrads = !model.getBody().getOps<ParamGradOp>().empty();
  SmallVector<Type> argTypes = {
      LLVM::LLVMPointerType::get(context),
      MemRefType::get({weightsBytes}, b.getI8Type())};
  if (hasGrads)
    argTypes.push_back(argTypes.back());
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
  for (auto [i, arg] : llvm::enumerate(model.getArguments()))
    mapping.map(arg, body->getArgument(firstInputArg + i));
  // Every later call reads and writes floating-point tensors in this type.
  if (failed(call("moert_set_storage", ValueRange{},
                  {i32(floatStorage.isBF16() ? MOERT_DTYPE_BF16
                                             : MOERT_DTYPE_F32)})))
    return failure();
  Operation *terminator = model.getBody().front().getTerminator();
  for (auto [i, value] : llvm::enumerate(terminator->getOperands()))
    returnedAt.try_emplace(value, firstOutputArg + i);

  for (Operation &op : model.getBody().front())
    if (failed(lowerOp(&op)))
      return failure();

  // The driver's names for the inputs and outputs of the model function
  // and of its training step.
  bool isForward = model.getSymName() == "forward" || hasGrads;
  SmallVector<DictionaryAttr> argAttrs, resultAttrs;
  model.getAllArgAttrs(argAttrs);
  model.getAllResultAttrs(resultAttrs);
  SmallVector<NamedAttribute> manifest = {
      b.getNamedAttr("function", model.getSymNameAttr()),
      b.getNamedAttr("params", b.getArrayAttr(params)),
      b.getNamedAttr("weights_bytes", b.getI64IntegerAttr(weightsBytes)),
      b.getNamedAttr("comm_bytes", b.getI64IntegerAttr(commBytes)),
      b.getNamedAttr("inputs", describeValues(b, model.getArgumentTypes(),
                                              floatStorage, argAttrs, isForward,
                                              {"tokens", "labels"}, "input")),
      b.getNamedAttr("outputs",
                     describeValues(b, model.getResultTypes(), floatStorage,
                                    resultAttrs, isForward,
                                    hasGrads
                                        ? ArrayRef<StringRef>{"loss"}
                                        : ArrayRef<StringRef>{"logits", "loss"},
                                    "output")),
  };
  if (ignoreIndex)
    manifest.push_back(
        b.getNamedAttr("ignore_index", b.getI64IntegerAttr(*ignoreIndex)));
  if (hasGrads)
    manifest.push_back(b.getNamedAttr("grads", b.getBoolAttr(true)));
  manifest.push_back(b.getNamedAttr(
      "storage", b.getStringAttr(floatStorage.isBF16() ? "BF16" : "F32")));
  entry->setAttr(MoEDialect::getEntryAttrName(), b.getDictionaryAttr(manifest));
  return entry;
}

LogicalResult EntryBuilder::lowerOp(Operation *op) {
  b.setInsertionPointToEnd(&entry.getBody().front());
  loc = op->getLoc();
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<ParamOp, EmbeddingOp, RMSNormOp, LinearOp, RopeOp, AttentionOp,
            MLPOp, AddOp, RouterOp, ExpertsOp, DropOverCapacityOp, PermuteOp,
            GroupedSwiGLUOp,
            UnpermuteOp, DispatchOp, CombineOp, shard::AllReduceOp,
            shard::AllGatherOp, shard::AllSliceOp, shard::AllToAllOp,
            SharedExpertsOp,
            CrossEntropyOp, AuxLossOp, ZLossOp, tensor::ExpandShapeOp,
            tensor::CollapseShapeOp, EmbeddingGradOp, RMSNormGradOp,
            LinearGradOp, RopeGradOp, AttentionGradOp, MLPGradOp,
            SharedExpertsGradOp, RouterGradOp, PermuteGradOp,
            UnpermuteGradOp, GroupedSwiGLUGradOp, CrossEntropyGradOp,
            AuxLossGradOp, ZLossGradOp, ParamGradOp>(
          [&](auto op) { return lower(op); })
      .Case<func::ReturnOp>([&](auto op) { return lowerReturn(op); })
      .Default([](Operation *op) {
        return op->emitOpError(
            "has no lowering to runtime calls (moe-lower-to-runtime)");
      });
}

FailureOr<Value> EntryBuilder::resultBuffer(Value tensor) {
  auto permute = tensor.getDefiningOp<PermuteOp>();
  auto dispatch = tensor.getDefiningOp<DispatchOp>();
  auto type = bufferTypeFor(
      tensor.getType(), loc,
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
    args.push_back(bufferPointer(b, loc, buffer));
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

//===----------------------------------------------------------------------===//
// Per-op lowerings
//===----------------------------------------------------------------------===//

Value EntryBuilder::weightView(Value blob, StringRef name, Type tensorType) {
  // The types were checked when the weights were laid out.
  MemRefType type = *bufferTypeFor(tensorType, loc);
  Value offset =
      arith::ConstantIndexOp::create(b, loc, weightOffsets.lookup(name));
  return memref::ViewOp::create(b, loc, type, blob, offset, ValueRange{});
}

LogicalResult EntryBuilder::lower(ParamOp op) {
  if (failed(bufferTypeFor(op.getType(), loc)))
    return failure();
  mapping.map(op.getResult(), weightView(weights, op.getName(), op.getType()));
  return success();
}

LogicalResult EntryBuilder::lower(EmbeddingOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  return call("moert_embedding",
              {buffer(op.getTokens()), buffer(op.getTable()), *out},
              {i64(numElements(op.getTokens())), i64(dimSize(op.getTable(), 0)),
               i64(dimSize(op.getTable(), 1))});
}

LogicalResult EntryBuilder::lower(RMSNormOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t dim = dimSize(op.getInput(), -1);
  return call("moert_rms_norm",
              {buffer(op.getInput()), buffer(op.getWeight()), *out},
              {i64(numElements(op.getInput()) / dim), i64(dim),
               f32(op.getEps().convertToDouble())});
}

LogicalResult EntryBuilder::lower(LinearOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t in = dimSize(op.getInput(), -1);
  SmallVector<Value> sizes = {i64(numElements(op.getInput()) / in), i64(in),
                              i64(dimSize(op.getWeight(), 0))};
  if (Value bias = op.getBias())
    return call("moert_linear_bias",
                {buffer(op.getInput()), buffer(op.getWeight()), buffer(bias),
                 *out},
                sizes);
  return call("moert_linear",
              {buffer(op.getInput()), buffer(op.getWeight()), *out}, sizes);
}

LogicalResult EntryBuilder::lower(RopeOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  Value x = op.getInput();
  SmallVector<Value> sizes = {i64(dimSize(x, 0)), i64(dimSize(x, 1)),
                              i64(dimSize(x, 2)), i64(dimSize(x, 3)),
                              f64(op.getTheta().convertToDouble())};
  if (Value positions = op.getPositions())
    return call("moert_rope_positions",
                {buffer(x), buffer(positions), *out}, sizes);
  return call("moert_rope", {buffer(x), *out}, sizes);
}

LogicalResult EntryBuilder::lower(AttentionOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  Value q = op.getQ();
  return call("moert_attention",
              {buffer(q), buffer(op.getK()), buffer(op.getV()), *out},
              {i64(dimSize(q, 0)), i64(dimSize(q, 1)), i64(dimSize(q, 2)),
               i64(dimSize(op.getK(), 2)), i64(dimSize(q, 3)),
               i32(op.getCausal() ? 1 : 0), f32(op.getEffectiveScale())});
}

LogicalResult EntryBuilder::lower(MLPOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  return call("moert_mlp",
              {buffer(op.getInput()), buffer(op.getGateWeight()),
               buffer(op.getUpWeight()), buffer(op.getDownWeight()), *out},
              {i64(numElements(op.getInput()) / hidden), i64(hidden),
               i64(dimSize(op.getGateWeight(), 0))});
}

LogicalResult EntryBuilder::lower(AddOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  // Scalars (loss terms) stay f32 whatever the storage.
  bool scalar = cast<RankedTensorType>(op.getType()).getRank() == 0;
  return call(scalar ? "moert_add_f32" : "moert_add",
              {buffer(op.getLhs()), buffer(op.getRhs()), *out},
              {i64(numElements(op.getResult()))});
}

LogicalResult EntryBuilder::lower(RouterOp op) {
  auto weightsOut = resultBuffer(op.getWeights());
  auto indicesOut = resultBuffer(op.getIndices());
  auto logitsOut = resultBuffer(op.getLogits());
  if (failed(weightsOut) || failed(indicesOut) || failed(logitsOut))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  SmallVector<Value> scalars = {
      i64(numElements(op.getInput()) / hidden),
      i64(hidden),
      i64(op.getNumExperts()),
      i64(op.getTopK()),
      i32(op.getScoring() == ScoreFunc::sigmoid ? 1 : 0),
      i32(op.getNormTopkProb() ? 1 : 0),
      f32(op.getRouteScale().convertToDouble()),
      i64(op.getNGroup()),
      i64(op.getTopkGroup())};
  SmallVector<Value> buffers = {buffer(op.getInput()),
                                buffer(op.getGateWeight())};
  StringRef callee = "moert_router";
  if (Value bias = op.getExpertBias()) {
    buffers.push_back(buffer(bias));
    callee = "moert_router_bias";
  }
  buffers.append({*weightsOut, *indicesOut, *logitsOut});
  return call(callee, buffers, scalars);
}

/// Only the expert pipeline of moe-lower-experts reaches the runtime.
LogicalResult EntryBuilder::lower(ExpertsOp op) {
  if (op.getCapacityFactor())
    return op.emitOpError("has a capacity_factor: run moe-expand-capacity "
                          "and moe-lower-experts before moe-lower-to-runtime");
  return op.emitOpError("must be expanded by moe-lower-experts before "
                        "moe-lower-to-runtime");
}

LogicalResult EntryBuilder::lower(DropOverCapacityOp op) {
  auto kept = resultBuffer(op.getKept());
  if (failed(kept))
    return failure();
  int64_t topK = dimSize(op.getIndices(), -1);
  return call("moert_drop_over_capacity", {buffer(op.getIndices()), *kept},
              {i64(numElements(op.getIndices()) / topK), i64(topK),
               i64(op.getNumExperts()), i64(op.getCapacity())});
}

LogicalResult EntryBuilder::lower(PermuteOp op) {
  auto permuted = resultBuffer(op.getPermuted());
  auto offsets = resultBuffer(op.getOffsets());
  auto rowToSlot = resultBuffer(op.getRowToSlot());
  if (failed(permuted) || failed(offsets) || failed(rowToSlot))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  return call("moert_permute",
              {buffer(op.getInput()), buffer(op.getIndices()), *permuted,
               *offsets, *rowToSlot},
              {i64(numElements(op.getInput()) / hidden),
               i64(dimSize(op.getIndices(), -1)), i64(hidden),
               i64(op.getNumExperts())});
}

LogicalResult EntryBuilder::lower(GroupedSwiGLUOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  return call("moert_grouped_swiglu",
              {buffer(op.getPermuted()), buffer(op.getOffsets()),
               buffer(op.getGateWeight()), buffer(op.getUpWeight()),
               buffer(op.getDownWeight()), *out},
              {i64(dimSize(op.getPermuted(), 0)),
               i64(dimSize(op.getOffsets(), 0) - 1),
               i64(dimSize(op.getGateWeight(), 0)),
               i64(dimSize(op.getPermuted(), 1)),
               i64(dimSize(op.getGateWeight(), 1))});
}

//===----------------------------------------------------------------------===//
// Collectives (moe-partition)
//===----------------------------------------------------------------------===//

FailureOr<Value> EntryBuilder::group(Operation *op, StringRef grid,
                                     ArrayRef<int16_t> axes) {
  SmallVector<int16_t> sorted(axes);
  llvm::sort(sorted);
  auto is = [&](std::initializer_list<int16_t> want) {
    return ArrayRef<int16_t>(sorted) == ArrayRef<int16_t>(want);
  };
  std::optional<int32_t> id;
  if (grid == kDenseGrid) {
    if (is({kDpAxis}))
      id = MOERT_GROUP_DP;
    else if (is({kCpAxis}))
      id = MOERT_GROUP_CP;
    else if (is({kTpAxis}))
      id = MOERT_GROUP_TP;
    else if (is({kDpAxis, kCpAxis}))
      id = MOERT_GROUP_DP_CP;
  } else if (grid == kExpertGrid) {
    if (is({kEpAxis}))
      id = MOERT_GROUP_EP;
    else if (is({kEdpAxis}))
      id = MOERT_GROUP_EDP;
    else if (is({kExpertTpAxis}))
      id = MOERT_GROUP_TP;
  }
  if (!id)
    return op->emitOpError("has no runtime communicator for these axes of @")
           << grid << " (the runtime has dp, cp, tp, dp x cp on @"
           << kDenseGrid << " and ep, edp, tp on @" << kExpertGrid << ")";
  return i32(*id);
}

Value EntryBuilder::dtype(Value v) {
  Type elem = cast<MemRefType>(buffer(v).getType()).getElementType();
  if (elem.isBF16())
    return i32(MOERT_DTYPE_BF16);
  if (elem.isF32())
    return i32(MOERT_DTYPE_F32);
  return i32(elem.isSignlessInteger(64) ? MOERT_DTYPE_I64 : MOERT_DTYPE_I32);
}

SmallVector<Value> EntryBuilder::axisLayout(Value v, int64_t axis) {
  ArrayRef<int64_t> shape = cast<ShapedType>(v.getType()).getShape();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d)
    outer *= shape[d];
  for (int64_t d = axis + 1; d < static_cast<int64_t>(shape.size()); ++d)
    inner *= shape[d];
  return {i64(outer), i64(shape[axis]), i64(inner)};
}

LogicalResult EntryBuilder::lower(shard::AllReduceOp op) {
  if (op.getReduction() != shard::ReductionKind::Sum ||
      op.getInput().getType() != op.getResult().getType())
    return op.emitOpError("only sums without a change of type reach the "
                          "runtime");
  auto out = resultBuffer(op.getResult());
  auto g = group(op, op.getGrid(), op.getGridAxes());
  if (failed(out) || failed(g))
    return failure();
  return call("moert_all_reduce_sum", {buffer(op.getInput()), *out},
              {*g, dtype(op.getInput()), i64(numElements(op.getInput()))},
              /*scalarsFirst=*/2);
}

/// all_gather and all_slice: one input, one result, the layout of the input
/// around `axis`.
template <typename Op>
LogicalResult EntryBuilder::lowerAxisCollective(Op op, StringRef callee,
                                                int64_t axis) {
  auto out = resultBuffer(op.getResult());
  auto g = group(op, op.getGrid(), op.getGridAxes());
  if (failed(out) || failed(g))
    return failure();
  SmallVector<Value> scalars = {*g, dtype(op.getInput())};
  llvm::append_range(scalars, axisLayout(op.getInput(), axis));
  return call(callee, {buffer(op.getInput()), *out}, scalars, 2);
}

LogicalResult EntryBuilder::lower(shard::AllGatherOp op) {
  // Gathered into scratch, then reordered, unless the gathered dimension is
  // the outermost.
  int64_t axis = op.getGatherAxis().getSExtValue();
  if (llvm::any_of(
          cast<ShapedType>(op.getInput().getType()).getShape().take_front(axis),
          [](int64_t d) { return d != 1; }))
    needCommScratch(op.getResult());
  return lowerAxisCollective(op, "moert_all_gather", axis);
}

LogicalResult EntryBuilder::lower(shard::AllSliceOp op) {
  return lowerAxisCollective(op, "moert_all_slice",
                             op.getSliceAxis().getSExtValue());
}

LogicalResult EntryBuilder::lower(shard::AllToAllOp op) {
  needCommScratch(op.getInput(), /*copies=*/2); // packed and received pieces
  auto out = resultBuffer(op.getResult());
  auto g = group(op, op.getGrid(), op.getGridAxes());
  if (failed(out) || failed(g))
    return failure();
  SmallVector<Value> scalars = {*g, dtype(op.getInput())};
  llvm::append_range(scalars, axisLayout(op.getInput(),
                                         op.getSplitAxis().getSExtValue()));
  llvm::append_range(scalars, axisLayout(op.getResult(),
                                         op.getConcatAxis().getSExtValue()));
  return call("moert_all_to_all", {buffer(op.getInput()), *out}, scalars, 2);
}

/// The runtime's placement table id: -1 for the fixed split.
static int64_t placementOf(std::optional<uint64_t> placement) {
  return placement ? static_cast<int64_t>(*placement) : -1;
}

LogicalResult EntryBuilder::lower(DispatchOp op) {
  // Rows leave in slot order, staged when a placement reorders them.
  needCommScratch(op.getPermuted());
  auto received = resultBuffer(op.getReceived());
  auto receivedOffsets = resultBuffer(op.getReceivedOffsets());
  auto g = group(op, op.getGrid(), op.getGridAxes());
  if (failed(received) || failed(receivedOffsets) || failed(g))
    return failure();
  return call("moert_dispatch",
              {buffer(op.getPermuted()), buffer(op.getOffsets()), *received,
               *receivedOffsets},
              {*g, i64(placementOf(op.getPlacement())),
               i64(dimSize(op.getOffsets(), 0) - 1),
               i64(dimSize(op.getReceivedOffsets(), 0) - 1),
               i64(dimSize(op.getPermuted(), 1)),
               i64(dimSize(op.getReceived(), 0))},
              2);
}

LogicalResult EntryBuilder::lower(CombineOp op) {
  needCommScratch(op.getResult());
  auto out = resultBuffer(op.getResult());
  auto g = group(op, op.getGrid(), op.getGridAxes());
  if (failed(out) || failed(g))
    return failure();
  return call("moert_combine",
              {buffer(op.getExpertOut()), buffer(op.getReceivedOffsets()),
               buffer(op.getOffsets()), *out},
              {*g, i64(placementOf(op.getPlacement())),
               i64(dimSize(op.getOffsets(), 0) - 1),
               i64(dimSize(op.getReceivedOffsets(), 0) - 1),
               i64(dimSize(op.getExpertOut(), 1))},
              2);
}

LogicalResult EntryBuilder::lower(UnpermuteOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t topK = dimSize(op.getWeights(), -1);
  return call("moert_unpermute_combine",
              {buffer(op.getExpertOut()), buffer(op.getRowToSlot()),
               buffer(op.getWeights()), *out},
              {i64(numElements(op.getWeights()) / topK), i64(topK),
               i64(dimSize(op.getExpertOut(), 1))});
}

LogicalResult EntryBuilder::lower(SharedExpertsOp op) {
  auto out = resultBuffer(op.getResult());
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  SmallVector<Value> sizes = {i64(numElements(op.getInput()) / hidden),
                              i64(hidden),
                              i64(dimSize(op.getGateWeight(), 0))};
  SmallVector<Value> buffers = {
      buffer(op.getInput()), buffer(op.getGateWeight()),
      buffer(op.getUpWeight()), buffer(op.getDownWeight())};
  if (Value gate = op.getSharedGate()) {
    buffers.append({buffer(gate), *out});
    return call("moert_shared_experts_gated", buffers, sizes);
  }
  buffers.push_back(*out);
  return call("moert_shared_experts", buffers, sizes);
}

LogicalResult EntryBuilder::lower(CrossEntropyOp op) {
  auto out = resultBuffer(op.getLoss());
  if (failed(out))
    return failure();
  auto ignore = static_cast<int64_t>(op.getIgnoreIndex());
  if (ignoreIndex && *ignoreIndex != ignore)
    return op.emitOpError("uses ignore_index ")
           << ignore << " but an earlier cross_entropy uses " << *ignoreIndex
           << "; the executable feeds one label convention";
  ignoreIndex = ignore;
  return call("moert_cross_entropy",
              {buffer(op.getLogits()), buffer(op.getLabels()), *out},
              {i64(numElements(op.getLabels())),
               i64(dimSize(op.getLogits(), -1)), i64(ignore)});
}

LogicalResult EntryBuilder::lower(AuxLossOp op) {
  auto out = resultBuffer(op.getLoss());
  if (failed(out))
    return failure();
  int64_t experts = dimSize(op.getLogits(), -1);
  return call("moert_aux_loss",
              {buffer(op.getLogits()), buffer(op.getIndices()), *out},
              {i64(numElements(op.getLogits()) / experts), i64(experts),
               i64(dimSize(op.getIndices(), -1)),
               i32(op.getScoring() == ScoreFunc::sigmoid ? 1 : 0),
               f32(op.getCoefficient().convertToDouble())});
}

LogicalResult EntryBuilder::lower(ZLossOp op) {
  auto out = resultBuffer(op.getLoss());
  if (failed(out))
    return failure();
  int64_t experts = dimSize(op.getLogits(), -1);
  return call("moert_z_loss", {buffer(op.getLogits()), *out},
              {i64(numElements(op.getLogits()) / experts), i64(experts),
               f32(op.getCoefficient().convertToDouble())});
}

// Reshapes are views: no copy, and the buffer stays live while they are.
LogicalResult EntryBuilder::lower(tensor::ExpandShapeOp op) {
  auto type = bufferTypeFor(op.getType(), loc);
  if (failed(type))
    return failure();
  mapping.map(op.getResult(),
              memref::ExpandShapeOp::create(b, loc, *type, buffer(op.getSrc()),
                                            op.getReassociationIndices())
                  .getResult());
  return success();
}

LogicalResult EntryBuilder::lower(tensor::CollapseShapeOp op) {
  auto type = bufferTypeFor(op.getType(), loc);
  if (failed(type))
    return failure();
  mapping.map(op.getResult(),
              memref::CollapseShapeOp::create(
                  b, loc, *type, buffer(op.getSrc()),
                  op.getReassociationIndices())
                  .getResult());
  return success();
}

//===----------------------------------------------------------------------===//
// Gradients (moe-build-train-step)
//===----------------------------------------------------------------------===//

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

LogicalResult EntryBuilder::lower(EmbeddingGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  Value table = op.getTableGrad();
  return call("moert_embedding_grad",
              {buffer(op.getResultGrad()), buffer(op.getTokens()), (*out)[0]},
              {i64(numElements(op.getTokens())), i64(dimSize(table, 0)),
               i64(dimSize(table, 1))});
}

LogicalResult EntryBuilder::lower(RMSNormGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t dim = dimSize(op.getInput(), -1);
  return call("moert_rms_norm_grad",
              {buffer(op.getResultGrad()), buffer(op.getInput()),
               buffer(op.getWeight()), (*out)[0], (*out)[1]},
              {i64(numElements(op.getInput()) / dim), i64(dim),
               f32(op.getEps().convertToDouble())});
}

LogicalResult EntryBuilder::lower(LinearGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t in = dimSize(op.getInput(), -1);
  return call("moert_linear_grad",
              {buffer(op.getResultGrad()), buffer(op.getInput()),
               buffer(op.getWeight()), (*out)[0], (*out)[1]},
              {i64(numElements(op.getInput()) / in), i64(in),
               i64(dimSize(op.getWeight(), 0))});
}

LogicalResult EntryBuilder::lower(RopeGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  Value dy = op.getResultGrad();
  SmallVector<Value> sizes = {i64(dimSize(dy, 0)), i64(dimSize(dy, 1)),
                              i64(dimSize(dy, 2)), i64(dimSize(dy, 3)),
                              f64(op.getTheta().convertToDouble())};
  if (Value positions = op.getPositions())
    return call("moert_rope_positions_grad",
                {buffer(dy), buffer(positions), (*out)[0]}, sizes);
  return call("moert_rope_grad", {buffer(dy), (*out)[0]}, sizes);
}

LogicalResult EntryBuilder::lower(AttentionGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  Value q = op.getQ();
  return call("moert_attention_grad",
              {buffer(op.getResultGrad()), buffer(q), buffer(op.getK()),
               buffer(op.getV()), (*out)[0], (*out)[1], (*out)[2]},
              {i64(dimSize(q, 0)), i64(dimSize(q, 1)), i64(dimSize(q, 2)),
               i64(dimSize(op.getK(), 2)), i64(dimSize(q, 3)),
               i32(op.getCausal() ? 1 : 0), f32(op.getEffectiveScale())});
}

LogicalResult EntryBuilder::lower(MLPGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  SmallVector<Value> buffers = {
      buffer(op.getResultGrad()), buffer(op.getInput()),
      buffer(op.getGateWeight()), buffer(op.getUpWeight()),
      buffer(op.getDownWeight())};
  llvm::append_range(buffers, *out);
  return call("moert_mlp_grad", buffers,
              {i64(numElements(op.getInput()) / hidden), i64(hidden),
               i64(dimSize(op.getGateWeight(), 0))});
}

LogicalResult EntryBuilder::lower(SharedExpertsGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  SmallVector<Value> buffers = {
      buffer(op.getResultGrad()), buffer(op.getInput()),
      buffer(op.getGateWeight()), buffer(op.getUpWeight()),
      buffer(op.getDownWeight())};
  if (Value gate = op.getSharedGate())
    buffers.push_back(buffer(gate));
  llvm::append_range(buffers, *out);
  return call(op.getSharedGate() ? "moert_shared_experts_gated_grad"
                                 : "moert_shared_experts_grad",
              buffers,
              {i64(numElements(op.getInput()) / hidden), i64(hidden),
               i64(dimSize(op.getGateWeight(), 0))});
}

LogicalResult EntryBuilder::lower(RouterGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInput(), -1);
  SmallVector<Value> buffers = {buffer(op.getWeightsGrad())};
  if (Value dLogits = op.getLogitsGrad())
    buffers.push_back(buffer(dLogits));
  buffers.append({buffer(op.getInput()), buffer(op.getGateWeight()),
                  buffer(op.getLogits()), buffer(op.getIndices()), (*out)[0],
                  (*out)[1]});
  return call(op.getLogitsGrad() ? "moert_router_grad_logits"
                                 : "moert_router_grad",
              buffers,
              {i64(numElements(op.getInput()) / hidden), i64(hidden),
               i64(dimSize(op.getGateWeight(), 0)),
               i64(dimSize(op.getIndices(), -1)),
               i32(op.getScoring() == ScoreFunc::sigmoid ? 1 : 0),
               i32(op.getNormTopkProb() ? 1 : 0),
               f32(op.getRouteScale().convertToDouble())});
}

LogicalResult EntryBuilder::lower(PermuteGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t hidden = dimSize(op.getInputGrad(), -1);
  return call("moert_permute_grad",
              {buffer(op.getPermutedGrad()), buffer(op.getRowToSlot()),
               (*out)[0]},
              {i64(numElements(op.getInputGrad()) / hidden),
               i64(static_cast<int64_t>(op.getTopK())), i64(hidden)});
}

LogicalResult EntryBuilder::lower(UnpermuteGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t topK = dimSize(op.getWeights(), -1);
  return call("moert_unpermute_grad",
              {buffer(op.getResultGrad()), buffer(op.getExpertOut()),
               buffer(op.getRowToSlot()), buffer(op.getWeights()), (*out)[0],
               (*out)[1]},
              {i64(numElements(op.getWeights()) / topK), i64(topK),
               i64(dimSize(op.getExpertOut(), 1))});
}

LogicalResult EntryBuilder::lower(GroupedSwiGLUGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  SmallVector<Value> buffers = {
      buffer(op.getResultGrad()), buffer(op.getPermuted()),
      buffer(op.getOffsets()),    buffer(op.getGateWeight()),
      buffer(op.getUpWeight()),   buffer(op.getDownWeight())};
  llvm::append_range(buffers, *out);
  return call("moert_grouped_swiglu_grad", buffers,
              {i64(dimSize(op.getPermuted(), 0)),
               i64(dimSize(op.getOffsets(), 0) - 1),
               i64(dimSize(op.getGateWeight(), 0)),
               i64(dimSize(op.getPermuted(), 1)),
               i64(dimSize(op.getGateWeight(), 1))});
}

LogicalResult EntryBuilder::lower(CrossEntropyGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  return call("moert_cross_entropy_grad",
              {buffer(op.getLogits()), buffer(op.getLabels()), (*out)[0]},
              {i64(numElements(op.getLabels())),
               i64(dimSize(op.getLogits(), -1)),
               i64(static_cast<int64_t>(op.getIgnoreIndex()))});
}

LogicalResult EntryBuilder::lower(AuxLossGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t experts = dimSize(op.getLogits(), -1);
  return call("moert_aux_loss_grad",
              {buffer(op.getLogits()), buffer(op.getIndices()), (*out)[0]},
              {i64(numElements(op.getLogits()) / experts), i64(experts),
               i64(dimSize(op.getIndices(), -1)),
               i32(op.getScoring() == ScoreFunc::sigmoid ? 1 : 0),
               f32(op.getCoefficient().convertToDouble())});
}

LogicalResult EntryBuilder::lower(ZLossGradOp op) {
  auto out = resultBuffers(op);
  if (failed(out))
    return failure();
  int64_t experts = dimSize(op.getLogits(), -1);
  return call("moert_z_loss_grad", {buffer(op.getLogits()), (*out)[0]},
              {i64(numElements(op.getLogits()) / experts), i64(experts),
               f32(op.getCoefficient().convertToDouble())});
}

/// Most gradients are computed straight into their slot of the gradients
/// blob (resultBuffer); one that is not (a reshape, an input) is copied.
LogicalResult EntryBuilder::lower(ParamGradOp op) {
  if (!weightOffsets.count(op.getName()))
    return op.emitOpError("names no weight of the function");
  Value grad = buffer(op.getGrad());
  if (auto view = grad.getDefiningOp<memref::ViewOp>();
      view && view.getSource() == grads)
    return success();
  return copy(grad,
              weightView(grads, op.getName(), op.getGrad().getType()));
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
      if (failed(EntryBuilder(model, floatStorage).build()))
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
