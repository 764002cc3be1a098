// RUN: moe-opt --moe-build-decode --split-input-file --verify-diagnostics %s

// A model that attends to later tokens cannot generate one at a time.
func.func @forward(%tokens: tensor<2x8xi32>, %labels: tensor<2x8xi32>) -> tensor<2x8x8xf32> {
  %table = moe.param "embed" : tensor<16x8xf32>
  %x = moe.embedding %tokens, %table : (tensor<2x8xi32>, tensor<16x8xf32>) -> tensor<2x8x8xf32>
  %q = tensor.expand_shape %x [[0], [1], [2, 3]] output_shape [2, 8, 2, 4] : tensor<2x8x8xf32> into tensor<2x8x2x4xf32>
  // expected-error @+1 {{is not causal: a model that attends to later tokens cannot generate one token at a time}}
  %a = moe.attention %q, %q, %q : (tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> tensor<2x8x2x4xf32>
  %y = tensor.collapse_shape %a [[0], [1], [2, 3]] : tensor<2x8x2x4xf32> into tensor<2x8x8xf32>
  return %y : tensor<2x8x8xf32>
}

// -----

// The logits may not read the labels, which decoding does not have.
func.func @forward(%tokens: tensor<2x8xi32>, %labels: tensor<2x8xi32>) -> tensor<2x8x8xf32> {
  %table = moe.param "embed" : tensor<16x8xf32>
  // expected-error @+1 {{is needed for the logits but reads}}
  %x = moe.embedding %labels, %table : (tensor<2x8xi32>, tensor<16x8xf32>) -> tensor<2x8x8xf32>
  return %x : tensor<2x8x8xf32>
}

// -----

// expected-error @+1 {{moe-build-decode: the module has a @decode already}}
module {
  func.func @forward(%tokens: tensor<2x8xi32>) -> tensor<2x8x16xf32> {
    %table = moe.param "embed" : tensor<16x16xf32>
    %x = moe.embedding %tokens, %table : (tensor<2x8xi32>, tensor<16x16xf32>) -> tensor<2x8x16xf32>
    return %x : tensor<2x8x16xf32>
  }
  func.func @decode() {
    return
  }
}

// -----

// Not the (tokens, ...) -> (logits, ...) convention: left alone.
// expected-warning @+1 {{moe-build-decode: not (tokens [B, S] i32, ...) -> (logits [B, S, V], ...); no @decode is built}}
func.func @forward(%x: tensor<2x8x16xf32>) -> tensor<2x8x16xf32> {
  return %x : tensor<2x8x16xf32>
}
