// Every error the moe op verifiers can emit, one case each.
// RUN: moe-opt %s -split-input-file -verify-diagnostics

func.func @f() -> tensor<4xf32> {
  // expected-error @+1 {{expects a non-empty parameter name}}
  %w = moe.param "" : tensor<4xf32>
  return %w : tensor<4xf32>
}

// -----

func.func @f() -> tensor<2x4xf32> {
  // expected-error @+1 {{expects at most one '{e}' placeholder in 'a.{e}.{e}', but got 2}}
  %w = moe.param "a.{e}.{e}" : tensor<2x4xf32>
  return %w : tensor<2x4xf32>
}

// -----

func.func @f() -> tensor<4xf32> {
  // expected-error @+1 {{expects the stacked-experts parameter 'a.{e}.w' to have rank >= 2 ([experts, ...]), but got rank 1}}
  %w = moe.param "a.{e}.w" : tensor<4xf32>
  return %w : tensor<4xf32>
}

// -----

func.func @f() -> tensor<4xf32> {
  // expected-note @+1 {{first declared here}}
  %a = moe.param "w" : tensor<4xf32>
  // expected-error @+1 {{redeclares parameter 'w'}}
  %b = moe.param "w" : tensor<4xf32>
  return %b : tensor<4xf32>
}

// -----

func.func @f() -> tensor<?xf32> {
  // expected-error @+1 {{result #0 must be statically shaped tensor of floating-point values, but got 'tensor<?xf32>'}}
  %w = moe.param "w" : tensor<?xf32>
  return %w : tensor<?xf32>
}

// -----

func.func @f(%t: tensor<2x4xi32>, %e: tensor<16x8x2xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{expects table of rank 2 ([vocab, hidden]), but got rank 3}}
  %x = moe.embedding %t, %e : (tensor<2x4xi32>, tensor<16x8x2xf32>) -> tensor<2x4x8xf32>
  return %x : tensor<2x4x8xf32>
}

// -----

func.func @f(%t: tensor<2x4xi32>, %e: tensor<16x8xf32>) -> tensor<2x4x9xf32> {
  // expected-error @+1 {{expects result of shape [2, 4, 8] (the tokens' shape followed by the hidden size), but got [2, 4, 9]}}
  %x = moe.embedding %t, %e : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<2x4x9xf32>
  return %x : tensor<2x4x9xf32>
}

// -----

func.func @f(%t: tensor<2x4xi32>, %e: tensor<16x8xf32>) -> tensor<2x4x8xbf16> {
  // expected-error @+1 {{expects the result element type to equal the table's 'f32', but got 'bf16'}}
  %x = moe.embedding %t, %e : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<2x4x8xbf16>
  return %x : tensor<2x4x8xbf16>
}

// -----

