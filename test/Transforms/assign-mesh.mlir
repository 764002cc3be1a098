// moe-assign-mesh records the mesh and materialises the dense and expert grids.
// RUN: moe-opt %s --moe-assign-mesh="mesh=ep=4,dp=4 world-size=4" | FileCheck %s --check-prefix=EP4
// RUN: moe-opt %s --moe-assign-mesh="mesh=dp=2,cp=2,tp=2,ep=2" | FileCheck %s --check-prefix=ALL
// RUN: moe-opt %s --moe-assign-mesh="mesh=tp=2" | FileCheck %s --check-prefix=TP2
// RUN: moe-opt %s --moe-assign-mesh | FileCheck %s --check-prefix=ONE
// Running it again replaces the earlier mesh and grids.
// RUN: moe-opt %s --moe-assign-mesh="mesh=dp=4" --moe-assign-mesh="mesh=dp=2,ep=2" | FileCheck %s --check-prefix=AGAIN

// EP4: module attributes {moe.mesh = #moe.mesh<dp = 4, ep = 4>}
// EP4-NEXT: shard.grid @mesh(shape = 4x1x1)
// EP4-NEXT: shard.grid @expert_mesh(shape = 1x4x1)

// ALL: module attributes {moe.mesh = #moe.mesh<dp = 2, cp = 2, tp = 2, ep = 2>}
// ALL-NEXT: shard.grid @mesh(shape = 2x2x2)
// ALL-NEXT: shard.grid @expert_mesh(shape = 2x2x2)

// TP2: module attributes {moe.mesh = #moe.mesh<tp = 2>}
// TP2-NEXT: shard.grid @mesh(shape = 1x1x2)
// TP2-NEXT: shard.grid @expert_mesh(shape = 1x1x2)

// ONE: module attributes {moe.mesh = #moe.mesh<>}
// ONE-NEXT: shard.grid @mesh(shape = 1x1x1)
// ONE-NEXT: shard.grid @expert_mesh(shape = 1x1x1)

// AGAIN: module attributes {moe.mesh = #moe.mesh<dp = 2, ep = 2>}
// AGAIN-NEXT: shard.grid @mesh(shape = 2x1x1)
// AGAIN-NEXT: shard.grid @expert_mesh(shape = 1x2x1)
// AGAIN-NOT: shard.grid

// The model itself is untouched.
// EP4: func.func @forward
// EP4: moe.experts
module {
  func.func @forward(%t: tensor<4x8xi32>, %emb: tensor<16x8xf32>, %g: tensor<8x8xf32>,
                     %eg: tensor<8x4x8xf32>, %ed: tensor<8x8x4xf32>) -> tensor<4x8x8xf32> {
    %x = moe.embedding %t, %emb : (tensor<4x8xi32>, tensor<16x8xf32>) -> tensor<4x8x8xf32>
    %w, %i, %l = moe.router %x, %g softmax top 2 {norm_topk_prob} : (tensor<4x8x8xf32>, tensor<8x8xf32>) -> (tensor<4x8x2xf32>, tensor<4x8x2xi32>, tensor<4x8x8xf32>)
    %y = moe.experts %x, %w, %i, %eg, %eg, %ed : (tensor<4x8x8xf32>, tensor<4x8x2xf32>, tensor<4x8x2xi32>, tensor<8x4x8xf32>, tensor<8x4x8xf32>, tensor<8x8x4xf32>) -> tensor<4x8x8xf32>
    return %y : tensor<4x8x8xf32>
  }
}
