// moe-build-train-step builds @train_step from @forward: the loss, then one
// gradient op per forward op in reverse order, one moe.param_grad per weight,
// and on a mesh the gradient collectives: transposed forward collectives and
// an all-reduce wherever a value the same on all ranks of an axis met one
// that varies along it.
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=ONE
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-lower-experts --moe-build-train-step | moe-opt | FileCheck %s --check-prefix=ONE
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=4,ep=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=EP
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=dp=4,ep=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=EVAL
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=tp=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=TP
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=cp=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=CP
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=tp=2,sp" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=SEQ
// RUN: moe-opt %models/qwen3_moe_tiny.mlir --moe-assign-mesh="mesh=tp=2,etp=2,sp" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=SLICED
// RUN: moe-opt %models/qwen2_moe_tiny.mlir --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=BIAS
// RUN: moe-opt %models/qwen2_moe_tiny.mlir --moe-assign-mesh="mesh=tp=2" --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step | FileCheck %s --check-prefix=BIASTP

// A linear with a bias (Qwen2-MoE's q/k/v): its gradient op also gives the
// bias's gradient, which becomes the bias's param_grad; under tp=2 the bias
// is split with the projection's rows, and so is its gradient.
// BIAS: %{{.*}}, %[[DW:.*]], %[[DB:.*]] = moe.linear_grad %{{.*}}, %{{.*}}, %{{.*}} bias %{{.*}} : (tensor<2x16x32xf32>, tensor<2x16x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> (tensor<2x16x64xf32>, tensor<32x64xf32>, tensor<32xf32>)
// BIAS-NEXT: moe.param_grad "model.layers.2.self_attn.v_proj.bias", %[[DB]] : tensor<32xf32>
// BIAS: moe.param_grad "model.layers.2.self_attn.q_proj.bias", %{{.*}} : tensor<64xf32>
// BIASTP: %{{.*}}, %{{.*}}, %[[DB:.*]] = moe.linear_grad {{.*}} bias {{.*}} -> (tensor<2x16x64xf32>, tensor<16x64xf32>, tensor<16xf32>)
// BIASTP-NEXT: moe.param_grad "model.layers.2.self_attn.v_proj.bias", %[[DB]] : tensor<16xf32>

// One rank: the loss is the forward's, the logits output is gone, and the
// backward starts at the loss ops (gradient 1) and ends at the embedding.
// ONE: func.func @train_step(%[[TOK:.*]]: tensor<4x16xi32>, %[[LAB:.*]]: tensor<4x16xi32>) -> tensor<f32>
// ONE: %[[LOGITS:.*]] = moe.linear %{{.*}}, %[[HEAD:.*]] : (tensor<4x16x64xf32>, tensor<128x64xf32>) -> tensor<4x16x128xf32>
// ONE: %[[CE:.*]] = moe.cross_entropy %[[LOGITS]], %[[LAB]]
// ONE: %[[DLOGITS:.*]] = moe.cross_entropy_grad %[[LOGITS]], %[[LAB]] : (tensor<4x16x128xf32>, tensor<4x16xi32>) -> tensor<4x16x128xf32>
// ONE-NEXT: %[[DH:.*]], %[[DHEAD:.*]] = moe.linear_grad %[[DLOGITS]], %{{.*}}, %[[HEAD]]
// ONE-NEXT: moe.param_grad "lm_head.weight", %[[DHEAD]] : tensor<128x64xf32>
// Layer 1's experts: unpermute, grouped GEMM and permute backward, the
// router backward taking the aux loss's logits gradient.
// ONE: %[[DAUX:.*]] = moe.aux_loss_grad %[[RL:.*]], %[[RI:.*]] softmax {coefficient = 1.000000e-03 : f64}
// ONE-NEXT: %[[DY:.*]], %[[DW:.*]] = moe.unpermute_grad
// ONE-NEXT: %[[DROWS:.*]], %[[DG:.*]], %[[DU:.*]], %[[DD:.*]] = moe.grouped_swiglu_grad %[[DY]]
// ONE-NEXT: moe.permute_grad %[[DROWS]], %{{.*}} top 2 : (tensor<128x64xf32>, tensor<128xi32>) -> tensor<4x16x64xf32>
// ONE: moe.param_grad "model.layers.1.mlp.experts.{e}.gate_proj.weight", %[[DG]] : tensor<8x32x64xf32>
// ONE-NEXT: moe.router_grad %[[DW]], %{{.*}}, %{{.*}}, %[[RL]], %[[RI]] logits_grad %[[DAUX]] softmax {norm_topk_prob}
// Attention: head reshapes reversed, RoPE inverted, q/k norms and the three
// projections' input gradients summed.
// ONE: moe.attention_grad %{{.*}} {causal}
// ONE: moe.rope_grad
// ONE: %[[DN:.*]], %{{.*}} = moe.rms_norm_grad
// ONE: moe.embedding_grad %{{.*}}, %[[TOK]] : (tensor<4x16x64xf32>, tensor<4x16xi32>) -> tensor<128x64xf32>
// ONE-NEXT: moe.param_grad "model.embed_tokens.weight"
// ONE-NEXT: return %{{.*}} : tensor<f32>
// ONE-NOT: shard.

