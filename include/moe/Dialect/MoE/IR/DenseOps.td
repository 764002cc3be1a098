//===- DenseOps.td - dense and attention ops ---------------*- tablegen -*-===//
//
// Embedding, RMSNorm, linear, RoPE, attention, the dense SwiGLU MLP and add,
// each followed by its gradient op.
// Included by MoEOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_DENSEOPS_TD
#define MOE_DIALECT_MOE_IR_DENSEOPS_TD

def MoE_EmbeddingOp : MoE_Op<"embedding", [Pure,
    DeclareOpInterfaceMethods<MoE_MeshFitOpInterface>]> {
  let summary = "Token embedding lookup";
  let description = [{
    `result[i..., :] = table[tokens[i...], :]` for a table of shape
    [vocab, hidden]. Token ids outside [0, vocab) are a runtime error.
  }];
  let arguments = (ins MoE_IndexTensor:$tokens, MoE_FloatTensor:$table);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $tokens `,` $table attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_EmbeddingGradOp : MoE_Op<"embedding_grad", [Pure]> {
  let summary = "Backward of moe.embedding: scatter-add into the table";
  let description = [{
    `table_grad[v] = sum of result_grad[i...] over the positions with
    tokens[i...] = v`, zero for tokens that do not occur.
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad, MoE_IndexTensor:$tokens);
  let results = (outs MoE_FloatTensor:$table_grad);
  let assemblyFormat = [{
    $result_grad `,` $tokens attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_RMSNormOp : MoE_Op<"rms_norm", [Pure]> {
  let summary = "RMS normalisation over the last dimension";
  let description = [{
    `result = x * rsqrt(mean(x^2, -1) + eps) * weight`, computed in fp32,
    with `weight` of shape [D] for `x` of shape [..., D].

    Qwen3's per-head q/k norm is this op applied to the head-split
    projections ([B, S, heads, head_dim]) with a [head_dim] weight, before
    `moe.rope`, exactly as in the Hugging Face implementation.
  }];
  let arguments = (ins MoE_FloatTensor:$input, MoE_FloatTensor:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$eps);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_RMSNormGradOp : MoE_Op<"rms_norm_grad", [Pure]> {
  let summary = "Backward of moe.rms_norm";
  let arguments = (ins MoE_FloatTensor:$result_grad, MoE_FloatTensor:$input,
                       MoE_FloatTensor:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$eps);
  let results = (outs MoE_FloatTensor:$input_grad,
                      MoE_FloatTensor:$weight_grad);
  let assemblyFormat = [{
    $result_grad `,` $input `,` $weight attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_LinearOp : MoE_Op<"linear", [Pure]> {
  let summary = "Affine projection with a [out, in] weight";
  let description = [{
    `result = input @ weight^T (+ bias)` for `input` [..., in], `weight`
    [out, in] (the Hugging Face `nn.Linear` layout) and optional `bias` [out].
  }];
  let arguments = (ins MoE_FloatTensor:$input, MoE_FloatTensor:$weight,
                       Optional<MoE_FloatTensor>:$bias);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_LinearGradOp : MoE_Op<"linear_grad", [Pure]> {
  let summary = "Backward of moe.linear";
  let description = [{
    `input_grad = result_grad @ weight`, `weight_grad = result_grad^T @
    input` (summed over every token dimension); for a linear with a `bias`
    (given only for its shape), also `bias_grad = result_grad` summed over
    every token dimension.
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad, MoE_FloatTensor:$input,
                       MoE_FloatTensor:$weight,
                       Optional<MoE_FloatTensor>:$bias);
  let results = (outs MoE_FloatTensor:$input_grad,
                      MoE_FloatTensor:$weight_grad,
                      Optional<MoE_FloatTensor>:$bias_grad);
  let assemblyFormat = [{
    $result_grad `,` $input `,` $weight (`bias` $bias^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_RopeOp : MoE_Op<"rope", [Pure]> {
  let summary = "Rotary position embedding, rotate-half layout";
  let description = [{
    Rotates `input` of shape [B, S, heads, D] (D even) by position: for
    i < D/2, with `f = theta^(-2i/D)` and angle `a = pos * f`,

    ```
    out[..., i]       = x[..., i] * cos(a) - x[..., i + D/2] * sin(a)
    out[..., i + D/2] = x[..., i + D/2] * cos(a) + x[..., i] * sin(a)
    ```

    (the "rotate half" pairing of Hugging Face Llama/Qwen/Mixtral, not the
    interleaved one). `pos` is `positions[b, s]` when given, else `s`; the
    partitioner passes global positions when it splits the sequence.

    YaRN context extension (`yarn_factor` F > 1): the frequencies blend
    interpolated `f / F` and original `f` by a linear ramp over the pair
    index, and cos and sin are scaled by `yarn_scale`:

    ```
    r    = clamp((i - yarn_low) / (yarn_high - yarn_low), 0, 1)
    f'   = (f / F) * r + f * (1 - r)
    out  = yarn_scale * (rotation by pos * f')
    ```

    (`yarn_high` is taken as `yarn_low + 0.001` when they are equal), as
    transformers' `_compute_yarn_parameters` and its rotary embedding do;
    the importer computes the ramp bounds and the scale from the config.

    `interleaved` (DeepSeek's layout): pair i of the input is
    (x[..., 2i], x[..., 2i + 1]), rotated by the same angle and written to
    out[..., i] and out[..., i + D/2] as above, so the result is in
    rotate-half order, as transformers' `apply_rotary_pos_emb_interleave`
    computes it.
  }];
  let arguments = (ins MoE_FloatTensor:$input,
                       Optional<MoE_IndexTensor>:$positions,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta,
                       DefaultValuedAttr<F64Attr, "1.0">:$yarn_factor,
                       DefaultValuedAttr<F64Attr, "0.0">:$yarn_low,
                       DefaultValuedAttr<F64Attr, "0.0">:$yarn_high,
                       DefaultValuedAttr<F64Attr, "1.0">:$yarn_scale,
                       UnitAttr:$interleaved);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`positions` $positions^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_RopeGradOp : MoE_Op<"rope_grad", [Pure]> {
  let summary = "Backward of moe.rope: the inverse rotation";
  let description = [{
    RoPE is a rotation per (position, frequency) pair, so its backward is
    the rotation by the opposite angle, with the same positions and theta
    (with `interleaved`, read from rotate-half pairs and written to
    interleaved ones).
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad,
                       Optional<MoE_IndexTensor>:$positions,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta,
                       DefaultValuedAttr<F64Attr, "1.0">:$yarn_factor,
                       DefaultValuedAttr<F64Attr, "0.0">:$yarn_low,
                       DefaultValuedAttr<F64Attr, "0.0">:$yarn_high,
                       DefaultValuedAttr<F64Attr, "1.0">:$yarn_scale,
                       UnitAttr:$interleaved);
  let results = (outs MoE_FloatTensor:$input_grad);
  let assemblyFormat = [{
    $result_grad (`positions` $positions^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_AttentionOp : MoE_Op<"attention", [Pure,
    DeclareOpInterfaceMethods<MoE_MeshFitOpInterface>]> {
  let summary = "Scaled dot-product attention with grouped-query heads";
  let description = [{
    `q` is [B, S, H, D]; `k` is [B, S, KV, D] and `v` [B, S, KV, Dv] with H
    a multiple of KV: query head h attends with key/value head `h / (H / KV)`
    (grouped-query attention; KV = H is multi-head, KV = 1 multi-query).
    With `causal`, position s attends to positions <= s. Scores are scaled by
    `scale`, 1/sqrt(D) when absent, and the softmax is computed in fp32. The
    result is [B, S, H, Dv]; value heads may be narrower or wider than the
    query/key heads (DeepSeek's MLA: D 192, Dv 128).

    Projections, q/k norm and RoPE are separate ops in front of this one
    (`moe.linear`, `moe.rms_norm`, `moe.rope`), so that sharding can reason
    about each step: tensor parallelism splits H and KV, context parallelism
    splits S and wraps this op in Ulysses all-to-alls.
  }];
  let arguments = (ins MoE_FloatTensor:$q, MoE_FloatTensor:$k,
                       MoE_FloatTensor:$v, UnitAttr:$causal,
                       OptionalAttr<F64Attr>:$scale);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The softmax scale: `scale` if set, else 1/sqrt(head_dim).
    double getEffectiveScale();
  }];
}

def MoE_AttentionGradOp : MoE_Op<"attention_grad", [Pure]> {
  let summary = "Backward of moe.attention (recomputes the softmax)";
  let description = [{
    Gradients of q, k and v. The attention probabilities are recomputed
    from q and k rather than stored; a key/value head's gradient sums over
    the query heads that share it.
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad, MoE_FloatTensor:$q,
                       MoE_FloatTensor:$k, MoE_FloatTensor:$v,
                       UnitAttr:$causal, OptionalAttr<F64Attr>:$scale);
  let results = (outs MoE_FloatTensor:$q_grad, MoE_FloatTensor:$k_grad,
                      MoE_FloatTensor:$v_grad);
  let assemblyFormat = [{
    $result_grad `,` $q `,` $k `,` $v attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The softmax scale: `scale` if set, else 1/sqrt(head_dim).
    double getEffectiveScale();
  }];
}

def MoE_KVCacheOp : MoE_Op<"kv_cache", [Pure]> {
  let summary = "A named key or value cache kept between calls";
  let description = [{
    The keys or values of one attention layer for every position of a batch
    of sequences, [batch, cache_len, kv_heads, head_dim], in a buffer that
    outlives the call: the caller keeps it (the cache blob of `@decode` and
    `@prefill`) and `moe.cached_attention` writes into it. `name` identifies
    it, as `moe.param`'s name does a weight; functions that name the same
    cache share it.
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def MoE_CachedAttentionOp : MoE_Op<"cached_attention",
    [MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "Causal attention of new tokens over a key/value cache";
  let description = [{
    The decode and prefill form of `moe.attention` (moe-build-decode makes
    it from one). `q` is [B, T, H, D], `k` [B, T, KV, D] and `v`
    [B, T, KV, Dv]: T new tokens of each of B sequences, the token at
    (b, t) standing at position `positions[b, t]` of its sequence.
    `k_cache` [B, L, KV, D] and `v_cache` [B, L, KV, Dv] hold the keys and
    values of L positions of each sequence and are written in place:

    ```
    k_cache[b, positions[b, t]] = k[b, t]        (for every b, t, first)
    v_cache[b, positions[b, t]] = v[b, t]
    result[b, t, h] = sum over j <= positions[b, t] of
        softmax_j(scale * q[b, t, h] . k_cache[b, j, h / (H / KV)])
        * v_cache[b, j, h / (H / KV)]
    ```

    so a query sees its own key and every earlier position's, as causal
    attention over the whole sequence does. Positions must lie in [0, L)
    (a runtime error otherwise). The softmax is computed in fp32 and `scale`
    is 1/sqrt(D) when absent, as for `moe.attention`. The caches are buffers
    the caller keeps between calls (the arguments of `@decode`), which is why
    the op reads and writes memory rather than being pure.
  }];
  let arguments = (ins MoE_FloatTensor:$q, MoE_FloatTensor:$k,
                       MoE_FloatTensor:$v, MoE_FloatTensor:$k_cache,
                       MoE_FloatTensor:$v_cache, MoE_IndexTensor:$positions,
                       OptionalAttr<F64Attr>:$scale);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v `cache` $k_cache `,` $v_cache `positions` $positions
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The softmax scale: `scale` if set, else 1/sqrt(head_dim).
    double getEffectiveScale();
  }];
}

def MoE_ConcatOp : MoE_Op<"concat", [Pure]> {
  let summary = "Two tensors side by side along the last dimension";
  let description = [{
    `result[..., :A] = lhs`, `result[..., A:] = rhs`, where `lhs` is
    [..., A] and `rhs` [..., B] and the result [..., A + B]. The other
    dimensions equal the result's, except that an operand may have 1 in the
    dimension before the last (the heads of a [B, S, heads, D] tensor):
    it is then broadcast over it. DeepSeek's MLA builds each head's key from
    its own non-rotary part and the one rotary part all heads share:
    `moe.concat %k_nope, %k_rope : (tensor<BxSxHx128xf32>,
    tensor<BxSx1x64xf32>) -> tensor<BxSxHx192xf32>`.
  }];
  let arguments = (ins MoE_FloatTensor:$lhs, MoE_FloatTensor:$rhs);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ConcatGradOp : MoE_Op<"concat_grad", [Pure]> {
  let summary = "Backward of moe.concat: the two parts, summed where broadcast";
  let description = [{
    `lhs_grad` is `result_grad[..., :A]` and `rhs_grad` `result_grad[...,
    A:]`, each summed over the dimension its operand was broadcast over.
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad, MoE_FloatTensor:$lhs,
                       MoE_FloatTensor:$rhs);
  let results = (outs MoE_FloatTensor:$lhs_grad, MoE_FloatTensor:$rhs_grad);
  let assemblyFormat = [{
    $result_grad `,` $lhs `,` $rhs attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_SplitOp : MoE_Op<"split", [Pure]> {
  let summary = "A tensor cut in two along the last dimension";
  let description = [{
    `lhs = input[..., :A]`, `rhs = input[..., A:]`, with A the last
    dimension of `lhs`; the other dimensions are the input's. Its gradient is
    `moe.concat` of the two parts' gradients, so both parts must be used.
    DeepSeek's MLA cuts each head into its non-rotary and rotary features
    and the compressed key/value projection into the latent and the shared
    rotary key.
  }];
  let arguments = (ins MoE_FloatTensor:$input);
  let results = (outs MoE_FloatTensor:$lhs, MoE_FloatTensor:$rhs);
  let assemblyFormat = [{
    $input attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_MLPOp : MoE_Op<"mlp", [Pure,
    DeclareOpInterfaceMethods<MoE_MeshFitOpInterface>]> {
  let summary = "Dense SwiGLU feed-forward block";
  let description = [{
    `result = (silu(x @ gate^T) * (x @ up^T)) @ down^T` with `gate` and `up`
    of shape [F, H] and `down` [H, F], for `x` [..., H]: the dense MLP of
    Llama/Qwen/DeepSeek (`gate_proj`, `up_proj`, `down_proj`).
  }];
  let arguments = (ins MoE_FloatTensor:$input, MoE_FloatTensor:$gate_weight,
                       MoE_FloatTensor:$up_weight,
                       MoE_FloatTensor:$down_weight);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $gate_weight `,` $up_weight `,` $down_weight attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_MLPGradOp : MoE_Op<"mlp_grad", [Pure]> {
  let summary = "Backward of moe.mlp";
  let arguments = (ins MoE_FloatTensor:$result_grad, MoE_FloatTensor:$input,
                       MoE_FloatTensor:$gate_weight,
                       MoE_FloatTensor:$up_weight,
                       MoE_FloatTensor:$down_weight);
  let results = (outs MoE_FloatTensor:$input_grad,
                      MoE_FloatTensor:$gate_weight_grad,
                      MoE_FloatTensor:$up_weight_grad,
                      MoE_FloatTensor:$down_weight_grad);
  let assemblyFormat = [{
    $result_grad `,` $input `,` $gate_weight `,` $up_weight `,` $down_weight
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_AddOp : MoE_Op<"add", [Pure, Commutative, SameOperandsAndResultType]> {
  let summary = "Element-wise sum (residual connections, loss terms)";
  let description = [{
    `result = lhs + rhs` for two tensors of the same type: the residual add
    of a decoder layer, or the sum of two scalar losses.
  }];
  let arguments = (ins MoE_FloatTensor:$lhs, MoE_FloatTensor:$rhs);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
  let hasFolder = 1;
}

#endif // MOE_DIALECT_MOE_IR_DENSEOPS_TD
