// Verifier errors of the gradient ops (MoEGradOps.td): the forward op's shape
// rules on the primal operands, and each cotangent of its primal's type.
// RUN: moe-opt %s -split-input-file -verify-diagnostics

func.func @f(%dy: tensor<4x8xf32>, %t: tensor<4xi32>) {
  // expected-error @+1 {{expects result of shape [4, 6] (the tokens' shape followed by the hidden size), but got [4, 8]}}
  %g = moe.embedding_grad %dy, %t : (tensor<4x8xf32>, tensor<4xi32>) -> tensor<16x6xf32>
  return
}

// -----

func.func @f(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{expects the gradient of weight to have its type 'tensor<8xf32>', but got 'tensor<4xf32>'}}
  %dx, %dw = moe.rms_norm_grad %dy, %x, %w : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<4xf32>)
  return
}

// -----

func.func @f(%dy: tensor<4x6xf32>, %x: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{expects the result type to equal the input type 'tensor<4x8xf32>', but got 'tensor<4x6xf32>'}}
  %dx, %dw = moe.rms_norm_grad %dy, %x, %w : (tensor<4x6xf32>, tensor<4x8xf32>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<8xf32>)
  return
}

// -----

func.func @f(%dy: tensor<4x16xf32>, %x: tensor<4x8xf32>, %w: tensor<16x8xf32>) {
  // expected-error @+1 {{expects the gradient of input to have its type 'tensor<4x8xf32>', but got 'tensor<4x16xf32>'}}
  %dx, %dw = moe.linear_grad %dy, %x, %w : (tensor<4x16xf32>, tensor<4x8xf32>, tensor<16x8xf32>) -> (tensor<4x16xf32>, tensor<16x8xf32>)
  return
}

// -----

func.func @f(%dy: tensor<4x12xf32>, %x: tensor<4x8xf32>, %w: tensor<16x8xf32>) {
  // expected-error @+1 {{expects result of shape [4, 16] (the input's leading dimensions followed by out), but got [4, 12]}}
  %dx, %dw = moe.linear_grad %dy, %x, %w : (tensor<4x12xf32>, tensor<4x8xf32>, tensor<16x8xf32>) -> (tensor<4x8xf32>, tensor<16x8xf32>)
  return
}

// -----

func.func @f(%dy: tensor<4x16xf32>, %x: tensor<4x8xf32>, %w: tensor<16x8xf32>, %b: tensor<16xf32>) {
  // expected-error @+1 {{expects bias_grad exactly when bias is given}}
  %dx, %dw = moe.linear_grad %dy, %x, %w bias %b : (tensor<4x16xf32>, tensor<4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> (tensor<4x8xf32>, tensor<16x8xf32>)
  return
}

// -----

func.func @f(%dy: tensor<4x16xf32>, %x: tensor<4x8xf32>, %w: tensor<16x8xf32>, %b: tensor<16xf32>) {
  // expected-error @+1 {{expects the gradient of bias to have its type 'tensor<16xf32>', but got 'tensor<8xf32>'}}
  %dx, %dw, %db = moe.linear_grad %dy, %x, %w bias %b : (tensor<4x16xf32>, tensor<4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> (tensor<4x8xf32>, tensor<16x8xf32>, tensor<8xf32>)
  return
}

// -----

func.func @f(%dy: tensor<1x4x2x6xf32>) {
  // expected-error @+1 {{expects the result type to equal the input type 'tensor<1x4x2x6xf32>', but got 'tensor<1x4x2x8xf32>'}}
  %dx = moe.rope_grad %dy : (tensor<1x4x2x6xf32>) -> tensor<1x4x2x8xf32>
  return
}

// -----

func.func @f(%dy: tensor<1x4x2x5xf32>) {
  // expected-error @+1 {{expects an even head_dim, but got 5}}
  %dx = moe.rope_grad %dy : (tensor<1x4x2x5xf32>) -> tensor<1x4x2x5xf32>
  return
}

// -----

func.func @f(%dy: tensor<1x4x4x8xf32>, %q: tensor<1x4x4x8xf32>, %k: tensor<1x4x2x8xf32>) {
  // expected-error @+1 {{expects the gradient of k to have its type 'tensor<1x4x2x8xf32>', but got 'tensor<1x4x4x8xf32>'}}
  %dq, %dk, %dv = moe.attention_grad %dy, %q, %k, %k {causal} : (tensor<1x4x4x8xf32>, tensor<1x4x4x8xf32>, tensor<1x4x2x8xf32>, tensor<1x4x2x8xf32>) -> (tensor<1x4x4x8xf32>, tensor<1x4x4x8xf32>, tensor<1x4x2x8xf32>)
  return
}

// -----

func.func @f(%dy: tensor<1x4x3x8xf32>, %q: tensor<1x4x3x8xf32>, %k: tensor<1x4x2x8xf32>) {
  // expected-error @+1 {{expects the number of query heads (3) to be a multiple of the number of key/value heads (2)}}
  %dq, %dk, %dv = moe.attention_grad %dy, %q, %k, %k : (tensor<1x4x3x8xf32>, tensor<1x4x3x8xf32>, tensor<1x4x2x8xf32>, tensor<1x4x2x8xf32>) -> (tensor<1x4x3x8xf32>, tensor<1x4x2x8xf32>, tensor<1x4x2x8xf32>)
  return
}

// -----

func.func @f(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %g: tensor<16x8xf32>, %d: tensor<8x16xf32>) {
  // expected-error @+1 {{expects the gradient of down_weight to have its type 'tensor<8x16xf32>', but got 'tensor<16x8xf32>'}}
  %dx, %dg, %du, %dd = moe.mlp_grad %dy, %x, %g, %g, %d : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>) -> (tensor<4x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>)
  return
}

// -----

func.func @f(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %g: tensor<16x8xf32>, %d: tensor<8x16xf32>, %sg: tensor<1x8xf32>) {
  // expected-error @+1 {{expects shared_gate_grad exactly when shared_gate is given}}
  %dx, %dg, %du, %dd = moe.shared_experts_grad %dy, %x, %g, %g, %d gated by %sg : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>, tensor<1x8xf32>) -> (tensor<4x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>)
  return
}