// dp=4, ep=2: each rank's loss is the share of its own tokens (divided by
// the labels counted on all ranks, summed over dp), so the logits are never
// gathered and their gradient is the local share's; replicated weights'
// gradients summed over dp; expert weights (split over ep) summed over their
// expert-data-parallel group (@expert_mesh axis 0); the backward of the
// combine is a dispatch and vice versa, on the same placement table (the
// last layer's, 1, comes first).
// EP: func.func @train_step(%{{.*}}: tensor<1x16xi32> {{.*}}moe.split = {{\[}}["dp"], []]}, %[[LAB:[a-z0-9]+]]: tensor<1x16xi32>
// EP: %[[Y:.*]] = moe.grouped_swiglu
// EP: %[[LOGITS:.*]] = moe.linear %{{.*}} -> tensor<1x16x128xf32>
// EP-NEXT: %[[N:.*]] = moe.label_count %[[LAB]] : (tensor<1x16xi32>) -> tensor<f32>
// EP-NEXT: %[[ALLN:.*]] = shard.all_reduce %[[N]] on @mesh grid_axes = [0] : tensor<f32> -> tensor<f32>
// EP-NEXT: %[[SHARE:.*]] = moe.cross_entropy %[[LOGITS]], %[[LAB]], %[[ALLN]]
// EP-NEXT: shard.all_reduce %[[SHARE]] on @mesh grid_axes = [0] : tensor<f32> -> tensor<f32>
// EP-NOT: shard.all_gather %[[LOGITS]]
// EP: %[[DLOG:.*]] = moe.cross_entropy_grad %[[LOGITS]], %[[LAB]], %[[ALLN]] : (tensor<1x16x128xf32>, tensor<1x16xi32>, tensor<f32>) -> tensor<1x16x128xf32>
// EP-NEXT: %{{.*}}, %[[DHEAD:.*]] = moe.linear_grad %[[DLOG]]
// EP-NEXT: %[[SUM:.*]] = shard.all_reduce %[[DHEAD]] on @mesh grid_axes = [0] : tensor<128x64xf32>
// EP-NEXT: moe.param_grad "lm_head.weight", %[[SUM]]
// EP: %[[DRECV:.*]], %{{.*}} = moe.dispatch %{{.*}}, %[[OFFS:.*]] on @expert_mesh grid_axes = [1] placement 1 : (tensor<32x64xf32>, tensor<9xi64>) -> (tensor<64x64xf32>, tensor<9xi64>)
// EP-NEXT: %[[DR:.*]], %[[DG:.*]], %{{.*}}, %{{.*}} = moe.grouped_swiglu_grad %[[DRECV]], %{{[a-z_0-9]+}}, %[[ROFFS:[a-z_0-9]+]], %{{.*}} : (tensor<64x64xf32>, tensor<64x64xf32>, tensor<9xi64>, tensor<4x32x64xf32>
// EP-NEXT: moe.combine %[[DR]], %[[ROFFS]], %[[OFFS]] on @expert_mesh grid_axes = [1] placement 1 : (tensor<64x64xf32>, tensor<9xi64>, tensor<9xi64>) -> tensor<32x64xf32>
// EP: %[[EG:.*]] = shard.all_reduce %[[DG]] on @expert_mesh grid_axes = [0] : tensor<4x32x64xf32>
// EP-NEXT: moe.param_grad "model.layers.1.mlp.experts.{e}.gate_proj.weight", %[[EG]] : tensor<4x32x64xf32>
// EP: %{{.*}}, %[[DGATE:.*]] = moe.router_grad
// EP: %[[GS:.*]] = shard.all_reduce %[[DGATE]] on @mesh grid_axes = [0] : tensor<8x64xf32>
// EP-NEXT: moe.param_grad "model.layers.1.mlp.gate.weight", %[[GS]]

