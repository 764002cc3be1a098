// RUN: moe-opt %s --moe-expand-capacity -split-input-file | FileCheck %s

// capacity_factor 1.25 with T = 8 tokens, top-2, 4 experts:
// C = ceil(1.25 * 8 * 2 / 4) = 5. The drop reads the router's indices; the
// experts become dropless on the kept indices; the router weights are
// unchanged.
// CHECK-LABEL: func.func @capped(
// CHECK-SAME: %[[X:[^:]*]]: tensor<2x4x8xf32>, %[[W:[^:]*]]: tensor<2x4x2xf32>, %[[I:[^:]*]]: tensor<2x4x2xi32>)
// CHECK: %[[KEPT:.*]] = moe.drop_over_capacity %[[I]] experts 4 capacity 5 : (tensor<2x4x2xi32>) -> tensor<2x4x2xi32>
// CHECK: moe.experts %[[X]], %[[W]], %[[KEPT]], %{{.*}}, %{{.*}}, %{{.*}} : (
// CHECK-NOT: capacity_factor
func.func @capped(%x: tensor<2x4x8xf32>, %w: tensor<2x4x2xf32>, %i: tensor<2x4x2xi32>) -> tensor<2x4x8xf32> {
  %g = moe.param "g" : tensor<4x16x8xf32>
  %u = moe.param "u" : tensor<4x16x8xf32>
  %d = moe.param "d" : tensor<4x8x16xf32>
  %y = moe.experts %x, %w, %i, %g, %u, %d {capacity_factor = 1.25} : (tensor<2x4x8xf32>, tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<2x4x8xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

// A tiny factor still leaves each expert one slot; dropless experts are
// left alone.
// CHECK-LABEL: func.func @tiny_and_dropless(
// CHECK-SAME: %[[X:[^:]*]]: tensor<4x8xf32>, %[[W:[^:]*]]: tensor<4x2xf32>, %[[I:[^:]*]]: tensor<4x2xi32>)
// CHECK: %[[KEPT:.*]] = moe.drop_over_capacity %[[I]] experts 4 capacity 1
// CHECK: %[[Y:.*]] = moe.experts %[[X]], %[[W]], %[[KEPT]],
// CHECK-NOT: moe.drop_over_capacity
// CHECK: moe.experts %[[Y]], %[[W]], %[[I]],
func.func @tiny_and_dropless(%x: tensor<4x8xf32>, %w: tensor<4x2xf32>, %i: tensor<4x2xi32>) -> tensor<4x8xf32> {
  %g = moe.param "g" : tensor<4x16x8xf32>
  %u = moe.param "u" : tensor<4x16x8xf32>
  %d = moe.param "d" : tensor<4x8x16xf32>
  %y = moe.experts %x, %w, %i, %g, %u, %d {capacity_factor = 0.01} : (tensor<4x8xf32>, tensor<4x2xf32>, tensor<4x2xi32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<4x8xf32>
  %z = moe.experts %y, %w, %i, %g, %u, %d : (tensor<4x8xf32>, tensor<4x2xf32>, tensor<4x2xi32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<4x8xf32>
  return %z : tensor<4x8xf32>
}