// -----

func.func @f(%dw: tensor<4x2xf32>, %x: tensor<4x8xf32>, %g: tensor<6x8xf32>, %l: tensor<4x5xf32>, %i: tensor<4x2xi32>, %dl: tensor<4x6xf32>) {
  // expected-error @+1 {{expects logits of shape [4, 6] (the input's token dimensions followed by experts), but got [4, 5]}}
  %dx, %dg = moe.router_grad %dw, %x, %g, %l, %i logits_grad %dl softmax : (tensor<4x2xf32>, tensor<4x8xf32>, tensor<6x8xf32>, tensor<4x5xf32>, tensor<4x2xi32>, tensor<4x6xf32>) -> (tensor<4x8xf32>, tensor<6x8xf32>)
  return
}

// -----

func.func @f(%dw: tensor<4x3xf32>, %x: tensor<4x8xf32>, %g: tensor<6x8xf32>, %l: tensor<4x6xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects weights_grad of shape [4, 2] (the shape of indices), but got [4, 3]}}
  %dx, %dg = moe.router_grad %dw, %x, %g, %l, %i softmax : (tensor<4x3xf32>, tensor<4x8xf32>, tensor<6x8xf32>, tensor<4x6xf32>, tensor<4x2xi32>) -> (tensor<4x8xf32>, tensor<6x8xf32>)
  return
}

// -----

func.func @f(%dw: tensor<4x8xf32>, %x: tensor<4x8xf32>, %g: tensor<6x8xf32>, %l: tensor<4x6xf32>, %i: tensor<4x8xi32>) {
  // expected-error @+1 {{expects top_k <= the number of experts (6), but got 8}}
  %dx, %dg = moe.router_grad %dw, %x, %g, %l, %i softmax : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<6x8xf32>, tensor<4x6xf32>, tensor<4x8xi32>) -> (tensor<4x8xf32>, tensor<6x8xf32>)
  return
}

// -----

func.func @f(%dw: tensor<4x2xf32>, %x: tensor<4x8xf32>, %g: tensor<6x8xf32>, %l: tensor<4x6xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects route_scale > 0, but got 0}}
  %dx, %dg = moe.router_grad %dw, %x, %g, %l, %i sigmoid {route_scale = 0.0} : (tensor<4x2xf32>, tensor<4x8xf32>, tensor<6x8xf32>, tensor<4x6xf32>, tensor<4x2xi32>) -> (tensor<4x8xf32>, tensor<6x8xf32>)
  return
}

// -----

func.func @f(%dw: tensor<4x2xf32>, %x: tensor<4x8xf32>, %g: tensor<6x8xf32>, %l: tensor<4x6xf32>, %i: tensor<4x2xi32>, %dl: tensor<4x6xf16>) {
  // expected-error @+1 {{expects the gradient of logits to have its type 'tensor<4x6xf32>', but got 'tensor<4x6xf16>'}}
  %dx, %dg = moe.router_grad %dw, %x, %g, %l, %i logits_grad %dl softmax : (tensor<4x2xf32>, tensor<4x8xf32>, tensor<6x8xf32>, tensor<4x6xf32>, tensor<4x2xi32>, tensor<4x6xf16>) -> (tensor<4x8xf32>, tensor<6x8xf32>)
  return
}

// -----

