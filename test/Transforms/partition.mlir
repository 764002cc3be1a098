// moe-partition turns the annotated tiny Qwen3-MoE into the program of one
// rank: local shapes, the collectives of each mesh axis, and the
// expert-parallel dispatch/combine.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,ep=2" --moe-shard --moe-partition | FileCheck %s --check-prefix=EP
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=tp=2" --moe-shard --moe-partition | FileCheck %s --check-prefix=TP
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=cp=2" --moe-shard --moe-partition | FileCheck %s --check-prefix=CP
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,cp=2,ep=4" --moe-shard --moe-partition | FileCheck %s --check-prefix=DCE
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,tp=2,ep=2" --moe-shard --moe-partition | FileCheck %s --check-prefix=DTE
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,tp=2,ep=2,sp" --moe-shard --moe-partition | FileCheck %s --check-prefix=SP
// RUN: moe-opt %models/deepseek_v3_tiny.mlir --moe-assign-mesh="mesh=cp=2,tp=2,sp" --moe-shard --moe-partition | FileCheck %s --check-prefix=SPMLA
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,tp=2,ep=2,etp=2,sp" --moe-shard --moe-partition | FileCheck %s --check-prefix=ETP
// No annotation is left behind.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=2,cp=2,ep=4" --moe-shard --moe-partition | FileCheck %s --check-prefix=CLEAN

// dp=2, ep=2: half the batch per rank; 4 of the 8 experts per rank (the
// slots of placement table 0, the first MoE layer); tokens dispatched over
// @expert_mesh axis 1 (ep) into room for 2 ranks x 32 tokens x min(top_k, 4)
// rows; router logits gathered over dp for the aux loss.
// EP: module attributes {{{.*}}moe.mesh = #moe.mesh<dp = 2, ep = 2>, moe.partitioned}
// EP: func.func @forward(%arg0: tensor<2x16xi32> {moe.global_shape = array<i64: 4, 16>, moe.split = {{\[}}["dp"], []]}
// EP-SAME: -> (tensor<4x16x128xf32> {moe.split = {{\[}}[], [], []]}, tensor<f32> {moe.split = []})
// EP: moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" {moe.global_shape = array<i64: 8, 32, 64>, moe.placement = 0 : i64, moe.split = {{\[}}["ep"], [], []]} : tensor<4x32x64xf32>
// EP: %[[ROWS:.*]], %[[OFFS:.*]], %[[SLOTS:.*]] = moe.permute %{{.*}}, %{{.*}} experts 8 : (tensor<2x16x64xf32>, tensor<2x16x2xi32>) -> (tensor<64x64xf32>, tensor<9xi64>, tensor<64xi32>)
// EP-NEXT: %[[RECV:.*]], %[[ROFFS:.*]] = moe.dispatch %[[ROWS]], %[[OFFS]] on @expert_mesh grid_axes = [1] placement 0 : (tensor<64x64xf32>, tensor<9xi64>) -> (tensor<128x64xf32>, tensor<9xi64>)
// EP-NEXT: %[[Y:.*]] = moe.grouped_swiglu %[[RECV]], %[[ROFFS]], {{.*}} : (tensor<128x64xf32>, tensor<9xi64>, tensor<4x32x64xf32>, tensor<4x32x64xf32>, tensor<4x64x32xf32>) -> tensor<128x64xf32>
// EP-NEXT: %[[BACK:.*]] = moe.combine %[[Y]], %[[ROFFS]], %[[OFFS]] on @expert_mesh grid_axes = [1] placement 0 : (tensor<128x64xf32>, tensor<9xi64>, tensor<9xi64>) -> tensor<64x64xf32>
// EP-NEXT: moe.unpermute %[[BACK]], %[[SLOTS]], %{{.*}} : (tensor<64x64xf32>, tensor<64xi32>, tensor<2x16x2xf32>) -> tensor<2x16x64xf32>
// EP: shard.all_gather %{{.*}} on @mesh grid_axes = [0] gather_axis = 0 : tensor<2x16x8xf32> -> tensor<4x16x8xf32>
// EP: shard.all_gather %{{.*}} on @mesh grid_axes = [0] gather_axis = 0 : tensor<2x16x128xf32> -> tensor<4x16x128xf32>
// EP: return %{{.*}}, %{{.*}} : tensor<4x16x128xf32>, tensor<f32>

