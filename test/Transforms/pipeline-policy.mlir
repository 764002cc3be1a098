// The compiler pipeline's policy lives in its passes' options:
// moe-shard and moe-partition with if-meshed leave a module without moe.mesh
// (one rank) or one already partitioned as it is; moe-build-train-step with
// if-loss leaves a model without a scalar loss as it is. Without the options
// the same inputs are errors (shard-errors via assign-mesh-errors.mlir,
// build-train-step-errors.mlir).
// RUN: moe-opt %s --moe-shard=if-meshed --moe-partition=if-meshed --moe-build-train-step=if-loss | FileCheck %s
// RUN: not moe-opt %s --moe-shard 2>&1 | FileCheck %s --check-prefix=NOMESH
// RUN: not moe-opt %s --moe-build-train-step 2>&1 | FileCheck %s --check-prefix=NOLOSS

// A partitioned module is not partitioned again, and a model with a loss
// still gets its training step under if-loss.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,ep=2" --moe-shard --moe-partition -o %t.part.mlir
// RUN: moe-opt %t.part.mlir --moe-shard=if-meshed --moe-partition=if-meshed -o %t.again.mlir
// RUN: diff %t.part.mlir %t.again.mlir
// RUN: moe-opt %t.part.mlir --moe-lower-experts --moe-build-train-step=if-loss | FileCheck %s --check-prefix=TRAIN

// CHECK-NOT: shard.
// CHECK-NOT: train_step
// CHECK: func.func @forward(%{{.*}}: tensor<2x4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT: moe.param "norm.weight" : tensor<4xf32>
// CHECK-NEXT: moe.rms_norm
// CHECK-NEXT: return
// CHECK-NOT: train_step

// NOMESH: the module has no moe.mesh
// NOLOSS: returns no scalar loss to train on

// TRAIN: func.func @train_step

func.func @forward(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  %w = moe.param "norm.weight" : tensor<4xf32>
  %y = moe.rms_norm %x, %w {eps = 1.000000e-06} : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
  return %y : tensor<2x4xf32>
}
