// moe-lower-to-runtime: tensors -> buffers, ops -> runtime calls, weights ->
// views of the blob, returned values computed into the output buffers.
// RUN: moe-opt %s --moe-lower-experts --moe-lower-to-runtime -split-input-file | FileCheck %s
// RUN: moe-opt %s --moe-lower-experts --moe-lower-to-runtime="storage=bf16" -split-input-file | FileCheck %s --check-prefix=BF16

// CHECK-LABEL: func.func @moe_entry_forward(
// CHECK-SAME: %[[CTX:.*]]: !llvm.ptr, %[[W:.*]]: memref<4288xi8>,
// CHECK-SAME: %[[TOK:.*]]: memref<2x4xi32>, %[[LAB:.*]]: memref<2x4xi32>,
// CHECK-SAME: %[[LOGITS:.*]]: memref<2x4x16xf32>, %[[LOSS:.*]]: memref<f32>)
// The weights, in order of appearance, at 64-byte aligned offsets: the
// embedding 16*8*4 = 512 bytes, the norm 32 rounded up to 64, the gate 128,
// three stacked experts of 4*8*8*4 = 1024, the head 512: 4288 bytes.
// CHECK-SAME: moe.entry = {comm_bytes = 0 : i64, function = "forward", ignore_index = -100 : i64
// CHECK-SAME: inputs = [{dtype = "I32", name = "tokens", shape = array<i64: 2, 4>}, {dtype = "I32", name = "labels", shape = array<i64: 2, 4>}]
// CHECK-SAME: outputs = [{dtype = "F32", name = "logits", shape = array<i64: 2, 4, 16>}, {dtype = "F32", name = "loss", shape = array<i64>}]
// CHECK-SAME: params = [{dtype = "F32", name = "model.embed_tokens.weight", offset = 0 : i64, shape = array<i64: 16, 8>}, {dtype = "F32", name = "model.norm.weight", offset = 512 : i64, shape = array<i64: 8>}, {dtype = "F32", name = "model.layers.0.mlp.gate.weight", offset = 576 : i64, shape = array<i64: 4, 8>}, {dtype = "F32", name = "model.layers.0.mlp.experts.{e}.gate_proj.weight", offset = 704 : i64, shape = array<i64: 4, 8, 8>}
// CHECK-SAME: storage = "F32", weights_bytes = 4288 : i64
// The entry first tells the runtime the storage type (MOERT_DTYPE_F32 = 0).
// CHECK: call @moert_set_storage(%[[CTX]], %c0_i32) : (!llvm.ptr, i32) -> ()
//
// bf16 storage: the logits and every weight take 2 bytes an element
// (embedding 256, norm 16 -> 64, gate 64, experts 512 each, head 256: 2176
// bytes); the loss stays f32, and so do the loss terms' sum.
// BF16-LABEL: func.func @moe_entry_forward(
// BF16-SAME: memref<2176xi8>
// BF16-SAME: %[[LOGITS:.*]]: memref<2x4x16xbf16>, %[[LOSS:.*]]: memref<f32>)
// BF16-SAME: outputs = [{dtype = "BF16", name = "logits", shape = array<i64: 2, 4, 16>}, {dtype = "F32", name = "loss", shape = array<i64>}]
// BF16-SAME: params = [{dtype = "BF16", name = "model.embed_tokens.weight", offset = 0 : i64, shape = array<i64: 16, 8>}, {dtype = "BF16", name = "model.norm.weight", offset = 256 : i64, shape = array<i64: 8>}, {dtype = "BF16", name = "model.layers.0.mlp.gate.weight", offset = 320 : i64
// BF16-SAME: storage = "BF16", weights_bytes = 2176 : i64
// BF16: call @moert_set_storage(%{{.*}}, %c3_i32) : (!llvm.ptr, i32) -> ()
// BF16: memref.view %{{.*}} : memref<2176xi8> to memref<16x8xbf16>
// BF16: memref.alloc() {{.*}} : memref<2x4x8xbf16>
// BF16: memref.alloc() {{.*}} : memref<2x4x2xbf16>
// BF16: memref.alloc() {{.*}} : memref<2x4x2xi32>
// BF16: memref.alloc() {{.*}} : memref<5xi64>
// BF16: memref.expand_shape {{.*}} : memref<2x4x8xbf16> into memref<2x4x2x4xbf16>
// BF16: memref.alloc() {{.*}} : memref<f32>
// BF16: call @moert_add_f32(
//
// CHECK: %[[EMB:.*]] = memref.view %[[W]][%{{.*}}][] : memref<4288xi8> to memref<16x8xf32>
// CHECK: %[[H:.*]] = memref.alloc() {alignment = 64 : i64} : memref<2x4x8xf32>
// CHECK: call @moert_embedding(%[[CTX]], {{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64) -> ()
// CHECK: call @moert_rms_norm(%[[CTX]], {{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, f32) -> ()
// The router: three result buffers, 8 tokens of hidden 8, 4 experts, top 2,
// softmax (0), renormalised (1), route scale 1, one group; no expert bias
// (a null pointer).
// CHECK: %[[RW:.*]] = memref.alloc() {{.*}} : memref<2x4x2xf32>
// CHECK: %[[RI:.*]] = memref.alloc() {{.*}} : memref<2x4x2xi32>
// CHECK: %[[RL:.*]] = memref.alloc() {{.*}} : memref<2x4x4xf32>
// CHECK: %[[NOBIAS:.*]] = llvm.mlir.zero : !llvm.ptr
// CHECK: call @moert_router(%[[CTX]], %{{.*}}, %{{.*}}, %[[NOBIAS]], %{{.*}}, %{{.*}}, %{{.*}}, %c8_i64{{.*}}, %c8_i64{{.*}}, %c4_i64{{.*}}, %c2_i64{{.*}}, %c0_i32{{.*}}, %c1_i32{{.*}}, %cst{{.*}}, %c1_i64{{.*}}, %c1_i64{{.*}})
// The dropless experts pipeline and its buffers (8 tokens x top 2 = 16 rows).
// CHECK: memref.alloc() {{.*}} : memref<16x8xf32>
// CHECK: memref.alloc() {{.*}} : memref<5xi64>
// CHECK: memref.alloc() {{.*}} : memref<16xi32>
// CHECK: call @moert_permute(%[[CTX]], {{.*}}, %c8_i64{{.*}}, %c2_i64{{.*}}, %c8_i64{{.*}}, %c4_i64{{.*}})
// CHECK: memref.alloc() {{.*}} : memref<16x8xf32>
// CHECK: call @moert_grouped_swiglu(%[[CTX]], {{.*}}, %c4_i64{{.*}}, %c8_i64{{.*}}, %c8_i64{{.*}})
// CHECK: memref.alloc() {{.*}} : memref<2x4x8xf32>
// CHECK: call @moert_unpermute_combine(%[[CTX]], {{.*}}, %c8_i64{{.*}}, %c2_i64{{.*}}, %c8_i64{{.*}})
// CHECK: memref.expand_shape %{{.*}} {{\[\[}}0], [1], [2, 3]] output_shape [2, 4, 2, 4] : memref<2x4x8xf32> into memref<2x4x2x4xf32>
// CHECK: memref.collapse_shape
// The logits and the loss go straight into the output buffers: no copies.
// CHECK: %[[NOLMBIAS:.*]] = llvm.mlir.zero : !llvm.ptr
// CHECK: %[[LOGITSPTR:.*]] = memref.extract_aligned_pointer_as_index %[[LOGITS]]
// CHECK: call @moert_linear(%[[CTX]], %{{.*}}, %{{.*}}, %[[NOLMBIAS]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64)
// CHECK: call @moert_cross_entropy(
// CHECK: %[[LOSSPTR:.*]] = memref.extract_aligned_pointer_as_index %[[LOSS]]
// The loss terms are f32 scalars whatever the storage.
// CHECK: call @moert_add_f32(
// CHECK-NOT: memref.copy
// CHECK: return
// CHECK-NOT: func.func @forward
// CHECK-DAG: func.func private @moert_embedding(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64)
// CHECK-DAG: func.func private @moert_unpermute_combine(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64)
func.func @forward(%tokens: tensor<2x4xi32>, %labels: tensor<2x4xi32>) -> (tensor<2x4x16xf32>, tensor<f32>) {
  %embed = moe.param "model.embed_tokens.weight" : tensor<16x8xf32>
  %h = moe.embedding %tokens, %embed : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
  %norm_w = moe.param "model.norm.weight" : tensor<8xf32>
  %hn = moe.rms_norm %h, %norm_w {eps = 1.0e-6} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %gate = moe.param "model.layers.0.mlp.gate.weight" : tensor<4x8xf32>
  %rw, %ri, %rl = moe.router %hn, %gate softmax top 2 {norm_topk_prob} : (tensor<2x4x8xf32>, tensor<4x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x4xf32>)
  %eg = moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" : tensor<4x8x8xf32>
  %eu = moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" : tensor<4x8x8xf32>
  %ed = moe.param "model.layers.0.mlp.experts.{e}.down_proj.weight" : tensor<4x8x8xf32>
  %moe = moe.experts %hn, %rw, %ri, %eg, %eu, %ed : (tensor<2x4x8xf32>, tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<4x8x8xf32>, tensor<4x8x8xf32>, tensor<4x8x8xf32>) -> tensor<2x4x8xf32>
  %m4 = tensor.expand_shape %moe [[0], [1], [2, 3]] output_shape [2, 4, 2, 4] : tensor<2x4x8xf32> into tensor<2x4x2x4xf32>
  %m = tensor.collapse_shape %m4 [[0], [1], [2, 3]] : tensor<2x4x2x4xf32> into tensor<2x4x8xf32>
  %head = moe.param "lm_head.weight" : tensor<16x8xf32>
  %logits = moe.linear %m, %head : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  %ce = moe.cross_entropy %logits, %labels : (tensor<2x4x16xf32>, tensor<2x4xi32>) -> tensor<f32>
  %aux = moe.aux_loss %rl, %ri softmax {coefficient = 1.0e-2} : (tensor<2x4x4xf32>, tensor<2x4x2xi32>) -> tensor<f32>
  %loss = moe.add %ce, %aux : tensor<f32>
  return %logits, %loss : tensor<2x4x16xf32>, tensor<f32>
}

