// moe-shard-weights (ZeRO stage 3): every weight the data-parallel plane
// holds whole is split over dp (and cp) along its first dimension that
// divides, as the minor split after tp, and each op reading it reads the
// whole block from an all-gather right in front of it. Expert weights split
// over ep keep their layout.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,tp=2,ep=2" --moe-shard --moe-partition --moe-shard-weights | FileCheck %s
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,cp=2" --moe-shard --moe-partition --moe-shard-weights | FileCheck %s --check-prefix=PLANE
// RUN: moe-opt %s --split-input-file --moe-shard-weights | FileCheck %s --check-prefix=EDGE
// RUN: moe-opt %s --split-input-file --moe-shard-weights --moe-build-train-step="zero=3" | FileCheck %s --check-prefix=STEP
// Stage 2: one gather right after the weight, kept for the backward.
// RUN: moe-opt %s --split-input-file --moe-shard-weights="stage=2" --moe-build-train-step="zero=2" | FileCheck %s --check-prefix=STAGE2
// Under recompute a gathered weight is a weight: never recomputed. Stage 2's
// recomputed block reads the forward's copy, stage 3's a gather again.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2" --moe-shard --moe-partition --moe-shard-weights="stage=2" --moe-lower-experts --moe-build-train-step="zero=2 recompute=full" | FileCheck %s --check-prefix=STAGE2RC
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2" --moe-shard --moe-partition --moe-shard-weights --moe-lower-experts --moe-build-train-step="zero=3 recompute=full" | FileCheck %s --check-prefix=STAGE3RC
// RUN: not moe-opt %models/qwen3_moe_tiny.mlir --moe-shard-weights 2>&1 | FileCheck %s --check-prefix=UNPARTITIONED
// RUN: not moe-opt %s --split-input-file --moe-shard-weights="stage=1" 2>&1 | FileCheck %s --check-prefix=BADSTAGE
// RUN: not moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=tp=2" --moe-shard --moe-partition --moe-shard-weights 2>&1 | FileCheck %s --check-prefix=NODP

// A column-parallel projection: rows split over tp, then dp inside each tp
// block; gathered over dp back to the tp block just before the linear.
// CHECK-LABEL: func.func @forward
// CHECK: %[[E:.*]] = moe.param "model.embed_tokens.weight" {moe.global_shape = array<i64: 128, 64>, moe.split = {{\[}}["dp"], []]} : tensor<64x64xf32>
// CHECK-NEXT: %[[EW:.*]] = shard.all_gather %[[E]] on @mesh grid_axes = [0] gather_axis = 0 : tensor<64x64xf32> -> tensor<128x64xf32>
// CHECK-NEXT: moe.embedding %{{.*}}, %[[EW]]
// CHECK: %[[Q:.*]] = moe.param "model.layers.0.self_attn.q_proj.weight" {moe.global_shape = array<i64: 64, 64>, moe.split = {{\[}}["tp", "dp"], []]} : tensor<16x64xf32>
// CHECK-NEXT: %[[QW:.*]] = shard.all_gather %[[Q]] on @mesh grid_axes = [0] gather_axis = 0 : tensor<16x64xf32> -> tensor<32x64xf32>
// CHECK-NEXT: moe.linear %{{.*}}, %[[QW]] : (tensor<2x16x64xf32>, tensor<32x64xf32>)
// A row-parallel one: columns over tp, rows over dp.
// CHECK: %[[O:.*]] = moe.param "model.layers.0.self_attn.o_proj.weight" {moe.global_shape = array<i64: 64, 64>, moe.split = {{\[}}["dp"], ["tp"]]} : tensor<32x32xf32>
// CHECK-NEXT: %[[OW:.*]] = shard.all_gather %[[O]] on @mesh grid_axes = [0] gather_axis = 0 : tensor<32x32xf32> -> tensor<64x32xf32>
// CHECK-NEXT: moe.linear %{{.*}}, %[[OW]]
// The router gate is split; the experts, split over ep, are not gathered.
// CHECK: moe.param "model.layers.0.mlp.gate.weight" {{{.*}}moe.split = {{\[}}["dp"], []]} : tensor<4x64xf32>
// CHECK: %[[UP:.*]] = moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" {{{.*}}moe.split = {{\[}}["ep"], [], []]} : tensor<4x32x64xf32>
// CHECK-NOT: shard.all_gather %[[UP]]
// CHECK: moe.param "lm_head.weight" {{{.*}}moe.split = {{\[}}["dp"], []]} : tensor<64x64xf32>