func.func @f(%dp: tensor<8x8xf32>, %s: tensor<8xi32>) {
  // expected-error @+1 {{expects top_k >= 1, but got 0}}
  %dx = moe.permute_grad %dp, %s top 0 : (tensor<8x8xf32>, tensor<8xi32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @f(%dp: tensor<6x8xf32>, %s: tensor<6xi32>) {
  // expected-error @+1 {{expects permuted_grad of shape [8, 8] ([tokens * top_k, hidden] of input_grad), but got [6, 8]}}
  %dx = moe.permute_grad %dp, %s top 2 : (tensor<6x8xf32>, tensor<6xi32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @f(%dp: tensor<8x8xf32>, %s: tensor<6xi32>) {
  // expected-error @+1 {{expects row_to_slot of shape [8] ([tokens * top_k]), but got [6]}}
  %dx = moe.permute_grad %dp, %s top 2 : (tensor<8x8xf32>, tensor<6xi32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @f(%dy: tensor<4x8xf32>, %y: tensor<8x8xf32>, %s: tensor<8xi32>, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{expects the gradient of weights to have its type 'tensor<4x2xf32>', but got 'tensor<4x8xf32>'}}
  %dy2, %dw = moe.unpermute_grad %dy, %y, %s, %w : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xi32>, tensor<4x2xf32>) -> (tensor<8x8xf32>, tensor<4x8xf32>)
  return
}

// -----

func.func @f(%dy: tensor<8x8xf32>, %x: tensor<8x8xf32>, %o: tensor<4xi64>, %g: tensor<4x16x8xf32>, %d: tensor<4x8x16xf32>) {
  // expected-error @+1 {{expects offsets of shape [segments * experts + 1] with segments >= 1 and 4 experts, but got [4]}}
  %a, %b, %c, %e = moe.grouped_swiglu_grad %dy, %x, %o, %g, %g, %d : (tensor<8x8xf32>, tensor<8x8xf32>, tensor<4xi64>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> (tensor<8x8xf32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>)
  return
}

// -----

func.func @f(%dy: tensor<8x8xf32>, %x: tensor<8x8xf32>, %o: tensor<5xi64>, %g: tensor<4x16x8xf32>, %d: tensor<4x8x16xf32>) {
  // expected-error @+1 {{expects the gradient of gate_weight to have its type 'tensor<4x16x8xf32>', but got 'tensor<4x8x16xf32>'}}
  %a, %b, %c, %e = moe.grouped_swiglu_grad %dy, %x, %o, %g, %g, %d : (tensor<8x8xf32>, tensor<8x8xf32>, tensor<5xi64>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>) -> (tensor<8x8xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>)
  return
}

// -----

func.func @f(%l: tensor<4x10xf32>, %y: tensor<5xi32>) {
  // expected-error @+1 {{expects labels of shape [4] (the logits' shape without the vocabulary dimension), but got [5]}}
  %g = moe.cross_entropy_grad %l, %y : (tensor<4x10xf32>, tensor<5xi32>) -> tensor<4x10xf32>
  return
}

// -----

func.func @f(%l: tensor<4x10xf32>, %y: tensor<4xi32>) {
  // expected-error @+1 {{expects the gradient of logits to have its type 'tensor<4x10xf32>', but got 'tensor<4x9xf32>'}}
  %g = moe.cross_entropy_grad %l, %y : (tensor<4x10xf32>, tensor<4xi32>) -> tensor<4x9xf32>
  return
}

// -----

func.func @f(%l: tensor<4x6xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects coefficient >= 0, but got -1}}
  %g = moe.aux_loss_grad %l, %i softmax {coefficient = -1.0 : f64} : (tensor<4x6xf32>, tensor<4x2xi32>) -> tensor<4x6xf32>
  return
}

// -----

func.func @f(%l: tensor<4x6xf32>, %i: tensor<4x2xi32>) {
  // expected-error @+1 {{expects the gradient of logits to have its type 'tensor<4x6xf32>', but got 'tensor<4x2xf32>'}}
  %g = moe.aux_loss_grad %l, %i softmax {coefficient = 0.01 : f64} : (tensor<4x6xf32>, tensor<4x2xi32>) -> tensor<4x2xf32>
  return
}

// -----

func.func @f(%l: tensor<4x6xf32>) {
  // expected-error @+1 {{expects the gradient of logits to have its type 'tensor<4x6xf32>', but got 'tensor<4x5xf32>'}}
  %g = moe.z_loss_grad %l {coefficient = 0.01 : f64} : (tensor<4x6xf32>) -> tensor<4x5xf32>
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>) {
  %w = moe.param "w" : tensor<4x8xf32>
  moe.param_grad "w", %g : tensor<4x8xf32>
  // expected-error @+1 {{repeats the gradient of weight "w"}}
  moe.param_grad "w", %g : tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>) {
  // expected-error @+1 {{names no moe.param of its block: "w"}}
  moe.param_grad "w", %g : tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<8x4xf32>) {
  %w = moe.param "w" : tensor<4x8xf32>
  // expected-error @+1 {{expects the gradient of the weight to have its type 'tensor<4x8xf32>', but got 'tensor<8x4xf32>'}}
  moe.param_grad "w", %g : tensor<8x4xf32>
  return
}