// @eval_step: the forward with its loss alone, so the logits it returns are
// never gathered (each rank adds its own tokens' share).
// EVAL: func.func @forward(
// EVAL: shard.all_gather %{{.*}} : tensor<1x16x128xf32> -> tensor<4x16x128xf32>
// EVAL-LABEL: func.func @eval_step(%{{.*}}: tensor<1x16xi32> {{.*}}) -> (tensor<f32> {moe.split = []})
// EVAL-NOT: tensor<4x16x128xf32>
// EVAL: moe.cross_entropy
// EVAL-NOT: tensor<4x16x128xf32>
// EVAL: return %{{.*}} : tensor<f32>
// EVAL-LABEL: func.func @train_step(

// tp=2: the q_norm weight, the same on both tp ranks, met tp-split heads, so
// its gradient is summed over tp; the three column-parallel projections'
// input gradients are added first and then summed over tp once; o_proj's
// forward all-reduce has no backward collective.
// TP: %[[Q:.*]], %{{.*}} = moe.rms_norm_grad %{{.*}} : (tensor<4x16x2x16xf32>
// TP-NEXT: %[[QS:.*]] = shard.all_reduce %{{.*}} on @mesh grid_axes = [2] : tensor<16xf32>
// TP-NEXT: moe.param_grad "model.layers.1.self_attn.q_norm.weight", %[[QS]]
// TP: %[[DXQ:.*]], %[[DWQ:.*]] = moe.linear_grad %{{.*}} : (tensor<4x16x32xf32>, tensor<4x16x64xf32>, tensor<32x64xf32>)
// TP-NEXT: %[[QKV:.*]] = moe.add %{{.*}}, %[[DXQ]] : tensor<4x16x64xf32>
// TP-NEXT: moe.param_grad "model.layers.1.self_attn.q_proj.weight", %[[DWQ]] : tensor<32x64xf32>
// TP-NEXT: %[[X:.*]] = shard.all_reduce %[[QKV]] on @mesh grid_axes = [2] : tensor<4x16x64xf32>
// TP-NEXT: moe.rms_norm_grad %[[X]]

// cp=2: Ulysses all-to-alls reversed (split and concat axes swapped).
// CP: moe.attention
// CP-NEXT: shard.all_to_all %{{.*}} on @mesh grid_axes = [1] split_axis = 1 concat_axis = 2 : tensor<4x16x2x16xf32> -> tensor<4x8x4x16xf32>
// CP: moe.cross_entropy_grad
// CP: %[[DOUT:.*]] = shard.all_to_all %{{.*}} on @mesh grid_axes = [1] split_axis = 2 concat_axis = 1 : tensor<4x8x4x16xf32> -> tensor<4x16x2x16xf32>
// CP-NEXT: %[[DQ:.*]], %{{.*}}, %{{.*}} = moe.attention_grad %[[DOUT]]
// CP: shard.all_to_all %{{.*}} on @mesh grid_axes = [1] split_axis = 1 concat_axis = 2 : tensor<4x16x2x16xf32> -> tensor<4x8x4x16xf32>

