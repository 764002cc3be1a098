// The moe folds and canonicalization patterns.
// RUN: moe-opt %s -canonicalize -split-input-file | FileCheck %s

// Adding zero is the identity, whichever side the zero is on.
// CHECK-LABEL: func.func @add_zero
// CHECK-SAME: (%[[X:.+]]: tensor<2x4xf32>)
// CHECK-NOT: moe.add
// CHECK: return %[[X]], %[[X]]
func.func @add_zero(%x: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>) {
  %zero = arith.constant dense<0.0> : tensor<2x4xf32>
  %a = moe.add %x, %zero : tensor<2x4xf32>
  %b = moe.add %zero, %x : tensor<2x4xf32>
  return %a, %b : tensor<2x4xf32>, tensor<2x4xf32>
}

// -----

// CHECK-LABEL: func.func @add_nonzero
// CHECK: %[[R:.+]] = moe.add
// CHECK: return %[[R]]
func.func @add_nonzero(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  %one = arith.constant dense<1.0> : tensor<2x4xf32>
  %a = moe.add %x, %one : tensor<2x4xf32>
  return %a : tensor<2x4xf32>
}

// -----

// A loss with coefficient 0 folds away, and so does adding it.
// CHECK-LABEL: func.func @zero_coefficient_losses
// CHECK-NOT: moe.aux_loss
// CHECK-NOT: moe.z_loss
// CHECK: %[[CE:.+]] = moe.cross_entropy
// CHECK-NOT: moe.add
// CHECK: return %[[CE]]
func.func @zero_coefficient_losses(%logits: tensor<4x16xf32>, %labels: tensor<4xi32>,
                                   %rl: tensor<4x8xf32>, %ri: tensor<4x2xi32>) -> tensor<f32> {
  %ce = moe.cross_entropy %logits, %labels : (tensor<4x16xf32>, tensor<4xi32>) -> tensor<f32>
  %aux = moe.aux_loss %rl, %ri softmax {coefficient = 0.0 : f64} : (tensor<4x8xf32>, tensor<4x2xi32>) -> tensor<f32>
  %z = moe.z_loss %rl {coefficient = 0.0 : f64} : (tensor<4x8xf32>) -> tensor<f32>
  %s = moe.add %ce, %aux : tensor<f32>
  %t = moe.add %s, %z : tensor<f32>
  return %t : tensor<f32>
}

// -----

// A zero-coefficient loss that is returned becomes a constant zero.
// CHECK-LABEL: func.func @zero_loss_constant
// CHECK: %[[C:.+]] = arith.constant dense<0.000000e+00> : tensor<f32>
// CHECK: return %[[C]]
func.func @zero_loss_constant(%rl: tensor<4x8xf32>) -> tensor<f32> {
  %z = moe.z_loss %rl {coefficient = 0.0 : f64} : (tensor<4x8xf32>) -> tensor<f32>
  return %z : tensor<f32>
}

// -----

// CHECK-LABEL: func.func @nonzero_losses_stay
// CHECK: moe.aux_loss
// CHECK: moe.z_loss
func.func @nonzero_losses_stay(%rl: tensor<4x8xf32>, %ri: tensor<4x2xi32>) -> (tensor<f32>, tensor<f32>) {
  %aux = moe.aux_loss %rl, %ri softmax {coefficient = 1.0e-3 : f64} : (tensor<4x8xf32>, tensor<4x2xi32>) -> tensor<f32>
  %z = moe.z_loss %rl {coefficient = 1.0e-3 : f64} : (tensor<4x8xf32>) -> tensor<f32>
  return %aux, %z : tensor<f32>, tensor<f32>
}

// -----

// Group-limited routing that keeps every group is plain top-k routing; one
// that keeps fewer groups is left alone.
// CHECK-LABEL: func.func @trivial_groups
// CHECK: moe.router %{{.+}}, %{{[^ ]+}} sigmoid top 2 {norm_topk_prob} :
// CHECK: moe.router %{{.+}}, %{{[^ ]+}} sigmoid top 2 {n_group = 4 : i64, norm_topk_prob, topk_group = 2 : i64} :
func.func @trivial_groups(%x: tensor<4x8xf32>, %g: tensor<8x8xf32>) -> (tensor<4x2xi32>, tensor<4x2xi32>) {
  %w, %i, %l = moe.router %x, %g sigmoid top 2 {norm_topk_prob, n_group = 4, topk_group = 4} : (tensor<4x8xf32>, tensor<8x8xf32>) -> (tensor<4x2xf32>, tensor<4x2xi32>, tensor<4x8xf32>)
  %w2, %i2, %l2 = moe.router %x, %g sigmoid top 2 {norm_topk_prob, n_group = 4, topk_group = 2} : (tensor<4x8xf32>, tensor<8x8xf32>) -> (tensor<4x2xf32>, tensor<4x2xi32>, tensor<4x8xf32>)
  return %i, %i2 : tensor<4x2xi32>, tensor<4x2xi32>
}
