//===- ExpandCapacity.cpp - Capacity-factor experts -> explicit drop ------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

#include <algorithm>
#include <cmath>

namespace mlir::moe {
#define GEN_PASS_DEF_EXPANDCAPACITY
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct ExpandCapacityPass
    : mlir::moe::impl::ExpandCapacityBase<ExpandCapacityPass> {
  void runOnOperation() override {
    SmallVector<ExpertsOp> capped;
    getOperation()->walk([&](ExpertsOp op) {
      if (op.getCapacityFactor())
        capped.push_back(op);
    });
    for (ExpertsOp op : capped) {
      OpBuilder b(op);
      RankedTensorType indices = op.getIndices().getType();
      int64_t slots = indices.getNumElements();
      int64_t experts = op.getNumExperts();
      double factor = op.getCapacityFactor()->convertToDouble();
      // ceil(cf * T * K / E), at least one slot.
      auto capacity = static_cast<int64_t>(
          std::ceil(factor * static_cast<double>(slots) /
                    static_cast<double>(experts)));
      capacity = std::max<int64_t>(capacity, 1);
      Value kept = DropOverCapacityOp::create(b, op.getLoc(), indices,
                                              op.getIndices(), experts,
                                              capacity);
      op.getIndicesMutable().assign(kept);
      op.removeCapacityFactorAttr();
    }
  }
};

} // namespace