// tp=2: half the heads per rank (q_proj 32 of 64 rows, k/v 16 of 32), o_proj
// row parallel with its all-reduce over tp (axis 2); lm_head whole.
// TP: func.func @forward(%arg0: tensor<4x16xi32>
// TP: moe.param "model.layers.0.self_attn.q_proj.weight" {moe.global_shape = array<i64: 64, 64>, moe.split = {{\[}}["tp"], []]} : tensor<32x64xf32>
// TP: moe.attention {{.*}} : (tensor<4x16x2x16xf32>, tensor<4x16x1x16xf32>, tensor<4x16x1x16xf32>) -> tensor<4x16x2x16xf32>
// TP: moe.param "model.layers.0.self_attn.o_proj.weight" {moe.global_shape = array<i64: 64, 64>, moe.split = {{\[}}[], ["tp"]]} : tensor<64x32xf32>
// TP-NEXT: %[[O:.*]] = moe.linear %{{.*}}, %{{.*}} : (tensor<4x16x32xf32>, tensor<64x32xf32>) -> tensor<4x16x64xf32>
// TP-NEXT: %[[R:.*]] = shard.all_reduce %[[O]] on @mesh grid_axes = [2] : tensor<4x16x64xf32> -> tensor<4x16x64xf32>
// TP-NEXT: moe.add %{{.*}}, %[[R]]
// TP-NOT: moe.dispatch
// TP: moe.param "lm_head.weight" {moe.global_shape = array<i64: 128, 64>, moe.split = {{\[}}[], []]} : tensor<128x64xf32>

// cp=2 (Ulysses): half the sequence per rank; q/k/v trade it for half the
// heads before the norm and RoPE, the attention output trades back.
// CP: func.func @forward(%arg0: tensor<4x8xi32> {moe.global_shape = array<i64: 4, 16>, moe.split = {{\[}}[], ["cp"]]}
// CP: shard.all_to_all %{{.*}} on @mesh grid_axes = [1] split_axis = 2 concat_axis = 1 : tensor<4x8x4x16xf32> -> tensor<4x16x2x16xf32>
// CP-NEXT: moe.param "model.layers.0.self_attn.q_norm.weight"
// CP-NEXT: moe.rms_norm
// CP-NEXT: moe.rope {{.*}} : (tensor<4x16x2x16xf32>) -> tensor<4x16x2x16xf32>
// CP: %[[A:.*]] = moe.attention {{.*}} -> tensor<4x16x2x16xf32>
// CP-NEXT: %[[B:.*]] = shard.all_to_all %[[A]] on @mesh grid_axes = [1] split_axis = 1 concat_axis = 2 : tensor<4x16x2x16xf32> -> tensor<4x8x4x16xf32>
// CP-NEXT: tensor.collapse_shape %[[B]] {{.*}} : tensor<4x8x4x16xf32> into tensor<4x8x64xf32>
// CP: shard.all_gather %{{.*}} on @mesh grid_axes = [1] gather_axis = 1 : tensor<4x8x128xf32> -> tensor<4x16x128xf32>

// dp=2, cp=2, ep=4: a quarter of the tokens per rank, 2 experts per rank,
// the EP group spanning the dp x cp plane.
// DCE: func.func @forward(%arg0: tensor<2x8xi32> {moe.global_shape = array<i64: 4, 16>, moe.split = {{\[}}["dp"], ["cp"]]}
// DCE: moe.dispatch %{{.*}}, %{{.*}} on @expert_mesh grid_axes = [1] placement 0 : (tensor<32x64xf32>, tensor<9xi64>) -> (tensor<128x64xf32>, tensor<9xi64>)
// DCE: moe.grouped_swiglu {{.*}} : (tensor<128x64xf32>, tensor<9xi64>, tensor<2x32x64xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>) -> tensor<128x64xf32>
// The loss: each rank's share over its quarter of the tokens, divided by
// the labels counted on the whole dp x cp plane, summed over it; the
// logits stay local for it, and are gathered only for the result.
// DCE: %[[LOGITS:.*]] = moe.linear %{{.*}} -> tensor<2x8x128xf32>
// DCE-NEXT: %[[N:.*]] = moe.label_count %arg1 : (tensor<2x8xi32>) -> tensor<f32>
// DCE-NEXT: %[[ALLN:.*]] = shard.all_reduce %[[N]] on @mesh grid_axes = [0, 1] : tensor<f32> -> tensor<f32>
// DCE-NEXT: %[[SHARE:.*]] = moe.cross_entropy %[[LOGITS]], %arg1, %[[ALLN]] : (tensor<2x8x128xf32>, tensor<2x8xi32>, tensor<f32>) -> tensor<f32>
// DCE-NEXT: shard.all_reduce %[[SHARE]] on @mesh grid_axes = [0, 1] : tensor<f32> -> tensor<f32>
// DCE: shard.all_gather %[[LOGITS]] on @mesh grid_axes = [0] gather_axis = 0 : tensor<2x8x128xf32> -> tensor<4x8x128xf32>
// DCE-NEXT: shard.all_gather %{{.*}} on @mesh grid_axes = [1] gather_axis = 1 : tensor<4x8x128xf32> -> tensor<4x16x128xf32>

