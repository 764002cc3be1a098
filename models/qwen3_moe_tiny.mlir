// Qwen3-MoE imported by moe-import from qwen3_moe_tiny.json: hidden 64, 2 layers, 4 heads (2 KV) x 16, 8 experts top-2, expert FFN 32, vocab 128, batch 4 x seq 16.
module attributes {moe.hf_config = "{\22architectures\22:[\22Qwen3MoeForCausalLM\22],\22model_type\22:\22qwen3_moe\22,\22vocab_size\22:128,\22hidden_size\22:64,\22num_hidden_layers\22:2,\22num_attention_heads\22:4,\22num_key_value_heads\22:2,\22head_dim\22:16,\22hidden_act\22:\22silu\22,\22rms_norm_eps\22:1e-06,\22rope_theta\22:1000000.0,\22rope_scaling\22:null,\22tie_word_embeddings\22:false,\22attention_dropout\22:0.0,\22max_position_embeddings\22:64,\22num_experts\22:8,\22num_experts_per_tok\22:2,\22moe_intermediate_size\22:32,\22intermediate_size\22:256,\22decoder_sparse_step\22:1,\22mlp_only_layers\22:[],\22norm_topk_prob\22:true,\22attention_bias\22:false,\22use_sliding_window\22:false,\22router_aux_loss_coef\22:0.001,\22output_router_logits\22:true}"} {
  func.func @forward(%arg0: tensor<4x16xi32>, %arg1: tensor<4x16xi32>) -> (tensor<4x16x128xf32>, tensor<f32>) {
    %0 = moe.param "model.embed_tokens.weight" : tensor<128x64xf32>
    %1 = moe.embedding %arg0, %0 : (tensor<4x16xi32>, tensor<128x64xf32>) -> tensor<4x16x64xf32>
    %2 = moe.param "model.layers.0.input_layernorm.weight" : tensor<64xf32>
    %3 = moe.rms_norm %1, %2 : (tensor<4x16x64xf32>, tensor<64xf32>) -> tensor<4x16x64xf32>
    %4 = moe.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
    %5 = moe.linear %3, %4 : (tensor<4x16x64xf32>, tensor<64x64xf32>) -> tensor<4x16x64xf32>
    %expanded = tensor.expand_shape %5 [[0], [1], [2, 3]] output_shape [4, 16, 4, 16] : tensor<4x16x64xf32> into tensor<4x16x4x16xf32>
    %6 = moe.param "model.layers.0.self_attn.q_norm.weight" : tensor<16xf32>
    %7 = moe.rms_norm %expanded, %6 : (tensor<4x16x4x16xf32>, tensor<16xf32>) -> tensor<4x16x4x16xf32>
    %8 = moe.rope %7 {theta = 1.000000e+06 : f64} : (tensor<4x16x4x16xf32>) -> tensor<4x16x4x16xf32>
    %9 = moe.param "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xf32>
    %10 = moe.linear %3, %9 : (tensor<4x16x64xf32>, tensor<32x64xf32>) -> tensor<4x16x32xf32>
    %expanded_0 = tensor.expand_shape %10 [[0], [1], [2, 3]] output_shape [4, 16, 2, 16] : tensor<4x16x32xf32> into tensor<4x16x2x16xf32>
    %11 = moe.param "model.layers.0.self_attn.k_norm.weight" : tensor<16xf32>
    %12 = moe.rms_norm %expanded_0, %11 : (tensor<4x16x2x16xf32>, tensor<16xf32>) -> tensor<4x16x2x16xf32>
    %13 = moe.rope %12 {theta = 1.000000e+06 : f64} : (tensor<4x16x2x16xf32>) -> tensor<4x16x2x16xf32>
    %14 = moe.param "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xf32>
    %15 = moe.linear %3, %14 : (tensor<4x16x64xf32>, tensor<32x64xf32>) -> tensor<4x16x32xf32>
    %expanded_1 = tensor.expand_shape %15 [[0], [1], [2, 3]] output_shape [4, 16, 2, 16] : tensor<4x16x32xf32> into tensor<4x16x2x16xf32>
    %16 = moe.attention %8, %13, %expanded_1 {causal} : (tensor<4x16x4x16xf32>, tensor<4x16x2x16xf32>, tensor<4x16x2x16xf32>) -> tensor<4x16x4x16xf32>
    %collapsed = tensor.collapse_shape %16 [[0], [1], [2, 3]] : tensor<4x16x4x16xf32> into tensor<4x16x64xf32>
    %17 = moe.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
    %18 = moe.linear %collapsed, %17 : (tensor<4x16x64xf32>, tensor<64x64xf32>) -> tensor<4x16x64xf32>
    %19 = moe.add %1, %18 : tensor<4x16x64xf32>
    %20 = moe.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xf32>
    %21 = moe.rms_norm %19, %20 : (tensor<4x16x64xf32>, tensor<64xf32>) -> tensor<4x16x64xf32>
    %22 = moe.param "model.layers.0.mlp.gate.weight" : tensor<8x64xf32>
    %weights, %indices, %logits = moe.router %21, %22 softmax top 2 {norm_topk_prob} : (tensor<4x16x64xf32>, tensor<8x64xf32>) -> (tensor<4x16x2xf32>, tensor<4x16x2xi32>, tensor<4x16x8xf32>)
    %23 = moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" : tensor<8x32x64xf32>
    %24 = moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" : tensor<8x32x64xf32>
    %25 = moe.param "model.layers.0.mlp.experts.{e}.down_proj.weight" : tensor<8x64x32xf32>
    %26 = moe.experts %21, %weights, %indices, %23, %24, %25 : (tensor<4x16x64xf32>, tensor<4x16x2xf32>, tensor<4x16x2xi32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<4x16x64xf32>
    %27 = moe.aux_loss %logits, %indices softmax {coefficient = 1.000000e-03 : f64} : (tensor<4x16x8xf32>, tensor<4x16x2xi32>) -> tensor<f32>
    %28 = moe.add %19, %26 : tensor<4x16x64xf32>
    %29 = moe.param "model.layers.1.input_layernorm.weight" : tensor<64xf32>
    %30 = moe.rms_norm %28, %29 : (tensor<4x16x64xf32>, tensor<64xf32>) -> tensor<4x16x64xf32>
    %31 = moe.param "model.layers.1.self_attn.q_proj.weight" : tensor<64x64xf32>
    %32 = moe.linear %30, %31 : (tensor<4x16x64xf32>, tensor<64x64xf32>) -> tensor<4x16x64xf32>
    %expanded_2 = tensor.expand_shape %32 [[0], [1], [2, 3]] output_shape [4, 16, 4, 16] : tensor<4x16x64xf32> into tensor<4x16x4x16xf32>
    %33 = moe.param "model.layers.1.self_attn.q_norm.weight" : tensor<16xf32>
    %34 = moe.rms_norm %expanded_2, %33 : (tensor<4x16x4x16xf32>, tensor<16xf32>) -> tensor<4x16x4x16xf32>
    %35 = moe.rope %34 {theta = 1.000000e+06 : f64} : (tensor<4x16x4x16xf32>) -> tensor<4x16x4x16xf32>
    %36 = moe.param "model.layers.1.self_attn.k_proj.weight" : tensor<32x64xf32>
    %37 = moe.linear %30, %36 : (tensor<4x16x64xf32>, tensor<32x64xf32>) -> tensor<4x16x32xf32>
    %expanded_3 = tensor.expand_shape %37 [[0], [1], [2, 3]] output_shape [4, 16, 2, 16] : tensor<4x16x32xf32> into tensor<4x16x2x16xf32>
    %38 = moe.param "model.layers.1.self_attn.k_norm.weight" : tensor<16xf32>
    %39 = moe.rms_norm %expanded_3, %38 : (tensor<4x16x2x16xf32>, tensor<16xf32>) -> tensor<4x16x2x16xf32>
    %40 = moe.rope %39 {theta = 1.000000e+06 : f64} : (tensor<4x16x2x16xf32>) -> tensor<4x16x2x16xf32>
    %41 = moe.param "model.layers.1.self_attn.v_proj.weight" : tensor<32x64xf32>
    %42 = moe.linear %30, %41 : (tensor<4x16x64xf32>, tensor<32x64xf32>) -> tensor<4x16x32xf32>
    %expanded_4 = tensor.expand_shape %42 [[0], [1], [2, 3]] output_shape [4, 16, 2, 16] : tensor<4x16x32xf32> into tensor<4x16x2x16xf32>
    %43 = moe.attention %35, %40, %expanded_4 {causal} : (tensor<4x16x4x16xf32>, tensor<4x16x2x16xf32>, tensor<4x16x2x16xf32>) -> tensor<4x16x4x16xf32>
    %collapsed_5 = tensor.collapse_shape %43 [[0], [1], [2, 3]] : tensor<4x16x4x16xf32> into tensor<4x16x64xf32>
    %44 = moe.param "model.layers.1.self_attn.o_proj.weight" : tensor<64x64xf32>
    %45 = moe.linear %collapsed_5, %44 : (tensor<4x16x64xf32>, tensor<64x64xf32>) -> tensor<4x16x64xf32>
    %46 = moe.add %28, %45 : tensor<4x16x64xf32>
    %47 = moe.param "model.layers.1.post_attention_layernorm.weight" : tensor<64xf32>
    %48 = moe.rms_norm %46, %47 : (tensor<4x16x64xf32>, tensor<64xf32>) -> tensor<4x16x64xf32>
    %49 = moe.param "model.layers.1.mlp.gate.weight" : tensor<8x64xf32>
    %weights_6, %indices_7, %logits_8 = moe.router %48, %49 softmax top 2 {norm_topk_prob} : (tensor<4x16x64xf32>, tensor<8x64xf32>) -> (tensor<4x16x2xf32>, tensor<4x16x2xi32>, tensor<4x16x8xf32>)
    %50 = moe.param "model.layers.1.mlp.experts.{e}.gate_proj.weight" : tensor<8x32x64xf32>
    %51 = moe.param "model.layers.1.mlp.experts.{e}.up_proj.weight" : tensor<8x32x64xf32>
    %52 = moe.param "model.layers.1.mlp.experts.{e}.down_proj.weight" : tensor<8x64x32xf32>
    %53 = moe.experts %48, %weights_6, %indices_7, %50, %51, %52 : (tensor<4x16x64xf32>, tensor<4x16x2xf32>, tensor<4x16x2xi32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<4x16x64xf32>
    %54 = moe.aux_loss %logits_8, %indices_7 softmax {coefficient = 1.000000e-03 : f64} : (tensor<4x16x8xf32>, tensor<4x16x2xi32>) -> tensor<f32>
    %55 = moe.add %46, %53 : tensor<4x16x64xf32>
    %56 = moe.param "model.norm.weight" : tensor<64xf32>
    %57 = moe.rms_norm %55, %56 : (tensor<4x16x64xf32>, tensor<64xf32>) -> tensor<4x16x64xf32>
    %58 = moe.param "lm_head.weight" : tensor<128x64xf32>
    %59 = moe.linear %57, %58 : (tensor<4x16x64xf32>, tensor<128x64xf32>) -> tensor<4x16x128xf32>
    %60 = moe.cross_entropy %59, %arg1 : (tensor<4x16x128xf32>, tensor<4x16xi32>) -> tensor<f32>
    %61 = moe.add %60, %27 : tensor<f32>
    %62 = moe.add %61, %54 : tensor<f32>
    return %59, %62 : tensor<4x16x128xf32>, tensor<f32>
  }
}