// Over dp x cp: one gather over both axes, dp major.
// PLANE: %[[N:.*]] = moe.param "model.layers.0.input_layernorm.weight" {moe.global_shape = array<i64: 64>, moe.split = {{\[}}["dp", "cp"]]} : tensor<16xf32>
// PLANE-NEXT: shard.all_gather %[[N]] on @mesh grid_axes = [0, 1] gather_axis = 0 : tensor<16xf32> -> tensor<64xf32>

// BADSTAGE: error: moe-shard-weights: stage is 1, expected 2 or 3
// STAGE2RC-LABEL: func.func @train_step
// STAGE2RC: %[[G:.*]] = moe.param "model.layers.1.mlp.gate.weight"
// STAGE2RC-NEXT: %[[W:.*]] = shard.all_gather %[[G]]
// STAGE2RC-NEXT: moe.router %{{.*}}, %[[W]]
// STAGE2RC: moe.cross_entropy_grad
// STAGE2RC-NOT: shard.all_gather %[[G]]{{ }}
// STAGE2RC: moe.router %{{.*}}, %[[W]]
// STAGE2RC-NOT: shard.all_gather %[[G]]{{ }}
// STAGE2RC: moe.param_grad "model.layers.1.mlp.gate.weight"
// STAGE3RC-LABEL: func.func @train_step
// STAGE3RC: %[[G:.*]] = moe.param "model.layers.1.mlp.gate.weight"
// STAGE3RC-NEXT: %[[W:.*]] = shard.all_gather %[[G]]
// STAGE3RC-NEXT: moe.router %{{.*}}, %[[W]]
// STAGE3RC: moe.cross_entropy_grad
// STAGE3RC: %[[AGAIN:.*]] = shard.all_gather %[[G]]
// STAGE3RC-NEXT: moe.router %{{.*}}, %[[AGAIN]]
// STAGE3RC-NOT: shard.all_gather %[[G]]{{ }}
// STAGE3RC: moe.param_grad "model.layers.1.mlp.gate.weight"

// UNPARTITIONED: error: moe-shard-weights: the module is not partitioned; run moe-partition first
// NODP: error: moe-shard-weights: ZeRO stage 3 splits the weights over the data-parallel axes, but the mesh has dp = 1 and cp = 1

