// moe-build-train-step's `zero`: stage 1 records moe.zero_stage on the
// module, which the manifest carries to the executable's optimizer; the
// training step itself is unchanged (the gradients are still all-reduced
// over dp, the optimizer splits only its own state). Without it nothing is
// recorded.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=4,ep=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step="zero=1" | FileCheck %s --check-prefix=ZERO
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=4,ep=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=PLAIN
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-pipeline="mesh=dp=2,tp=2 zero=1" | FileCheck %s --check-prefix=MANIFEST
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-pipeline="mesh=dp=2,tp=2" | FileCheck %s --check-prefix=NOMANIFEST

// ZERO: module attributes {
// ZERO-SAME: moe.zero_stage = 1 : i64
// ZERO: func.func @train_step
// ZERO: %[[SUM:.*]] = shard.all_reduce %{{.*}} on @mesh grid_axes = [0] : tensor<128x64xf32>
// ZERO-NEXT: moe.param_grad "lm_head.weight", %[[SUM]]
// PLAIN-NOT: moe.zero_stage

// MANIFEST: \22zero_stage\22:1
// NOMANIFEST-NOT: zero_stage

// A mesh without data parallelism has no replicas to split the state over,
// and there is no stage 4: one diagnostic each.
// RUN: not moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=tp=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step="zero=1" 2>&1 | FileCheck %s --check-prefix=NODP
// RUN: not moe-opt %models/qwen3_moe_tiny.mlir --moe-lower-experts --moe-build-train-step="zero=1" 2>&1 | FileCheck %s --check-prefix=NODP
// RUN: not moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step="zero=4" 2>&1 | FileCheck %s --check-prefix=STAGE
// NODP: error: moe-build-train-step: ZeRO stage 1 splits the optimizer state over the data-parallel axes, but the mesh has dp = 1 and cp = 1
// NODP-NOT: see current operation
// STAGE: error: moe-build-train-step: ZeRO stage 4 does not exist; the stages are 1 (optimizer state split over the data-parallel replicas), 2 and 3 (gradients and weights too, moe-shard-weights)
