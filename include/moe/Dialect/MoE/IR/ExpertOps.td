//===- ExpertOps.td - routing and expert ops ---------------*- tablegen -*-===//
//
// The router, the experts block and the dropless pipeline it lowers to
// (drop over capacity, permute, grouped SwiGLU, unpermute), expert-parallel
// dispatch and combine, and the shared experts, each followed by its
// gradient op.
// Included by MoEOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_EXPERTOPS_TD
#define MOE_DIALECT_MOE_IR_EXPERTOPS_TD

def MoE_RouterOp : MoE_Op<"router", [Pure]> {
  let summary = "Router: gate projection, scoring and top-k selection";
  let description = [{
    For `input` [..., H] and a gate weight [E, H] (E experts):

    1. `logits = input @ gate^T` ([..., E], fp32);
    2. `scores = softmax(logits)` or `sigmoid(logits)` (`scoring`);
    3. selection scores: `scores + expert_bias` when `expert_bias` [E] is
       given (DeepSeek-V3's `e_score_correction_bias`), else `scores`. The
       bias only changes which experts are chosen, never the weights;
    4. group-limited routing when `n_group` > 1: experts form `n_group`
       contiguous groups of E / n_group; a group's score is the sum of its
       `group_top` highest selection scores: two (DeepSeek-V3; its highest
       when a group has one expert) or one, its highest (DeepSeek-V2's
       group_limited_greedy); only the `topk_group` best groups stay
       eligible;
    5. `indices`: the `top_k` eligible experts with the highest selection
       scores, in descending order (ties broken by lower expert index);
    6. `weights`: the unbiased `scores` of the chosen experts, divided by
       their sum when `norm_topk_prob` is set, then times `route_scale`.

    `logits` are returned for the auxiliary losses. Qwen3-MoE is softmax,
    top-8, `norm_topk_prob`; Mixtral softmax, top-2, `norm_topk_prob`;
    DeepSeek-V3 sigmoid, top-8, `norm_topk_prob`, route scale 2.5, an expert
    bias, 8 groups, 4 kept; DeepSeek-V2 softmax, top-6, route scale 16, 8
    groups scored by their best expert, 3 kept.
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    MoE_FloatTensor:$gate_weight,
    Optional<MoE_FloatTensor>:$expert_bias,
    MoE_ScoreFuncAttr:$scoring,
    I64Attr:$top_k,
    UnitAttr:$norm_topk_prob,
    DefaultValuedAttr<F64Attr, "1.0">:$route_scale,
    DefaultValuedAttr<I64Attr, "1">:$n_group,
    DefaultValuedAttr<I64Attr, "1">:$topk_group,
    DefaultValuedAttr<I64Attr, "2">:$group_top
  );
  let results = (outs MoE_FloatTensor:$weights, MoE_IndexTensor:$indices,
                      MoE_FloatTensor:$logits);
  let assemblyFormat = [{
    $input `,` $gate_weight (`bias` $expert_bias^)? custom<ScoreFunc>($scoring)
    `top` $top_k attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts();
  }];
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

def MoE_ExpertsOp : MoE_Op<"experts", [Pure,
    DeclareOpInterfaceMethods<MoE_MeshFitOpInterface>]> {
  let summary = "Routed experts: grouped SwiGLU FFN and weighted combine";
  let description = [{
    For `input` [..., H], router `weights` and `indices` [..., K] and
    stacked expert weights `gate`/`up` [E, F, H] and `down` [E, H, F]:

    ```
    result[t] = sum_k weights[t, k] * FFN_{indices[t, k]}(input[t])
    FFN_e(x)  = (silu(x @ gate[e]^T) * (x @ up[e]^T)) @ down[e]^T
    ```

    Without `capacity_factor` the op is dropless: every routed token-slot is
    computed, however unbalanced the routing. With it, each expert takes at
    most `ceil(capacity_factor * T * K / E)` token-slots (T tokens); slots
    beyond an expert's capacity, in token order, are dropped and contribute
    nothing (the drop-by-position policy), which bounds what an expert
    receives by a static size. `moe-expand-capacity` turns the attribute
    into `moe.drop_over_capacity` on the indices; an index of -1 is a
    dropped slot.

    Lowering turns this op into a permutation of token-slots grouped by
    expert (counts and offsets), one grouped GEMM per projection, and an
    unpermute with the weighted combine; under expert parallelism, into the
    all-to-all dispatch and combine around the local experts.
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    MoE_FloatTensor:$weights,
    MoE_IndexTensor:$indices,
    MoE_FloatTensor:$gate_weight,
    MoE_FloatTensor:$up_weight,
    MoE_FloatTensor:$down_weight,
    OptionalAttr<F64Attr>:$capacity_factor
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weights `,` $indices `,` $gate_weight `,` $up_weight `,`
    $down_weight attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts();
    int64_t getTopK();
  }];
}

def MoE_I64Vector : 1DTensorOf<[I64]>;

def MoE_I32Vector : 1DTensorOf<[I32]>;

def MoE_DropOverCapacityOp : MoE_Op<"drop_over_capacity", [Pure]> {
  let summary = "Drop the token-slots past each expert's capacity";
  let description = [{
    For router `indices` [..., K] (T tokens; token-slot s = t * K + k), each
    expert keeps its first `capacity` slots in slot order (token order) and
    the later ones are dropped: the result is `indices` with the dropped
    slots set to -1. This is the drop-by-position policy of capacity-factor
    MoE (Megatron-Core's `moe_token_drop_policy="position"`, GShard), where
    `capacity = ceil(capacity_factor * T * K / E)`. The downstream expert ops
    give a dropped slot no row and no contribution: its token keeps only its
    other experts' outputs (and the residual).

    The op sees every token (its sharding is replicated), so the same slots
    are dropped whatever the mesh. At run time each call reports the number
    of dropped slots (the driver prints and logs them per layer).

    ```mlir
    %kept = moe.drop_over_capacity %indices experts 8 capacity 20
        : (tensor<4x16x2xi32>) -> tensor<4x16x2xi32>
    ```
  }];
  let arguments = (ins MoE_IndexTensor:$indices, I64Attr:$num_experts,
                       I64Attr:$capacity);
  let results = (outs MoE_IndexTensor:$kept);
  let assemblyFormat = [{
    $indices `experts` $num_experts `capacity` $capacity attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_PermuteOp : MoE_Op<"permute", [Pure]> {
  let summary = "Group the routed token-slots by expert";
  let description = [{
    For `input` [..., H] (T tokens) and router `indices` [..., K], the T * K
    token-slots s = t * K + k are sorted by expert `indices[s]`, stably (in
    token order within an expert):

    * `permuted` [T * K, H]: row r is `input[row_to_slot[r] / K]`;
    * `offsets` [E + 1] (i64): expert e owns rows [offsets[e], offsets[e+1]),
      offsets[0] = 0 and offsets[E] = T * K;
    * `row_to_slot` [T * K] (i32): the token-slot each row came from.

    An expert id of -1 marks a slot dropped by `moe.drop_over_capacity`: it
    gets no row, so offsets[E] counts the kept slots, and the rows past it
    are padding (zero, `row_to_slot` -1). Other ids outside [0, E) are a
    runtime error.

    ```mlir
    %rows, %offsets, %slots = moe.permute %x, %indices experts 8
        : (tensor<4x16x64xf32>, tensor<4x16x2xi32>)
        -> (tensor<128x64xf32>, tensor<9xi64>, tensor<128xi32>)
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$input, MoE_IndexTensor:$indices,
                       I64Attr:$num_experts);
  let results = (outs MoE_FloatTensor:$permuted, MoE_I64Vector:$offsets,
                      MoE_I32Vector:$row_to_slot);
  let assemblyFormat = [{
    $input `,` $indices `experts` $num_experts attr-dict `:`
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

def MoE_GroupedSwiGLUOp : MoE_Op<"grouped_swiglu", [Pure]> {
  let summary = "Each expert's SwiGLU FFN on its rows (a grouped GEMM)";
  let description = [{
    For `permuted` [R, H] whose rows [offsets[e], offsets[e+1]) belong to
    expert e, and stacked `gate`/`up` [E, F, H], `down` [E, H, F]:
    `result[r] = (silu(x @ gate[e]^T) * (x @ up[e]^T)) @ down[e]^T` for
    x = permuted[r] and e the expert owning row r. `offsets` [E + 1] must be
    non-decreasing from 0 to R (a runtime check). Empty experts cost nothing.

    `offsets` may also have S * E + 1 entries (S >= 1 segments per expert):
    rows [offsets[g], offsets[g+1]) then belong to expert g % E, and the
    offsets may end before R, leaving the later rows of the result unwritten.
    This is the layout `moe.dispatch` delivers to an expert-parallel rank:
    its E local experts' rows from each of S source ranks.

    ```mlir
    %y = moe.grouped_swiglu %rows, %offsets, %gate, %up, %down
        : (tensor<128x64xf32>, tensor<9xi64>, tensor<8x32x64xf32>,
           tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<128x64xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$permuted, MoE_I64Vector:$offsets,
                       MoE_FloatTensor:$gate_weight,
                       MoE_FloatTensor:$up_weight,
                       MoE_FloatTensor:$down_weight);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $permuted `,` $offsets `,` $gate_weight `,` $up_weight `,` $down_weight
    attr-dict `:` functional-type(operands, results)
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

def MoE_UnpermuteOp : MoE_Op<"unpermute", [Pure]> {
  let summary = "Return expert rows to their tokens, weighted and summed";
  let description = [{
    For `expert_out` [T * K, H] in the row order of `moe.permute`,
    `row_to_slot` [T * K] and router `weights` [..., K] (T tokens):
    `result[t] = sum over k ascending of weights[t, k] * expert_out[r(t, k)]`
    where r(t, k) is the row holding token-slot t * K + k; a slot no row
    holds (dropped) adds nothing, and rows whose `row_to_slot` is -1 are
    padding. The result has the weights' token dimensions followed by H. A
    `row_to_slot` naming a slot twice or out of range is a runtime error.

    ```mlir
    %out = moe.unpermute %y, %slots, %weights
        : (tensor<128x64xf32>, tensor<128xi32>, tensor<4x16x2xf32>)
        -> tensor<4x16x64xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$expert_out, MoE_I32Vector:$row_to_slot,
                       MoE_FloatTensor:$weights);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $expert_out `,` $row_to_slot `,` $weights attr-dict `:`
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

// The index of a run-time expert placement table (the MoE layer).
def MoE_PlacementAttr : ConfinedAttr<I64Attr, [IntNonNegative]>;

def MoE_DispatchOp : MoE_Op<"dispatch", [
    Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "Expert-parallel token dispatch (variable all-to-all)";
  let description = [{
    Sends each expert's rows to the rank of the expert-parallel group that
    holds it. `permuted` [N, H] holds this rank's token-slots grouped by the
    E global experts (`offsets` [E + 1], as `moe.permute` makes them); the
    group is the ranks of `grid` along `grid_axes` (n ranks). The token counts
    are exchanged first, then the rows.

    Without `placement`, rank j holds experts [j * E/n, (j+1) * E/n) and
    `received_offsets` has E + 1 entries. With `placement P`, every rank has
    S expert slots (`received_offsets` has n * S + 1 entries, n * S >= E)
    and run-time placement table P says which expert each slot holds:
    experts can move between ranks and hot experts can have replicas, whose
    rows the run-time dispatch policy spreads over them. Until a table is
    installed, P is the static split above with the slots past E/n empty.

    `received` [M, H] holds, for each source rank s in order and each local
    slot l (expert, without placement), the rows s sent for l: segment
    s * S + l is rows [received_offsets[s*S+l], received_offsets[s*S+l+1]),
    the layout `moe.grouped_swiglu` takes with segments over the S slots'
    weights. M is a static upper bound (n * tokens * min(top_k, S) never
    overflows); rows past the last offset are unspecified, and receiving
    more than M rows is a runtime error.

    ```mlir
    %recv, %recv_offsets = moe.dispatch %rows, %offsets on @expert_mesh
        grid_axes = [1] : (tensor<64x64xf32>, tensor<9xi64>)
        -> (tensor<128x64xf32>, tensor<9xi64>)
    %recv3, %recv_offsets3 = moe.dispatch %rows, %offsets on @expert_mesh
        grid_axes = [1] placement 0 : (tensor<64x64xf32>, tensor<9xi64>)
        -> (tensor<192x64xf32>, tensor<13xi64>)
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$permuted, MoE_I64Vector:$offsets,
                       FlatSymbolRefAttr:$grid,
                       DenseI16ArrayAttr:$grid_axes,
                       OptionalAttr<MoE_PlacementAttr>:$placement);
  let results = (outs MoE_FloatTensor:$received,
                      MoE_I64Vector:$received_offsets);
  let assemblyFormat = [{
    $permuted `,` $offsets `on` $grid `grid_axes` `=` $grid_axes
    (`placement` $placement^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_CombineOp : MoE_Op<"combine", [
    Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "Expert-parallel token combine (the inverse all-to-all)";
  let description = [{
    The inverse of `moe.dispatch`: returns the rows of every received segment
    of `expert_out` [M, H] (`received_offsets`, as the dispatch delivered
    them) to the rank they came from. The result [N, H] is in the row order
    of the dispatch's input, whose expert `offsets` [E + 1] are given again,
    so `moe.unpermute` can weight and sum it per token. `placement` must be
    the dispatch's: the combine splits the rows over replicas as it did.

    ```mlir
    %back = moe.combine %y, %recv_offsets, %offsets on @expert_mesh
        grid_axes = [1] : (tensor<128x64xf32>, tensor<9xi64>, tensor<9xi64>)
        -> tensor<64x64xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$expert_out,
                       MoE_I64Vector:$received_offsets,
                       MoE_I64Vector:$offsets,
                       FlatSymbolRefAttr:$grid,
                       DenseI16ArrayAttr:$grid_axes,
                       OptionalAttr<MoE_PlacementAttr>:$placement);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $expert_out `,` $received_offsets `,` $offsets `on` $grid `grid_axes` `=`
    $grid_axes (`placement` $placement^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_SharedExpertsOp : MoE_Op<"shared_experts", [Pure,
    DeclareOpInterfaceMethods<MoE_MeshFitOpInterface>]> {
  let summary = "Shared experts: a dense SwiGLU FFN every token takes";
  let description = [{
    `result = g * ((silu(x @ gate^T) * (x @ up^T)) @ down^T)` for `x` [..., H],
    `gate`/`up` [F, H], `down` [H, F] (F = shared intermediate size, i.e.
    n_shared_experts * moe_intermediate_size). `g` is
    `sigmoid(x @ shared_gate^T)` when `shared_gate` [1, H] is given (Qwen2-MoE's
    `shared_expert_gate`), else 1 (DeepSeek-V3). The result is added to the
    routed experts' output.
  }];
  let arguments = (ins
    MoE_FloatTensor:$input,
    MoE_FloatTensor:$gate_weight,
    MoE_FloatTensor:$up_weight,
    MoE_FloatTensor:$down_weight,
    Optional<MoE_FloatTensor>:$shared_gate
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $gate_weight `,` $up_weight `,` $down_weight
    (`gated` `by` $shared_gate^)? attr-dict `:`
    functional-type(operands, results)
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

#endif // MOE_DIALECT_MOE_IR_EXPERTOPS_TD
