// DeepSeek-V2 imported by moe-import from deepseek_v2_tiny.json: hidden 64, 2 layers, 4 heads of latent attention (kv rank 24, qk 16 + 8 rotary, v 12), 16 experts top-3, expert FFN 32, vocab 128, batch 2 x seq 16.
module attributes {moe.hf_config = "{\22architectures\22:[\22DeepseekV2ForCausalLM\22],\22model_type\22:\22deepseek_v2\22,\22vocab_size\22:128,\22hidden_size\22:64,\22num_hidden_layers\22:2,\22num_attention_heads\22:4,\22num_key_value_heads\22:4,\22q_lora_rank\22:null,\22kv_lora_rank\22:24,\22qk_nope_head_dim\22:16,\22qk_rope_head_dim\22:8,\22v_head_dim\22:12,\22hidden_act\22:\22silu\22,\22rms_norm_eps\22:1e-06,\22rope_theta\22:10000.0,\22rope_scaling\22:{\22type\22:\22yarn\22,\22factor\22:4.0,\22original_max_position_embeddings\22:16,\22beta_fast\22:32,\22beta_slow\22:1,\22mscale\22:0.707,\22mscale_all_dim\22:0.707},\22tie_word_embeddings\22:false,\22attention_bias\22:false,\22attention_dropout\22:0.0,\22max_position_embeddings\22:64,\22n_routed_experts\22:16,\22num_experts_per_tok\22:3,\22moe_intermediate_size\22:32,\22intermediate_size\22:96,\22first_k_dense_replace\22:1,\22n_shared_experts\22:2,\22topk_method\22:\22group_limited_greedy\22,\22n_group\22:4,\22topk_group\22:2,\22routed_scaling_factor\22:2.0,\22norm_topk_prob\22:false}"} {
  func.func @forward(%arg0: tensor<2x16xi32>, %arg1: tensor<2x16xi32>) -> (tensor<2x16x128xf32>, tensor<f32>) {
    %0 = moe.param "model.embed_tokens.weight" : tensor<128x64xf32>
    %1 = moe.embedding %arg0, %0 : (tensor<2x16xi32>, tensor<128x64xf32>) -> tensor<2x16x64xf32>
    %2 = moe.param "model.layers.0.input_layernorm.weight" : tensor<64xf32>
    %3 = moe.rms_norm %1, %2 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %4 = moe.param "model.layers.0.self_attn.q_proj.weight" : tensor<96x64xf32>
    %5 = moe.linear %3, %4 : (tensor<2x16x64xf32>, tensor<96x64xf32>) -> tensor<2x16x96xf32>
    %expanded = tensor.expand_shape %5 [[0], [1], [2, 3]] output_shape [2, 16, 4, 24] : tensor<2x16x96xf32> into tensor<2x16x4x24xf32>
    %lhs, %rhs = moe.split %expanded : (tensor<2x16x4x24xf32>) -> (tensor<2x16x4x16xf32>, tensor<2x16x4x8xf32>)
    %6 = moe.rope %rhs {interleaved, yarn_factor = 4.000000e+00 : f64, yarn_high = 1.000000e+00 : f64} : (tensor<2x16x4x8xf32>) -> tensor<2x16x4x8xf32>
    %7 = moe.concat %lhs, %6 : (tensor<2x16x4x16xf32>, tensor<2x16x4x8xf32>) -> tensor<2x16x4x24xf32>
    %8 = moe.param "model.layers.0.self_attn.kv_a_proj_with_mqa.weight" : tensor<32x64xf32>
    %9 = moe.linear %3, %8 : (tensor<2x16x64xf32>, tensor<32x64xf32>) -> tensor<2x16x32xf32>
    %lhs_0, %rhs_1 = moe.split %9 : (tensor<2x16x32xf32>) -> (tensor<2x16x24xf32>, tensor<2x16x8xf32>)
    %10 = moe.param "model.layers.0.self_attn.kv_a_layernorm.weight" : tensor<24xf32>
    %11 = moe.rms_norm %lhs_0, %10 : (tensor<2x16x24xf32>, tensor<24xf32>) -> tensor<2x16x24xf32>
    %12 = moe.param "model.layers.0.self_attn.kv_b_proj.weight" : tensor<112x24xf32>
    %13 = moe.linear %11, %12 : (tensor<2x16x24xf32>, tensor<112x24xf32>) -> tensor<2x16x112xf32>
    %expanded_2 = tensor.expand_shape %13 [[0], [1], [2, 3]] output_shape [2, 16, 4, 28] : tensor<2x16x112xf32> into tensor<2x16x4x28xf32>
    %lhs_3, %rhs_4 = moe.split %expanded_2 : (tensor<2x16x4x28xf32>) -> (tensor<2x16x4x16xf32>, tensor<2x16x4x12xf32>)
    %expanded_5 = tensor.expand_shape %rhs_1 [[0], [1], [2, 3]] output_shape [2, 16, 1, 8] : tensor<2x16x8xf32> into tensor<2x16x1x8xf32>
    %14 = moe.rope %expanded_5 {interleaved, yarn_factor = 4.000000e+00 : f64, yarn_high = 1.000000e+00 : f64} : (tensor<2x16x1x8xf32>) -> tensor<2x16x1x8xf32>
    %15 = moe.concat %lhs_3, %14 : (tensor<2x16x4x16xf32>, tensor<2x16x1x8xf32>) -> tensor<2x16x4x24xf32>
    %16 = moe.attention %7, %15, %rhs_4 {causal, scale = 0.24609782191507457 : f64} : (tensor<2x16x4x24xf32>, tensor<2x16x4x24xf32>, tensor<2x16x4x12xf32>) -> tensor<2x16x4x12xf32>
    %collapsed = tensor.collapse_shape %16 [[0], [1], [2, 3]] : tensor<2x16x4x12xf32> into tensor<2x16x48xf32>
    %17 = moe.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x48xf32>
    %18 = moe.linear %collapsed, %17 : (tensor<2x16x48xf32>, tensor<64x48xf32>) -> tensor<2x16x64xf32>
    %19 = moe.add %1, %18 : tensor<2x16x64xf32>
    %20 = moe.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xf32>
    %21 = moe.rms_norm %19, %20 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %22 = moe.param "model.layers.0.mlp.gate_proj.weight" : tensor<96x64xf32>
    %23 = moe.param "model.layers.0.mlp.up_proj.weight" : tensor<96x64xf32>
    %24 = moe.param "model.layers.0.mlp.down_proj.weight" : tensor<64x96xf32>
    %25 = moe.mlp %21, %22, %23, %24 : (tensor<2x16x64xf32>, tensor<96x64xf32>, tensor<96x64xf32>, tensor<64x96xf32>) -> tensor<2x16x64xf32>
    %26 = moe.add %19, %25 : tensor<2x16x64xf32>
    %27 = moe.param "model.layers.1.input_layernorm.weight" : tensor<64xf32>
    %28 = moe.rms_norm %26, %27 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %29 = moe.param "model.layers.1.self_attn.q_proj.weight" : tensor<96x64xf32>
    %30 = moe.linear %28, %29 : (tensor<2x16x64xf32>, tensor<96x64xf32>) -> tensor<2x16x96xf32>
    %expanded_6 = tensor.expand_shape %30 [[0], [1], [2, 3]] output_shape [2, 16, 4, 24] : tensor<2x16x96xf32> into tensor<2x16x4x24xf32>
    %lhs_7, %rhs_8 = moe.split %expanded_6 : (tensor<2x16x4x24xf32>) -> (tensor<2x16x4x16xf32>, tensor<2x16x4x8xf32>)
    %31 = moe.rope %rhs_8 {interleaved, yarn_factor = 4.000000e+00 : f64, yarn_high = 1.000000e+00 : f64} : (tensor<2x16x4x8xf32>) -> tensor<2x16x4x8xf32>
    %32 = moe.concat %lhs_7, %31 : (tensor<2x16x4x16xf32>, tensor<2x16x4x8xf32>) -> tensor<2x16x4x24xf32>
    %33 = moe.param "model.layers.1.self_attn.kv_a_proj_with_mqa.weight" : tensor<32x64xf32>
    %34 = moe.linear %28, %33 : (tensor<2x16x64xf32>, tensor<32x64xf32>) -> tensor<2x16x32xf32>
    %lhs_9, %rhs_10 = moe.split %34 : (tensor<2x16x32xf32>) -> (tensor<2x16x24xf32>, tensor<2x16x8xf32>)
    %35 = moe.param "model.layers.1.self_attn.kv_a_layernorm.weight" : tensor<24xf32>
    %36 = moe.rms_norm %lhs_9, %35 : (tensor<2x16x24xf32>, tensor<24xf32>) -> tensor<2x16x24xf32>
    %37 = moe.param "model.layers.1.self_attn.kv_b_proj.weight" : tensor<112x24xf32>
    %38 = moe.linear %36, %37 : (tensor<2x16x24xf32>, tensor<112x24xf32>) -> tensor<2x16x112xf32>
    %expanded_11 = tensor.expand_shape %38 [[0], [1], [2, 3]] output_shape [2, 16, 4, 28] : tensor<2x16x112xf32> into tensor<2x16x4x28xf32>
    %lhs_12, %rhs_13 = moe.split %expanded_11 : (tensor<2x16x4x28xf32>) -> (tensor<2x16x4x16xf32>, tensor<2x16x4x12xf32>)
    %expanded_14 = tensor.expand_shape %rhs_10 [[0], [1], [2, 3]] output_shape [2, 16, 1, 8] : tensor<2x16x8xf32> into tensor<2x16x1x8xf32>
    %39 = moe.rope %expanded_14 {interleaved, yarn_factor = 4.000000e+00 : f64, yarn_high = 1.000000e+00 : f64} : (tensor<2x16x1x8xf32>) -> tensor<2x16x1x8xf32>
    %40 = moe.concat %lhs_12, %39 : (tensor<2x16x4x16xf32>, tensor<2x16x1x8xf32>) -> tensor<2x16x4x24xf32>
    %41 = moe.attention %32, %40, %rhs_13 {causal, scale = 0.24609782191507457 : f64} : (tensor<2x16x4x24xf32>, tensor<2x16x4x24xf32>, tensor<2x16x4x12xf32>) -> tensor<2x16x4x12xf32>
    %collapsed_15 = tensor.collapse_shape %41 [[0], [1], [2, 3]] : tensor<2x16x4x12xf32> into tensor<2x16x48xf32>
    %42 = moe.param "model.layers.1.self_attn.o_proj.weight" : tensor<64x48xf32>
    %43 = moe.linear %collapsed_15, %42 : (tensor<2x16x48xf32>, tensor<64x48xf32>) -> tensor<2x16x64xf32>
    %44 = moe.add %26, %43 : tensor<2x16x64xf32>
    %45 = moe.param "model.layers.1.post_attention_layernorm.weight" : tensor<64xf32>
    %46 = moe.rms_norm %44, %45 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %47 = moe.param "model.layers.1.mlp.gate.weight" : tensor<16x64xf32>
    %weights, %indices, %logits = moe.router %46, %47 softmax top 3 {group_top = 1 : i64, n_group = 4 : i64, route_scale = 2.000000e+00 : f64, topk_group = 2 : i64} : (tensor<2x16x64xf32>, tensor<16x64xf32>) -> (tensor<2x16x3xf32>, tensor<2x16x3xi32>, tensor<2x16x16xf32>)
    %48 = moe.param "model.layers.1.mlp.experts.{e}.gate_proj.weight" : tensor<16x32x64xf32>
    %49 = moe.param "model.layers.1.mlp.experts.{e}.up_proj.weight" : tensor<16x32x64xf32>
    %50 = moe.param "model.layers.1.mlp.experts.{e}.down_proj.weight" : tensor<16x64x32xf32>
    %51 = moe.experts %46, %weights, %indices, %48, %49, %50 : (tensor<2x16x64xf32>, tensor<2x16x3xf32>, tensor<2x16x3xi32>, tensor<16x32x64xf32>, tensor<16x32x64xf32>, tensor<16x64x32xf32>) -> tensor<2x16x64xf32>
    %52 = moe.param "model.layers.1.mlp.shared_experts.gate_proj.weight" : tensor<64x64xf32>
    %53 = moe.param "model.layers.1.mlp.shared_experts.up_proj.weight" : tensor<64x64xf32>
    %54 = moe.param "model.layers.1.mlp.shared_experts.down_proj.weight" : tensor<64x64xf32>
    %55 = moe.shared_experts %46, %52, %53, %54 : (tensor<2x16x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %56 = moe.add %51, %55 : tensor<2x16x64xf32>
    %57 = moe.add %44, %56 : tensor<2x16x64xf32>
    %58 = moe.param "model.norm.weight" : tensor<64xf32>
    %59 = moe.rms_norm %57, %58 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %60 = moe.param "lm_head.weight" : tensor<128x64xf32>
    %61 = moe.linear %59, %60 : (tensor<2x16x64xf32>, tensor<128x64xf32>) -> tensor<2x16x128xf32>
    %62 = moe.cross_entropy %61, %arg1 : (tensor<2x16x128xf32>, tensor<2x16xi32>) -> tensor<f32>
    return %61, %62 : tensor<2x16x128xf32>, tensor<f32>
  }
}
