// Every diagnostic of moe-lower-to-runtime.
// RUN: moe-opt %s --moe-lower-to-runtime -split-input-file -verify-diagnostics
// An unknown storage type is an error on the module, before any lowering.
// RUN: not moe-opt %s --moe-lower-to-runtime="storage=fp8" -split-input-file 2>&1 | FileCheck %s --check-prefix=STORAGE
// STORAGE: error: unknown storage 'fp8' (expected f32 or bf16)

func.func @capacity(%x: tensor<4x8xf32>, %w: tensor<4x2xf32>, %i: tensor<4x2xi32>) -> tensor<4x8xf32> {
  %g = moe.param "g" : tensor<4x16x8xf32>
  %u = moe.param "u" : tensor<4x16x8xf32>
  %d = moe.param "d" : tensor<4x8x16xf32>
  // expected-error @+1 {{has a capacity_factor: run moe-expand-capacity and moe-lower-experts before moe-lower-to-runtime}}
  %y = moe.experts %x, %w, %i, %g, %u, %d {capacity_factor = 1.25} : (tensor<4x8xf32>, tensor<4x2xf32>, tensor<4x2xi32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// expected-error @+1 {{the runtime computes in f32 with i32 ids, but got 'tensor<2x4xi64>'}}
func.func @wide_ids(%tokens: tensor<2x4xi64>) -> tensor<2x4x8xf32> {
  %e = moe.param "e" : tensor<16x8xf32>
  %h = moe.embedding %tokens, %e : (tensor<2x4xi64>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
  return %h : tensor<2x4x8xf32>
}

// -----

func.func @half(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{the runtime computes in f32 with i32 ids, but got 'tensor<8xf16>'}}
  %w = moe.param "w" : tensor<8xf16>
  return %x : tensor<2x8xf32>
}

// -----

func.func @unknown(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{'arith.addf' op has no lowering to runtime calls (moe-lower-to-runtime)}}
  %y = arith.addf %x, %x : tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @two_conventions(%logits: tensor<4x8xf32>, %labels: tensor<4xi32>) -> tensor<f32> {
  %a = moe.cross_entropy %logits, %labels : (tensor<4x8xf32>, tensor<4xi32>) -> tensor<f32>
  // expected-error @+1 {{uses ignore_index -1 but an earlier cross_entropy uses -100}}
  %b = moe.cross_entropy %logits, %labels {ignore_index = -1} : (tensor<4x8xf32>, tensor<4xi32>) -> tensor<f32>
  %l = moe.add %a, %b : tensor<f32>
  return %l : tensor<f32>
}

// -----

func.func private @moe_entry_taken()
// expected-error @+1 {{cannot create the entry point 'moe_entry_taken': the symbol exists}}
func.func @taken(%x: tensor<2xf32>) -> tensor<2xf32> {
  return %x : tensor<2xf32>
}

// -----

// A buffer past 2^63 bytes (2^62 elements of 4 bytes) is an error at the
// value, not a wrapped size.
// expected-error @+1 {{the buffer of 'tensor<4611686018427387904xf32>' would hold more than 2^63 bytes}}
func.func @huge_input(%x: tensor<4611686018427387904xf32>) -> tensor<4611686018427387904xf32> {
  return %x : tensor<4611686018427387904xf32>
}

// -----

// Weights that fit one by one but not together in a 2^63-byte blob.
func.func @huge_weights(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %a = moe.param "a" : tensor<1152921504606846976xf32>
  // expected-error @+1 {{ends past 2^63 bytes of weights: the weights blob cannot be laid out}}
  %b = moe.param "b" : tensor<1152921504606846976xf32>
  return %x : tensor<2x8xf32>
}