// A tied weight read by two ops gets one gather in front of each, so that
// no whole copy lives from the embedding to the head. A weight whose first
// dimension does not divide splits along the next that does; one with no
// such dimension stays whole.
module attributes {moe.mesh = #moe.mesh<dp = 2>, moe.partitioned} {
  shard.grid @mesh(shape = 2x1x1)
  func.func @forward(%tokens: tensor<2x4xi32> {moe.split = [["dp"], []]}, %labels: tensor<2x4xi32> {moe.split = [["dp"], []]}) -> tensor<f32> {
    %tied = moe.param "tied" {moe.global_shape = array<i64: 6, 8>, moe.split = [[], []]} : tensor<6x8xf32>
    %x = moe.embedding %tokens, %tied : (tensor<2x4xi32>, tensor<6x8xf32>) -> tensor<2x4x8xf32>
    %head = moe.linear %x, %tied : (tensor<2x4x8xf32>, tensor<6x8xf32>) -> tensor<2x4x6xf32>
    %odd = moe.param "odd" {moe.global_shape = array<i64: 3, 6>, moe.split = [[], []]} : tensor<3x6xf32>
    %y = moe.linear %head, %odd : (tensor<2x4x6xf32>, tensor<3x6xf32>) -> tensor<2x4x3xf32>
    %norm = moe.param "norm" {moe.global_shape = array<i64: 3>, moe.split = [[]]} : tensor<3xf32>
    %z = moe.rms_norm %y, %norm {eps = 1.0e-06 : f64} : (tensor<2x4x3xf32>, tensor<3xf32>) -> tensor<2x4x3xf32>
    %loss = moe.cross_entropy %z, %labels : (tensor<2x4x3xf32>, tensor<2x4xi32>) -> tensor<f32>
    return %loss : tensor<f32>
  }
}
// EDGE: %[[T:.*]] = moe.param "tied" {moe.global_shape = array<i64: 6, 8>, moe.split = {{\[}}["dp"], []]} : tensor<3x8xf32>
// EDGE-NEXT: %[[T1:.*]] = shard.all_gather %[[T]] on @mesh grid_axes = [0] gather_axis = 0 : tensor<3x8xf32> -> tensor<6x8xf32>
// EDGE-NEXT: moe.embedding %{{.*}}, %[[T1]]
// EDGE-NEXT: %[[T2:.*]] = shard.all_gather %[[T]] on @mesh grid_axes = [0] gather_axis = 0 : tensor<3x8xf32> -> tensor<6x8xf32>
// EDGE-NEXT: moe.linear %{{.*}}, %[[T2]]
// EDGE: %[[ODD:.*]] = moe.param "odd" {moe.global_shape = array<i64: 3, 6>, moe.split = {{\[}}[], ["dp"]]} : tensor<3x3xf32>
// EDGE-NEXT: %[[ODD1:.*]] = shard.all_gather %[[ODD]] on @mesh grid_axes = [0] gather_axis = 1 : tensor<3x3xf32> -> tensor<3x6xf32>
// EDGE-NEXT: moe.linear %{{.*}}, %[[ODD1]]
// EDGE: %[[NORM:.*]] = moe.param "norm" {moe.global_shape = array<i64: 3>, moe.split = {{\[}}[]]} : tensor<3xf32>
// EDGE-NEXT: moe.rms_norm %{{.*}}, %[[NORM]]

// The training step: the forward's gathered copy is read by the forward op
// only; the backward gathers again in front of its first reader, and the
// gradient of the gathered weight, summed over dp, arrives as each rank's
// slice through one reduce-scatter.
// STEP-LABEL: func.func @train_step
// STEP: %[[T:.*]] = moe.param "tied"
// STEP-NEXT: %[[FWD:.*]] = shard.all_gather %[[T]]
// STEP-NEXT: moe.embedding %{{.*}}, %[[FWD]]
// STEP: moe.cross_entropy_grad
// STEP-NOT: %[[FWD]]{{[^_0-9a-z]}}
// STEP: %[[BWD:.*]] = shard.all_gather %[[T]] on @mesh grid_axes = [0] gather_axis = 0
// STEP-NEXT: moe.linear_grad %{{.*}}, %[[BWD]]
// STEP-NOT: %[[FWD]]{{[^_0-9a-z]}}
// STEP: %[[DT:.*]] = shard.reduce_scatter %{{.*}} on @mesh grid_axes = [0] scatter_axis = 0 : tensor<6x8xf32> -> tensor<3x8xf32>
// STEP: moe.param_grad "tied", %{{.*}} : tensor<3x8xf32>
// STEP-NOT: shard.all_slice

// Under stage 2 the forward's gathered weight is the backward's too; its
// gradient is still one reduce-scatter.
// STAGE2-LABEL: func.func @forward
// STAGE2: %[[T:.*]] = moe.param "tied" {{.*}} : tensor<3x8xf32>
// STAGE2-NEXT: %[[W:.*]] = shard.all_gather %[[T]] on @mesh grid_axes = [0] gather_axis = 0 : tensor<3x8xf32> -> tensor<6x8xf32>
// STAGE2-NEXT: moe.embedding %{{.*}}, %[[W]]
// STAGE2-NEXT: moe.linear %{{.*}}, %[[W]]
// STAGE2-LABEL: func.func @train_step
// STAGE2: %[[T:.*]] = moe.param "tied"
// STAGE2-NEXT: %[[W:.*]] = shard.all_gather %[[T]]
// STAGE2-NOT: shard.all_gather %[[T]]
// STAGE2: moe.linear_grad %{{.*}}, %[[W]]
// STAGE2: shard.reduce_scatter %{{.*}} : tensor<6x8xf32> -> tensor<3x8xf32>
// STAGE2: moe.param_grad "tied"
