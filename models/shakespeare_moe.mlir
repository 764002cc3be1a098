// Qwen3-MoE imported by moe-import from shakespeare_moe.json: hidden 128, 2 layers, 4 heads (2 KV) x 32, 8 experts top-2, expert FFN 128, vocab 65, batch 16 x seq 128.
module attributes {moe.hf_config = "{\22architectures\22:[\22Qwen3MoeForCausalLM\22],\22model_type\22:\22qwen3_moe\22,\22vocab_size\22:65,\22hidden_size\22:128,\22num_hidden_layers\22:2,\22num_attention_heads\22:4,\22num_key_value_heads\22:2,\22head_dim\22:32,\22hidden_act\22:\22silu\22,\22rms_norm_eps\22:1e-06,\22rope_theta\22:10000.0,\22rope_scaling\22:null,\22tie_word_embeddings\22:false,\22attention_dropout\22:0.0,\22max_position_embeddings\22:128,\22num_experts\22:8,\22num_experts_per_tok\22:2,\22moe_intermediate_size\22:128,\22intermediate_size\22:512,\22decoder_sparse_step\22:1,\22mlp_only_layers\22:[],\22norm_topk_prob\22:true,\22attention_bias\22:false,\22use_sliding_window\22:false,\22router_aux_loss_coef\22:0.01,\22output_router_logits\22:true}", moe.vocab_chars = "\0A !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"} {
  func.func @forward(%arg0: tensor<16x128xi32>, %arg1: tensor<16x128xi32>) -> (tensor<16x128x65xf32>, tensor<f32>) {
    %0 = moe.param "model.embed_tokens.weight" : tensor<65x128xf32>
    %1 = moe.embedding %arg0, %0 : (tensor<16x128xi32>, tensor<65x128xf32>) -> tensor<16x128x128xf32>
    %2 = moe.param "model.layers.0.input_layernorm.weight" : tensor<128xf32>
    %3 = moe.rms_norm %1, %2 : (tensor<16x128x128xf32>, tensor<128xf32>) -> tensor<16x128x128xf32>
    %4 = moe.param "model.layers.0.self_attn.q_proj.weight" : tensor<128x128xf32>
    %5 = moe.linear %3, %4 : (tensor<16x128x128xf32>, tensor<128x128xf32>) -> tensor<16x128x128xf32>
    %expanded = tensor.expand_shape %5 [[0], [1], [2, 3]] output_shape [16, 128, 4, 32] : tensor<16x128x128xf32> into tensor<16x128x4x32xf32>
    %6 = moe.param "model.layers.0.self_attn.q_norm.weight" : tensor<32xf32>
    %7 = moe.rms_norm %expanded, %6 : (tensor<16x128x4x32xf32>, tensor<32xf32>) -> tensor<16x128x4x32xf32>
    %8 = moe.rope %7 : (tensor<16x128x4x32xf32>) -> tensor<16x128x4x32xf32>
    %9 = moe.param "model.layers.0.self_attn.k_proj.weight" : tensor<64x128xf32>
    %10 = moe.linear %3, %9 : (tensor<16x128x128xf32>, tensor<64x128xf32>) -> tensor<16x128x64xf32>
    %expanded_0 = tensor.expand_shape %10 [[0], [1], [2, 3]] output_shape [16, 128, 2, 32] : tensor<16x128x64xf32> into tensor<16x128x2x32xf32>
    %11 = moe.param "model.layers.0.self_attn.k_norm.weight" : tensor<32xf32>
    %12 = moe.rms_norm %expanded_0, %11 : (tensor<16x128x2x32xf32>, tensor<32xf32>) -> tensor<16x128x2x32xf32>
    %13 = moe.rope %12 : (tensor<16x128x2x32xf32>) -> tensor<16x128x2x32xf32>
    %14 = moe.param "model.layers.0.self_attn.v_proj.weight" : tensor<64x128xf32>
    %15 = moe.linear %3, %14 : (tensor<16x128x128xf32>, tensor<64x128xf32>) -> tensor<16x128x64xf32>
    %expanded_1 = tensor.expand_shape %15 [[0], [1], [2, 3]] output_shape [16, 128, 2, 32] : tensor<16x128x64xf32> into tensor<16x128x2x32xf32>
    %16 = moe.attention %8, %13, %expanded_1 {causal} : (tensor<16x128x4x32xf32>, tensor<16x128x2x32xf32>, tensor<16x128x2x32xf32>) -> tensor<16x128x4x32xf32>
    %collapsed = tensor.collapse_shape %16 [[0], [1], [2, 3]] : tensor<16x128x4x32xf32> into tensor<16x128x128xf32>
    %17 = moe.param "model.layers.0.self_attn.o_proj.weight" : tensor<128x128xf32>
    %18 = moe.linear %collapsed, %17 : (tensor<16x128x128xf32>, tensor<128x128xf32>) -> tensor<16x128x128xf32>
    %19 = moe.add %1, %18 : tensor<16x128x128xf32>
    %20 = moe.param "model.layers.0.post_attention_layernorm.weight" : tensor<128xf32>
    %21 = moe.rms_norm %19, %20 : (tensor<16x128x128xf32>, tensor<128xf32>) -> tensor<16x128x128xf32>
    %22 = moe.param "model.layers.0.mlp.gate.weight" : tensor<8x128xf32>
    %weights, %indices, %logits = moe.router %21, %22 softmax top 2 {norm_topk_prob} : (tensor<16x128x128xf32>, tensor<8x128xf32>) -> (tensor<16x128x2xf32>, tensor<16x128x2xi32>, tensor<16x128x8xf32>)
    %23 = moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" : tensor<8x128x128xf32>
    %24 = moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" : tensor<8x128x128xf32>
    %25 = moe.param "model.layers.0.mlp.experts.{e}.down_proj.weight" : tensor<8x128x128xf32>
    %26 = moe.experts %21, %weights, %indices, %23, %24, %25 : (tensor<16x128x128xf32>, tensor<16x128x2xf32>, tensor<16x128x2xi32>, tensor<8x128x128xf32>, tensor<8x128x128xf32>, tensor<8x128x128xf32>) -> tensor<16x128x128xf32>
    %27 = moe.aux_loss %logits, %indices softmax {coefficient = 1.000000e-02 : f64} : (tensor<16x128x8xf32>, tensor<16x128x2xi32>) -> tensor<f32>
    %28 = moe.z_loss %logits {coefficient = 1.000000e-03 : f64} : (tensor<16x128x8xf32>) -> tensor<f32>
    %29 = moe.add %19, %26 : tensor<16x128x128xf32>
    %30 = moe.param "model.layers.1.input_layernorm.weight" : tensor<128xf32>
    %31 = moe.rms_norm %29, %30 : (tensor<16x128x128xf32>, tensor<128xf32>) -> tensor<16x128x128xf32>
    %32 = moe.param "model.layers.1.self_attn.q_proj.weight" : tensor<128x128xf32>
    %33 = moe.linear %31, %32 : (tensor<16x128x128xf32>, tensor<128x128xf32>) -> tensor<16x128x128xf32>
    %expanded_2 = tensor.expand_shape %33 [[0], [1], [2, 3]] output_shape [16, 128, 4, 32] : tensor<16x128x128xf32> into tensor<16x128x4x32xf32>
    %34 = moe.param "model.layers.1.self_attn.q_norm.weight" : tensor<32xf32>
    %35 = moe.rms_norm %expanded_2, %34 : (tensor<16x128x4x32xf32>, tensor<32xf32>) -> tensor<16x128x4x32xf32>
    %36 = moe.rope %35 : (tensor<16x128x4x32xf32>) -> tensor<16x128x4x32xf32>
    %37 = moe.param "model.layers.1.self_attn.k_proj.weight" : tensor<64x128xf32>
    %38 = moe.linear %31, %37 : (tensor<16x128x128xf32>, tensor<64x128xf32>) -> tensor<16x128x64xf32>
    %expanded_3 = tensor.expand_shape %38 [[0], [1], [2, 3]] output_shape [16, 128, 2, 32] : tensor<16x128x64xf32> into tensor<16x128x2x32xf32>
    %39 = moe.param "model.layers.1.self_attn.k_norm.weight" : tensor<32xf32>
    %40 = moe.rms_norm %expanded_3, %39 : (tensor<16x128x2x32xf32>, tensor<32xf32>) -> tensor<16x128x2x32xf32>
    %41 = moe.rope %40 : (tensor<16x128x2x32xf32>) -> tensor<16x128x2x32xf32>
    %42 = moe.param "model.layers.1.self_attn.v_proj.weight" : tensor<64x128xf32>
    %43 = moe.linear %31, %42 : (tensor<16x128x128xf32>, tensor<64x128xf32>) -> tensor<16x128x64xf32>
    %expanded_4 = tensor.expand_shape %43 [[0], [1], [2, 3]] output_shape [16, 128, 2, 32] : tensor<16x128x64xf32> into tensor<16x128x2x32xf32>
    %44 = moe.attention %36, %41, %expanded_4 {causal} : (tensor<16x128x4x32xf32>, tensor<16x128x2x32xf32>, tensor<16x128x2x32xf32>) -> tensor<16x128x4x32xf32>
    %collapsed_5 = tensor.collapse_shape %44 [[0], [1], [2, 3]] : tensor<16x128x4x32xf32> into tensor<16x128x128xf32>
    %45 = moe.param "model.layers.1.self_attn.o_proj.weight" : tensor<128x128xf32>
    %46 = moe.linear %collapsed_5, %45 : (tensor<16x128x128xf32>, tensor<128x128xf32>) -> tensor<16x128x128xf32>
    %47 = moe.add %29, %46 : tensor<16x128x128xf32>
    %48 = moe.param "model.layers.1.post_attention_layernorm.weight" : tensor<128xf32>
    %49 = moe.rms_norm %47, %48 : (tensor<16x128x128xf32>, tensor<128xf32>) -> tensor<16x128x128xf32>
    %50 = moe.param "model.layers.1.mlp.gate.weight" : tensor<8x128xf32>
    %weights_6, %indices_7, %logits_8 = moe.router %49, %50 softmax top 2 {norm_topk_prob} : (tensor<16x128x128xf32>, tensor<8x128xf32>) -> (tensor<16x128x2xf32>, tensor<16x128x2xi32>, tensor<16x128x8xf32>)
    %51 = moe.param "model.layers.1.mlp.experts.{e}.gate_proj.weight" : tensor<8x128x128xf32>
    %52 = moe.param "model.layers.1.mlp.experts.{e}.up_proj.weight" : tensor<8x128x128xf32>
    %53 = moe.param "model.layers.1.mlp.experts.{e}.down_proj.weight" : tensor<8x128x128xf32>
    %54 = moe.experts %49, %weights_6, %indices_7, %51, %52, %53 : (tensor<16x128x128xf32>, tensor<16x128x2xf32>, tensor<16x128x2xi32>, tensor<8x128x128xf32>, tensor<8x128x128xf32>, tensor<8x128x128xf32>) -> tensor<16x128x128xf32>
    %55 = moe.aux_loss %logits_8, %indices_7 softmax {coefficient = 1.000000e-02 : f64} : (tensor<16x128x8xf32>, tensor<16x128x2xi32>) -> tensor<f32>
    %56 = moe.z_loss %logits_8 {coefficient = 1.000000e-03 : f64} : (tensor<16x128x8xf32>) -> tensor<f32>
    %57 = moe.add %47, %54 : tensor<16x128x128xf32>
    %58 = moe.param "model.norm.weight" : tensor<128xf32>
    %59 = moe.rms_norm %57, %58 : (tensor<16x128x128xf32>, tensor<128xf32>) -> tensor<16x128x128xf32>
    %60 = moe.param "lm_head.weight" : tensor<65x128xf32>
    %61 = moe.linear %59, %60 : (tensor<16x128x128xf32>, tensor<65x128xf32>) -> tensor<16x128x65xf32>
    %62 = moe.cross_entropy %61, %arg1 : (tensor<16x128x65xf32>, tensor<16x128xi32>) -> tensor<f32>
    %63 = moe.add %62, %27 : tensor<f32>
    %64 = moe.add %63, %28 : tensor<f32>
    %65 = moe.add %64, %55 : tensor<f32>
    %66 = moe.add %65, %56 : tensor<f32>
    return %61, %66 : tensor<16x128x65xf32>, tensor<f32>
  }
}