// Sequence parallelism (tp=2,sp): each tp rank routes and computes its own
// 4 x 8 tokens, so the gradients of the weights replicated over tp are
// shares, summed over tp: the experts', the router's, the norms' and the
// embedding's. The transposes of the attention block's collectives: the
// gradient of the reduce-scattered output projection is gathered, and the
// q, k and v projections' input gradients, partial over the heads of each
// tp rank, are summed and split along the sequence in one reduce-scatter.
// SEQ-LABEL: func.func @train_step
// SEQ: %{{.*}}, %[[DG:.*]], %[[DU:.*]], %[[DD:.*]] = moe.grouped_swiglu_grad %{{.*}} : (tensor<64x64xf32>
// SEQ: %[[DDS:.*]] = shard.all_reduce %[[DD]] on @mesh grid_axes = [2] : tensor<8x64x32xf32>
// SEQ-NEXT: moe.param_grad "model.layers.1.mlp.experts.{e}.down_proj.weight", %[[DDS]]
// SEQ: %{{.*}}, %[[DR:.*]] = moe.router_grad
// SEQ: %[[DRS:.*]] = shard.all_reduce %[[DR]] on @mesh grid_axes = [2] : tensor<8x64xf32>
// SEQ-NEXT: moe.param_grad "model.layers.1.mlp.gate.weight", %[[DRS]]
// SEQ: %[[DRES:.*]] = moe.add %{{.*}}, %{{.*}} : tensor<4x8x64xf32>
// SEQ: %[[DOUT:.*]] = shard.all_gather %[[DRES]] on @mesh grid_axes = [2] gather_axis = 1 : tensor<4x8x64xf32> -> tensor<4x16x64xf32>
// SEQ-NEXT: moe.linear_grad %[[DOUT]], %{{.*}} : (tensor<4x16x64xf32>, tensor<4x16x32xf32>, tensor<64x32xf32>)
// SEQ: moe.linear_grad %{{.*}}, %{{.*}} : (tensor<4x16x32xf32>, tensor<4x16x64xf32>, tensor<32x64xf32>)
// SEQ-NEXT: %[[DQKV:.*]] = moe.add %{{.*}}, %{{.*}} : tensor<4x16x64xf32>
// SEQ-NEXT: %[[DX:.*]] = shard.reduce_scatter %[[DQKV]] on @mesh grid_axes = [2] scatter_axis = 1 : tensor<4x16x64xf32> -> tensor<4x8x64xf32>
// SEQ: %{{.*}}, %[[DN:.*]] = moe.rms_norm_grad %[[DX]]
// SEQ: %[[DNS:.*]] = shard.all_reduce %[[DN]] on @mesh grid_axes = [2] : tensor<64xf32>
// SEQ-NEXT: moe.param_grad "model.layers.1.input_layernorm.weight", %[[DNS]]
// SEQ: %[[DE:.*]] = moe.embedding_grad %{{.*}} : (tensor<4x8x64xf32>, tensor<4x8xi32>)
// SEQ-NEXT: %[[DES:.*]] = shard.all_reduce %[[DE]] on @mesh grid_axes = [2]
// SEQ-NEXT: moe.param_grad "model.embed_tokens.weight", %[[DES]]

// Expert tensor parallelism (tp=2,etp=2,sp): each tp rank's expert weights
// are its own half, so their gradients are whole without a sum over tp;
// the expert inputs' gradients, partial over the halves, are: summed after
// the permute's transpose, over the tokens, and sliced back along the
// sequence in one reduce-scatter, not all-reduced over the 128 permuted
// rows.
// SLICED-LABEL: func.func @train_step
// SLICED: %[[DX:.*]], %[[DG:.*]], %[[DU:.*]], %[[DD:.*]] = moe.grouped_swiglu_grad %{{.*}} -> (tensor<128x64xf32>, tensor<8x16x64xf32>, tensor<8x16x64xf32>, tensor<8x64x16xf32>)
// SLICED-NEXT: %[[DT:.*]] = moe.permute_grad %[[DX]], %{{.*}} top 2 : (tensor<128x64xf32>, tensor<128xi32>) -> tensor<4x16x64xf32>
// SLICED-NOT: shard.all_reduce %[[DX]]
// SLICED: shard.reduce_scatter %[[DT]] on @mesh grid_axes = [2] scatter_axis = 1 : tensor<4x16x64xf32> -> tensor<4x8x64xf32>
// SLICED-NOT: shard.all_reduce %[[DD]]
// SLICED: moe.param_grad "model.layers.1.mlp.experts.{e}.down_proj.weight", %[[DD]] : tensor<8x64x16xf32>
