//===- MoEOps.td - moe dialect ops -------------------------*- tablegen -*-===//
//
// Model-level ops of MoE decoders. Conventions shared by all ops:
//  * tensors are ranked and statically shaped; "[..., H]" means any number of
//    leading (token) dimensions followed by a hidden dimension H;
//  * projection weights use the Hugging Face layout [out, in];
//  * stacked expert weights put the expert dimension first: [E, out, in];
//  * losses are rank-0 f32 tensors.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEOPS_TD
#define MOE_DIALECT_MOE_IR_MOEOPS_TD

include "moe/Dialect/MoE/IR/MoEBase.td"
include "moe/Dialect/MoE/IR/MoEAttrs.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"

def MoE_FloatTensor : StaticShapeTensorOf<[AnyFloat]>;
def MoE_IndexTensor : StaticShapeTensorOf<[AnySignlessInteger]>;
def MoE_Scalar : 0DTensorOf<[F32]>;

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

def MoE_ParamOp : MoE_Op<"param", [Pure]> {
  let summary = "A named model weight";
  let description = [{
    Introduces a trainable weight. `name` is the tensor's name in a Hugging
    Face checkpoint, e.g. `model.layers.0.self_attn.q_proj.weight`.

    Expert weights are stacked: a name containing the placeholder `{e}`
    denotes a tensor whose first dimension indexes experts, and expert `e`'s
    slice maps to the checkpoint tensor whose name has `{e}` replaced by `e`:

    ```mlir
    %w = moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" : tensor<8x32x64xf32>
    // slice 3 <-> model.layers.0.mlp.experts.3.up_proj.weight [32, 64]
    ```

    A name is declared at most once per block: a tied weight is one value
    used twice.
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// True if this is a stacked-experts weight (the name contains `{e}`).
    bool isStackedExperts();
    /// The checkpoint name of expert `expert`'s slice of a stacked weight.
    std::string getExpertName(int64_t expert);
  }];
}

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

def MoE_EmbeddingOp : MoE_Op<"embedding", [Pure]> {
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
  }];
  let arguments = (ins MoE_FloatTensor:$input,
                       Optional<MoE_IndexTensor>:$positions,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`positions` $positions^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_AttentionOp : MoE_Op<"attention", [Pure]> {
  let summary = "Scaled dot-product attention with grouped-query heads";
  let description = [{
    `q` is [B, S, H, D]; `k` and `v` are [B, S, KV, D] with H a multiple of
    KV: query head h attends with key/value head `h / (H / KV)` (grouped-query
    attention; KV = H is multi-head, KV = 1 multi-query). With `causal`,
    position s attends to positions <= s. Scores are scaled by `scale`,
    1/sqrt(D) when absent, and the softmax is computed in fp32. The result
    is [B, S, H, D].

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

def MoE_MLPOp : MoE_Op<"mlp", [Pure]> {
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

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

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
       two highest selection scores (its highest when a group has one
       expert); only the `topk_group` best groups stay eligible;
    5. `indices`: the `top_k` eligible experts with the highest selection
       scores, in descending order (ties broken by lower expert index);
    6. `weights`: the unbiased `scores` of the chosen experts, divided by
       their sum when `norm_topk_prob` is set, then times `route_scale`.

    `logits` are returned for the auxiliary losses. Qwen3-MoE is softmax,
    top-8, `norm_topk_prob`; Mixtral softmax, top-2, `norm_topk_prob`;
    DeepSeek-V3 sigmoid, top-8, `norm_topk_prob`, route scale 2.5, an expert
    bias, 8 groups, 4 kept.
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
    DefaultValuedAttr<I64Attr, "1">:$topk_group
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

def MoE_ExpertsOp : MoE_Op<"experts", [Pure]> {
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

//===----------------------------------------------------------------------===//
// The dropless expert pipeline (moe-lower-experts)
//===----------------------------------------------------------------------===//

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

def MoE_SharedExpertsOp : MoE_Op<"shared_experts", [Pure]> {
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

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

def MoE_CrossEntropyOp : MoE_Op<"cross_entropy", [Pure]> {
  let summary = "Mean token cross-entropy of logits against labels";
  let description = [{
    For `logits` [..., V] and integer `labels` [...]:
    `mean over t with labels[t] != ignore_index of
     (logsumexp(logits[t]) - logits[t, labels[t]])`, in fp32; 0 when every
    label is ignored.
  }];
  let arguments = (ins MoE_FloatTensor:$logits, MoE_IndexTensor:$labels,
                       DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs MoE_Scalar:$loss);
  let assemblyFormat = [{
    $logits `,` $labels attr-dict `:` functional-type(operands, results)
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

include "moe/Dialect/MoE/IR/MoEGradOps.td"

#endif // MOE_DIALECT_MOE_IR_MOEOPS_TD