// dp=2, tp=2, ep=2: tensor parallel attention and expert parallel MoE
// together; each tp rank of an EP group dispatches the same tokens.
// DTE: func.func @forward(%arg0: tensor<2x16xi32>
// DTE: shard.all_reduce %{{.*}} on @mesh grid_axes = [2] : tensor<2x16x64xf32> -> tensor<2x16x64xf32>
// DTE: moe.dispatch %{{.*}}, %{{.*}} on @expert_mesh grid_axes = [1] placement 0 : (tensor<64x64xf32>, tensor<9xi64>) -> (tensor<128x64xf32>, tensor<9xi64>)

// The same mesh with sequence parallelism: the residual stream is split over
// tp along the sequence too (2 x 8 tokens a rank). The attention block
// gathers its input over tp once for q, k and v, and its row-parallel
// output projection ends in a reduce-scatter along the sequence instead of
// an all-reduce. The router and the experts see the rank's own 16 tokens:
// 32 rows dispatched where the mesh without sp dispatches 64, the same on
// both tp ranks. The labels are sliced like the tokens, and the loss's
// token axes are summed over dp, then tp.
// SP: module attributes {{{.*}}moe.mesh = #moe.mesh<dp = 2, tp = 2, ep = 2, sp = true>, moe.partitioned}
// SP: func.func @forward(%arg0: tensor<2x16xi32>
// SP: %[[IDS:.*]] = shard.all_slice %arg0 on @mesh grid_axes = [2] slice_axis = 1 : tensor<2x16xi32> -> tensor<2x8xi32>
// SP: %[[X:.*]] = moe.embedding %[[IDS]], %{{.*}} -> tensor<2x8x64xf32>
// SP: %[[NORMED:.*]] = moe.rms_norm %[[X]], %{{.*}} -> tensor<2x8x64xf32>
// SP: %[[ALL:.*]] = shard.all_gather %[[NORMED]] on @mesh grid_axes = [2] gather_axis = 1 : tensor<2x8x64xf32> -> tensor<2x16x64xf32>
// SP-NOT: shard.all_gather
// SP: moe.linear %[[ALL]], %{{.*}} : (tensor<2x16x64xf32>, tensor<32x64xf32>) -> tensor<2x16x32xf32>
// SP: moe.linear %[[ALL]], %{{.*}} : (tensor<2x16x64xf32>, tensor<16x64xf32>) -> tensor<2x16x16xf32>
// SP: moe.linear %[[ALL]], %{{.*}} : (tensor<2x16x64xf32>, tensor<16x64xf32>) -> tensor<2x16x16xf32>
// SP: %[[O:.*]] = moe.linear %{{.*}}, %{{.*}} : (tensor<2x16x32xf32>, tensor<64x32xf32>) -> tensor<2x16x64xf32>
// SP-NEXT: %[[RS:.*]] = shard.reduce_scatter %[[O]] on @mesh grid_axes = [2] scatter_axis = 1 : tensor<2x16x64xf32> -> tensor<2x8x64xf32>
// SP-NEXT: moe.add %[[X]], %[[RS]] : tensor<2x8x64xf32>
// SP-NOT: shard.all_reduce %{{.*}} : tensor<2x16x64xf32>
// SP: moe.router %{{.*}}, %{{.*}} softmax top 2 {norm_topk_prob} : (tensor<2x8x64xf32>, tensor<8x64xf32>)
// SP: moe.permute %{{.*}}, %{{.*}} experts 8 : (tensor<2x8x64xf32>, tensor<2x8x2xi32>) -> (tensor<32x64xf32>, tensor<9xi64>, tensor<32xi32>)
// SP-NEXT: moe.dispatch %{{.*}}, %{{.*}} on @expert_mesh grid_axes = [1] placement 0 : (tensor<32x64xf32>, tensor<9xi64>) -> (tensor<64x64xf32>, tensor<9xi64>)
// SP: %[[LABELS:.*]] = shard.all_slice %arg1 on @mesh grid_axes = [2] slice_axis = 1 : tensor<2x16xi32> -> tensor<2x8xi32>
// SP-NEXT: %[[COUNT:.*]] = moe.label_count %[[LABELS]]
// SP-NEXT: %[[SUM:.*]] = shard.all_reduce %[[COUNT]] on @mesh grid_axes = [0]
// SP-NEXT: shard.all_reduce %[[SUM]] on @mesh grid_axes = [2]

