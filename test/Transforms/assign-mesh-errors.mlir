// A bad --mesh, or a mesh the model cannot be sharded over, is one diagnostic
// and a failing exit, never a crash.
// RUN: not moe-opt %s --moe-assign-mesh="mesh=dp=2,xp=2" 2>&1 | FileCheck %s --check-prefixes=AXIS,CHECK
// RUN: not moe-opt %s --moe-assign-mesh="mesh=dp=two" 2>&1 | FileCheck %s --check-prefixes=SIZE,CHECK
// RUN: not moe-opt %s --moe-assign-mesh="mesh=dp=2,ep=4" 2>&1 | FileCheck %s --check-prefixes=BORROW,CHECK
// RUN: not moe-opt %s --moe-assign-mesh="mesh=dp=2,ep=2 world-size=8" 2>&1 | FileCheck %s --check-prefixes=WORLD,CHECK
// RUN: not moe-opt %s --moe-assign-mesh="mesh=dp=4,ep=4" 2>&1 | FileCheck %s --check-prefixes=EXPERTS,CHECK
// RUN: not moe-opt %s --moe-assign-mesh="mesh=dp=8" 2>&1 | FileCheck %s --check-prefixes=BATCH,CHECK
// RUN: not moe-opt %s --moe-assign-mesh="mesh=dp=2,sp" 2>&1 | FileCheck %s --check-prefixes=SPTP,CHECK
// RUN: not moe-opt %s --moe-assign-mesh="mesh=tp=16,sp" 2>&1 | FileCheck %s --check-prefixes=SPSEQ,CHECK

// AXIS: error: invalid mesh: unknown mesh axis 'xp' (expected dp, cp, tp, ep or etp)
// SIZE: error: invalid mesh: mesh axis 'dp' has size 'two', which is not an integer
// BORROW: error: invalid mesh: mesh ep=4 must divide dp*cp=2 (expert parallelism borrows its ranks from dp and cp)
// WORLD: error: invalid mesh: mesh dp=2,cp=1,tp=1,ep=2 spans dp*cp*tp=2 ranks, but the world has 8
// EXPERTS: assign-mesh-errors.mlir:[[@LINE+10]]:10: error: cannot shard over the mesh: the number of experts (6) is not divisible by ep = 4
// BATCH: assign-mesh-errors.mlir:[[@LINE+7]]:10: error: cannot shard over the mesh: the batch size (4) is not divisible by dp = 8
// SPTP: error: invalid mesh: mesh entry 'sp' (sequence parallelism) needs tp > 1
// SPSEQ: assign-mesh-errors.mlir:[[@LINE+5]]:10: error: cannot shard over the mesh: the sequence length (8) is not divisible by cp * tp (sequence parallel) = 16
// CHECK-NOT: see current operation
module {
  func.func @forward(%t: tensor<4x8xi32>, %emb: tensor<16x8xf32>, %g: tensor<6x8xf32>,
                     %eg: tensor<6x4x8xf32>, %ed: tensor<6x8x4xf32>) -> tensor<4x8x8xf32> {
    %x = moe.embedding %t, %emb : (tensor<4x8xi32>, tensor<16x8xf32>) -> tensor<4x8x8xf32>
    %w, %i, %l = moe.router %x, %g softmax top 2 {norm_topk_prob} : (tensor<4x8x8xf32>, tensor<6x8xf32>) -> (tensor<4x8x2xf32>, tensor<4x8x2xi32>, tensor<4x8x6xf32>)
    %y = moe.experts %x, %w, %i, %eg, %eg, %ed : (tensor<4x8x8xf32>, tensor<4x8x2xf32>, tensor<4x8x2xi32>, tensor<6x4x8xf32>, tensor<6x4x8xf32>, tensor<6x8x4xf32>) -> tensor<4x8x8xf32>
    return %y : tensor<4x8x8xf32>
  }
}
