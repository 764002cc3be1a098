// Round trip of every moe op in every optional form, through the custom and
// the generic printer.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s

// CHECK-LABEL: func.func @param
func.func @param() -> (tensor<8xf32>, tensor<4x6x8xf32>) {
  // CHECK: moe.param "model.norm.weight" : tensor<8xf32>
  %w = moe.param "model.norm.weight" : tensor<8xf32>
  // CHECK: moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" : tensor<4x6x8xf32>
  %e = moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" : tensor<4x6x8xf32>
  return %w, %e : tensor<8xf32>, tensor<4x6x8xf32>
}

// CHECK-LABEL: func.func @dense
func.func @dense(%tok: tensor<2x4xi32>, %table: tensor<16x8xf32>, %w: tensor<8xf32>,
                 %lw: tensor<12x8xf32>, %b: tensor<12xf32>) -> (tensor<2x4x12xf32>, tensor<2x4x12xf32>) {
  // CHECK: %[[X:.+]] = moe.embedding %{{.+}}, %{{.+}} : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
  %x = moe.embedding %tok, %table : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
  // CHECK: %[[N:.+]] = moe.rms_norm %[[X]], %{{.+}} {eps = 1.000000e-05 : f64} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %n = moe.rms_norm %x, %w {eps = 1.0e-5 : f64} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  // The default eps is not printed.
  // CHECK: moe.rms_norm %[[N]], %{{[^ ]+}} : (tensor<2x4x8xf32>
  %n2 = moe.rms_norm %n, %w : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  // CHECK: moe.linear %{{.+}}, %{{[^ ]+}} : (tensor<2x4x8xf32>, tensor<12x8xf32>) -> tensor<2x4x12xf32>
  %y = moe.linear %n2, %lw : (tensor<2x4x8xf32>, tensor<12x8xf32>) -> tensor<2x4x12xf32>
  // CHECK: moe.linear %{{.+}}, %{{.+}} bias %{{.+}} : (tensor<2x4x8xf32>, tensor<12x8xf32>, tensor<12xf32>) -> tensor<2x4x12xf32>
  %yb = moe.linear %n2, %lw bias %b : (tensor<2x4x8xf32>, tensor<12x8xf32>, tensor<12xf32>) -> tensor<2x4x12xf32>
  return %y, %yb : tensor<2x4x12xf32>, tensor<2x4x12xf32>
}

// CHECK-LABEL: func.func @cached_attention
func.func @cached_attention(%q: tensor<2x1x4x8xf32>, %k: tensor<2x1x2x8xf32>, %v: tensor<2x1x2x6xf32>,
                            %pos: tensor<2x1xi32>) -> tensor<2x1x4x6xf32> {
  // CHECK: %[[KC:.+]] = moe.kv_cache "layers.0.keys" : tensor<2x16x2x8xf32>
  %kc = moe.kv_cache "layers.0.keys" : tensor<2x16x2x8xf32>
  // CHECK: %[[VC:.+]] = moe.kv_cache "layers.0.values" : tensor<2x16x2x6xf32>
  %vc = moe.kv_cache "layers.0.values" : tensor<2x16x2x6xf32>
  // CHECK: moe.cached_attention %{{.+}}, %{{.+}}, %{{.+}} cache %[[KC]], %[[VC]] positions %{{[^ ]+}} {scale = 2.500000e-01 : f64} : (tensor<2x1x4x8xf32>, tensor<2x1x2x8xf32>, tensor<2x1x2x6xf32>, tensor<2x16x2x8xf32>, tensor<2x16x2x6xf32>, tensor<2x1xi32>) -> tensor<2x1x4x6xf32>
  %a = moe.cached_attention %q, %k, %v cache %kc, %vc positions %pos {scale = 0.25 : f64} : (tensor<2x1x4x8xf32>, tensor<2x1x2x8xf32>, tensor<2x1x2x6xf32>, tensor<2x16x2x8xf32>, tensor<2x16x2x6xf32>, tensor<2x1xi32>) -> tensor<2x1x4x6xf32>
  return %a : tensor<2x1x4x6xf32>
}