// -----

// Optional operands that are given are passed as buffers, not null
// pointers; a returned weight and a
// value returned twice are copied into their output buffers. Functions other
// than @forward name their inputs and outputs by position.
// CHECK-LABEL: func.func @moe_entry_block(
// CHECK-SAME: %[[CTX:.*]]: !llvm.ptr, %[[W:.*]]: memref<{{[0-9]+}}xi8>, %[[X:.*]]: memref<2x3x8xf32>, %[[POS:.*]]: memref<2x3xi32>,
// CHECK-SAME: %[[O0:.*]]: memref<2x3x8xf32>, %[[O1:.*]]: memref<8xf32>, %[[O2:.*]]: memref<2x3x8xf32>)
// CHECK-SAME: inputs = [{dtype = "F32", name = "input0"{{.*}}}, {dtype = "I32", name = "input1"
// CHECK-SAME: outputs = [{dtype = "F32", name = "output0"{{.*}}}, {dtype = "F32", name = "output1"{{.*}}}, {dtype = "F32", name = "output2"
// CHECK-NOT: llvm.mlir.zero
// CHECK: call @moert_linear(%[[CTX]], {{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64)
// CHECK-NOT: llvm.mlir.zero
// CHECK: %[[THETA:.*]] = arith.constant 1.000000e+04 : f64
// CHECK-NEXT: %[[YF:.*]] = arith.constant 4.000000e+00 : f64
// CHECK-NEXT: %[[YL:.*]] = arith.constant 1.000000e+00 : f64
// CHECK-NEXT: %[[YH:.*]] = arith.constant 2.000000e+00 : f64
// CHECK-NEXT: %[[YS:.*]] = arith.constant 1.500000e+00 : f64
// CHECK-NEXT: %[[INTERLEAVED:.*]] = arith.constant 1 : i32
// CHECK: call @moert_rope({{.*}}, %[[THETA]], %[[YF]], %[[YL]], %[[YH]], %[[YS]], %[[INTERLEAVED]])
// CHECK-NOT: llvm.mlir.zero
// CHECK: call @moert_shared_experts(%[[CTX]], {{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64)
// CHECK-NOT: llvm.mlir.zero
// CHECK: call @moert_router(
// CHECK: call @moert_z_loss(
// CHECK: call @moert_mlp(%[[CTX]], {{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64)
// Returned values not computed in place are copied by the runtime (the
// buffers may be device memory): 8 floats into output 1, 2x3x8 into output 2.
// CHECK-NOT: memref.copy
// CHECK: %[[B1:.*]] = arith.constant 32 : i64
// CHECK: memref.extract_aligned_pointer_as_index %[[O1]] : memref<8xf32>
// CHECK: call @moert_copy(%[[CTX]], %{{.*}}, %{{.*}}, %[[B1]])
// CHECK: %[[B2:.*]] = arith.constant 192 : i64
// CHECK: memref.extract_aligned_pointer_as_index %[[O2]] : memref<2x3x8xf32>
// CHECK: call @moert_copy(%[[CTX]], %{{.*}}, %{{.*}}, %[[B2]])
// CHECK-NEXT: return
func.func @block(%x: tensor<2x3x8xf32>, %pos: tensor<2x3xi32>) -> (tensor<2x3x8xf32>, tensor<8xf32>, tensor<2x3x8xf32>) {
  %w = moe.param "w" : tensor<8x8xf32>
  %b = moe.param "b" : tensor<8xf32>
  %y = moe.linear %x, %w bias %b : (tensor<2x3x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x3x8xf32>
  %y4 = tensor.expand_shape %y [[0], [1], [2, 3]] output_shape [2, 3, 2, 4] : tensor<2x3x8xf32> into tensor<2x3x2x4xf32>
  %r = moe.rope %y4 positions %pos {theta = 10000.0, yarn_factor = 4.0, yarn_low = 1.0, yarn_high = 2.0, yarn_scale = 1.5, interleaved} : (tensor<2x3x2x4xf32>, tensor<2x3xi32>) -> tensor<2x3x2x4xf32>
  %r3 = tensor.collapse_shape %r [[0], [1], [2, 3]] : tensor<2x3x2x4xf32> into tensor<2x3x8xf32>
  %sg = moe.param "sg" : tensor<16x8xf32>
  %su = moe.param "su" : tensor<16x8xf32>
  %sd = moe.param "sd" : tensor<8x16xf32>
  %sgate = moe.param "sgate" : tensor<1x8xf32>
  %s = moe.shared_experts %r3, %sg, %su, %sd gated by %sgate : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>, tensor<1x8xf32>) -> tensor<2x3x8xf32>
  %g = moe.param "g" : tensor<4x8xf32>
  %eb = moe.param "eb" : tensor<4xf32>
  %rw, %ri, %rl = moe.router %s, %g bias %eb sigmoid top 2 {norm_topk_prob, route_scale = 2.5} : (tensor<2x3x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> (tensor<2x3x2xf32>, tensor<2x3x2xi32>, tensor<2x3x4xf32>)
  %z = moe.z_loss %rl {coefficient = 1.0e-3} : (tensor<2x3x4xf32>) -> tensor<f32>
  %mg = moe.param "mg" : tensor<16x8xf32>
  %mu = moe.param "mu" : tensor<16x8xf32>
  %md = moe.param "md" : tensor<8x16xf32>
  %o = moe.mlp %s, %mg, %mu, %md : (tensor<2x3x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>) -> tensor<2x3x8xf32>
  return %o, %b, %o : tensor<2x3x8xf32>, tensor<8xf32>, tensor<2x3x8xf32>
}

// -----

// A router's expert bias is marked in the manifest with the slot of its
// layer among the per-expert token counts (one per permute, in order): here
// the second routed layer. The bias of a router that routes nothing (no
// permute) and the other weights are not marked.
// CHECK-LABEL: func.func @moe_entry_two_layers(
// CHECK-SAME: params = [{dtype = "F32", name = "g0", offset = 0 : i64, shape = array<i64: 4, 8>}, {dtype = "F32", name = "eg", {{[^}]*}}}, {dtype = "F32", name = "eu", {{[^}]*}}}, {dtype = "F32", name = "ed", {{[^}]*}}}, {balances_layer = 1 : i64, dtype = "F32", name = "b1", offset = {{[0-9]+}} : i64, shape = array<i64: 4>}, {dtype = "F32", name = "b2", offset
// CHECK-NOT: balances_layer
func.func @two_layers(%x: tensor<2x3x8xf32>) -> tensor<2x3x8xf32> {
  %g0 = moe.param "g0" : tensor<4x8xf32>
  %w0, %i0, %l0 = moe.router %x, %g0 softmax top 2 : (tensor<2x3x8xf32>, tensor<4x8xf32>) -> (tensor<2x3x2xf32>, tensor<2x3x2xi32>, tensor<2x3x4xf32>)
  %eg = moe.param "eg" : tensor<4x8x8xf32>
  %eu = moe.param "eu" : tensor<4x8x8xf32>
  %ed = moe.param "ed" : tensor<4x8x8xf32>
  %y0 = moe.experts %x, %w0, %i0, %eg, %eu, %ed : (tensor<2x3x8xf32>, tensor<2x3x2xf32>, tensor<2x3x2xi32>, tensor<4x8x8xf32>, tensor<4x8x8xf32>, tensor<4x8x8xf32>) -> tensor<2x3x8xf32>
  %b1 = moe.param "b1" : tensor<4xf32>
  %w1, %i1, %l1 = moe.router %y0, %g0 bias %b1 sigmoid top 2 : (tensor<2x3x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> (tensor<2x3x2xf32>, tensor<2x3x2xi32>, tensor<2x3x4xf32>)
  %y1 = moe.experts %y0, %w1, %i1, %eg, %eu, %ed : (tensor<2x3x8xf32>, tensor<2x3x2xf32>, tensor<2x3x2xi32>, tensor<4x8x8xf32>, tensor<4x8x8xf32>, tensor<4x8x8xf32>) -> tensor<2x3x8xf32>
  %b2 = moe.param "b2" : tensor<4xf32>
  %w2, %i2, %l2 = moe.router %y1, %g0 bias %b2 sigmoid top 2 : (tensor<2x3x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> (tensor<2x3x2xf32>, tensor<2x3x2xi32>, tensor<2x3x4xf32>)
  return %y1 : tensor<2x3x8xf32>
}

// -----

// MLA's pieces: concat with the shared rotary key broadcast over 4 heads
// (rows 2*3*4 = 24 of 8 + 4 features, the rhs row repeated 4 times),
// attention with value heads of 6 beside query/key heads of 12, and split.
// CHECK-LABEL: func.func @moe_entry_latent
// CHECK: %[[ROWS:.*]] = arith.constant 24 : i64
// CHECK-NEXT: %[[AW:.*]] = arith.constant 8 : i64
// CHECK-NEXT: %[[BW:.*]] = arith.constant 4 : i64
// CHECK-NEXT: %[[AR:.*]] = arith.constant 1 : i64
// CHECK-NEXT: %[[BR:.*]] = arith.constant 4 : i64
// CHECK: call @moert_concat(%{{.*}}, %[[ROWS]], %[[AW]], %[[BW]], %[[AR]], %[[BR]])
// CHECK: %[[HD:.*]] = arith.constant 12 : i64
// CHECK-NEXT: %[[VD:.*]] = arith.constant 6 : i64
// CHECK: call @moert_attention(%{{.*}}, %[[HD]], %[[VD]], %{{.*}}, %{{.*}})
// CHECK: %[[SW:.*]] = arith.constant 2 : i64
// CHECK: call @moert_split(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[SW]], %{{.*}}, %{{.*}})
func.func @latent(%kp: tensor<2x3x4x8xf32>, %kr: tensor<2x3x1x4xf32>, %v: tensor<2x3x4x6xf32>) -> (tensor<2x3x4x4xf32>, tensor<2x3x4x2xf32>) {
  %key = moe.concat %kp, %kr : (tensor<2x3x4x8xf32>, tensor<2x3x1x4xf32>) -> tensor<2x3x4x12xf32>
  %a = moe.attention %key, %key, %v {causal} : (tensor<2x3x4x12xf32>, tensor<2x3x4x12xf32>, tensor<2x3x4x6xf32>) -> tensor<2x3x4x6xf32>
  %l, %r = moe.split %a : (tensor<2x3x4x6xf32>) -> (tensor<2x3x4x4xf32>, tensor<2x3x4x2xf32>)
  return %l, %r : tensor<2x3x4x4xf32>, tensor<2x3x4x2xf32>
}
