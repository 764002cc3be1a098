//===- StepWork.h - Count the work of one rank's program --------*- C++ -*-===//
//
// The compiler's side of the cost model (moe/Support/CostModel.h): walks a
// function of the per-rank program (after moe-partition, and after
// moe-build-train-step for the training step) and counts, op by op, the
// arithmetic and the bytes each runtime op will read and write, every
// collective with its group on the mesh, and the parameters the optimizer
// updates on this rank.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TRANSFORMS_STEPWORK_H
#define MOE_TRANSFORMS_STEPWORK_H

#include "moe/Support/CostModel.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LogicalResult.h"

namespace mlir::moe {

/// The work of function `entry` of `module`, its floating-point tensors
/// stored as bf16 when `bf16` (moe-lower-to-runtime's storage). Expert
/// compute counts the rows routing sends under a uniform load (what each
/// rank dispatches), not the bound of the receive buffers. The optimizer
/// elements are those of every `moe.param` the function reads, sliced
/// over their data-parallel replicas under the module's ZeRO stage 1; the
/// driver's gather of the updated slices is counted as an all-gather.
/// A diagnostic on the module when `entry` does not exist.
FailureOr<::moe::StepWork> countStepWork(ModuleOp module, StringRef entry,
                                         bool bf16);

} // namespace mlir::moe

#endif // MOE_TRANSFORMS_STEPWORK_H