// Context and sequence parallelism together on MLA: the sequence is split
// over cp, then tp (16 / 4 = 4 positions a rank); the shared rotary key,
// one head, is gathered over tp first, then cp, before RoPE.
// SPMLA: %{{.*}}, %[[ROPE:.*]] = moe.split %{{.*}} : (tensor<2x4x32xf32>) -> (tensor<2x4x24xf32>, tensor<2x4x8xf32>)
// SPMLA: %[[HEAD:.*]] = tensor.expand_shape %[[ROPE]] {{.*}} into tensor<2x4x1x8xf32>
// SPMLA-NEXT: %[[HALF:.*]] = shard.all_gather %[[HEAD]] on @mesh grid_axes = [2] gather_axis = 1 : tensor<2x4x1x8xf32> -> tensor<2x8x1x8xf32>
// SPMLA-NEXT: %[[WHOLE:.*]] = shard.all_gather %[[HALF]] on @mesh grid_axes = [1] gather_axis = 1 : tensor<2x8x1x8xf32> -> tensor<2x16x1x8xf32>
// SPMLA-NEXT: moe.rope %[[WHOLE]]

// Expert tensor parallelism on top: each rank holds half of the
// intermediate features (16 of 32) of its 4 experts. The tokens, router
// weights and indices are gathered over tp before the permute, so both tp
// ranks dispatch the same 64 rows and each computes its half of every
// expert; the partial sums are reduce-scattered over tp after the
// unpermute.
// ETP: moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" {moe.global_shape = array<i64: 8, 32, 64>, moe.placement = 0 : i64, moe.split = {{\[}}["ep"], ["tp"], []]} : tensor<4x16x64xf32>
// ETP: moe.param "model.layers.0.mlp.experts.{e}.down_proj.weight" {moe.global_shape = array<i64: 8, 64, 32>, moe.placement = 0 : i64, moe.split = {{\[}}["ep"], [], ["tp"]]} : tensor<4x64x16xf32>
// ETP: %[[X:.*]] = shard.all_gather %{{.*}} on @mesh grid_axes = [2] gather_axis = 1 : tensor<2x8x64xf32> -> tensor<2x16x64xf32>
// ETP: %[[I:.*]] = shard.all_gather %{{.*}} on @mesh grid_axes = [2] gather_axis = 1 : tensor<2x8x2xi32> -> tensor<2x16x2xi32>
// ETP-NEXT: moe.permute %[[X]], %[[I]] experts 8 : (tensor<2x16x64xf32>, tensor<2x16x2xi32>) -> (tensor<64x64xf32>, tensor<9xi64>, tensor<64xi32>)
// ETP: moe.grouped_swiglu %{{.*}} : (tensor<128x64xf32>, tensor<9xi64>, tensor<4x16x64xf32>, tensor<4x16x64xf32>, tensor<4x64x16xf32>) -> tensor<128x64xf32>
// ETP: %[[OUT:.*]] = moe.unpermute %{{.*}} -> tensor<2x16x64xf32>
// ETP: shard.reduce_scatter %[[OUT]] on @mesh grid_axes = [2] scatter_axis = 1 : tensor<2x16x64xf32> -> tensor<2x8x64xf32>

// CLEAN-NOT: shard.shard
// CLEAN-NOT: shard.sharding
// CLEAN-NOT: moe.experts
