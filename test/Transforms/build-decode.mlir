// moe-build-decode derives @decode (one token of each sequence a call) and
// @prefill (a chunk of the prompt a call) from @forward: the logits' slice at
// [N, T] tokens, every causal attention reading and writing a key/value cache
// of its own, RoPE at the tokens' positions, experts dropless, and every
// weight declared in the forward's order.
// RUN: moe-opt --moe-build-decode %s | FileCheck %s
// RUN: moe-opt --moe-build-decode="batch=3 max-seq=12" %s | FileCheck %s --check-prefix=LONG
// RUN: moe-opt --moe-build-decode="batch=0" %s | FileCheck %s --check-prefix=NONE
// RUN: moe-opt --moe-assign-mesh="mesh=dp=2" --moe-build-decode %s | FileCheck %s --check-prefix=NONE
// RUN: moe-opt --moe-build-decode --moe-expand-capacity --moe-lower-experts --moe-lower-to-runtime %s | FileCheck %s --check-prefix=ENTRY

func.func @forward(%tokens: tensor<2x8xi32>, %labels: tensor<2x8xi32>) -> (tensor<2x8x16xf32>, tensor<f32>) {
  %table = moe.param "embed" : tensor<16x8xf32>
  %x = moe.embedding %tokens, %table : (tensor<2x8xi32>, tensor<16x8xf32>) -> tensor<2x8x8xf32>
  %wq = moe.param "q" : tensor<8x8xf32>
  %q2 = moe.linear %x, %wq : (tensor<2x8x8xf32>, tensor<8x8xf32>) -> tensor<2x8x8xf32>
  %q = tensor.expand_shape %q2 [[0], [1], [2, 3]] output_shape [2, 8, 2, 4] : tensor<2x8x8xf32> into tensor<2x8x2x4xf32>
  %qr = moe.rope %q : (tensor<2x8x2x4xf32>) -> tensor<2x8x2x4xf32>
  %wk = moe.param "k" : tensor<4x8xf32>
  %k2 = moe.linear %x, %wk : (tensor<2x8x8xf32>, tensor<4x8xf32>) -> tensor<2x8x4xf32>
  %k = tensor.expand_shape %k2 [[0], [1], [2, 3]] output_shape [2, 8, 1, 4] : tensor<2x8x4xf32> into tensor<2x8x1x4xf32>
  %kr = moe.rope %k : (tensor<2x8x1x4xf32>) -> tensor<2x8x1x4xf32>
  %a = moe.attention %qr, %kr, %k {causal} : (tensor<2x8x2x4xf32>, tensor<2x8x1x4xf32>, tensor<2x8x1x4xf32>) -> tensor<2x8x2x4xf32>
  %a2 = tensor.collapse_shape %a [[0], [1], [2, 3]] : tensor<2x8x2x4xf32> into tensor<2x8x8xf32>
  %h = moe.add %x, %a2 : tensor<2x8x8xf32>
  %wr = moe.param "router" : tensor<4x8xf32>
  %w, %i, %l = moe.router %h, %wr softmax top 2 : (tensor<2x8x8xf32>, tensor<4x8xf32>) -> (tensor<2x8x2xf32>, tensor<2x8x2xi32>, tensor<2x8x4xf32>)
  %g = moe.param "e.{e}.gate" : tensor<4x6x8xf32>
  %u = moe.param "e.{e}.up" : tensor<4x6x8xf32>
  %d = moe.param "e.{e}.down" : tensor<4x8x6xf32>
  %e = moe.experts %h, %w, %i, %g, %u, %d {capacity_factor = 1.0 : f64} : (tensor<2x8x8xf32>, tensor<2x8x2xf32>, tensor<2x8x2xi32>, tensor<4x6x8xf32>, tensor<4x6x8xf32>, tensor<4x8x6xf32>) -> tensor<2x8x8xf32>
  %aux = moe.aux_loss %l, %i softmax {coefficient = 1.0e-2 : f64} : (tensor<2x8x4xf32>, tensor<2x8x2xi32>) -> tensor<f32>
  %y = moe.add %h, %e : tensor<2x8x8xf32>
  %head = moe.param "head" : tensor<16x8xf32>
  %logits = moe.linear %y, %head : (tensor<2x8x8xf32>, tensor<16x8xf32>) -> tensor<2x8x16xf32>
  %ce = moe.cross_entropy %logits, %labels : (tensor<2x8x16xf32>, tensor<2x8xi32>) -> tensor<f32>
  %loss = moe.add %ce, %aux : tensor<f32>
  return %logits, %loss : tensor<2x8x16xf32>, tensor<f32>
}

