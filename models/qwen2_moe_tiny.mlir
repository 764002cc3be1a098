// Qwen2-MoE imported by moe-import from qwen2_moe_tiny.json: hidden 64, 3 layers, 4 heads (2 KV) x 16, 8 experts top-2, expert FFN 32, vocab 128, batch 2 x seq 16.
module attributes {moe.hf_config = "{\22architectures\22:[\22Qwen2MoeForCausalLM\22],\22model_type\22:\22qwen2_moe\22,\22vocab_size\22:128,\22hidden_size\22:64,\22num_hidden_layers\22:3,\22num_attention_heads\22:4,\22num_key_value_heads\22:2,\22hidden_act\22:\22silu\22,\22rms_norm_eps\22:1e-06,\22rope_theta\22:1000000.0,\22rope_scaling\22:null,\22tie_word_embeddings\22:false,\22attention_dropout\22:0.0,\22max_position_embeddings\22:64,\22use_sliding_window\22:false,\22num_experts\22:8,\22num_experts_per_tok\22:2,\22moe_intermediate_size\22:32,\22shared_expert_intermediate_size\22:48,\22intermediate_size\22:96,\22decoder_sparse_step\22:1,\22mlp_only_layers\22:[1],\22norm_topk_prob\22:false,\22router_aux_loss_coef\22:0.001,\22output_router_logits\22:true}"} {
  func.func @forward(%arg0: tensor<2x16xi32>, %arg1: tensor<2x16xi32>) -> (tensor<2x16x128xf32>, tensor<f32>) {
    %0 = moe.param "model.embed_tokens.weight" : tensor<128x64xf32>
    %1 = moe.embedding %arg0, %0 : (tensor<2x16xi32>, tensor<128x64xf32>) -> tensor<2x16x64xf32>
    %2 = moe.param "model.layers.0.input_layernorm.weight" : tensor<64xf32>
    %3 = moe.rms_norm %1, %2 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %4 = moe.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
    %5 = moe.param "model.layers.0.self_attn.q_proj.bias" : tensor<64xf32>
    %6 = moe.linear %3, %4 bias %5 : (tensor<2x16x64xf32>, tensor<64x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %expanded = tensor.expand_shape %6 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %7 = moe.rope %expanded {theta = 1.000000e+06 : f64} : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %8 = moe.param "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xf32>
    %9 = moe.param "model.layers.0.self_attn.k_proj.bias" : tensor<32xf32>
    %10 = moe.linear %3, %8 bias %9 : (tensor<2x16x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %expanded_0 = tensor.expand_shape %10 [[0], [1], [2, 3]] output_shape [2, 16, 2, 16] : tensor<2x16x32xf32> into tensor<2x16x2x16xf32>
    %11 = moe.rope %expanded_0 {theta = 1.000000e+06 : f64} : (tensor<2x16x2x16xf32>) -> tensor<2x16x2x16xf32>
    %12 = moe.param "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xf32>
    %13 = moe.param "model.layers.0.self_attn.v_proj.bias" : tensor<32xf32>
    %14 = moe.linear %3, %12 bias %13 : (tensor<2x16x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %expanded_1 = tensor.expand_shape %14 [[0], [1], [2, 3]] output_shape [2, 16, 2, 16] : tensor<2x16x32xf32> into tensor<2x16x2x16xf32>
    %15 = moe.attention %7, %11, %expanded_1 {causal} : (tensor<2x16x4x16xf32>, tensor<2x16x2x16xf32>, tensor<2x16x2x16xf32>) -> tensor<2x16x4x16xf32>
    %collapsed = tensor.collapse_shape %15 [[0], [1], [2, 3]] : tensor<2x16x4x16xf32> into tensor<2x16x64xf32>
    %16 = moe.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
    %17 = moe.linear %collapsed, %16 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %18 = moe.add %1, %17 : tensor<2x16x64xf32>
    %19 = moe.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xf32>
    %20 = moe.rms_norm %18, %19 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %21 = moe.param "model.layers.0.mlp.gate.weight" : tensor<8x64xf32>
    %weights, %indices, %logits = moe.router %20, %21 softmax top 2 : (tensor<2x16x64xf32>, tensor<8x64xf32>) -> (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x8xf32>)
    %22 = moe.param "model.layers.0.mlp.experts.{e}.gate_proj.weight" : tensor<8x32x64xf32>
    %23 = moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" : tensor<8x32x64xf32>
    %24 = moe.param "model.layers.0.mlp.experts.{e}.down_proj.weight" : tensor<8x64x32xf32>
    %25 = moe.experts %20, %weights, %indices, %22, %23, %24 : (tensor<2x16x64xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<2x16x64xf32>
    %26 = moe.param "model.layers.0.mlp.shared_expert.gate_proj.weight" : tensor<48x64xf32>
    %27 = moe.param "model.layers.0.mlp.shared_expert.up_proj.weight" : tensor<48x64xf32>
    %28 = moe.param "model.layers.0.mlp.shared_expert.down_proj.weight" : tensor<64x48xf32>
    %29 = moe.param "model.layers.0.mlp.shared_expert_gate.weight" : tensor<1x64xf32>
    %30 = moe.shared_experts %20, %26, %27, %28 gated by %29 : (tensor<2x16x64xf32>, tensor<48x64xf32>, tensor<48x64xf32>, tensor<64x48xf32>, tensor<1x64xf32>) -> tensor<2x16x64xf32>
    %31 = moe.add %25, %30 : tensor<2x16x64xf32>
    %32 = moe.aux_loss %logits, %indices softmax {coefficient = 1.000000e-03 : f64} : (tensor<2x16x8xf32>, tensor<2x16x2xi32>) -> tensor<f32>
    %33 = moe.add %18, %31 : tensor<2x16x64xf32>
    %34 = moe.param "model.layers.1.input_layernorm.weight" : tensor<64xf32>
    %35 = moe.rms_norm %33, %34 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %36 = moe.param "model.layers.1.self_attn.q_proj.weight" : tensor<64x64xf32>
    %37 = moe.param "model.layers.1.self_attn.q_proj.bias" : tensor<64xf32>
    %38 = moe.linear %35, %36 bias %37 : (tensor<2x16x64xf32>, tensor<64x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %expanded_2 = tensor.expand_shape %38 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %39 = moe.rope %expanded_2 {theta = 1.000000e+06 : f64} : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %40 = moe.param "model.layers.1.self_attn.k_proj.weight" : tensor<32x64xf32>
    %41 = moe.param "model.layers.1.self_attn.k_proj.bias" : tensor<32xf32>
    %42 = moe.linear %35, %40 bias %41 : (tensor<2x16x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %expanded_3 = tensor.expand_shape %42 [[0], [1], [2, 3]] output_shape [2, 16, 2, 16] : tensor<2x16x32xf32> into tensor<2x16x2x16xf32>
    %43 = moe.rope %expanded_3 {theta = 1.000000e+06 : f64} : (tensor<2x16x2x16xf32>) -> tensor<2x16x2x16xf32>
    %44 = moe.param "model.layers.1.self_attn.v_proj.weight" : tensor<32x64xf32>
    %45 = moe.param "model.layers.1.self_attn.v_proj.bias" : tensor<32xf32>
    %46 = moe.linear %35, %44 bias %45 : (tensor<2x16x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %expanded_4 = tensor.expand_shape %46 [[0], [1], [2, 3]] output_shape [2, 16, 2, 16] : tensor<2x16x32xf32> into tensor<2x16x2x16xf32>
    %47 = moe.attention %39, %43, %expanded_4 {causal} : (tensor<2x16x4x16xf32>, tensor<2x16x2x16xf32>, tensor<2x16x2x16xf32>) -> tensor<2x16x4x16xf32>
    %collapsed_5 = tensor.collapse_shape %47 [[0], [1], [2, 3]] : tensor<2x16x4x16xf32> into tensor<2x16x64xf32>
    %48 = moe.param "model.layers.1.self_attn.o_proj.weight" : tensor<64x64xf32>
    %49 = moe.linear %collapsed_5, %48 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %50 = moe.add %33, %49 : tensor<2x16x64xf32>
    %51 = moe.param "model.layers.1.post_attention_layernorm.weight" : tensor<64xf32>
    %52 = moe.rms_norm %50, %51 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %53 = moe.param "model.layers.1.mlp.gate_proj.weight" : tensor<96x64xf32>
    %54 = moe.param "model.layers.1.mlp.up_proj.weight" : tensor<96x64xf32>
    %55 = moe.param "model.layers.1.mlp.down_proj.weight" : tensor<64x96xf32>
    %56 = moe.mlp %52, %53, %54, %55 : (tensor<2x16x64xf32>, tensor<96x64xf32>, tensor<96x64xf32>, tensor<64x96xf32>) -> tensor<2x16x64xf32>
    %57 = moe.add %50, %56 : tensor<2x16x64xf32>
    %58 = moe.param "model.layers.2.input_layernorm.weight" : tensor<64xf32>
    %59 = moe.rms_norm %57, %58 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %60 = moe.param "model.layers.2.self_attn.q_proj.weight" : tensor<64x64xf32>
    %61 = moe.param "model.layers.2.self_attn.q_proj.bias" : tensor<64xf32>
    %62 = moe.linear %59, %60 bias %61 : (tensor<2x16x64xf32>, tensor<64x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %expanded_6 = tensor.expand_shape %62 [[0], [1], [2, 3]] output_shape [2, 16, 4, 16] : tensor<2x16x64xf32> into tensor<2x16x4x16xf32>
    %63 = moe.rope %expanded_6 {theta = 1.000000e+06 : f64} : (tensor<2x16x4x16xf32>) -> tensor<2x16x4x16xf32>
    %64 = moe.param "model.layers.2.self_attn.k_proj.weight" : tensor<32x64xf32>
    %65 = moe.param "model.layers.2.self_attn.k_proj.bias" : tensor<32xf32>
    %66 = moe.linear %59, %64 bias %65 : (tensor<2x16x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %expanded_7 = tensor.expand_shape %66 [[0], [1], [2, 3]] output_shape [2, 16, 2, 16] : tensor<2x16x32xf32> into tensor<2x16x2x16xf32>
    %67 = moe.rope %expanded_7 {theta = 1.000000e+06 : f64} : (tensor<2x16x2x16xf32>) -> tensor<2x16x2x16xf32>
    %68 = moe.param "model.layers.2.self_attn.v_proj.weight" : tensor<32x64xf32>
    %69 = moe.param "model.layers.2.self_attn.v_proj.bias" : tensor<32xf32>
    %70 = moe.linear %59, %68 bias %69 : (tensor<2x16x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
    %expanded_8 = tensor.expand_shape %70 [[0], [1], [2, 3]] output_shape [2, 16, 2, 16] : tensor<2x16x32xf32> into tensor<2x16x2x16xf32>
    %71 = moe.attention %63, %67, %expanded_8 {causal} : (tensor<2x16x4x16xf32>, tensor<2x16x2x16xf32>, tensor<2x16x2x16xf32>) -> tensor<2x16x4x16xf32>
    %collapsed_9 = tensor.collapse_shape %71 [[0], [1], [2, 3]] : tensor<2x16x4x16xf32> into tensor<2x16x64xf32>
    %72 = moe.param "model.layers.2.self_attn.o_proj.weight" : tensor<64x64xf32>
    %73 = moe.linear %collapsed_9, %72 : (tensor<2x16x64xf32>, tensor<64x64xf32>) -> tensor<2x16x64xf32>
    %74 = moe.add %57, %73 : tensor<2x16x64xf32>
    %75 = moe.param "model.layers.2.post_attention_layernorm.weight" : tensor<64xf32>
    %76 = moe.rms_norm %74, %75 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %77 = moe.param "model.layers.2.mlp.gate.weight" : tensor<8x64xf32>
    %weights_10, %indices_11, %logits_12 = moe.router %76, %77 softmax top 2 : (tensor<2x16x64xf32>, tensor<8x64xf32>) -> (tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<2x16x8xf32>)
    %78 = moe.param "model.layers.2.mlp.experts.{e}.gate_proj.weight" : tensor<8x32x64xf32>
    %79 = moe.param "model.layers.2.mlp.experts.{e}.up_proj.weight" : tensor<8x32x64xf32>
    %80 = moe.param "model.layers.2.mlp.experts.{e}.down_proj.weight" : tensor<8x64x32xf32>
    %81 = moe.experts %76, %weights_10, %indices_11, %78, %79, %80 : (tensor<2x16x64xf32>, tensor<2x16x2xf32>, tensor<2x16x2xi32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<2x16x64xf32>
    %82 = moe.param "model.layers.2.mlp.shared_expert.gate_proj.weight" : tensor<48x64xf32>
    %83 = moe.param "model.layers.2.mlp.shared_expert.up_proj.weight" : tensor<48x64xf32>
    %84 = moe.param "model.layers.2.mlp.shared_expert.down_proj.weight" : tensor<64x48xf32>
    %85 = moe.param "model.layers.2.mlp.shared_expert_gate.weight" : tensor<1x64xf32>
    %86 = moe.shared_experts %76, %82, %83, %84 gated by %85 : (tensor<2x16x64xf32>, tensor<48x64xf32>, tensor<48x64xf32>, tensor<64x48xf32>, tensor<1x64xf32>) -> tensor<2x16x64xf32>
    %87 = moe.add %81, %86 : tensor<2x16x64xf32>
    %88 = moe.aux_loss %logits_12, %indices_11 softmax {coefficient = 1.000000e-03 : f64} : (tensor<2x16x8xf32>, tensor<2x16x2xi32>) -> tensor<f32>
    %89 = moe.add %74, %87 : tensor<2x16x64xf32>
    %90 = moe.param "model.norm.weight" : tensor<64xf32>
    %91 = moe.rms_norm %89, %90 : (tensor<2x16x64xf32>, tensor<64xf32>) -> tensor<2x16x64xf32>
    %92 = moe.param "lm_head.weight" : tensor<128x64xf32>
    %93 = moe.linear %91, %92 : (tensor<2x16x64xf32>, tensor<128x64xf32>) -> tensor<2x16x128xf32>
    %94 = moe.cross_entropy %93, %arg1 : (tensor<2x16x128xf32>, tensor<2x16xi32>) -> tensor<f32>
    %95 = moe.add %94, %32 : tensor<f32>
    %96 = moe.add %95, %88 : tensor<f32>
    return %93, %96 : tensor<2x16x128xf32>, tensor<f32>
  }
}