// CHECK-LABEL: func.func @attention
func.func @attention(%q: tensor<2x4x4x8xf32>, %k: tensor<2x4x2x8xf32>, %v: tensor<2x4x2x8xf32>,
                     %pos: tensor<2x4xi32>) -> (tensor<2x4x4x8xf32>, tensor<2x4x4x8xf32>) {
  // CHECK: %[[Q:.+]] = moe.rope %{{[^ ]+}} {theta = 1.000000e+06 : f64} : (tensor<2x4x4x8xf32>) -> tensor<2x4x4x8xf32>
  %qr = moe.rope %q {theta = 1.0e6 : f64} : (tensor<2x4x4x8xf32>) -> tensor<2x4x4x8xf32>
  // CHECK: %[[K:.+]] = moe.rope %{{.+}} positions %{{[^ ]+}} : (tensor<2x4x2x8xf32>, tensor<2x4xi32>) -> tensor<2x4x2x8xf32>
  %kr = moe.rope %k positions %pos : (tensor<2x4x2x8xf32>, tensor<2x4xi32>) -> tensor<2x4x2x8xf32>
  // CHECK: moe.attention %[[Q]], %[[K]], %{{[^ ]+}} {causal} : (tensor<2x4x4x8xf32>, tensor<2x4x2x8xf32>, tensor<2x4x2x8xf32>) -> tensor<2x4x4x8xf32>
  %a = moe.attention %qr, %kr, %v {causal} : (tensor<2x4x4x8xf32>, tensor<2x4x2x8xf32>, tensor<2x4x2x8xf32>) -> tensor<2x4x4x8xf32>
  // CHECK: moe.attention %{{.+}} {scale = 1.250000e-01 : f64} : (tensor<2x4x4x8xf32>, tensor<2x4x2x8xf32>
  %b = moe.attention %qr, %kr, %v {scale = 0.125 : f64} : (tensor<2x4x4x8xf32>, tensor<2x4x2x8xf32>, tensor<2x4x2x8xf32>) -> tensor<2x4x4x8xf32>
  return %a, %b : tensor<2x4x4x8xf32>, tensor<2x4x4x8xf32>
}

// DeepSeek's MLA: each head cut into its non-rotary and rotary parts, the
// rotary part rotated with interleaved pairs, the key's shared rotary head
// broadcast over the heads, value heads narrower than the query/key heads.
// CHECK-LABEL: func.func @latent_attention
func.func @latent_attention(%q: tensor<2x4x4x12xf32>, %kv: tensor<2x4x4x14xf32>,
                            %kr: tensor<2x4x1x4xf32>) -> tensor<2x4x4x6xf32> {
  // CHECK: %[[QP:.+]], %[[QR:.+]] = moe.split %{{[^ ]+}} : (tensor<2x4x4x12xf32>) -> (tensor<2x4x4x8xf32>, tensor<2x4x4x4xf32>)
  %qp, %qr = moe.split %q : (tensor<2x4x4x12xf32>) -> (tensor<2x4x4x8xf32>, tensor<2x4x4x4xf32>)
  // CHECK: %[[R:.+]] = moe.rope %[[QR]] {interleaved} : (tensor<2x4x4x4xf32>) -> tensor<2x4x4x4xf32>
  %r = moe.rope %qr {interleaved} : (tensor<2x4x4x4xf32>) -> tensor<2x4x4x4xf32>
  // CHECK: moe.concat %[[QP]], %[[R]] : (tensor<2x4x4x8xf32>, tensor<2x4x4x4xf32>) -> tensor<2x4x4x12xf32>
  %query = moe.concat %qp, %r : (tensor<2x4x4x8xf32>, tensor<2x4x4x4xf32>) -> tensor<2x4x4x12xf32>
  %kp, %v = moe.split %kv : (tensor<2x4x4x14xf32>) -> (tensor<2x4x4x8xf32>, tensor<2x4x4x6xf32>)
  // CHECK: moe.concat %{{.+}}, %{{[^ ]+}} : (tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>) -> tensor<2x4x4x12xf32>
  %key = moe.concat %kp, %kr : (tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>) -> tensor<2x4x4x12xf32>
  // CHECK: moe.attention %{{.+}} {causal} : (tensor<2x4x4x12xf32>, tensor<2x4x4x12xf32>, tensor<2x4x4x6xf32>) -> tensor<2x4x4x6xf32>
  %a = moe.attention %query, %key, %v {causal} : (tensor<2x4x4x12xf32>, tensor<2x4x4x12xf32>, tensor<2x4x4x6xf32>) -> tensor<2x4x4x6xf32>
  return %a : tensor<2x4x4x6xf32>
}

