//===- EntryBuilder.h - A model function -> its entry point ----*- C++ -*-===//
//
// Private to moe-lower-to-runtime (lib/Transforms/LowerToRuntime/). The
// EntryBuilder makes `@moe_entry_f` from a model function `@f`: the
// signature, the weights blob's layout, the manifest values, and one buffer
// per tensor; each op is lowered by the function a family file registered
// for it in the LoweringTable:
//
//   Dense.cpp        the ops of DenseOps.td and the shared experts (with
//                    their gradients)
//   Experts.cpp      the routing and expert ops of ExpertOps.td
//   Collectives.cpp  the shard collectives, dispatch and combine
//   Losses.cpp       the ops of LossOps.td
//   EntryBuilder.cpp weights, their gradients, reshapes; the builder itself
//
// An op lowers to calls of the runtime's C API (include/moe/Runtime/CApi.h,
// checked against CApiCalls.def by moe-check-runtime-calls) on the buffers
// of its operands and results. Adding an op's lowering touches its family
// file only.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TRANSFORMS_LOWERTORUNTIME_ENTRYBUILDER_H
#define MOE_LIB_TRANSFORMS_LOWERTORUNTIME_ENTRYBUILDER_H

#include "../OpRules.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"

#include <functional>
#include <optional>

namespace mlir::moe::lowering {

/// Elements of shaped value `v`.
int64_t numElements(Value v);
/// Size of dimension `d` of `v`; negative `d` counts from the end.
int64_t dimSize(Value v, int64_t d);

/// The memref a tensor becomes: same shape; f32 or i32 (what the runtime
/// computes in) except for i64 expert offsets (moe.permute, moe.dispatch).
/// `floatStorage` is the element type of floating-point tensors of rank >= 1
/// (f32, or bf16 under storage=bf16); scalars (the losses) stay f32.
FailureOr<MemRefType> storageBufferType(Type type, Location loc,
                                        Type floatStorage,
                                        bool isOffsets = false);

class EntryBuilder;

/// Op -> the function that lowers it, filled by the family files.
using LoweringTable = OpRules<EntryBuilder>;

void populateDenseLowerings(LoweringTable &table);
void populateExpertLowerings(LoweringTable &table);
void populateCollectiveLowerings(LoweringTable &table);
void populateLossLowerings(LoweringTable &table);
void populateEntryLowerings(LoweringTable &table);

/// Every lowering above.
const LoweringTable &allLowerings();

/// Builds one entry point from one model function.
class EntryBuilder {
public:
  /// `floatStorage`: f32 or bf16 (see storageBufferType).
  EntryBuilder(func::FuncOp model, Type floatStorage,
               const LoweringTable &lowerings)
      : model(model), b(model), floatStorage(floatStorage),
        lowerings(lowerings) {}

  /// Creates `@moe_entry_<name>` next to the model function; the caller
  /// erases the model function on success.
  FailureOr<func::FuncOp> build();

  // --- For the lowerings --------------------------------------------------
  // Everything below builds at the end of the entry, at the location of the
  // op being lowered.

  OpBuilder &builder() { return b; }
  Location location() const { return loc; }

  /// The buffer of `tensor` (an operand: already lowered).
  Value buffer(Value tensor) { return mapping.lookup(tensor); }
  /// The buffer of `tensor`, or the null pointer a runtime call reads as an
  /// absent optional operand when `tensor` is null.
  Value optionalBuffer(Value tensor) {
    return tensor ? buffer(tensor) : absent();
  }
  /// The null pointer of an absent optional operand.
  Value absent();
  /// Makes `buffer` the buffer of `tensor` (a view, a reshape).
  void map(Value tensor, Value buffer) { mapping.map(tensor, buffer); }
  /// The buffer of result `tensor`: the caller's output buffer when the
  /// function returns it, its slot of the gradients blob when it is a
  /// weight's gradient, else a new allocation. Maps `tensor` to it.
  FailureOr<Value> resultBuffer(Value tensor);
  /// resultBuffer of every result of `op`, in order.
  FailureOr<SmallVector<Value>> resultBuffers(Operation *op);
  FailureOr<MemRefType> bufferTypeFor(Type type, Location at,
                                      bool isOffsets = false) {
    return storageBufferType(type, at, floatStorage, isOffsets);
  }

