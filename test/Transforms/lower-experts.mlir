// moe-lower-experts: dropless experts become permute -> grouped SwiGLU ->
// unpermute; capacity-factor experts stay. moe-lower-to-runtime refuses an
// unexpanded moe.experts.
// RUN: moe-opt %s --moe-lower-experts | FileCheck %s
// RUN: not moe-opt %s --moe-lower-to-runtime 2>&1 | FileCheck %s --check-prefix=UNEXPANDED

// CHECK-LABEL: func.func @dropless(
// CHECK-SAME: %[[X:.*]]: tensor<2x4x8xf32>, %[[W:.*]]: tensor<2x4x2xf32>, %[[I:.*]]: tensor<2x4x2xi32>, %[[G:.*]]: tensor<4x16x8xf32>, %[[U:.*]]: tensor<4x16x8xf32>, %[[D:.*]]: tensor<4x8x16xf32>)
// CHECK: %[[ROWS:.*]], %[[OFF:.*]], %[[SLOTS:.*]] = moe.permute %[[X]], %[[I]] experts 4 : (tensor<2x4x8xf32>, tensor<2x4x2xi32>) -> (tensor<16x8xf32>, tensor<5xi64>, tensor<16xi32>)
// CHECK: %[[Y:.*]] = moe.grouped_swiglu %[[ROWS]], %[[OFF]], %[[G]], %[[U]], %[[D]]
// CHECK: %[[OUT:.*]] = moe.unpermute %[[Y]], %[[SLOTS]], %[[W]] : (tensor<16x8xf32>, tensor<16xi32>, tensor<2x4x2xf32>) -> tensor<2x4x8xf32>
// CHECK: return %[[OUT]]
// UNEXPANDED: error: 'moe.experts' op must be expanded by moe-lower-experts before moe-lower-to-runtime
func.func @dropless(%x: tensor<2x4x8xf32>, %w: tensor<2x4x2xf32>, %i: tensor<2x4x2xi32>, %g: tensor<4x16x8xf32>, %u: tensor<4x16x8xf32>, %d: tensor<4x8x16xf32>) -> tensor<2x4x8xf32> {
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<2x4x8xf32>, tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<2x4x8xf32>
  return %y : tensor<2x4x8xf32>
}

// CHECK-LABEL: func.func @capacity(
// CHECK: moe.experts {{.*}} {capacity_factor = 1.250000e+00 : f64}
// CHECK-NOT: moe.permute
func.func @capacity(%x: tensor<2x4x8xf32>, %w: tensor<2x4x2xf32>, %i: tensor<2x4x2xi32>, %g: tensor<4x16x8xf32>, %u: tensor<4x16x8xf32>, %d: tensor<4x8x16xf32>) -> tensor<2x4x8xf32> {
  %y = moe.experts %x, %w, %i, %g, %u, %d {capacity_factor = 1.25} : (tensor<2x4x8xf32>, tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<2x4x8xf32>
  return %y : tensor<2x4x8xf32>
}