// CHECK-LABEL: func.func @concat_grad
func.func @concat_grad(%dy: tensor<2x4x4x12xf32>, %a: tensor<2x4x4x8xf32>,
                       %b: tensor<2x4x1x4xf32>) -> (tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>) {
  // CHECK: moe.concat_grad %{{.+}}, %{{.+}}, %{{[^ ]+}} : (tensor<2x4x4x12xf32>, tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>) -> (tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>)
  %da, %db = moe.concat_grad %dy, %a, %b : (tensor<2x4x4x12xf32>, tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>) -> (tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>)
  return %da, %db : tensor<2x4x4x8xf32>, tensor<2x4x1x4xf32>
}

// CHECK-LABEL: func.func @mlp_and_add
func.func @mlp_and_add(%x: tensor<2x4x8xf32>, %g: tensor<16x8xf32>, %u: tensor<16x8xf32>,
                       %d: tensor<8x16xf32>) -> tensor<2x4x8xf32> {
  // CHECK: %[[M:.+]] = moe.mlp %{{.+}}, %{{.+}}, %{{.+}}, %{{[^ ]+}} : (tensor<2x4x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>) -> tensor<2x4x8xf32>
  %m = moe.mlp %x, %g, %u, %d : (tensor<2x4x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>) -> tensor<2x4x8xf32>
  // CHECK: moe.add %{{.+}}, %[[M]] : tensor<2x4x8xf32>
  %r = moe.add %x, %m : tensor<2x4x8xf32>
  return %r : tensor<2x4x8xf32>
}

// CHECK-LABEL: func.func @routing
func.func @routing(%x: tensor<2x4x8xf32>, %gate: tensor<8x8xf32>, %bias: tensor<8xf32>)
    -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>, tensor<2x4x4xf32>) {
  // CHECK: %{{.+}}, %{{.+}}, %{{.+}} = moe.router %{{.+}}, %{{[^ ]+}} softmax top 2 {norm_topk_prob} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  %w, %i, %l = moe.router %x, %gate softmax top 2 {norm_topk_prob} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> (tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>)
  // CHECK: moe.router %{{.+}}, %{{.+}} bias %{{[^ ]+}} sigmoid top 4 {n_group = 4 : i64, norm_topk_prob, route_scale = 2.500000e+00 : f64, topk_group = 2 : i64} : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>)
  %w2, %i2, %l2 = moe.router %x, %gate bias %bias sigmoid top 4 {norm_topk_prob, route_scale = 2.5 : f64, n_group = 4, topk_group = 2} : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> (tensor<2x4x4xf32>, tensor<2x4x4xi32>, tensor<2x4x8xf32>)
  return %w, %i, %l, %w2 : tensor<2x4x2xf32>, tensor<2x4x2xi32>, tensor<2x4x8xf32>, tensor<2x4x4xf32>
}

// CHECK-LABEL: func.func @experts
func.func @experts(%x: tensor<8x6xf32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>,
                   %eg: tensor<4x10x6xf32>, %eu: tensor<4x10x6xf32>, %ed: tensor<4x6x10xf32>,
                   %sg: tensor<12x6xf32>, %su: tensor<12x6xf32>, %sd: tensor<6x12xf32>,
                   %sgate: tensor<1x6xf32>) -> (tensor<8x6xf32>, tensor<8x6xf32>, tensor<8x6xf32>, tensor<8x6xf32>) {
  // CHECK: moe.experts %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{[^ ]+}} : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  %y = moe.experts %x, %w, %i, %eg, %eu, %ed : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  // CHECK: moe.experts {{.+}} {capacity_factor = 1.250000e+00 : f64} : (tensor<8x6xf32>
  %yc = moe.experts %x, %w, %i, %eg, %eu, %ed {capacity_factor = 1.25 : f64} : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
  // CHECK: moe.shared_experts %{{.+}}, %{{.+}}, %{{.+}}, %{{[^ ]+}} : (tensor<8x6xf32>, tensor<12x6xf32>, tensor<12x6xf32>, tensor<6x12xf32>) -> tensor<8x6xf32>
  %s = moe.shared_experts %x, %sg, %su, %sd : (tensor<8x6xf32>, tensor<12x6xf32>, tensor<12x6xf32>, tensor<6x12xf32>) -> tensor<8x6xf32>
  // CHECK: moe.shared_experts %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} gated by %{{[^ ]+}} : (tensor<8x6xf32>, tensor<12x6xf32>, tensor<12x6xf32>, tensor<6x12xf32>, tensor<1x6xf32>) -> tensor<8x6xf32>
  %sgd = moe.shared_experts %x, %sg, %su, %sd gated by %sgate : (tensor<8x6xf32>, tensor<12x6xf32>, tensor<12x6xf32>, tensor<6x12xf32>, tensor<1x6xf32>) -> tensor<8x6xf32>
  return %y, %yc, %s, %sgd : tensor<8x6xf32>, tensor<8x6xf32>, tensor<8x6xf32>, tensor<8x6xf32>
}