func.func @f(%t: tensor<2x4xf32>, %e: tensor<16x8xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{operand #0 must be statically shaped tensor of signless integer values, but got 'tensor<2x4xf32>'}}
  %x = moe.embedding %t, %e : (tensor<2x4xf32>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
  return %x : tensor<2x4x8xf32>
}

// -----

func.func @f(%x: tensor<f32>, %w: tensor<1xf32>) -> tensor<f32> {
  // expected-error @+1 {{expects input of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.rms_norm %x, %w : (tensor<f32>, tensor<1xf32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %w: tensor<4xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{expects weight of shape [8] (the last dimension of input), but got [4]}}
  %y = moe.rms_norm %x, %w : (tensor<2x8xf32>, tensor<4xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{expects eps > 0, but got 0}}
  %y = moe.rms_norm %x, %w {eps = 0.0 : f64} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<8x2xf32> {
  // expected-error @+1 {{expects the result type to equal the input type 'tensor<2x8xf32>', but got 'tensor<8x2xf32>'}}
  %y = moe.rms_norm %x, %w : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<8x2xf32>
  return %y : tensor<8x2xf32>
}

// -----

func.func @f(%x: tensor<f32>, %w: tensor<4x1xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{expects input of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.linear %x, %w : (tensor<f32>, tensor<4x1xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %w: tensor<8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{expects weight of rank 2 ([out, in]), but got rank 1}}
  %y = moe.linear %x, %w : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %w: tensor<4x6xf32>) -> tensor<2x4xf32> {
  // expected-error @+1 {{expects the input's last dimension to equal the weight's in dimension 6, but got 8}}
  %y = moe.linear %x, %w : (tensor<2x8xf32>, tensor<4x6xf32>) -> tensor<2x4xf32>
  return %y : tensor<2x4xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %b: tensor<8xf32>) -> tensor<2x4xf32> {
  // expected-error @+1 {{expects bias of shape [4] (the weight's out dimension), but got [8]}}
  %y = moe.linear %x, %w bias %b : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<8xf32>) -> tensor<2x4xf32>
  return %y : tensor<2x4xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{expects result of shape [2, 4] (the input's leading dimensions followed by out), but got [2, 8]}}
  %y = moe.linear %x, %w : (tensor<2x8xf32>, tensor<4x8xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{expects input of rank 4 ([batch, seq, heads, head_dim]), but got rank 3}}
  %y = moe.rope %x : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

func.func @f(%x: tensor<2x4x2x7xf32>) -> tensor<2x4x2x7xf32> {
  // expected-error @+1 {{expects an even head_dim, but got 7}}
  %y = moe.rope %x : (tensor<2x4x2x7xf32>) -> tensor<2x4x2x7xf32>
  return %y : tensor<2x4x2x7xf32>
}

// -----

func.func @f(%x: tensor<2x4x2x8xf32>, %p: tensor<4xi32>) -> tensor<2x4x2x8xf32> {
  // expected-error @+1 {{expects positions of shape [2, 4] ([batch, seq] of input), but got [4]}}
  %y = moe.rope %x positions %p : (tensor<2x4x2x8xf32>, tensor<4xi32>) -> tensor<2x4x2x8xf32>
  return %y : tensor<2x4x2x8xf32>
}

// -----

func.func @f(%x: tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32> {
  // expected-error @+1 {{expects theta > 0, but got -1}}
  %y = moe.rope %x {theta = -1.0 : f64} : (tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32>
  return %y : tensor<2x4x2x8xf32>
}

// -----

func.func @f(%x: tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32> {
  // expected-error @+1 {{expects yarn_factor >= 1, but got 5.000000e-01}}
  %y = moe.rope %x {yarn_factor = 0.5 : f64} : (tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32>
  return %y : tensor<2x4x2x8xf32>
}

// -----

func.func @f(%x: tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32> {
  // expected-error @+1 {{expects 0 <= yarn_low <= yarn_high, but got 3.000000e+00 and 2.000000e+00}}
  %y = moe.rope %x {yarn_factor = 4.0 : f64, yarn_low = 3.0 : f64, yarn_high = 2.0 : f64} : (tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32>
  return %y : tensor<2x4x2x8xf32>
}

// -----

func.func @f(%x: tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32> {
  // expected-error @+1 {{expects yarn_scale > 0, but got 0}}
  %y = moe.rope %x {yarn_scale = 0.0 : f64} : (tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32>
  return %y : tensor<2x4x2x8xf32>
}

// -----

func.func @f(%x: tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf16> {
  // expected-error @+1 {{expects the result type to equal the input type 'tensor<2x4x2x8xf32>', but got 'tensor<2x4x2x8xf16>'}}
  %y = moe.rope %x : (tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf16>
  return %y : tensor<2x4x2x8xf16>
}

// -----

func.func @f(%q: tensor<2x4x8xf32>, %k: tensor<2x4x2x8xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{expects q of rank 4 ([batch, seq, heads, head_dim]), but got rank 3}}
  %y = moe.attention %q, %k, %k : (tensor<2x4x8xf32>, tensor<2x4x2x8xf32>, tensor<2x4x2x8xf32>) -> tensor<2x4x8xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x4x4x8xf32>, %k: tensor<2x4x8xf32>) -> tensor<2x4x4x8xf32> {
  // expected-error @+1 {{expects k of rank 4 ([batch, seq, kv_heads, head_dim]), but got rank 3}}
  %y = moe.attention %q, %k, %k : (tensor<2x4x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x4x8xf32>
  return %y : tensor<2x4x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x4x4x8xf32>, %k: tensor<2x5x2x8xf32>) -> tensor<2x4x4x8xf32> {
  // expected-error @+1 {{expects k of shape [2, 4, 2, 8] (batch, seq and head_dim of q), but got [2, 5, 2, 8]}}
  %y = moe.attention %q, %k, %k : (tensor<2x4x4x8xf32>, tensor<2x5x2x8xf32>, tensor<2x5x2x8xf32>) -> tensor<2x4x4x8xf32>
  return %y : tensor<2x4x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x4x4x8xf32>, %k: tensor<2x4x2x8xf32>, %v: tensor<2x4x1x8xf32>) -> tensor<2x4x4x8xf32> {
  // expected-error @+1 {{expects v of shape [2, 4, 2, 8] (batch, seq and kv_heads of k), but got [2, 4, 1, 8]}}
  %y = moe.attention %q, %k, %v : (tensor<2x4x4x8xf32>, tensor<2x4x2x8xf32>, tensor<2x4x1x8xf32>) -> tensor<2x4x4x8xf32>
  return %y : tensor<2x4x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x4x4x8xf32>, %k: tensor<2x4x3x8xf32>) -> tensor<2x4x4x8xf32> {
  // expected-error @+1 {{expects the number of query heads (4) to be a multiple of the number of key/value heads (3)}}
  %y = moe.attention %q, %k, %k : (tensor<2x4x4x8xf32>, tensor<2x4x3x8xf32>, tensor<2x4x3x8xf32>) -> tensor<2x4x4x8xf32>
  return %y : tensor<2x4x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x4x4x8xf32>, %k: tensor<2x4x2x8xf32>) -> tensor<2x4x4x8xf32> {
  // expected-error @+1 {{expects scale > 0, but got 0}}
  %y = moe.attention %q, %k, %k {scale = 0.0 : f64} : (tensor<2x4x4x8xf32>, tensor<2x4x2x8xf32>, tensor<2x4x2x8xf32>) -> tensor<2x4x4x8xf32>
  return %y : tensor<2x4x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x4x4x8xf32>, %k: tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32> {
  // expected-error @+1 {{expects the result of shape [2, 4, 4, 8] (the heads of q, the head size of v), but got [2, 4, 2, 8]}}
  %y = moe.attention %q, %k, %k : (tensor<2x4x4x8xf32>, tensor<2x4x2x8xf32>, tensor<2x4x2x8xf32>) -> tensor<2x4x2x8xf32>
  return %y : tensor<2x4x2x8xf32>
}

// -----

func.func @f(%q: tensor<2x4x4x8xf32>, %k: tensor<2x4x2x8xf32>, %v: tensor<2x4x2xf32>) -> tensor<2x4x4x8xf32> {
  // expected-error @+1 {{expects v of rank 4 ([batch, seq, kv_heads, v_head_dim]), but got rank 3}}
  %y = moe.attention %q, %k, %v : (tensor<2x4x4x8xf32>, tensor<2x4x2x8xf32>, tensor<2x4x2xf32>) -> tensor<2x4x4x8xf32>
  return %y : tensor<2x4x4x8xf32>
}

// -----

func.func @f(%a: tensor<2x4x4x8xf32>, %b: tensor<2x4x2x4xf32>) -> tensor<2x4x4x12xf32> {
  // expected-error @+1 {{expects rhs of shape [2, 4, 4, 4] (the leading dimensions of result, or 1 in the one before the last), but got [2, 4, 2, 4]}}
  %y = moe.concat %a, %b : (tensor<2x4x4x8xf32>, tensor<2x4x2x4xf32>) -> tensor<2x4x4x12xf32>
  return %y : tensor<2x4x4x12xf32>
}

// -----

func.func @f(%a: tensor<2x4x4x8xf32>, %b: tensor<1x4x4x4xf32>) -> tensor<2x4x4x12xf32> {
  // expected-error @+1 {{expects rhs of shape [2, 4, 4, 4] (the leading dimensions of result, or 1 in the one before the last), but got [1, 4, 4, 4]}}
  %y = moe.concat %a, %b : (tensor<2x4x4x8xf32>, tensor<1x4x4x4xf32>) -> tensor<2x4x4x12xf32>
  return %y : tensor<2x4x4x12xf32>
}

// -----

func.func @f(%a: tensor<2x4x8xf32>, %b: tensor<2x4x4xf32>) -> tensor<2x4x13xf32> {
  // expected-error @+1 {{expects the last dimensions of lhs and rhs to add up to the result's (13), but got 12}}
  %y = moe.concat %a, %b : (tensor<2x4x8xf32>, tensor<2x4x4xf32>) -> tensor<2x4x13xf32>
  return %y : tensor<2x4x13xf32>
}

// -----

func.func @f(%a: tensor<f32>, %b: tensor<f32>) -> tensor<f32> {
  // expected-error @+1 {{expects result of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.concat %a, %b : (tensor<f32>, tensor<f32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%x: tensor<2x4x12xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{expects the last dimensions of lhs and rhs to add up to the input's (12), but got 11}}
  %a, %b = moe.split %x : (tensor<2x4x12xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x3xf32>)
  return %a : tensor<2x4x8xf32>
}

// -----

func.func @f(%x: tensor<2x4x4x12xf32>) -> tensor<2x4x4x8xf32> {
  // A split does not reduce over heads: only concat broadcasts.
  // expected-error @+1 {{expects rhs of shape [2, 4, 4, 4] (the leading dimensions of input), but got [2, 4, 1, 4]}}
  %a, %b = moe.split %x : (tensor<2x4x4x12xf32>) -> (tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>)
  return %a : tensor<2x4x4x8xf32>
}

// -----

func.func @f(%dy: tensor<2x4x4x12xf32>, %a: tensor<2x4x4x8xf32>, %b: tensor<2x4x1x4xf32>) -> tensor<2x4x4x4xf32> {
  // expected-error @+1 {{expects the gradient of rhs to have its type 'tensor<2x4x1x4xf32>', but got 'tensor<2x4x4x4xf32>'}}
  %da, %db = moe.concat_grad %dy, %a, %b : (tensor<2x4x4x12xf32>, tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>) -> (tensor<2x4x4x8xf32>, tensor<2x4x4x4xf32>)
  return %db : tensor<2x4x4x4xf32>
}

// -----

func.func @f(%x: tensor<f32>, %g: tensor<4x1xf32>, %d: tensor<1x4xf32>) -> tensor<f32> {
  // expected-error @+1 {{expects input of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.mlp %x, %g, %g, %d : (tensor<f32>, tensor<4x1xf32>, tensor<4x1xf32>, tensor<1x4xf32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %g: tensor<8xf32>, %d: tensor<8x16xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{expects gate_weight of rank 2 ([intermediate, hidden]), but got rank 1}}
  %y = moe.mlp %x, %g, %g, %d : (tensor<2x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8x16xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %g: tensor<16x6xf32>, %d: tensor<8x16xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{expects gate_weight of shape [16, 8] ([intermediate, hidden]), but got [16, 6]}}
  %y = moe.mlp %x, %g, %g, %d : (tensor<2x8xf32>, tensor<16x6xf32>, tensor<16x6xf32>, tensor<8x16xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %g: tensor<16x8xf32>, %u: tensor<12x8xf32>, %d: tensor<8x16xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{expects up_weight of shape [16, 8] (the shape of gate_weight), but got [12, 8]}}
  %y = moe.mlp %x, %g, %u, %d : (tensor<2x8xf32>, tensor<16x8xf32>, tensor<12x8xf32>, tensor<8x16xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %g: tensor<16x8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{expects down_weight of shape [8, 16] ([hidden, intermediate]), but got [16, 8]}}
  %y = moe.mlp %x, %g, %g, %g : (tensor<2x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %g: tensor<16x8xf32>, %d: tensor<8x16xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{expects the result type to equal the input type 'tensor<2x8xf32>', but got 'tensor<2x16xf32>'}}
  %y = moe.mlp %x, %g, %g, %d : (tensor<2x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>) -> tensor<2x16xf32>
  return %y : tensor<2x16xf32>
}

// -----

func.func @f(%a: tensor<2x8xf32>, %b: tensor<2x4xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{requires the same type for all operands and results}}
  %y = "moe.add"(%a, %b) : (tensor<2x8xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<f32>, %g: tensor<8x1xf32>) {
  // expected-error @+1 {{expects input of rank >= 1 ([..., features]), but got rank 0}}
  %w, %i, %l = moe.router %x, %g softmax top 2 : (tensor<f32>, tensor<8x1xf32>) -> (tensor<2xf32>, tensor<2xi32>, tensor<8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8xf32>) {
  // expected-error @+1 {{expects gate_weight of rank 2 ([experts, hidden]), but got rank 1}}
  %w, %i, %l = moe.router %x, %g softmax top 2 : (tensor<2x4x8xf32>, tensor<8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x6xf32>) {
  // expected-error @+1 {{expects gate_weight of shape [8, 8] ([experts, hidden]), but got [8, 6]}}
  %w, %i, %l = moe.router %x, %g softmax top 2 : (tensor<2x4x8xf32>, tensor<8x6xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects top_k >= 1, but got 0}}
  %w, %i, %l = moe.router %x, %g softmax top 0 : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x0xf32>, tensor<2x4x0xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects top_k <= the number of experts (8), but got 9}}
  %w, %i, %l = moe.router %x, %g softmax top 9 : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x9xf32>, tensor<2x4x9xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects n_group to be a positive divisor of the number of experts (8), but got 3}}
  %w, %i, %l = moe.router %x, %g softmax top 2 {n_group = 3} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects topk_group in [1, n_group = 4], but got 5}}
  %w, %i, %l = moe.router %x, %g softmax top 2 {n_group = 4, topk_group = 5} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects group_top 1 or 2 (a group's score: its best selection score, or its two best summed), but got 3}}
  %w, %i, %l = moe.router %x, %g softmax top 2 {n_group = 4, topk_group = 2, group_top = 3} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects top_k <= the 2 experts of the topk_group = 1 kept groups, but got 4}}
  %w, %i, %l = moe.router %x, %g sigmoid top 4 {n_group = 4, topk_group = 1} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x4xf32>, tensor<2x4x4xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{expects expert_bias of shape [8] (one bias per expert), but got [4]}}
  %w, %i, %l = moe.router %x, %g bias %b sigmoid top 2 : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<4xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects route_scale > 0, but got 0}}
  %w, %i, %l = moe.router %x, %g softmax top 2 {route_scale = 0.0 : f64} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects weights of shape [2, 4, 2] (the input's token dimensions followed by top_k), but got [2, 4, 3]}}
  %w, %i, %l = moe.router %x, %g softmax top 2 : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x3xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects indices of shape [2, 4, 2] (the input's token dimensions followed by top_k), but got [8, 2]}}
  %w, %i, %l = moe.router %x, %g softmax top 2 : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<8x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects logits of shape [2, 4, 8] (the input's token dimensions followed by experts), but got [2, 4, 4]}}
  %w, %i, %l = moe.router %x, %g softmax top 2 : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x4xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expects f32 logits, but got element type 'bf16'}}
  %w, %i, %l = moe.router %x, %g softmax top 2 : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xbf16>)
  return
}

// -----

func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{expected a scoring function (softmax or sigmoid), but got 'relu'}}
  %w, %i, %l = moe.router %x, %g relu top 2 : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<f32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<f32> {
  // expected-error @+1 {{expects input of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<f32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>, %g: tensor<10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects gate_weight of rank 3 ([experts, intermediate, hidden]), but got rank 2}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %w: tensor<f32>, %i: tensor<8x2xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects weights of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<8x6xf32>, tensor<f32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%x: tensor<8x8xf32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x8xf32> {
  // expected-error @+1 {{expects gate_weight of shape [4, 10, 8] ([experts, intermediate, hidden]), but got [4, 10, 6]}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<8x8xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x8xf32>
  return %y : tensor<8x8xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x12x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects up_weight of shape [4, 10, 6] (the shape of gate_weight), but got [4, 12, 6]}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x12x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x10x6xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects down_weight of shape [4, 6, 10] ([experts, hidden, intermediate]), but got [4, 10, 6]}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %w: tensor<4x2xf32>, %i: tensor<8x2xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects weights of shape [8, 2] (the input's token dimensions followed by top_k), but got [4, 2]}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<8x6xf32>, tensor<4x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %w: tensor<8x2xf32>, %i: tensor<8x3xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects indices of shape [8, 2] (the shape of weights), but got [8, 3]}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x3xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %w: tensor<8x5xf32>, %i: tensor<8x5xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects top_k (the last dimension of weights) <= the number of experts (4), but got 5}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<8x6xf32>, tensor<8x5xf32>, tensor<8x5xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects capacity_factor > 0, but got -1}}
  %y = moe.experts %x, %w, %i, %g, %u, %d {capacity_factor = -1.0 : f64} : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>, %g: tensor<4x10x6xf32>, %u: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x10xf32> {
  // expected-error @+1 {{expects the result type to equal the input type 'tensor<8x6xf32>', but got 'tensor<8x10xf32>'}}
  %y = moe.experts %x, %w, %i, %g, %u, %d : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x10xf32>
  return %y : tensor<8x10xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %g: tensor<12x6xf32>, %d: tensor<6x12xf32>, %s: tensor<6x1xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects shared_gate of shape [1, 6] ([1, hidden]), but got [6, 1]}}
  %y = moe.shared_experts %x, %g, %g, %d gated by %s : (tensor<8x6xf32>, tensor<12x6xf32>, tensor<12x6xf32>, tensor<6x12xf32>, tensor<6x1xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%x: tensor<8x6xf32>, %g: tensor<12x6xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{expects down_weight of shape [6, 12] ([hidden, intermediate]), but got [12, 6]}}
  %y = moe.shared_experts %x, %g, %g, %g : (tensor<8x6xf32>, tensor<12x6xf32>, tensor<12x6xf32>, tensor<12x6xf32>) -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @f(%l: tensor<f32>, %t: tensor<i32>) -> tensor<f32> {
  // expected-error @+1 {{expects logits of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.cross_entropy %l, %t : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%l: tensor<2x4x16xf32>, %t: tensor<2x4x16xi32>) -> tensor<f32> {
  // expected-error @+1 {{expects labels of shape [2, 4] (the logits' shape without the vocabulary dimension), but got [2, 4, 16]}}
  %y = moe.cross_entropy %l, %t : (tensor<2x4x16xf32>, tensor<2x4x16xi32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%l: tensor<2x4x16xf32>, %t: tensor<2x4xi32>) -> tensor<1xf32> {
  // expected-error @+1 {{result #0 must be 0D tensor of 32-bit float values, but got 'tensor<1xf32>'}}
  %y = moe.cross_entropy %l, %t : (tensor<2x4x16xf32>, tensor<2x4xi32>) -> tensor<1xf32>
  return %y : tensor<1xf32>
}

// -----

func.func @f(%l: tensor<f32>, %i: tensor<2x4x2xi32>) -> tensor<f32> {
  // expected-error @+1 {{expects logits of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.aux_loss %l, %i softmax {coefficient = 1.0e-3 : f64} : (tensor<f32>, tensor<2x4x2xi32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%l: tensor<2x4x8xf32>, %i: tensor<i32>) -> tensor<f32> {
  // expected-error @+1 {{expects indices of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.aux_loss %l, %i softmax {coefficient = 1.0e-3 : f64} : (tensor<2x4x8xf32>, tensor<i32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%l: tensor<2x4x8xf32>, %i: tensor<8x2xi32>) -> tensor<f32> {
  // expected-error @+1 {{expects indices of shape [2, 4, 2] (the logits' token dimensions followed by top_k), but got [8, 2]}}
  %y = moe.aux_loss %l, %i softmax {coefficient = 1.0e-3 : f64} : (tensor<2x4x8xf32>, tensor<8x2xi32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%l: tensor<2x4x8xf32>, %i: tensor<2x4x9xi32>) -> tensor<f32> {
  // expected-error @+1 {{expects top_k (the last dimension of indices) <= the number of experts (8), but got 9}}
  %y = moe.aux_loss %l, %i softmax {coefficient = 1.0e-3 : f64} : (tensor<2x4x8xf32>, tensor<2x4x9xi32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%l: tensor<2x4x8xf32>, %i: tensor<2x4x2xi32>) -> tensor<f32> {
  // expected-error @+1 {{expects coefficient >= 0, but got -1}}
  %y = moe.aux_loss %l, %i softmax {coefficient = -1.0 : f64} : (tensor<2x4x8xf32>, tensor<2x4x2xi32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%l: tensor<f32>) -> tensor<f32> {
  // expected-error @+1 {{expects logits of rank >= 1 ([..., features]), but got rank 0}}
  %y = moe.z_loss %l {coefficient = 1.0e-3 : f64} : (tensor<f32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%l: tensor<2x8xf32>) -> tensor<f32> {
  // expected-error @+1 {{expects coefficient >= 0, but got -5.000000e-01}}
  %y = moe.z_loss %l {coefficient = -0.5 : f64} : (tensor<2x8xf32>) -> tensor<f32>
  return %y : tensor<f32>
}

// -----

func.func @f(%x: tensor<4x8xf32>, %i: tensor<i32>) {
  // expected-error @+1 {{expects indices of rank >= 1 ([..., features]), but got rank 0}}
  %p, %o, %s = moe.permute %x, %i experts 4 : (tensor<4x8xf32>, tensor<i32>) -> (tensor<8x8xf32>, tensor<5xi64>, tensor<8xi32>)
  return
}

// -----

func.func @f(%x: tensor<4x8xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects num_experts >= 1, but got 0}}
  %p, %o, %s = moe.permute %x, %i experts 0 : (tensor<4x8xf32>, tensor<4x2xi32>) -> (tensor<8x8xf32>, tensor<1xi64>, tensor<8xi32>)
  return
}

// -----

func.func @f(%x: tensor<4x8xf32>, %i: tensor<3x2xi32>) {
  // expected-error @+1 {{expects indices of shape [4, 2] (the input's token dimensions followed by top_k), but got [3, 2]}}
  %p, %o, %s = moe.permute %x, %i experts 4 : (tensor<4x8xf32>, tensor<3x2xi32>) -> (tensor<8x8xf32>, tensor<5xi64>, tensor<8xi32>)
  return
}

// -----

func.func @f(%x: tensor<4x8xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects permuted of shape [8, 8] ([tokens * top_k, hidden]), but got [4, 8]}}
  %p, %o, %s = moe.permute %x, %i experts 4 : (tensor<4x8xf32>, tensor<4x2xi32>) -> (tensor<4x8xf32>, tensor<5xi64>, tensor<8xi32>)
  return
}

// -----

func.func @f(%x: tensor<4x8xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects offsets of shape [5] ([num_experts + 1]), but got [4]}}
  %p, %o, %s = moe.permute %x, %i experts 4 : (tensor<4x8xf32>, tensor<4x2xi32>) -> (tensor<8x8xf32>, tensor<4xi64>, tensor<8xi32>)
  return
}

// -----

func.func @f(%x: tensor<4x8xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects row_to_slot of shape [8] ([tokens * top_k]), but got [4]}}
  %p, %o, %s = moe.permute %x, %i experts 4 : (tensor<4x8xf32>, tensor<4x2xi32>) -> (tensor<8x8xf32>, tensor<5xi64>, tensor<4xi32>)
  return
}

// -----

func.func @f(%x: tensor<4x8xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects permuted to have the element type of input}}
  %p, %o, %s = moe.permute %x, %i experts 4 : (tensor<4x8xf32>, tensor<4x2xi32>) -> (tensor<8x8xf16>, tensor<5xi64>, tensor<8xi32>)
  return
}

// -----

func.func @f(%x: tensor<f32>, %i: tensor<2xi32>) {
  // expected-error @+1 {{expects input of rank >= 1 ([..., features]), but got rank 0}}
  %p, %o, %s = moe.permute %x, %i experts 4 : (tensor<f32>, tensor<2xi32>) -> (tensor<8x8xf32>, tensor<5xi64>, tensor<8xi32>)
  return
}

// -----

func.func @f(%p: tensor<2x4x8xf32>, %o: tensor<5xi64>, %g: tensor<4x16x8xf32>, %u: tensor<4x16x8xf32>, %d: tensor<4x8x16xf32>) {
  // expected-error @+1 {{expects permuted of rank 2 ([rows, hidden]), but got rank 3}}
  %y = moe.grouped_swiglu %p, %o, %g, %u, %d : (tensor<2x4x8xf32>, tensor<5xi64>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<2x4x8xf32>
  return
}

// -----

func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>, %g: tensor<16x8xf32>, %u: tensor<4x16x8xf32>, %d: tensor<4x8x16xf32>) {
  // expected-error @+1 {{expects gate_weight of rank 3 ([experts, intermediate, hidden]), but got rank 2}}
  %y = moe.grouped_swiglu %p, %o, %g, %u, %d : (tensor<8x8xf32>, tensor<5xi64>, tensor<16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>, %g: tensor<4x16x6xf32>, %u: tensor<4x16x8xf32>, %d: tensor<4x8x16xf32>) {
  // expected-error @+1 {{expects gate_weight of shape [4, 16, 8] ([experts, intermediate, hidden]), but got [4, 16, 6]}}
  %y = moe.grouped_swiglu %p, %o, %g, %u, %d : (tensor<8x8xf32>, tensor<5xi64>, tensor<4x16x6xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>, %g: tensor<4x16x8xf32>, %u: tensor<4x12x8xf32>, %d: tensor<4x8x16xf32>) {
  // expected-error @+1 {{expects up_weight of shape [4, 16, 8] (the shape of gate_weight), but got [4, 12, 8]}}
  %y = moe.grouped_swiglu %p, %o, %g, %u, %d : (tensor<8x8xf32>, tensor<5xi64>, tensor<4x16x8xf32>, tensor<4x12x8xf32>, tensor<4x8x16xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>, %g: tensor<4x16x8xf32>, %u: tensor<4x16x8xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+1 {{expects down_weight of shape [4, 8, 16] ([experts, hidden, intermediate]), but got [4, 16, 8]}}
  %y = moe.grouped_swiglu %p, %o, %g, %u, %d : (tensor<8x8xf32>, tensor<5xi64>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f(%p: tensor<8x8xf32>, %o: tensor<4xi64>, %g: tensor<4x16x8xf32>, %u: tensor<4x16x8xf32>, %d: tensor<4x8x16xf32>) {
  // expected-error @+1 {{expects offsets of shape [segments * experts + 1] with segments >= 1 and 4 experts, but got [4]}}
  %y = moe.grouped_swiglu %p, %o, %g, %u, %d : (tensor<8x8xf32>, tensor<4xi64>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>, %g: tensor<4x16x8xf32>, %u: tensor<4x16x8xf32>, %d: tensor<4x8x16xf32>) {
  // expected-error @+1 {{expects the result type to equal the permuted type 'tensor<8x8xf32>', but got 'tensor<8x4xf32>'}}
  %y = moe.grouped_swiglu %p, %o, %g, %u, %d : (tensor<8x8xf32>, tensor<5xi64>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> tensor<8x4xf32>
  return
}

// -----

func.func @f(%y: tensor<8xf32>, %s: tensor<8xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{expects expert_out of rank 2 ([rows, hidden]), but got rank 1}}
  %o = moe.unpermute %y, %s, %w : (tensor<8xf32>, tensor<8xi32>, tensor<4x2xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @f(%y: tensor<8x8xf32>, %s: tensor<8xi32>, %w: tensor<f32>) {
  // expected-error @+1 {{expects weights of rank >= 1 ([..., features]), but got rank 0}}
  %o = moe.unpermute %y, %s, %w : (tensor<8x8xf32>, tensor<8xi32>, tensor<f32>) -> tensor<8xf32>
  return
}

// -----

func.func @f(%y: tensor<8x8xf32>, %s: tensor<8xi32>, %w: tensor<3x2xf32>) {
  // expected-error @+1 {{expects expert_out to have one row per token-slot of weights (6), but got 8}}
  %o = moe.unpermute %y, %s, %w : (tensor<8x8xf32>, tensor<8xi32>, tensor<3x2xf32>) -> tensor<3x8xf32>
  return
}

// -----

func.func @f(%y: tensor<8x8xf32>, %s: tensor<6xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{expects row_to_slot of shape [8] ([tokens * top_k]), but got [6]}}
  %o = moe.unpermute %y, %s, %w : (tensor<8x8xf32>, tensor<6xi32>, tensor<4x2xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @f(%y: tensor<8x8xf32>, %s: tensor<8xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{expects result of shape [4, 8] (the weights' token dimensions followed by hidden), but got [4, 4]}}
  %o = moe.unpermute %y, %s, %w : (tensor<8x8xf32>, tensor<8xi32>, tensor<4x2xf32>) -> tensor<4x4xf32>
  return
}

// -----

func.func @f(%y: tensor<8x8xf32>, %s: tensor<8xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{expects the result to have the element type of expert_out}}
  %o = moe.unpermute %y, %s, %w : (tensor<8x8xf32>, tensor<8xi32>, tensor<4x2xf32>) -> tensor<4x8xf16>
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{expects received of rank 2 ([rows, hidden]), but got rank 1}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [0] : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16xf32>, tensor<5xi64>)
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{expects received to have the hidden size and element type of permuted}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [0] : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x4xf32>, tensor<5xi64>)
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<1xi64>) {
  // expected-error @+1 {{expects offsets of shape [experts + 1] with at least one expert}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [0] : (tensor<8x8xf32>, tensor<1xi64>) -> (tensor<16x8xf32>, tensor<1xi64>)
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{expects received_offsets of shape [5] (the shape of offsets), but got [3]}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [0] : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x8xf32>, tensor<3xi64>)
  return
}

// -----

func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{expects @nowhere to name a shard.grid}}
  %r, %ro = moe.dispatch %p, %o on @nowhere grid_axes = [0] : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x8xf32>, tensor<5xi64>)
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{grid axis 1 is out of range for @g of rank 1}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [1] : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x8xf32>, tensor<5xi64>)
  return
}

// -----

shard.grid @g(shape = 2x2)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{repeats grid axis 0}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [0, 0] : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x8xf32>, tensor<5xi64>)
  return
}

// -----

shard.grid @g(shape = 3)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{4 experts do not split over the 3 ranks of grid_axes}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [0] : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x8xf32>, tensor<5xi64>)
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{expects received_offsets of shape [ranks * slots + 1] for the 2 ranks of grid_axes, but got [6]}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [0] placement 0 : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x8xf32>, tensor<6xi64>)
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{1 expert slots per rank on 2 ranks cannot hold 4 experts}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [0] placement 0 : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x8xf32>, tensor<3xi64>)
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%p: tensor<8x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+1 {{attribute 'placement' failed to satisfy constraint: 64-bit signless integer attribute whose value is non-negative}}
  %r, %ro = moe.dispatch %p, %o on @g grid_axes = [0] placement -1 : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x8xf32>, tensor<5xi64>)
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%y: tensor<16x8xf32>, %ro: tensor<8xi64>, %o: tensor<5xi64>) {
  // expected-error @+1 {{expects received_offsets of shape [ranks * slots + 1] for the 2 ranks of grid_axes, but got [8]}}
  %b = moe.combine %y, %ro, %o on @g grid_axes = [0] placement 3 : (tensor<16x8xf32>, tensor<8xi64>, tensor<5xi64>) -> tensor<8x8xf32>
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%y: tensor<16x8xf32>, %ro: tensor<3xi64>, %o: tensor<5xi64>) {
  // expected-error @+1 {{1 expert slots per rank on 2 ranks cannot hold 4 experts}}
  %b = moe.combine %y, %ro, %o on @g grid_axes = [0] placement 0 : (tensor<16x8xf32>, tensor<3xi64>, tensor<5xi64>) -> tensor<8x8xf32>
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%y: tensor<16x8xf32>, %ro: tensor<5xi64>, %o: tensor<5xi64>) {
  // expected-error @+1 {{expects result to have the hidden size and element type of expert_out}}
  %b = moe.combine %y, %ro, %o on @g grid_axes = [0] : (tensor<16x8xf32>, tensor<5xi64>, tensor<5xi64>) -> tensor<8x4xf32>
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%y: tensor<16x8xf32>, %ro: tensor<5xi64>, %o: tensor<1xi64>) {
  // expected-error @+1 {{expects offsets of shape [experts + 1] with at least one expert}}
  %b = moe.combine %y, %ro, %o on @g grid_axes = [0] : (tensor<16x8xf32>, tensor<5xi64>, tensor<1xi64>) -> tensor<8x8xf32>
  return
}

