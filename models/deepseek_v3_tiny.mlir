// DeepSeek-V3 imported by moe-import from deepseek_v3_tiny.json: hidden 64, 2 layers, 4 heads (4 KV) x 16, 16 experts top-4, expert FFN 32, vocab 128, batch 2 x seq 16.
module attributes {moe.hf_config = "{\22architectures\22:[\22DeepseekV3ForCausalLM\22],\22model_type\22:\22deepseek_v3\22,\22vocab_size\22:128,\22hidden_size\22:64,\22num_hidden_layers\22:2,\22num_attention_heads\22:4,\22num_key_value_heads\22:4,\22head_dim\22:16,\22hidden_act\22:\22silu\22,\22rms_norm_eps\22:1e-06,\22rope_theta\22:10000.0,\22rope_scaling\22:null,\22tie_word_embeddings\22:false,\22attention_dropout\22:0.0,\22max_position_embeddings\22:64,\22n_routed_experts\22:16,\22num_experts_per_tok\22:4,\22moe_intermediate_size\22:32,\22intermediate_size\22:96,\22first_k_dense_replace\22:1,\22moe_layer_freq\22:1,\22n_shared_experts\22:1,\22n_group\22:4,\22topk_group\22:2,\22topk_method\22:\22noaux_tc\22,\22scoring_func\22:\22sigmoid\22,\22routed_scaling_factor\22:2.5,\22norm_topk_prob\22:true,\22attention_bias\22:false}"} {
  func.func @forward(%arg0: tensor<2x16xi32>, %arg1: tensor<2x16xi32>) -> (tensor<2x16x128xf32>, tensor<f32>) {
    %0 = moe.param "model.embed_tokens.weight" : tensor<128x64xf32>
    %1 = moe.embedding %arg0, %0 : (tensor<2x16xi32>, tensor<128x64xf32>) -> tensor<2x16x64xf32>
    %2 = moe.param "model.layers.0.input_layernorm.weight" : tensor<64xf32>
    %3 = moe.rms_norm %1, %2 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %4 = moe.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
    %5 = moe.linear %3, %4 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %expanded = tensor.expand_shape %5 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %6 = moe.rope %expanded : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %7 = moe.param "model.layers.0.self_attn.k_proj.weight" : tensor<64x64xf32>
    %8 = moe.linear %3, %7 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %expanded_0 = tensor.expand_shape %8 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %9 = moe.rope %expanded_0 : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %10 = moe.param "model.layers.0.self_attn.v_proj.weight" : tensor<64x64xf32>
    %11 = moe.linear %3, %10 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %expanded_1 = tensor.expand_shape %11 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %12 = moe.attention %6, %9, %expanded_1 {causal} : (tensor<2x16x4x16xf32>, tensor<2x16x4x16xf32>, tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %collapsed = tensor.collapse_shape %12 [[0], [1], [2, 3]] : tensor<2x16x4x16xf32> into tensor<2x16x64xf32>
    %13 = moe.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
    %14 = moe.linear %collapsed, %13 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %15 = moe.add %1, %14 : tensor<2x16x64xf32>
    %16 = moe.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xf32>
    %17 = moe.rms_norm %15, %16 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %18 = moe.param "model.layers.0.mlp.gate_proj.weight" : tensor<96x64xf32>
    %19 = moe.param "model.layers.0.mlp.up_proj.weight" : tensor<96x64xf32>
    %20 = moe.param "model.layers.0.mlp.down_proj.weight" : tensor<64x96xf32>
    %21 = moe.mlp %17, %18, %19, %20 : (tensor<2x16x64xf32>, tensor<96x64xf32>, tensor<96x64xf32>, tensor<64x96xf32>) -> tensor<2x16x64xf32>
    %22 = moe.add %15, %21 : tensor<2x16x64xf32>
    %23 = moe.param "model.layers.1.input_layernorm.weight" : tensor<64xf32>
    %24 = moe.rms_norm %22, %23 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %25 = moe.param "model.layers.1.self_attn.q_proj.weight" : tensor<64x64xf32>
    %26 = moe.linear %24, %25 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %expanded_2 = tensor.expand_shape %26 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %27 = moe.rope %expanded_2 : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %28 = moe.param "model.layers.1.self_attn.k_proj.weight" : tensor<64x64xf32>
    %29 = moe.linear %24, %28 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %expanded_3 = tensor.expand_shape %29 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %30 = moe.rope %expanded_3 : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %31 = moe.param "model.layers.1.self_attn.v_proj.weight" : tensor<64x64xf32>
    %32 = moe.linear %24, %31 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %expanded_4 = tensor.expand_shape %32 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %33 = moe.attention %27, %30, %expanded_4 {causal} : (tensor<2x16x4x16xf32>, tensor<2x16x4x16xf32>, tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %collapsed_5 = tensor.collapse_shape %33 [[0], [1], [2, 3]] : tensor<2x16x4x16xf32> into tensor<2x16x64xf32>
    %34 = moe.param "model.layers.1.self_attn.o_proj.weight" : tensor<64x64xf32>
    %35 = moe.linear %collapsed_5, %34 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %36 = moe.add %22, %35 : tensor<2x16x64xf32>
    %37 = moe.param "model.layers.1.post_attention_layernorm.weight" : tensor<64xf32>
    %38 = moe.rms_norm %36, %37 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %39 = moe.param "model.layers.1.mlp.gate.weight" : tensor<16x64xf32>
    %40 = moe.param "model.layers.1.mlp.gate.e_score_correction_bias" : tensor<16xf32>
    %weights, %indices, %logits = moe.router %38, %39 bias %40 sigmoid top 4 {n_group = 4 : i64, norm_topk_prob, route_scale = 2.500000e+00 : f64, topk_group = 2 : i64} : (tensor<2x16x64xf32>, tensor<16x64xf32>, tensor<16xf32>) -> (tensor<2x16x4xf32>, tensor<2x16x4xi32>, tensor<2x16x16xf32>)
    %41 = moe.param "model.layers.1.mlp.experts.{e}.gate_proj.weight" : tensor<16x32x64xf32>
    %42 = moe.param "model.layers.1.mlp.experts.{e}.up_proj.weight" : tensor<16x32x64xf32>
    %43 = moe.param "model.layers.1.mlp.experts.{e}.down_proj.weight" : tensor<16x64x32xf32>
    %44 = moe.experts %38, %weights, %indices, %41, %42, %43 : (tensor<2x16x64xf32>, tensor<2x16x4xf32>, tensor<2x16x4xi32>, tensor<16x32x64xf32>, tensor<16x32x64xf32>, tensor<16x64x32xf32>) -> tensor<2x16x64xf32>
    %45 = moe.param "model.layers.1.mlp.shared_experts.gate_proj.weight" : tensor<32x64xf32>
    %46 = moe.param "model.layers.1.mlp.shared_experts.up_proj.weight" : tensor<32x64xf32>
    %47 = moe.param "model.layers.1.mlp.shared_experts.down_proj.weight" : tensor<64x32xf32>
    %48 = moe.shared_experts %38, %45, %46, %47 : (tensor<2x16x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x32xf32>) -> tensor<2x16x64xf32>
    %49 = moe.add %44, %48 : tensor<2x16x64xf32>
    %50 = moe.aux_loss %logits, %indices sigmoid {coefficient = 1.000000e-04 : f64} : (tensor<2x16x16xf32>, tensor<2x16x4xi32>) -> tensor<f32>
    %51 = moe.add %36, %49 : tensor<2x16x64xf32>
    %52 = moe.param "model.norm.weight" : tensor<64xf32>
    %53 = moe.rms_norm %51, %52 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %54 = moe.param "lm_head.weight" : tensor<128x64xf32>
    %55 = moe.linear %53, %54 : (tensor<2x16x64xf32>, tensor<128x64xf32>) -> tensor<2x16x128xf32>
    %56 = moe.cross_entropy %55, %arg1 : (tensor<2x16x128xf32>, tensor<2x16xi32>) -> tensor<f32>
    %57 = moe.add %56, %50 : tensor<f32>
    return %55, %57 : tensor<2x16x128xf32>, tensor<f32>
  }
}
