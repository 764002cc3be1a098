//===- PlanMemory.cpp - Place an entry point's buffers in one arena -------===//
//
// Every `memref.alloc` of an entry point becomes a `memref.view` at a fixed
// offset of the arena, a new argument after the weights. Buffers whose
// lifetimes do not overlap share bytes (moe::planMemory). A buffer's
// lifetime runs from its allocation to the last operation that uses it or
// anything derived from it (a reshape, a view, the pointer handed to a
// runtime call), in program order.
//
//===----------------------------------------------------------------------===//

#include "BufferBytes.h"

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Runtime/ModelABI.h"
#include "moe/Support/MemoryPlan.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Builders.h"

namespace mlir::moe {
#define GEN_PASS_DEF_PLANMEMORY
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Position of the last operation of `block` that uses `value` directly or
/// through values computed from it.
int64_t lastUse(Value value, const DenseMap<Operation *, int64_t> &position) {
  int64_t last = -1;
  SmallVector<Value> work = {value};
  DenseSet<Value> seen;
  while (!work.empty()) {
    Value v = work.pop_back_val();
    if (!seen.insert(v).second)
      continue;
    for (Operation *user : v.getUsers()) {
      auto it = position.find(user);
      if (it == position.end())
        continue;
      last = std::max(last, it->second);
      llvm::append_range(work, user->getResults());
    }
  }
  return last;
}

/// "model.mlir:12:7": where a buffer's op came from, for messages that name
/// it outside the compiler (the manifest, moec --max-memory).
std::string locationText(Location loc) {
  std::string text = "unknown location";
  loc->walk([&](Location inner) {
    if (auto file = dyn_cast<FileLineColLoc>(inner)) {
      text = (file.getFilename().getValue() + ":" + Twine(file.getLine()) +
              ":" + Twine(file.getColumn()))
                 .str();
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return text;
}

LogicalResult planFunction(func::FuncOp fn, bool report) {
  Block &body = fn.getBody().front();
  DenseMap<Operation *, int64_t> position;
  SmallVector<memref::AllocOp> allocs;
  for (auto [i, op] : llvm::enumerate(body)) {
    position[&op] = i;
    if (auto alloc = dyn_cast<memref::AllocOp>(op))
      allocs.push_back(alloc);
  }

  std::vector<::moe::BufferLifetime> lifetimes;
  // Every offset in the arena is below the sum of the aligned sizes: when
  // that sum fits in 64 bits, no offset wraps.
  std::optional<int64_t> unplanned = 0;
  // The largest buffer, named in the manifest and in errors.
  std::optional<Location> largestLoc;
  int64_t largestBytes = -1;
  for (memref::AllocOp alloc : allocs) {
    MemRefType type = alloc.getType();
    if (!type.hasStaticShape() || !type.getLayout().isIdentity())
      return alloc.emitOpError("cannot be planned: the arena holds only "
                               "statically shaped, dense buffers");
    std::optional<int64_t> bytes = bufferBytes(type);
    if (!bytes)
      return alloc.emitOpError("cannot be planned: ")
             << type << " would hold more than 2^63 bytes";
    if (*bytes > largestBytes) {
      largestLoc = alloc.getLoc();
      largestBytes = *bytes;
    }
    std::optional<int64_t> aligned = alignedBytes(*bytes, MOE_BUFFER_ALIGNMENT);
    unplanned = unplanned && aligned ? llvm::checkedAdd(*unplanned, *aligned)
                                     : std::nullopt;
    int64_t first = position[alloc];
    lifetimes.push_back(
        {*bytes, first, std::max(first, lastUse(alloc, position))});
  }
  if (!unplanned)
    return emitError(*largestLoc, "cannot be planned: the arena's buffers "
                                  "together exceed 2^63 bytes; the largest, "
                                  "this one, holds ")
           << largestBytes << " bytes";
  ::moe::MemoryPlan plan =
      ::moe::planMemory(lifetimes, MOE_BUFFER_ALIGNMENT);

  // The arena goes after (ctx, weights).
  OpBuilder b(fn.getContext());
  auto arenaType = MemRefType::get({plan.arenaBytes}, b.getI8Type());
  if (failed(fn.insertArgument(2, arenaType, {}, fn.getLoc())))
    return fn.emitOpError("cannot add the arena argument");
  Value arena = fn.getArgument(2);
  for (auto [alloc, offset] : llvm::zip(allocs, plan.offsets)) {
    b.setInsertionPoint(alloc);
    Value shift = arith::ConstantIndexOp::create(b, alloc.getLoc(), offset);
    Value view = memref::ViewOp::create(b, alloc.getLoc(), alloc.getType(),
                                        arena, shift, ValueRange{});
    alloc.replaceAllUsesWith(view);
    alloc.erase();
  }

  auto name = MoEDialect::getEntryAttrName();
  NamedAttrList entry(fn->getAttrOfType<DictionaryAttr>(name));
  entry.set("arena_bytes", b.getI64IntegerAttr(plan.arenaBytes));
  entry.set("unplanned_bytes", b.getI64IntegerAttr(plan.unplannedBytes));
  entry.set("buffers", b.getI64IntegerAttr(lifetimes.size()));
  if (largestLoc)
    entry.set("largest_buffer",
              b.getDictionaryAttr(
                  {b.getNamedAttr("bytes", b.getI64IntegerAttr(largestBytes)),
                   b.getNamedAttr(
                       "at", b.getStringAttr(locationText(*largestLoc)))}));
  fn->setAttr(name, entry.getDictionary(fn.getContext()));
  if (report)
    fn.emitRemark() << "memory plan: " << lifetimes.size()
                    << " buffers in an arena of " << plan.arenaBytes
                    << " bytes (" << plan.unplannedBytes
                    << " without reuse, at least "
                    << ::moe::peakLiveBytes(lifetimes, MOE_BUFFER_ALIGNMENT)
                    << " live at once)";
  return success();
}

struct PlanMemoryPass : mlir::moe::impl::PlanMemoryBase<PlanMemoryPass> {
  using PlanMemoryBase::PlanMemoryBase;

  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>()) {
      auto entry =
          fn->getAttrOfType<DictionaryAttr>(MoEDialect::getEntryAttrName());
      if (!entry || entry.contains("arena_bytes"))
        continue; // not an entry point, or planned already
      if (!fn.getBody().hasOneBlock()) {
        fn.emitOpError("cannot be planned: expected a single block");
        return signalPassFailure();
      }
      if (failed(planFunction(fn, report)))
        return signalPassFailure();
    }
  }
};

} // namespace
