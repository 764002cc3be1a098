// moe-shard annotates every value of the tiny Qwen3-MoE with its sharding:
// the token layout (batch over dp = grid axis 0, sequence over cp = axis 1),
// the Ulysses head split for attention, tensor-parallel projections (tp =
// axis 2) and expert weights split over ep (axis 1 of @expert_mesh).
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,cp=2,ep=4" --moe-shard | FileCheck %s --check-prefix=DCE
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=tp=2" --moe-shard | FileCheck %s --check-prefix=TP
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=4" --moe-shard | FileCheck %s --check-prefix=DP

// Inputs: batch over dp, sequence over cp.
// DCE: %[[S:.*]] = shard.sharding @mesh split_axes = {{\[}}[0], [1]] : !shard.sharding
// DCE-NEXT: shard.shard %arg1 to %[[S]] : tensor<4x16xi32>
// The embedding table is replicated, its result in the token layout.
// DCE: moe.param "model.embed_tokens.weight"
// DCE-NEXT: shard.sharding @mesh split_axes = {{\[}}[], []]
// DCE: %[[EMB:.*]] = moe.embedding
// DCE-NEXT: shard.sharding @mesh split_axes = {{\[}}[0], [1], []]
// Heads for attention: produced with the sequence split, needed with the
// heads split over cp instead (Ulysses).
// DCE: tensor.expand_shape {{.*}} into tensor<4x16x4x16xf32>
// DCE-NEXT: %[[P:.*]] = shard.sharding @mesh split_axes = {{\[}}[0], [1], [], []]
// DCE-NEXT: %[[Q:.*]] = shard.shard %{{.*}} to %[[P]] : tensor<4x16x4x16xf32>
// DCE-NEXT: %[[U:.*]] = shard.sharding @mesh split_axes = {{\[}}[0], [], [1], []]
// DCE-NEXT: %[[QU:.*]] = shard.shard %[[Q]] to %[[U]] annotate_for_users : tensor<4x16x4x16xf32>
// DCE: moe.rms_norm %[[QU]]
// The attention output returns to the token layout before it is flattened.
// DCE: moe.attention
// DCE: shard.sharding @mesh split_axes = {{\[}}[0], [], [1], []]
// DCE: %[[T:.*]] = shard.sharding @mesh split_axes = {{\[}}[0], [1], [], []]
// DCE-NEXT: %[[AT:.*]] = shard.shard %{{.*}} to %[[T]] annotate_for_users : tensor<4x16x4x16xf32>
// DCE-NEXT: tensor.collapse_shape %[[AT]]
// Expert weights: the expert dimension over ep on @expert_mesh.
// DCE: moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight"
// DCE-NEXT: shard.sharding @expert_mesh split_axes = {{\[}}[1], [], []]
// Losses see every token: router logits gathered (replicated) for aux_loss.
// DCE: %[[R:.*]] = shard.sharding @mesh split_axes = {{\[}}[], [], []]
// DCE-NEXT: %[[RL:.*]] = shard.shard %{{.*}} to %[[R]] annotate_for_users : tensor<4x16x8xf32>
// DCE: moe.aux_loss %[[RL]]
// The returned logits are whole.
// DCE: shard.shard %{{.*}} to %{{.*}} annotate_for_users : tensor<4x16x128xf32>
// DCE: return

// Tensor parallelism: q/k/v column parallel, o_proj row parallel, the
// router gate and lm_head replicated.
// TP: moe.param "model.layers.0.self_attn.q_proj.weight"
// TP-NEXT: shard.sharding @mesh split_axes = {{\[}}[2], []]
// TP: moe.param "model.layers.0.self_attn.k_proj.weight"
// TP-NEXT: shard.sharding @mesh split_axes = {{\[}}[2], []]
// TP: moe.param "model.layers.0.self_attn.v_proj.weight"
// TP-NEXT: shard.sharding @mesh split_axes = {{\[}}[2], []]
// TP: moe.param "model.layers.0.self_attn.o_proj.weight"
// TP-NEXT: shard.sharding @mesh split_axes = {{\[}}[], [2]]
// TP: moe.param "model.layers.0.mlp.gate.weight"
// TP-NEXT: shard.sharding @mesh split_axes = {{\[}}[], []]
// TP: moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight"
// TP-NEXT: shard.sharding @expert_mesh split_axes = {{\[}}[], [], []]
// TP: moe.param "lm_head.weight"
// TP-NEXT: shard.sharding @mesh split_axes = {{\[}}[], []]

// Data parallelism alone: no head resharding, experts replicated.
// DP-NOT: annotate_for_users : tensor<4x16x4x16xf32>
// DP: moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight"
// DP-NEXT: shard.sharding @expert_mesh split_axes = {{\[}}[], [], []]