// CHECK-LABEL: func.func @losses
func.func @losses(%logits: tensor<2x4x16xf32>, %labels: tensor<2x4xi32>,
                  %rl: tensor<2x4x8xf32>, %ri: tensor<2x4x2xi32>) -> tensor<f32> {
  // CHECK: %[[CE:.+]] = moe.cross_entropy %{{.+}}, %{{[^ ]+}} : (tensor<2x4x16xf32>, tensor<2x4xi32>) -> tensor<f32>
  %ce = moe.cross_entropy %logits, %labels : (tensor<2x4x16xf32>, tensor<2x4xi32>) -> tensor<f32>
  // CHECK: moe.cross_entropy %{{.+}}, %{{[^ ]+}} {ignore_index = 0 : i64}
  %ce0 = moe.cross_entropy %logits, %labels {ignore_index = 0} : (tensor<2x4x16xf32>, tensor<2x4xi32>) -> tensor<f32>
  // CHECK: %[[AUX:.+]] = moe.aux_loss %{{.+}}, %{{[^ ]+}} softmax {coefficient = 1.000000e-03 : f64} : (tensor<2x4x8xf32>, tensor<2x4x2xi32>) -> tensor<f32>
  %aux = moe.aux_loss %rl, %ri softmax {coefficient = 1.0e-3 : f64} : (tensor<2x4x8xf32>, tensor<2x4x2xi32>) -> tensor<f32>
  // CHECK: moe.aux_loss %{{.+}}, %{{[^ ]+}} sigmoid {coefficient
  %aux2 = moe.aux_loss %rl, %ri sigmoid {coefficient = 1.0e-4 : f64} : (tensor<2x4x8xf32>, tensor<2x4x2xi32>) -> tensor<f32>
  // CHECK: %[[Z:.+]] = moe.z_loss %{{[^ ]+}} {coefficient = 1.000000e-03 : f64} : (tensor<2x4x8xf32>) -> tensor<f32>
  %z = moe.z_loss %rl {coefficient = 1.0e-3 : f64} : (tensor<2x4x8xf32>) -> tensor<f32>
  %s0 = moe.add %ce, %aux : tensor<f32>
  %s1 = moe.add %s0, %aux2 : tensor<f32>
  %s2 = moe.add %s1, %z : tensor<f32>
  %s3 = moe.add %s2, %ce0 : tensor<f32>
  return %s3 : tensor<f32>
}