// CHECK-LABEL: func.func @forward
// CHECK: func.func @prefill(%{{.+}}: tensor<1x8xi32>, %[[PPOS:.+]]: tensor<1x8xi32>) -> tensor<1x8x16xf32>
// CHECK: moe.cached_attention {{.+}} positions %[[PPOS]] : (tensor<1x8x2x4xf32>, tensor<1x8x1x4xf32>, tensor<1x8x1x4xf32>, tensor<1x8x1x4xf32>, tensor<1x8x1x4xf32>, tensor<1x8xi32>) -> tensor<1x8x2x4xf32>
// CHECK: func.func @decode(%[[TOK:.+]]: tensor<1x1xi32>, %[[POS:.+]]: tensor<1x1xi32>) -> tensor<1x1x16xf32>
// Every weight first, in the forward's order, used or not.
// CHECK-NEXT: moe.param "embed"
// CHECK-NEXT: moe.param "q"
// CHECK-NEXT: moe.param "k"
// CHECK-NEXT: moe.param "router"
// CHECK-NEXT: moe.param "e.{e}.gate"
// CHECK-NEXT: moe.param "e.{e}.up"
// CHECK-NEXT: moe.param "e.{e}.down"
// CHECK-NEXT: moe.param "head"
// CHECK-NEXT: moe.embedding %[[TOK]], {{.+}} -> tensor<1x1x8xf32>
// CHECK: tensor.expand_shape {{.+}} output_shape [1, 1, 2, 4] : tensor<1x1x8xf32> into tensor<1x1x2x4xf32>
// CHECK: moe.rope %{{.+}} positions %[[POS]] : (tensor<1x1x2x4xf32>, tensor<1x1xi32>)
// CHECK: moe.rope %{{.+}} positions %[[POS]] : (tensor<1x1x1x4xf32>, tensor<1x1xi32>)
// The cache holds the forward's 8 positions.
// CHECK: %[[KC:.+]] = moe.kv_cache "layers.0.keys" : tensor<1x8x1x4xf32>
// CHECK: %[[VC:.+]] = moe.kv_cache "layers.0.values" : tensor<1x8x1x4xf32>
// CHECK: moe.cached_attention %{{.+}}, %{{.+}}, %{{.+}} cache %[[KC]], %[[VC]] positions %[[POS]] : {{.+}} -> tensor<1x1x2x4xf32>
// CHECK-NOT: moe.attention
// CHECK: tensor.collapse_shape {{.+}} into tensor<1x1x8xf32>
// The experts are dropless; the losses are not built.
// CHECK: moe.experts {{[^{]+}} : (tensor<1x1x8xf32>
// CHECK-NOT: moe.aux_loss
// CHECK-NOT: moe.cross_entropy
// CHECK: return %{{.+}} : tensor<1x1x16xf32>

// Three sequences, a cache of 12 positions, prefilled 6 at a time (the largest
// chunk up to the forward's 8 that divides 12).
// LONG-LABEL: func.func @prefill(%{{.+}}: tensor<3x6xi32>, %{{.+}}: tensor<3x6xi32>) -> tensor<3x6x16xf32>
// LONG: moe.kv_cache "layers.0.keys" : tensor<3x12x1x4xf32>
// LONG-LABEL: func.func @decode(%{{.+}}: tensor<3x1xi32>, %{{.+}}: tensor<3x1xi32>) -> tensor<3x1x16xf32>
// LONG: moe.kv_cache "layers.0.values" : tensor<3x12x1x4xf32>

// NONE-NOT: func.func @decode
// NONE-NOT: func.func @prefill

// Decode and prefill lower to entries on the caller's cache blob, laid out
// alike, with the cached attention as one runtime call.
// ENTRY: func.func @moe_entry_prefill(%{{.+}}: !llvm.ptr, %{{.+}}: memref<{{[0-9]+}}xi8>, %[[PCACHE:.+]]: memref<256xi8>, %{{.+}}: memref<1x8xi32>, %{{.+}}: memref<1x8xi32>, %{{.+}}: memref<1x8x16xf32>)
// ENTRY-SAME: caches = [{dtype = "F32", name = "layers.0.keys", offset = 0 : i64, shape = array<i64: 1, 8, 1, 4>}, {dtype = "F32", name = "layers.0.values", offset = 128 : i64, shape = array<i64: 1, 8, 1, 4>}]
// ENTRY-SAME: inputs = [{dtype = "I32", name = "tokens", shape = array<i64: 1, 8>}, {dtype = "I32", name = "positions", shape = array<i64: 1, 8>}]
// ENTRY: memref.view %[[PCACHE]][%{{.+}}][] : memref<256xi8> to memref<1x8x1x4xf32>
// ENTRY: call @moert_cached_attention
// ENTRY: func.func @moe_entry_decode
