// Qwen3-MoE imported by moe-import from olmoe_tiny.json: hidden 64, 2 layers, 4 heads (4 KV) x 16, 16 experts top-4, expert FFN 32, vocab 128, batch 2 x seq 16.
module attributes {moe.hf_config = "{\22architectures\22:[\22OlmoeForCausalLM\22],\22model_type\22:\22olmoe\22,\22vocab_size\22:128,\22hidden_size\22:64,\22num_hidden_layers\22:2,\22num_attention_heads\22:4,\22num_key_value_heads\22:4,\22hidden_act\22:\22silu\22,\22rms_norm_eps\22:1e-05,\22rope_theta\22:10000.0,\22rope_scaling\22:null,\22tie_word_embeddings\22:false,\22attention_bias\22:false,\22attention_dropout\22:0.0,\22clip_qkv\22:null,\22max_position_embeddings\22:64,\22num_experts\22:16,\22num_experts_per_tok\22:4,\22intermediate_size\22:32,\22norm_topk_prob\22:false,\22router_aux_loss_coef\22:0.01,\22output_router_logits\22:true}"} {
  func.func @forward(%arg0: tensor<2x16xi32>, %arg1: tensor<2x16xi32>) -> (tensor<2x16x128xf32>, tensor<f32>) {
    %0 = moe.param "model.embed_tokens.weight" : tensor<128x64xf32>
    %1 = moe.embedding %arg0, %0 : (tensor<2x16xi32>, tensor<128x64xf32>) -> tensor<2x16x64xf32>
    %2 = moe.param "model.layers.0.input_layernorm.weight" : tensor<64xf32>
    %3 = moe.rms_norm %1, %2 {eps = 1.000000e-05 : f64} : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %4 = moe.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
    %5 = moe.linear %3, %4 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %6 = moe.param "model.layers.0.self_attn.q_norm.weight" : tensor<64xf32>
    %7 = moe.rms_norm %5, %6 {eps = 1.000000e-05 : f64} : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %expanded = tensor.expand_shape %7 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %8 = moe.rope %expanded : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %9 = moe.param "model.layers.0.self_attn.k_proj.weight" : tensor<64x64xf32>
    %10 = moe.linear %3, %9 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %11 = moe.param "model.layers.0.self_attn.k_norm.weight" : tensor<64xf32>
    %12 = moe.rms_norm %10, %11 {eps = 1.000000e-05 : f64} : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %expanded_0 = tensor.expand_shape %12 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %13 = moe.rope %expanded_0 : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %14 = moe.param "model.layers.0.self_attn.v_proj.weight" : tensor<64x64xf32>
    %15 = moe.linear %3, %14 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %expanded_1 = tensor.expand_shape %15 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %16 = moe.attention %8, %13, %expanded_1 {causal} : (tensor<2x16x4x16xf32>, tensor<2x16x4x16xf32>, tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %collapsed = tensor.collapse_shape %16 [[0], [1], [2, 3]] : tensor<2x16x4x16xf32> into tensor<2x16x64xf32>
    %17 = moe.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
    %18 = moe.linear %collapsed, %17 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %19 = moe.add %1, %18 : tensor<2x16x64xf32>
    %20 = moe.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xf32>
    %21 = moe.rms_norm %19, %20 {eps = 1.000000e-05 : f64} : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %22 = moe.param "model.layers.0.mlp.gate.weight" : tensor<16x64xf32>
    %weights, %indices, %logits = moe.router %21, %22 softmax top 4 : (tensor<2x16x64xf32>, tensor<16x64xf32>) -> (tensor<2x16x4xf32>, tensor<2x16x4xi32>, tensor<2x16x16xf32>)
    %23 = moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" : tensor<16x32x64xf32>
    %24 = moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" : tensor<16x32x64xf32>
    %25 = moe.param "model.layers.0.mlp.experts.{e}.down_proj.weight" : tensor<16x64x32xf32>
    %26 = moe.experts %21, %weights, %indices, %23, %24, %25 : (tensor<2x16x64xf32>, tensor<2x16x4xf32>, tensor<2x16x4xi32>, tensor<16x32x64xf32>, tensor<16x32x64xf32>, tensor<16x64x32xf32>) -> tensor<2x16x64xf32>
    %27 = moe.aux_loss %logits, %indices softmax {coefficient = 1.000000e-02 : f64} : (tensor<2x16x16xf32>, tensor<2x16x4xi32>) -> tensor<f32>
    %28 = moe.add %19, %26 : tensor<2x16x64xf32>
    %29 = moe.param "model.layers.1.input_layernorm.weight" : tensor<64xf32>
    %30 = moe.rms_norm %28, %29 {eps = 1.000000e-05 : f64} : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %31 = moe.param "model.layers.1.self_attn.q_proj.weight" : tensor<64x64xf32>
    %32 = moe.linear %30, %31 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %33 = moe.param "model.layers.1.self_attn.q_norm.weight" : tensor<64xf32>
    %34 = moe.rms_norm %32, %33 {eps = 1.000000e-05 : f64} : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %expanded_2 = tensor.expand_shape %34 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %35 = moe.rope %expanded_2 : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %36 = moe.param "model.layers.1.self_attn.k_proj.weight" : tensor<64x64xf32>
    %37 = moe.linear %30, %36 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %38 = moe.param "model.layers.1.self_attn.k_norm.weight" : tensor<64xf32>
    %39 = moe.rms_norm %37, %38 {eps = 1.000000e-05 : f64} : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %expanded_3 = tensor.expand_shape %39 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %40 = moe.rope %expanded_3 : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %41 = moe.param "model.layers.1.self_attn.v_proj.weight" : tensor<64x64xf32>
    %42 = moe.linear %30, %41 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %expanded_4 = tensor.expand_shape %42 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %43 = moe.attention %35, %40, %expanded_4 {causal} : (tensor<2x16x4x16xf32>, tensor<2x16x4x16xf32>, tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %collapsed_5 = tensor.collapse_shape %43 [[0], [1], [2, 3]] : tensor<2x16x4x16xf32> into tensor<2x16x64xf32>
    %44 = moe.param "model.layers.1.self_attn.o_proj.weight" : tensor<64x64xf32>
    %45 = moe.linear %collapsed_5, %44 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %46 = moe.add %28, %45 : tensor<2x16x64xf32>
    %47 = moe.param "model.layers.1.post_attention_layernorm.weight" : tensor<64xf32>
    %48 = moe.rms_norm %46, %47 {eps = 1.000000e-05 : f64} : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %49 = moe.param "model.layers.1.mlp.gate.weight" : tensor<16x64xf32>
    %weights_6, %indices_7, %logits_8 = moe.router %48, %49 softmax top 4 : (tensor<2x16x64xf32>, tensor<16x64xf32>) -> (tensor<2x16x4xf32>, tensor<2x16x4xi32>, tensor<2x16x16xf32>)
    %50 = moe.param "model.layers.1.mlp.experts.{e}.gate_proj.weight" : tensor<16x32x64xf32>
    %51 = moe.param "model.layers.1.mlp.experts.{e}.up_proj.weight" : tensor<16x32x64xf32>
    %52 = moe.param "model.layers.1.mlp.experts.{e}.down_proj.weight" : tensor<16x64x32xf32>
    %53 = moe.experts %48, %weights_6, %indices_7, %50, %51, %52 : (tensor<2x16x64xf32>, tensor<2x16x4xf32>, tensor<2x16x4xi32>, tensor<16x32x64xf32>, tensor<16x32x64xf32>, tensor<16x64x32xf32>) -> tensor<2x16x64xf32>
    %54 = moe.aux_loss %logits_8, %indices_7 softmax {coefficient = 1.000000e-02 : f64} : (tensor<2x16x16xf32>, tensor<2x16x4xi32>) -> tensor<f32>
    %55 = moe.add %46, %53 : tensor<2x16x64xf32>
    %56 = moe.param "model.norm.weight" : tensor<64xf32>
    %57 = moe.rms_norm %55, %56 {eps = 1.000000e-05 : f64} : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %58 = moe.param "lm_head.weight" : tensor<128x64xf32>
    %59 = moe.linear %57, %58 : (tensor<2x16x64xf32>, tensor<128x64xf32>) -> tensor<2x16x128xf32>
    %60 = moe.cross_entropy %59, %arg1 : (tensor<2x16x128xf32>, tensor<2x16xi32>) -> tensor<f32>
    %61 = moe.add %60, %27 : tensor<f32>
    %62 = moe.add %61, %54 : tensor<f32>
    return %59, %62 : tensor<2x16x128xf32>, tensor<f32>
  }
}