// -----

shard.grid @g(shape = 2)
func.func @f(%y: tensor<16x8xf32>, %ro: tensor<3xi64>, %o: tensor<5xi64>) {
  // expected-error @+1 {{expects received_offsets of shape [5] (the shape of offsets), but got [3]}}
  %b = moe.combine %y, %ro, %o on @g grid_axes = [0] : (tensor<16x8xf32>, tensor<3xi64>, tensor<5xi64>) -> tensor<8x8xf32>
  return
}

// -----

shard.grid @g(shape = 3)
func.func @f(%y: tensor<16x8xf32>, %ro: tensor<5xi64>, %o: tensor<5xi64>) {
  // expected-error @+1 {{4 experts do not split over the 3 ranks of grid_axes}}
  %b = moe.combine %y, %ro, %o on @g grid_axes = [0] : (tensor<16x8xf32>, tensor<5xi64>, tensor<5xi64>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f(%i: tensor<i32>) {
  // expected-error @+1 {{expects indices of rank >= 1 ([..., features]), but got rank 0}}
  %k = moe.drop_over_capacity %i experts 4 capacity 2 : (tensor<i32>) -> tensor<i32>
  return
}

// -----

func.func @f(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects num_experts >= 1, but got 0}}
  %k = moe.drop_over_capacity %i experts 0 capacity 2 : (tensor<4x2xi32>) -> tensor<4x2xi32>
  return
}

