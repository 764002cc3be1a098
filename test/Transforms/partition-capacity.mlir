// Capacity-factor experts on a mesh: the drop runs on the whole batch's
// indices (gathered over the data-parallel axes), every rank slices its own
// tokens back out, and the expert-parallel receive buffer is bounded by the
// local experts' capacity instead of the dropless worst case.
// RUN: moe-opt %s --moe-assign-mesh="mesh=dp=2,ep=2" --moe-expand-capacity --moe-shard --moe-partition | FileCheck %s --check-prefix=EP
// RUN: moe-opt %s --moe-assign-mesh="mesh=dp=2,cp=2,ep=4" --moe-expand-capacity --moe-shard --moe-partition | FileCheck %s --check-prefix=DCE

// T = 16 tokens, top-2, 4 experts, factor 1.25: C = ceil(1.25 * 32 / 4) = 10.
// EP-LABEL: func.func @forward(
// EP: %[[ALL:.*]] = shard.all_gather %arg2 on @mesh grid_axes = [0] gather_axis = 0 : tensor<2x4x2xi32> -> tensor<4x4x2xi32>
// EP: %[[KEPT:.*]] = moe.drop_over_capacity %[[ALL]] experts 4 capacity 10 : (tensor<4x4x2xi32>) -> tensor<4x4x2xi32>
// EP: %[[MINE:.*]] = shard.all_slice %[[KEPT]] on @mesh grid_axes = [0] slice_axis = 0 : tensor<4x4x2xi32> -> tensor<2x4x2xi32>
// EP: moe.permute %arg0, %[[MINE]] experts 4
// A rank's 2 local experts receive at most 2 * 10 rows (dropless: 2 * 16).
// EP: moe.dispatch {{.*}} -> (tensor<20x8xf32>, tensor<5xi64>)
// EP: moe.grouped_swiglu {{.*}} -> tensor<20x8xf32>

// dp=2 x cp=2: the batch and the sequence are gathered for the drop (token
// order is batch-major), then sliced back.
// DCE-LABEL: func.func @forward(
// DCE: shard.all_gather %arg2 on @mesh grid_axes = [0] gather_axis = 0
// DCE: shard.all_gather {{.*}} on @mesh grid_axes = [1] gather_axis = 1 {{.*}} -> tensor<4x4x2xi32>
// DCE: moe.drop_over_capacity {{.*}} experts 4 capacity 10 : (tensor<4x4x2xi32>) -> tensor<4x4x2xi32>
// DCE: shard.all_slice
// DCE: shard.all_slice {{.*}} -> tensor<2x2x2xi32>
// One local expert per rank: at most 10 rows.
// DCE: moe.dispatch {{.*}} -> (tensor<10x8xf32>, tensor<5xi64>)
func.func @forward(%x: tensor<4x4x8xf32>, %w: tensor<4x4x2xf32>, %i: tensor<4x4x2xi32>) -> tensor<4x4x8xf32> {
  %g = moe.param "g" : tensor<4x16x8xf32>
  %u = moe.param "u" : tensor<4x16x8xf32>
  %d = moe.param "d" : tensor<4x8x16xf32>
  %y = moe.experts %x, %w, %i, %g, %u, %d {capacity_factor = 1.25} : (tensor<4x4x8xf32>, tensor<4x4x2xf32>, tensor<4x4x2xi32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<4x4x8xf32>
  return %y : tensor<4x4x8xf32>
}
