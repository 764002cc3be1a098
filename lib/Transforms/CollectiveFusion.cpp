//===- CollectiveFusion.cpp - Fusing collectives --------------------------===//

#include "CollectiveFusion.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"

namespace mlir::moe {

void fuseReduceScatters(Block &body) {
  for (auto slice :
       llvm::make_early_inc_range(body.getOps<shard::AllSliceOp>())) {
    auto reduce = slice.getInput().getDefiningOp<shard::AllReduceOp>();
    if (!reduce || !reduce->hasOneUse() ||
        reduce.getReduction() != shard::ReductionKind::Sum ||
        reduce.getGrid() != slice.getGrid() ||
        reduce.getGridAxes() != slice.getGridAxes())
      continue;
    OpBuilder b(slice);
    Value piece = shard::ReduceScatterOp::create(
                      b, slice.getLoc(), slice.getType(), reduce.getGrid(),
                      reduce.getGridAxes(), reduce.getInput(),
                      shard::ReductionKind::Sum, slice.getSliceAxis())
                      .getResult();
    slice.replaceAllUsesWith(piece);
    slice.erase();
    reduce.erase();
  }
}

void sinkAllReduces(Block &body) {
  for (bool moved = true; moved;) {
    moved = false;
    for (auto reduce :
         llvm::make_early_inc_range(body.getOps<shard::AllReduceOp>())) {
      if (!reduce->hasOneUse() ||
          reduce.getReduction() != shard::ReductionKind::Sum)
        continue;
      OpOperand &use = *reduce->use_begin();
      Operation *user = use.getOwner();
      if (!isa<CombineOp, PermuteGradOp>(user) || use.getOperandNumber() != 0)
        continue;
      OpBuilder b(user);
      Operation *early = b.clone(*user);
      early->setOperand(0, reduce.getInput());
      Value sum = shard::AllReduceOp::create(
                      b, reduce.getLoc(), early->getResult(0).getType(),
                      reduce.getGrid(), reduce.getGridAxes(),
                      early->getResult(0), shard::ReductionKind::Sum)
                      .getResult();
      user->getResult(0).replaceAllUsesWith(sum);
      user->erase();
      reduce.erase();
      moved = true;
    }
  }
}

void mergeDuplicateGathers(Block &body) {
  SmallVector<shard::AllGatherOp> first;
  for (auto gather :
       llvm::make_early_inc_range(body.getOps<shard::AllGatherOp>())) {
    auto same = llvm::find_if(first, [&](shard::AllGatherOp earlier) {
      return earlier.getInput() == gather.getInput() &&
             earlier.getGrid() == gather.getGrid() &&
             earlier.getGridAxes() == gather.getGridAxes() &&
             earlier.getGatherAxis() == gather.getGatherAxis() &&
             earlier.getType() == gather.getType();
    });
    if (same == first.end()) {
      first.push_back(gather);
      continue;
    }
    gather.replaceAllUsesWith(same->getResult());
    gather.erase();
  }
}

} // namespace mlir::moe
