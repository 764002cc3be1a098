// moe-build-train-step's `recompute=full`: the training step keeps, of the
// forward's activations, only the checkpoints (the residual stream between
// blocks, the one activation live there) and clones each block's forward
// ops again just in front of that block's backward, whose gradient ops read
// the clones. The embedding before the first checkpoint and the head and
// loss after the last run once.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-lower-experts --moe-build-train-step="recompute=full" | FileCheck %s
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=PLAIN
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,ep=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step="recompute=full" | FileCheck %s --check-prefix=EP
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-pipeline="recompute=full" | FileCheck %s --check-prefix=MANIFEST
// RUN: not moe-opt %models/qwen3_moe_tiny.mlir --moe-build-train-step="recompute=some" 2>&1 | FileCheck %s --check-prefix=BAD

// CHECK: module attributes {
// CHECK-SAME: moe.recompute = "full"
// CHECK-LABEL: func.func @train_step
// The forward, once: layer 1's attention residual (H1) and block output.
// CHECK: moe.embedding
// CHECK: moe.param "model.layers.1.self_attn.o_proj.weight"
// CHECK: %[[H1:.*]] = moe.add %{{.*}} : tensor<4x16x64xf32>
// CHECK-NEXT: %[[NORM1:.*]] = moe.param "model.layers.1.post_attention_layernorm.weight"
// CHECK: %[[GATE1:.*]] = moe.param "model.layers.1.mlp.gate.weight"
// CHECK: moe.cross_entropy
// The backward of the head, then layer 1's MoE block again from H1.
// CHECK: moe.cross_entropy_grad
// CHECK: moe.param_grad "model.norm.weight"
// CHECK-NEXT: %[[X:.*]] = moe.rms_norm %[[H1]], %[[NORM1]]
// CHECK-NEXT: %[[W:[a-z_0-9]+]], %[[IDX:[a-z_0-9]+]], %[[LOGITS:[a-z_0-9]+]] = moe.router %[[X]], %[[GATE1]]
// CHECK-NEXT: %[[PERM:[a-z_0-9]+]], %[[OFFS:[a-z_0-9]+]], %[[SLOTS:[a-z_0-9]+]] = moe.permute %[[X]], %[[IDX]]
// CHECK-NEXT: %[[Y:.*]] = moe.grouped_swiglu %[[PERM]], %[[OFFS]]
// The gradients read the recomputed values.
// CHECK: moe.aux_loss_grad %[[LOGITS]], %[[IDX]]
// CHECK: moe.unpermute_grad %{{.*}}, %[[Y]], %[[SLOTS]], %[[W]]
// CHECK: moe.grouped_swiglu_grad %{{.*}}, %[[PERM]], %[[OFFS]]
// CHECK: moe.rms_norm_grad %{{.*}}, %[[H1]], %[[NORM1]]
// Each block's attention runs twice, the embedding and the loss once.
// CHECK: moe.attention
// CHECK: moe.attention_grad
// CHECK: moe.attention
// CHECK: moe.attention_grad
// CHECK-NOT: moe.attention {{.*}}causal
// CHECK-NOT: moe.embedding %
// CHECK-NOT: moe.cross_entropy %
// CHECK: moe.embedding_grad

// Without it, the backward reads the forward's values: nothing runs twice.
// PLAIN-NOT: moe.recompute
// PLAIN-LABEL: func.func @train_step
// PLAIN: moe.cross_entropy_grad
// PLAIN-NOT: moe.router %
// PLAIN-NOT: moe.attention %
// PLAIN: return

// Over dp x ep the recomputed block dispatches and combines again, on the
// same placement table, before the backward's own dispatch and combine.
// EP-LABEL: func.func @train_step
// EP: moe.cross_entropy_grad
// EP: moe.dispatch %{{.*}} placement 1
// EP-NEXT: moe.grouped_swiglu
// EP-NEXT: moe.combine %{{.*}} placement 1
// EP: moe.dispatch %{{.*}} placement 1
// EP-NEXT: moe.grouped_swiglu_grad
// EP-NEXT: moe.combine %{{.*}} placement 1

// The manifest tells the executable, with the routing calls of one
// forward pass (the training step's first ones).
// MANIFEST: \22forward_routing_calls\22:{\22drop\22:0,\22permute\22:2}
// MANIFEST-SAME: \22recompute\22:\22full\22

// BAD: moe-build-train-step: recompute is 'some', expected none or full
