//===- LossOps.td - losses ---------------------------------*- tablegen -*-===//
//
// Cross-entropy and the router's auxiliary losses, each followed by its
// gradient op (the gradient of the loss itself).
// Included by MoEOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_LOSSOPS_TD
#define MOE_DIALECT_MOE_IR_LOSSOPS_TD

def MoE_CrossEntropyOp : MoE_Op<"cross_entropy", [Pure]> {
  let summary = "Mean token cross-entropy of logits against labels";
  let description = [{
    For `logits` [..., V] and integer `labels` [...]:
    `mean over t with labels[t] != ignore_index of
     (logsumexp(logits[t]) - logits[t, labels[t]])`, in fp32; 0 when every
    label is ignored.

    With `count`, the sum is divided by `count` instead of by the number of
    labels counted here. That is one rank's share of a mean over tokens
    split between ranks: `count` is the number of counted labels on all of
    them (`moe.label_count` summed over the ranks), and the shares sum to
    the whole loss.
  }];
  let arguments = (ins MoE_FloatTensor:$logits, MoE_IndexTensor:$labels,
                       Optional<MoE_Scalar>:$count,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs MoE_Scalar:$loss);
  let assemblyFormat = [{
    $logits `,` $labels (`,` $count^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_LabelCountOp : MoE_Op<"label_count", [Pure]> {
  let summary = "Number of labels a cross-entropy counts";
  let description = [{
    The number of elements of `labels` that are not `ignore_index`, as an
    f32 scalar (exact up to 2^24): once summed over the ranks that split the
    tokens, the `count` of their `moe.cross_entropy` shares.
  }];
  let arguments = (ins MoE_IndexTensor:$labels,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs MoE_Scalar:$count);
  let assemblyFormat = [{
    $labels attr-dict `:` functional-type(operands, results)
  }];
}

def MoE_CrossEntropyGradOp : MoE_Op<"cross_entropy_grad", [Pure]> {
  let summary = "Gradient of moe.cross_entropy with respect to the logits";
  let description = [{
    `(softmax(logits[t]) - onehot(labels[t])) / n` for the n counted
    tokens (`count` when given, as in `moe.cross_entropy`), zero for
    ignored ones.
  }];
  let arguments = (ins MoE_FloatTensor:$logits, MoE_IndexTensor:$labels,
                       Optional<MoE_Scalar>:$count,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs MoE_FloatTensor:$logits_grad);
  let assemblyFormat = [{
    $logits `,` $labels (`,` $count^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_AuxLossOp : MoE_Op<"aux_loss", [Pure]> {
  let summary = "Router load-balancing loss (Switch Transformer style)";
  let description = [{
    For router `logits` [..., E] and chosen `indices` [..., K] over T tokens:

    ```
    P_e  = mean_t scores[t, e]       (scores as the router computes them;
                                      sigmoid scores are first normalised to
                                      sum 1 per token, as DeepSeek-V3 does)
    f_e  = count of slots routed to e / (T * K)
    loss = coefficient * E * sum_e f_e * P_e
    ```

    Gradients flow through `P_e` only; `f_e` is a count. Perfectly balanced
    routing gives `coefficient`.
  }];
  let arguments = (ins MoE_FloatTensor:$logits, MoE_IndexTensor:$indices,
                       MoE_ScoreFuncAttr:$scoring,
                       F64Attr:$coefficient);
  let results = (outs MoE_Scalar:$loss);
  let assemblyFormat = [{
    $logits `,` $indices custom<ScoreFunc>($scoring) attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
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

def MoE_ZLossOp : MoE_Op<"z_loss", [Pure]> {
  let summary = "Router z-loss (ST-MoE)";
  let description = [{
    `coefficient * mean_t logsumexp(logits[t])^2` for router `logits`
    [..., E]: keeps router logits small, which keeps the softmax stable.
  }];
  let arguments = (ins MoE_FloatTensor:$logits,
                       F64Attr:$coefficient);
  let results = (outs MoE_Scalar:$loss);
  let assemblyFormat = [{
    $logits attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
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

#endif // MOE_DIALECT_MOE_IR_LOSSOPS_TD
