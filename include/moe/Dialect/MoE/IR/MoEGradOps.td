//===- MoEGradOps.td - moe dialect gradient ops ------------*- tablegen -*-===//
//
// The backward of the model-level ops, which `moe-build-train-step` emits.
// Conventions shared by all of them:
//  * `<name>_grad` operands and results are cotangents: the gradient of the
//    training loss with respect to the forward value `<name>`, of its type;
//  * the primal operands are the forward op's operands, with the forward
//    op's shape rules (the verifiers are the forward ones);
//  * a loss gradient op is the gradient of its loss itself (the loss's
//    cotangent is 1: losses only ever reach the returned loss through
//    `moe.add`).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEGRADOPS_TD
#define MOE_DIALECT_MOE_IR_MOEGRADOPS_TD

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

def MoE_LinearGradOp : MoE_Op<"linear_grad", [Pure]> {
  let summary = "Backward of a bias-free moe.linear";
  let description = [{
    `input_grad = result_grad @ weight`, `weight_grad = result_grad^T @
    input` (summed over every token dimension).
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad, MoE_FloatTensor:$input,
                       MoE_FloatTensor:$weight);
  let results = (outs MoE_FloatTensor:$input_grad,
                      MoE_FloatTensor:$weight_grad);
  let assemblyFormat = [{
    $result_grad `,` $input `,` $weight attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_RopeGradOp : MoE_Op<"rope_grad", [Pure]> {
  let summary = "Backward of moe.rope: the inverse rotation";
  let description = [{
    RoPE is a rotation per (position, frequency) pair, so its backward is
    the rotation by the opposite angle, with the same positions and theta.
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad,
                       Optional<MoE_IndexTensor>:$positions,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs MoE_FloatTensor:$input_grad);
  let assemblyFormat = [{
    $result_grad (`positions` $positions^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
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

def MoE_SharedExpertsGradOp : MoE_Op<"shared_experts_grad", [Pure]> {
  let summary = "Backward of moe.shared_experts";
  let description = [{
    Gradients of the input and the FFN weights, and of `shared_gate` when
    the forward op has one (then `shared_gate_grad` is its only optional
    result).
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad, MoE_FloatTensor:$input,
                       MoE_FloatTensor:$gate_weight,
                       MoE_FloatTensor:$up_weight,
                       MoE_FloatTensor:$down_weight,
                       Optional<MoE_FloatTensor>:$shared_gate);
  let results = (outs MoE_FloatTensor:$input_grad,
                      MoE_FloatTensor:$gate_weight_grad,
                      MoE_FloatTensor:$up_weight_grad,
                      MoE_FloatTensor:$down_weight_grad,
                      Optional<MoE_FloatTensor>:$shared_gate_grad);
  let assemblyFormat = [{
    $result_grad `,` $input `,` $gate_weight `,` $up_weight `,` $down_weight
    (`gated` `by` $shared_gate^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_RouterGradOp : MoE_Op<"router_grad", [Pure]> {
  let summary = "Backward of moe.router through the selected scores";
  let description = [{
    The router's weights are a function of the logits through the chosen
    experts' scores (softmax or sigmoid, normalised over the top-k with
    `norm_topk_prob`, times `route_scale`); the choice itself (`indices`)
    has no gradient. `logits_grad`, when given, is the gradient reaching the
    logits from the auxiliary losses and is added to the one from the
    weights. The expert bias and group-limited routing only change the
    choice, so they do not appear here.
  }];
  let arguments = (ins
    MoE_FloatTensor:$weights_grad,
    MoE_FloatTensor:$input,
    MoE_FloatTensor:$gate_weight,
    MoE_FloatTensor:$logits,
    MoE_IndexTensor:$indices,
    Optional<MoE_FloatTensor>:$logits_grad,
    MoE_ScoreFuncAttr:$scoring,
    UnitAttr:$norm_topk_prob,
    DefaultValuedAttr<F64Attr, "1.0">:$route_scale
  );
  let results = (outs MoE_FloatTensor:$input_grad,
                      MoE_FloatTensor:$gate_weight_grad);
  let assemblyFormat = [{
    $weights_grad `,` $input `,` $gate_weight `,` $logits `,` $indices
    (`logits_grad` $logits_grad^)? custom<ScoreFunc>($scoring) attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_PermuteGradOp : MoE_Op<"permute_grad", [Pure]> {
  let summary = "Backward of moe.permute: sum each token's slots";
  let description = [{
    `input_grad[t] = sum over k of permuted_grad[r(t, k)]`, r(t, k) being
    the row `moe.permute` gave token-slot t * top_k + k.
  }];
  let arguments = (ins MoE_FloatTensor:$permuted_grad,
                       MoE_I32Vector:$row_to_slot, I64Attr:$top_k);
  let results = (outs MoE_FloatTensor:$input_grad);
  let assemblyFormat = [{
    $permuted_grad `,` $row_to_slot `top` $top_k attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_UnpermuteGradOp : MoE_Op<"unpermute_grad", [Pure]> {
  let summary = "Backward of moe.unpermute";
  let description = [{
    `expert_out_grad[r(t, k)] = weights[t, k] * result_grad[t]` and
    `weights_grad[t, k] = <result_grad[t], expert_out[r(t, k)]>`.
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad,
                       MoE_FloatTensor:$expert_out,
                       MoE_I32Vector:$row_to_slot,
                       MoE_FloatTensor:$weights);
  let results = (outs MoE_FloatTensor:$expert_out_grad,
                      MoE_FloatTensor:$weights_grad);
  let assemblyFormat = [{
    $result_grad `,` $expert_out `,` $row_to_slot `,` $weights attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_GroupedSwiGLUGradOp : MoE_Op<"grouped_swiglu_grad", [Pure]> {
  let summary = "Backward of moe.grouped_swiglu (grouped data and weight "
                "gradients)";
  let description = [{
    Per segment, the data gradient of its rows and the weight gradients of
    its expert; an expert's weight gradients sum over its segments and are
    zero when it has no rows. Rows past the last offset get a zero gradient.
  }];
  let arguments = (ins MoE_FloatTensor:$result_grad,
                       MoE_FloatTensor:$permuted, MoE_I64Vector:$offsets,
                       MoE_FloatTensor:$gate_weight,
                       MoE_FloatTensor:$up_weight,
                       MoE_FloatTensor:$down_weight);
  let results = (outs MoE_FloatTensor:$permuted_grad,
                      MoE_FloatTensor:$gate_weight_grad,
                      MoE_FloatTensor:$up_weight_grad,
                      MoE_FloatTensor:$down_weight_grad);
  let assemblyFormat = [{
    $result_grad `,` $permuted `,` $offsets `,` $gate_weight `,` $up_weight
    `,` $down_weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_CrossEntropyGradOp : MoE_Op<"cross_entropy_grad", [Pure]> {
  let summary = "Gradient of moe.cross_entropy with respect to the logits";
  let description = [{
    `(softmax(logits[t]) - onehot(labels[t])) / n` for the n counted
    tokens, zero for ignored ones.
  }];
  let arguments = (ins MoE_FloatTensor:$logits, MoE_IndexTensor:$labels,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs MoE_FloatTensor:$logits_grad);
  let assemblyFormat = [{
    $logits `,` $labels attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_AuxLossGradOp : MoE_Op<"aux_loss_grad", [Pure]> {
  let summary = "Gradient of moe.aux_loss with respect to the logits";
  let arguments = (ins MoE_FloatTensor:$logits, MoE_IndexTensor:$indices,
                       MoE_ScoreFuncAttr:$scoring, F64Attr:$coefficient);
  let results = (outs MoE_FloatTensor:$logits_grad);
  let assemblyFormat = [{
    $logits `,` $indices custom<ScoreFunc>($scoring) attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ZLossGradOp : MoE_Op<"z_loss_grad", [Pure]> {
  let summary = "Gradient of moe.z_loss with respect to the logits";
  let arguments = (ins MoE_FloatTensor:$logits, F64Attr:$coefficient);
  let results = (outs MoE_FloatTensor:$logits_grad);
  let assemblyFormat = [{
    $logits attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ParamGradOp : MoE_Op<"param_grad", [
    MemoryEffects<[MemWrite]>]> {
  let summary = "The gradient of a named weight, handed to the optimizer";
  let description = [{
    Writes `grad` as the gradient of the `moe.param` called `name` in the
    same function, for this training step (the executable keeps one gradient
    buffer per weight, laid out like the weights). Each weight gets at most
    one `moe.param_grad`; its type is the weight's type.
  }];
  let arguments = (ins StrAttr:$name, MoE_FloatTensor:$grad);
  let assemblyFormat = "$name `,` $grad attr-dict `:` type($grad)";
  let hasVerifier = 1;
}

#endif // MOE_DIALECT_MOE_IR_MOEGRADOPS_TD
