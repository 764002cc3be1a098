// moe-partition's expert slots: with replica-slots=R every EP rank holds
// E/n + R slots of each MoE layer's experts (the weights' dim 0, marked with
// the layer's placement table), and the dispatch delivers n * S segments.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,ep=2" --moe-shard --moe-partition="replica-slots=1" | FileCheck %s
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=4,ep=4" --moe-shard --moe-partition="replica-slots=2" | FileCheck %s --check-prefix=EP4
// RUN: not moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,ep=2" --moe-shard --moe-partition="replica-slots=5" 2>&1 | FileCheck %s --check-prefix=TOOMANY
// RUN: not moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,ep=2" --moe-shard --moe-partition="replica-slots=-1" 2>&1 | FileCheck %s --check-prefix=NEGATIVE
// Without expert parallelism there is nothing to place.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=tp=2" --moe-shard --moe-partition="replica-slots=1" | FileCheck %s --check-prefix=NOEP

// ep=2, 8 experts, R=1: 4 + 1 = 5 slots per rank; 2 x 5 + 1 received
// offsets; room for 2 ranks x 32 tokens x min(top_k 2, 5 slots) rows.
// CHECK: moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" {moe.global_shape = array<i64: 8, 32, 64>, moe.placement = 0 : i64, moe.split = {{\[}}["ep"], [], []]} : tensor<5x32x64xf32>
// CHECK: moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" {{.*}}moe.placement = 0 : i64{{.*}} : tensor<5x32x64xf32>
// CHECK: moe.param "model.layers.0.mlp.experts.{e}.down_proj.weight" {{.*}}moe.placement = 0 : i64{{.*}} : tensor<5x64x32xf32>
// CHECK: %[[RECV:.*]], %[[ROFFS:.*]] = moe.dispatch %{{.*}}, %[[OFFS:.*]] on @expert_mesh grid_axes = [1] placement 0 : (tensor<64x64xf32>, tensor<9xi64>) -> (tensor<128x64xf32>, tensor<11xi64>)
// CHECK-NEXT: %[[Y:.*]] = moe.grouped_swiglu %[[RECV]], %[[ROFFS]], {{.*}} : (tensor<128x64xf32>, tensor<11xi64>, tensor<5x32x64xf32>, tensor<5x32x64xf32>, tensor<5x64x32xf32>) -> tensor<128x64xf32>
// CHECK-NEXT: moe.combine %[[Y]], %[[ROFFS]], %[[OFFS]] on @expert_mesh grid_axes = [1] placement 0 : (tensor<128x64xf32>, tensor<11xi64>, tensor<9xi64>) -> tensor<64x64xf32>
// The second MoE layer has its own table.
// CHECK: moe.param "model.layers.1.mlp.experts.{e}.gate_proj.weight" {{.*}}moe.placement = 1 : i64{{.*}} : tensor<5x32x64xf32>
// CHECK: moe.dispatch {{.*}} placement 1 : (tensor<64x64xf32>, tensor<9xi64>) -> (tensor<128x64xf32>, tensor<11xi64>)
// The router and the other weights are untouched.
// CHECK-NOT: moe.placement
// CHECK: return

// ep=4, R=2: 2 + 2 = 4 slots per rank, 4 x 4 + 1 offsets; a rank gets a
// token at most min(top_k 2, 4) times from each of 4 sources of 16 tokens.
// EP4: moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" {{.*}} : tensor<4x32x64xf32>
// EP4: moe.dispatch {{.*}} placement 0 : (tensor<32x64xf32>, tensor<9xi64>) -> (tensor<128x64xf32>, tensor<17xi64>)

// TOOMANY: error: 'moe.param' op cannot have 9 expert slots per rank (replica-slots 5): the layer has 8 experts
// NEGATIVE: error: 'func.func' op replica-slots is -1, expected 0 or more

// NOEP: moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" {{.*}} : tensor<8x32x64xf32>
// NOEP-NOT: moe.placement
// NOEP-NOT: moe.dispatch