  /// The weights blob and (in a training step, else null) the gradients
  /// blob laid out like it.
  Value weightsBlob() const { return weights; }
  Value gradsBlob() const {
    return grads;
  } /// The key/value cache blob of a decode or prefill function, else null.
  Value cacheBlob() const { return cache; }
  /// The view of cache `name`'s slot in the cache blob.
  Value cacheView(StringRef name, Type tensorType) {
    return view(cache, cacheLayout, name, tensorType);
  }

  bool hasWeight(StringRef name) const {
    return weightsLayout.offsets.count(name);
  }
  /// The view of weight `name`'s slot in blob `blob` (weights or grads).
  Value weightView(Value blob, StringRef name, Type tensorType) {
    return view(blob, weightsLayout, name, tensorType);
  }

  Value i64(int64_t v);
  Value i32(int64_t v);
  Value f32(double v);
  Value f64(double v);

  /// Calls runtime function `callee` with the context, the pointers of
  /// `buffers` (inputs then outputs; a pointer, such as absent(), passes as
  /// it is) and `scalars`, of which the first
  /// `leadingScalars` (a collective's group and element type) go before the
  /// pointers.
  LogicalResult call(StringRef callee, ValueRange buffers, ValueRange scalars,
                     unsigned leadingScalars = 0);
  /// dst = src, by the runtime (moert_copy): the buffers may be device
  /// memory that compiled host code must not touch.
  LogicalResult copy(Value src, Value dst);

  /// A collective needs `copies` scratch buffers of the size of tensor `v`
  /// (include/moe/Runtime/TensorCollectives.h allocates them for the call):
  /// the manifest's comm_bytes is the largest such need.
  void needCommScratch(Value v, int64_t copies = 1);
  /// The executable feeds one label convention: every cross-entropy of the
  /// function must use the same ignore_index (recorded in the manifest).
  LogicalResult recordIgnoreIndex(Operation *op, int64_t ignore);

private:
  /// A blob of named buffers (weights, caches) one after another, each
  /// aligned: name -> byte offset, the manifest's record of each, the size.
  struct BlobLayout {
    llvm::StringMap<int64_t> offsets;
    SmallVector<Attribute> records;
    int64_t bytes = 0;
  };
  /// Gives `name`, a buffer of `tensorType` declared by `op`, the next slot
  /// of `blob` and sets `fields` to its record (name, dtype, shape,
  /// offset); false when `name` has a slot already. Past 2^63 bytes,
  /// `overflow` is the error.
  FailureOr<bool> place(BlobLayout &blob, Operation *op, StringAttr name,
                        Type tensorType, StringRef overflow,
                        SmallVectorImpl<NamedAttribute> &fields);
  Value view(Value blob, const BlobLayout &layout, StringRef name,
             Type tensorType);
  LogicalResult layOutWeights();
  LogicalResult layOutCaches();

  LogicalResult lowerOp(Operation *op);
  LogicalResult lowerReturn(func::ReturnOp op);
  Value alloc(MemRefType type);

  func::FuncOp model;
  func::FuncOp entry;
  OpBuilder b;
  Type floatStorage;
  const LoweringTable &lowerings;
  Location loc = model.getLoc();
  IRMapping mapping;
  Value ctx, weights;
  /// The gradients blob (laid out like the weights) of a training step.
  Value grads;

  /// The key/value cache blob of a function with moe.kv_cache ops.
  Value cache;
  BlobLayout cacheLayout;
  /// The weights blob: its offsets and the manifest's param list.
  BlobLayout weightsLayout;
  int64_t commBytes = 0;
  /// Returned tensor -> index of the output argument that receives it.
  DenseMap<Value, unsigned> returnedAt;
  DenseSet<unsigned> outputsWritten;
  unsigned firstOutputArg = 0;
  std::optional<int64_t> ignoreIndex;
};

} // namespace mlir::moe::lowering

#endif // MOE_LIB_TRANSFORMS_LOWERTORUNTIME_ENTRYBUILDER_H