// The dropless expert pipeline that moe-lower-experts produces.
// CHECK-LABEL: func.func @expert_pipeline
// CHECK: moe.permute %{{.*}}, %{{.*}} experts 8 : (tensor<4x16x64xf32>, tensor<4x16x2xi32>) -> (tensor<128x64xf32>, tensor<9xi64>, tensor<128xi32>)
// CHECK: moe.grouped_swiglu %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : (tensor<128x64xf32>, tensor<9xi64>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<128x64xf32>
// CHECK: moe.unpermute %{{.*}}, %{{.*}}, %{{.*}} : (tensor<128x64xf32>, tensor<128xi32>, tensor<4x16x2xf32>) -> tensor<4x16x64xf32>
func.func @expert_pipeline(%x: tensor<4x16x64xf32>, %i: tensor<4x16x2xi32>, %w: tensor<4x16x2xf32>, %g: tensor<8x32x64xf32>, %u: tensor<8x32x64xf32>, %d: tensor<8x64x32xf32>) -> tensor<4x16x64xf32> {
  %rows, %offsets, %slots = moe.permute %x, %i experts 8 : (tensor<4x16x64xf32>, tensor<4x16x2xi32>) -> (tensor<128x64xf32>, tensor<9xi64>, tensor<128xi32>)
  %y = moe.grouped_swiglu %rows, %offsets, %g, %u, %d : (tensor<128x64xf32>, tensor<9xi64>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<128x64xf32>
  %out = moe.unpermute %y, %slots, %w : (tensor<128x64xf32>, tensor<128xi32>, tensor<4x16x2xf32>) -> tensor<4x16x64xf32>
  return %out : tensor<4x16x64xf32>
}

// Expert parallelism: dispatch to the 2 EP ranks, 4 local experts in 2
// segments each (one per source rank), combine back.
// CHECK-LABEL: func @expert_parallel
// CHECK: moe.dispatch %{{.*}}, %{{.*}} on @ep_grid grid_axes = [0] : (tensor<128x64xf32>, tensor<9xi64>) -> (tensor<256x64xf32>, tensor<9xi64>)
// CHECK: moe.grouped_swiglu %{{.*}} : (tensor<256x64xf32>, tensor<9xi64>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<256x64xf32>
// CHECK: moe.combine %{{.*}}, %{{.*}}, %{{.*}} on @ep_grid grid_axes = [0] : (tensor<256x64xf32>, tensor<9xi64>, tensor<9xi64>) -> tensor<128x64xf32>
shard.grid @ep_grid(shape = 2)
func.func @expert_parallel(%rows: tensor<128x64xf32>, %offsets: tensor<9xi64>, %g: tensor<4x32x64xf32>, %u: tensor<4x32x64xf32>, %d: tensor<4x64x32xf32>) -> tensor<128x64xf32> {
  %recv, %recv_offsets = moe.dispatch %rows, %offsets on @ep_grid grid_axes = [0] : (tensor<128x64xf32>, tensor<9xi64>) -> (tensor<256x64xf32>, tensor<9xi64>)
  %y = moe.grouped_swiglu %recv, %recv_offsets, %g, %u, %d : (tensor<256x64xf32>, tensor<9xi64>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<256x64xf32>
  %back = moe.combine %y, %recv_offsets, %offsets on @ep_grid grid_axes = [0] : (tensor<256x64xf32>, tensor<9xi64>, tensor<9xi64>) -> tensor<128x64xf32>
  return %back : tensor<128x64xf32>
}

// With a run-time placement table: 5 expert slots on each of the 2 ranks
// (2 x 5 + 1 received offsets) for 8 experts, one spare for a replica.
// CHECK-LABEL: func @expert_placement
// CHECK: moe.dispatch %{{.*}}, %{{.*}} on @ep_grid grid_axes = [0] placement 1 : (tensor<128x64xf32>, tensor<9xi64>) -> (tensor<384x64xf32>, tensor<11xi64>)
// CHECK: moe.combine %{{.*}}, %{{.*}}, %{{.*}} on @ep_grid grid_axes = [0] placement 1 : (tensor<384x64xf32>, tensor<11xi64>, tensor<9xi64>) -> tensor<128x64xf32>
func.func @expert_placement(%rows: tensor<128x64xf32>, %offsets: tensor<9xi64>) -> tensor<128x64xf32> {
  %g = moe.param "e.{e}.gate" {moe.placement = 1 : i64} : tensor<5x32x64xf32>
  %u = moe.param "e.{e}.up" {moe.placement = 1 : i64} : tensor<5x32x64xf32>
  %d = moe.param "e.{e}.down" {moe.placement = 1 : i64} : tensor<5x64x32xf32>
  %recv, %recv_offsets = moe.dispatch %rows, %offsets on @ep_grid grid_axes = [0] placement 1 : (tensor<128x64xf32>, tensor<9xi64>) -> (tensor<384x64xf32>, tensor<11xi64>)
  %y = moe.grouped_swiglu %recv, %recv_offsets, %g, %u, %d : (tensor<384x64xf32>, tensor<11xi64>, tensor<5x32x64xf32>, tensor<5x32x64xf32>, tensor<5x64x32xf32>) -> tensor<384x64xf32>
  %back = moe.combine %y, %recv_offsets, %offsets on @ep_grid grid_axes = [0] placement 1 : (tensor<384x64xf32>, tensor<11xi64>, tensor<9xi64>) -> tensor<128x64xf32>
  return %back : tensor<128x64xf32>
}

// The mesh attribute round-trips with omitted axes defaulting to 1.
// CHECK-LABEL: module @meshed
// CHECK-SAME: moe.mesh = #moe.mesh<dp = 2, ep = 2>
module @meshed attributes {moe.mesh = #moe.mesh<dp = 2, ep = 2>} {
}

// Sequence parallelism is printed only when on.
// CHECK-LABEL: module @sequence_parallel
// CHECK-SAME: moe.mesh = #moe.mesh<dp = 2, tp = 2, sp = true>
module @sequence_parallel attributes {moe.mesh = #moe.mesh<dp = 2, tp = 2, sp = true>} {
}

// CHECK-LABEL: module @not_sequence_parallel
// CHECK-SAME: moe.mesh = #moe.mesh<tp = 2>}
module @not_sequence_parallel attributes {moe.mesh = #moe.mesh<tp = 2, sp = false>} {
}
