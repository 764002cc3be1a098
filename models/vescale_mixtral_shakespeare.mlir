// Mixtral imported by moe-import from vescale_mixtral_shakespeare.json: hidden 384, 2 layers, 8 heads (8 KV) x 48, 8 experts top-2, expert FFN 1536, vocab 65, batch 128 x seq 256.
module attributes {moe.hf_config = "{\22architectures\22:[\22MixtralForCausalLM\22],\22model_type\22:\22mixtral\22,\22vocab_size\22:65,\22hidden_size\22:384,\22num_hidden_layers\22:2,\22num_attention_heads\22:8,\22num_key_value_heads\22:8,\22head_dim\22:48,\22hidden_act\22:\22silu\22,\22rms_norm_eps\22:1e-05,\22rope_theta\22:1000000.0,\22rope_scaling\22:null,\22tie_word_embeddings\22:false,\22attention_dropout\22:0.0,\22max_position_embeddings\22:256,\22num_local_experts\22:8,\22num_experts_per_tok\22:2,\22intermediate_size\22:1536,\22sliding_window\22:null,\22router_jitter_noise\22:0.0,\22router_aux_loss_coef\22:0.01,\22output_router_logits\22:true}", moe.vocab_chars = "\0A !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"} {
  func.func @forward(%arg0: tensor<128x256xi32>, %arg1: tensor<128x256xi32>) -> (tensor<128x256x65xf32>, tensor<f32>) {
    %0 = moe.param "model.embed_tokens.weight" : tensor<65x384xf32>
    %1 = moe.embedding %arg0, %0 : (tensor<128x256xi32>, tensor<65x384xf32>) -> tensor<128x256x384xf32>
    %2 = moe.param "model.layers.0.input_layernorm.weight" : tensor<384xf32>
    %3 = moe.rms_norm %1, %2 {eps = 1.000000e-05 : f64} : (tensor<128x256x384xf32>, tensor<384xf32>) -> tensor<128x256x384xf32>
    %4 = moe.param "model.layers.0.self_attn.q_proj.weight" : tensor<384x384xf32>
    %5 = moe.linear %3, %4 : (tensor<128x256x384xf32>, tensor<384x384xf32>) -> tensor<128x256x384xf32>
    %expanded = tensor.expand_shape %5 [[0], [1], [2, 3]] output_shape [128, 256, 8, 48] : tensor<128x256x384xf32> into tensor<128x256x8x48xf32>
    %6 = moe.rope %expanded {theta = 1.000000e+06 : f64} : (tensor<128x256x8x48xf32>) -> tensor<128x256x8x48xf32>
    %7 = moe.param "model.layers.0.self_attn.k_proj.weight" : tensor<384x384xf32>
    %8 = moe.linear %3, %7 : (tensor<128x256x384xf32>, tensor<384x384xf32>) -> tensor<128x256x384xf32>
    %expanded_0 = tensor.expand_shape %8 [[0], [1], [2, 3]] output_shape [128, 256, 8, 48] : tensor<128x256x384xf32> into tensor<128x256x8x48xf32>
    %9 = moe.rope %expanded_0 {theta = 1.000000e+06 : f64} : (tensor<128x256x8x48xf32>) -> tensor<128x256x8x48xf32>
    %10 = moe.param "model.layers.0.self_attn.v_proj.weight" : tensor<384x384xf32>
    %11 = moe.linear %3, %10 : (tensor<128x256x384xf32>, tensor<384x384xf32>) -> tensor<128x256x384xf32>
    %expanded_1 = tensor.expand_shape %11 [[0], [1], [2, 3]] output_shape [128, 256, 8, 48] : tensor<128x256x384xf32> into tensor<128x256x8x48xf32>
    %12 = moe.attention %6, %9, %expanded_1 {causal} : (tensor<128x256x8x48xf32>, tensor<128x256x8x48xf32>, tensor<128x256x8x48xf32>) -> tensor<128x256x8x48xf32>
    %collapsed = tensor.collapse_shape %12 [[0], [1], [2, 3]] : tensor<128x256x8x48xf32> into tensor<128x256x384xf32>
    %13 = moe.param "model.layers.0.self_attn.o_proj.weight" : tensor<384x384xf32>
    %14 = moe.linear %collapsed, %13 : (tensor<128x256x384xf32>, tensor<384x384xf32>) -> tensor<128x256x384xf32>
    %15 = moe.add %1, %14 : tensor<128x256x384xf32>
    %16 = moe.param "model.layers.0.post_attention_layernorm.weight" : tensor<384xf32>
    %17 = moe.rms_norm %15, %16 {eps = 1.000000e-05 : f64} : (tensor<128x256x384xf32>, tensor<384xf32>) -> tensor<128x256x384xf32>
    %18 = moe.param "model.layers.0.block_sparse_moe.gate.weight" : tensor<8x384xf32>
    %weights, %indices, %logits = moe.router %17, %18 softmax top 2 {norm_topk_prob} : (tensor<128x256x384xf32>, tensor<8x384xf32>) -> (tensor<128x256x2xf32>, tensor<128x256x2xi32>, tensor<128x256x8xf32>)
    %19 = moe.param "model.layers.0.block_sparse_moe.experts.{e}.w1.weight" : tensor<8x1536x384xf32>
    %20 = moe.param "model.layers.0.block_sparse_moe.experts.{e}.w3.weight" : tensor<8x1536x384xf32>
    %21 = moe.param "model.layers.0.block_sparse_moe.experts.{e}.w2.weight" : tensor<8x384x1536xf32>
    %22 = moe.experts %17, %weights, %indices, %19, %20, %21 : (tensor<128x256x384xf32>, tensor<128x256x2xf32>, tensor<128x256x2xi32>, tensor<8x1536x384xf32>, tensor<8x1536x384xf32>, tensor<8x384x1536xf32>) -> tensor<128x256x384xf32>
    %23 = moe.aux_loss %logits, %indices softmax {coefficient = 1.000000e-02 : f64} : (tensor<128x256x8xf32>, tensor<128x256x2xi32>) -> tensor<f32>
    %24 = moe.add %15, %22 : tensor<128x256x384xf32>
    %25 = moe.param "model.layers.1.input_layernorm.weight" : tensor<384xf32>
    %26 = moe.rms_norm %24, %25 {eps = 1.000000e-05 : f64} : (tensor<128x256x384xf32>, tensor<384xf32>) -> tensor<128x256x384xf32>
    %27 = moe.param "model.layers.1.self_attn.q_proj.weight" : tensor<384x384xf32>
    %28 = moe.linear %26, %27 : (tensor<128x256x384xf32>, tensor<384x384xf32>) -> tensor<128x256x384xf32>
    %expanded_2 = tensor.expand_shape %28 [[0], [1], [2, 3]] output_shape [128, 256, 8, 48] : tensor<128x256x384xf32> into tensor<128x256x8x48xf32>
    %29 = moe.rope %expanded_2 {theta = 1.000000e+06 : f64} : (tensor<128x256x8x48xf32>) -> tensor<128x256x8x48xf32>
    %30 = moe.param "model.layers.1.self_attn.k_proj.weight" : tensor<384x384xf32>
    %31 = moe.linear %26, %30 : (tensor<128x256x384xf32>, tensor<384x384xf32>) -> tensor<128x256x384xf32>
    %expanded_3 = tensor.expand_shape %31 [[0], [1], [2, 3]] output_shape [128, 256, 8, 48] : tensor<128x256x384xf32> into tensor<128x256x8x48xf32>
    %32 = moe.rope %expanded_3 {theta = 1.000000e+06 : f64} : (tensor<128x256x8x48xf32>) -> tensor<128x256x8x48xf32>
    %33 = moe.param "model.layers.1.self_attn.v_proj.weight" : tensor<384x384xf32>
    %34 = moe.linear %26, %33 : (tensor<128x256x384xf32>, tensor<384x384xf32>) -> tensor<128x256x384xf32>
    %expanded_4 = tensor.expand_shape %34 [[0], [1], [2, 3]] output_shape [128, 256, 8, 48] : tensor<128x256x384xf32> into tensor<128x256x8x48xf32>
    %35 = moe.attention %29, %32, %expanded_4 {causal} : (tensor<128x256x8x48xf32>, tensor<128x256x8x48xf32>, tensor<128x256x8x48xf32>) -> tensor<128x256x8x48xf32>
    %collapsed_5 = tensor.collapse_shape %35 [[0], [1], [2, 3]] : tensor<128x256x8x48xf32> into tensor<128x256x384xf32>
    %36 = moe.param "model.layers.1.self_attn.o_proj.weight" : tensor<384x384xf32>
    %37 = moe.linear %collapsed_5, %36 : (tensor<128x256x384xf32>, tensor<384x384xf32>) -> tensor<128x256x384xf32>
    %38 = moe.add %24, %37 : tensor<128x256x384xf32>
    %39 = moe.param "model.layers.1.post_attention_layernorm.weight" : tensor<384xf32>
    %40 = moe.rms_norm %38, %39 {eps = 1.000000e-05 : f64} : (tensor<128x256x384xf32>, tensor<384xf32>) -> tensor<128x256x384xf32>
    %41 = moe.param "model.layers.1.block_sparse_moe.gate.weight" : tensor<8x384xf32>
    %weights_6, %indices_7, %logits_8 = moe.router %40, %41 softmax top 2 {norm_topk_prob} : (tensor<128x256x384xf32>, tensor<8x384xf32>) -> (tensor<128x256x2xf32>, tensor<128x256x2xi32>, tensor<128x256x8xf32>)
    %42 = moe.param "model.layers.1.block_sparse_moe.experts.{e}.w1.weight" : tensor<8x1536x384xf32>
    %43 = moe.param "model.layers.1.block_sparse_moe.experts.{e}.w3.weight" : tensor<8x1536x384xf32>
    %44 = moe.param "model.layers.1.block_sparse_moe.experts.{e}.w2.weight" : tensor<8x384x1536xf32>
    %45 = moe.experts %40, %weights_6, %indices_7, %42, %43, %44 : (tensor<128x256x384xf32>, tensor<128x256x2xf32>, tensor<128x256x2xi32>, tensor<8x1536x384xf32>, tensor<8x1536x384xf32>, tensor<8x384x1536xf32>) -> tensor<128x256x384xf32>
    %46 = moe.aux_loss %logits_8, %indices_7 softmax {coefficient = 1.000000e-02 : f64} : (tensor<128x256x8xf32>, tensor<128x256x2xi32>) -> tensor<f32>
    %47 = moe.add %38, %45 : tensor<128x256x384xf32>
    %48 = moe.param "model.norm.weight" : tensor<384xf32>
    %49 = moe.rms_norm %47, %48 {eps = 1.000000e-05 : f64} : (tensor<128x256x384xf32>, tensor<384xf32>) -> tensor<128x256x384xf32>
    %50 = moe.param "lm_head.weight" : tensor<65x384xf32>
    %51 = moe.linear %49, %50 : (tensor<128x256x384xf32>, tensor<65x384xf32>) -> tensor<128x256x65xf32>
    %52 = moe.cross_entropy %51, %arg1 : (tensor<128x256x65xf32>, tensor<128x256xi32>) -> tensor<f32>
    %53 = moe.add %52, %23 : tensor<f32>
    %54 = moe.add %53, %46 : tensor<f32>
    return %51, %54 : tensor<128x256x65xf32>, tensor<f32>
  }
}
