// DeepSeek's multi-head latent attention (MLA) through the passes, on the
// tiny DeepSeek-V3 of the zoo (4 heads of 16 + 8 rotary features, latent 24,
// value heads 12):
//  - tp=2: q_b_proj and kv_b_proj are column parallel (each rank its 2
//    heads), kv_a_proj_with_mqa (latent and the shared rotary key) stays
//    whole, so each rank concatenates its heads' keys with the one rotary
//    head broadcast over them; in the backward that head's gradient is a
//    share of the rank's heads, all-reduced over tp before its RoPE;
//  - cp=2 (Ulysses): heads trade their sequence split for a head split, and
//    the single rotary head, which cannot be split, gathers the sequence.
// RUN: moe-opt %models/deepseek_v3_tiny.mlir --moe-assign-mesh="mesh=tp=2" --moe-shard --moe-partition | FileCheck %s --check-prefix=TP
// RUN: moe-opt %models/deepseek_v3_tiny.mlir --moe-assign-mesh="mesh=tp=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=GRAD
// RUN: moe-opt %models/deepseek_v3_tiny.mlir --moe-assign-mesh="mesh=cp=2" --moe-shard --moe-partition | FileCheck %s --check-prefix=CP

// TP: moe.param "model.layers.0.self_attn.q_b_proj.weight" {moe.global_shape = array<i64: 96, 32>, moe.split = {{\[}}["tp"], []]} : tensor<48x32xf32>
// TP: %[[QP:.*]], %[[QR:.*]] = moe.split %{{.*}} : (tensor<2x16x2x24xf32>) -> (tensor<2x16x2x16xf32>, tensor<2x16x2x8xf32>)
// TP: %[[QROT:.*]] = moe.rope %[[QR]] {interleaved
// TP: %[[Q:.*]] = moe.concat %[[QP]], %[[QROT]] : (tensor<2x16x2x16xf32>, tensor<2x16x2x8xf32>) -> tensor<2x16x2x24xf32>
// TP: moe.param "model.layers.0.self_attn.kv_a_proj_with_mqa.weight" {moe.global_shape = array<i64: 32, 64>, moe.split = {{\[}}[], []]} : tensor<32x64xf32>
// TP: %[[LATENT:.*]], %[[KR:.*]] = moe.split %{{.*}} : (tensor<2x16x32xf32>) -> (tensor<2x16x24xf32>, tensor<2x16x8xf32>)
// TP: moe.param "model.layers.0.self_attn.kv_b_proj.weight" {moe.global_shape = array<i64: 112, 24>, moe.split = {{\[}}["tp"], []]} : tensor<56x24xf32>
// TP: %[[KP:.*]], %[[V:.*]] = moe.split %{{.*}} : (tensor<2x16x2x28xf32>) -> (tensor<2x16x2x16xf32>, tensor<2x16x2x12xf32>)
// TP: %[[KROT:.*]] = moe.rope %{{.*}} {interleaved{{.*}} : (tensor<2x16x1x8xf32>) -> tensor<2x16x1x8xf32>
// TP: %[[K:.*]] = moe.concat %[[KP]], %[[KROT]] : (tensor<2x16x2x16xf32>, tensor<2x16x1x8xf32>) -> tensor<2x16x2x24xf32>
// TP: moe.attention %[[Q]], %[[K]], %[[V]] {causal, scale = {{.*}}} : (tensor<2x16x2x24xf32>, tensor<2x16x2x24xf32>, tensor<2x16x2x12xf32>) -> tensor<2x16x2x12xf32>
// TP: moe.param "model.layers.0.self_attn.o_proj.weight" {moe.global_shape = array<i64: 64, 48>, moe.split = {{\[}}[], ["tp"]]} : tensor<64x24xf32>

// GRAD-LABEL: func.func @train_step
// GRAD: %[[QG:.*]], %[[KG:.*]], %[[VG:.*]] = moe.attention_grad
// GRAD-NEXT: %[[KPG:.*]], %[[KRG:.*]] = moe.concat_grad %[[KG]], %{{.*}}, %{{.*}} : (tensor<2x16x2x24xf32>, tensor<2x16x2x16xf32>, tensor<2x16x1x8xf32>) -> (tensor<2x16x2x16xf32>, tensor<2x16x1x8xf32>)
// GRAD-NEXT: %[[SUM:.*]] = shard.all_reduce %[[KRG]] on @mesh grid_axes = [2] : tensor<2x16x1x8xf32>
// GRAD-NEXT: moe.rope_grad %[[SUM]] {interleaved
// The split's gradient is the concat of its parts' gradients.
// GRAD: moe.concat %[[KPG]], %[[VG]] : (tensor<2x16x2x16xf32>, tensor<2x16x2x12xf32>) -> tensor<2x16x2x28xf32>

// CP: %[[KV:.*]] = shard.all_to_all %{{.*}} on @mesh grid_axes = [1] split_axis = 2 concat_axis = 1 : tensor<2x8x4x28xf32> -> tensor<2x16x2x28xf32>
// CP-NEXT: %[[KP:.*]], %[[V:.*]] = moe.split %[[KV]]
// CP-NEXT: %[[KR:.*]] = tensor.expand_shape {{.*}} : tensor<2x8x8xf32> into tensor<2x8x1x8xf32>
// CP-NEXT: %[[WHOLE:.*]] = shard.all_gather %[[KR]] on @mesh grid_axes = [1] gather_axis = 1 : tensor<2x8x1x8xf32> -> tensor<2x16x1x8xf32>
// CP-NEXT: %[[KROT:.*]] = moe.rope %[[WHOLE]] {interleaved
// CP-NEXT: %[[K:.*]] = moe.concat %[[KP]], %[[KROT]] : (tensor<2x16x2x16xf32>, tensor<2x16x1x8xf32>) -> tensor<2x16x2x24xf32>
// CP-NEXT: moe.attention %{{.*}}, %[[K]], %[[V]]