// -----

func.func @f(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects capacity >= 1, but got 0}}
  %k = moe.drop_over_capacity %i experts 4 capacity 0 : (tensor<4x2xi32>) -> tensor<4x2xi32>
  return
}

// -----

func.func @f(%i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects the result type to equal the indices type 'tensor<4x2xi32>', but got 'tensor<8xi32>'}}
  %k = moe.drop_over_capacity %i experts 4 capacity 2 : (tensor<4x2xi32>) -> tensor<8xi32>
  return
}

// -----

func.func @f() -> tensor<2x16x8xf32> {
  // expected-error @+1 {{expects a non-empty cache name}}
  %c = moe.kv_cache "" : tensor<2x16x8xf32>
  return %c : tensor<2x16x8xf32>
}

// -----

func.func @f() -> tensor<2x16x8xf32> {
  // expected-error @+1 {{expects the cache of rank 4 ([batch, cache_len, kv_heads, head_dim]), but got rank 3}}
  %c = moe.kv_cache "keys" : tensor<2x16x8xf32>
  return %c : tensor<2x16x8xf32>
}

// -----

func.func @f(%q: tensor<2x1x4x8xf32>, %k: tensor<2x1x2x8xf32>, %kc: tensor<2x16x8xf32>, %pos: tensor<2x1xi32>) -> tensor<2x1x4x8xf32> {
  // expected-error @+1 {{expects k_cache of rank 4 ([batch, cache_len, kv_heads, head_dim]), but got rank 3}}
  %a = moe.cached_attention %q, %k, %k cache %kc, %kc positions %pos : (tensor<2x1x4x8xf32>, tensor<2x1x2x8xf32>, tensor<2x1x2x8xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<2x1xi32>) -> tensor<2x1x4x8xf32>
  return %a : tensor<2x1x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x1x4x8xf32>, %k: tensor<2x1x2x8xf32>, %kc: tensor<2x16x4x8xf32>, %pos: tensor<2x1xi32>) -> tensor<2x1x4x8xf32> {
  // expected-error @+1 {{expects k_cache of shape [2, 16, 2, 8] (batch of q, kv_heads and head_dim of k), but got [2, 16, 4, 8]}}
  %a = moe.cached_attention %q, %k, %k cache %kc, %kc positions %pos : (tensor<2x1x4x8xf32>, tensor<2x1x2x8xf32>, tensor<2x1x2x8xf32>, tensor<2x16x4x8xf32>, tensor<2x16x4x8xf32>, tensor<2x1xi32>) -> tensor<2x1x4x8xf32>
  return %a : tensor<2x1x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x1x4x8xf32>, %k: tensor<2x1x2x8xf32>, %kc: tensor<2x16x2x8xf32>, %vc: tensor<2x8x2x8xf32>, %pos: tensor<2x1xi32>) -> tensor<2x1x4x8xf32> {
  // expected-error @+1 {{expects v_cache of shape [2, 16, 2, 8] (the k_cache's batch, length and heads, the head size of v), but got [2, 8, 2, 8]}}
  %a = moe.cached_attention %q, %k, %k cache %kc, %vc positions %pos : (tensor<2x1x4x8xf32>, tensor<2x1x2x8xf32>, tensor<2x1x2x8xf32>, tensor<2x16x2x8xf32>, tensor<2x8x2x8xf32>, tensor<2x1xi32>) -> tensor<2x1x4x8xf32>
  return %a : tensor<2x1x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x1x4x8xf32>, %k: tensor<2x1x2x8xf32>, %kc: tensor<2x16x2x8xf32>, %pos: tensor<2x2xi32>) -> tensor<2x1x4x8xf32> {
  // expected-error @+1 {{expects positions of shape [2, 1] (batch and new tokens of q), but got [2, 2]}}
  %a = moe.cached_attention %q, %k, %k cache %kc, %kc positions %pos : (tensor<2x1x4x8xf32>, tensor<2x1x2x8xf32>, tensor<2x1x2x8xf32>, tensor<2x16x2x8xf32>, tensor<2x16x2x8xf32>, tensor<2x2xi32>) -> tensor<2x1x4x8xf32>
  return %a : tensor<2x1x4x8xf32>
}

// -----

func.func @f(%q: tensor<2x4x4x8xf32>, %k: tensor<2x4x2x8xf32>, %kc: tensor<2x2x2x8xf32>, %pos: tensor<2x4xi32>) -> tensor<2x4x4x8xf32> {
  // expected-error @+1 {{expects a cache of at least the 4 new tokens, but it holds 2}}
  %a = moe.cached_attention %q, %k, %k cache %kc, %kc positions %pos : (tensor<2x4x4x8xf32>, tensor<2x4x2x8xf32>, tensor<2x4x2x8xf32>, tensor<2x2x2x8xf32>, tensor<2x2x2x8xf32>, tensor<2x4xi32>) -> tensor<2x4x4x8xf32>
  return %a : tensor<2x4x4x8xf32>
}
