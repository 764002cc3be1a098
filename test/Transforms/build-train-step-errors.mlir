// What moe-build-train-step refuses, each with one diagnostic.
// RUN: moe-opt %s -split-input-file --moe-build-train-step -verify-diagnostics

// expected-error @+1 {{returns no scalar loss to train on}}
func.func @forward(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  return %x : tensor<2x4xf32>
}

// -----

// expected-error @+1 {{returns more than one scalar loss; the training step needs exactly one}}
func.func @forward(%x: tensor<2x3xf32>, %l: tensor<2xi32>) -> (tensor<f32>, tensor<f32>) {
  %a = moe.cross_entropy %x, %l : (tensor<2x3xf32>, tensor<2xi32>) -> tensor<f32>
  %b = moe.z_loss %x {coefficient = 0.1 : f64} : (tensor<2x3xf32>) -> tensor<f32>
  return %a, %b : tensor<f32>, tensor<f32>
}

// -----

// expected-error @+1 {{moe-build-train-step: no model function @forward}}
module {
  func.func @other() {
    return
  }
}
