//===- Passes.td - moe compiler passes ---------------------*- tablegen -*-===//

#ifndef MOE_TRANSFORMS_PASSES_TD
#define MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def AssignMesh : Pass<"moe-assign-mesh", "::mlir::ModuleOp"> {
  let summary = "Record the DP x CP x TP x EP mesh a model is compiled for";
  let description = [{
    Parses `mesh` ("dp=2,ep=4"; omitted axes are 1), checks it and attaches
    it to the module as `moe.mesh = #moe.mesh<...>`. It then materialises
    the mesh as two upstream `shard.grid`s over the same ranks, which the
    sharding passes refer to:

    * `@mesh`, shape dp x cp x tp: the axes dense values are sharded on;
    * `@expert_mesh`, shape (dp*cp/ep) x ep x tp: the ep axis borrows its
      ranks from the dp x cp plane, the first axis is the expert-data-parallel
      group that replicates each expert shard.

    Guarantees, on success: the mesh is well formed (positive sizes, ep
    divides dp*cp), spans exactly `world-size` ranks when that is given, and
    the model can be sharded over it (ep divides every expert count, tp*cp
    divides the query and key/value heads, cp the sequence, dp the batch,
    tp the dense and shared-expert intermediate sizes). Any violation is a
    diagnostic at the offending op, never a crash. Grids of the same names
    from an earlier run are replaced.
  }];
  let dependentDialects = ["::mlir::shard::ShardDialect",
                           "::mlir::moe::MoEDialect"];
  let options = [
    Option<"mesh", "mesh", "std::string", /*default=*/"\"\"",
           "Mesh as axis=size pairs, e.g. \"dp=2,ep=4\" (omitted axes are 1)">,
    Option<"worldSize", "world-size", "int64_t", /*default=*/"0",
           "Number of ranks the mesh must span (0: not checked)">,
  ];
}

def BuildDecode : Pass<"moe-build-decode", "::mlir::ModuleOp"> {
  let summary = "Derive @prefill and @decode, which generate against a key/value cache, from @forward";
  let description = [{
    From `@forward(tokens [B, S], labels) -> (logits [B, S, V], loss)` at
    logical shapes, adds two functions that generate text without running
    the whole [B, S] forward for every new token:

    ```
    @prefill(tokens [N, P] i32, positions [N, P] i32) -> logits [N, P, V]
    @decode (tokens [N, 1] i32, positions [N, 1] i32) -> logits [N, 1, V]
    ```

    for N = `batch` sequences, L = `max-seq` (default S) cached positions,
    and P prompt tokens a call, the largest divisor of L not above S (so
    that chunks of P tile the cache). Each is the slice of the
    forward that computes the logits, at the new shape (every value whose
    shape begins with [B, S] begins with [N, T] instead), with

    * each causal `moe.attention` becoming a `moe.cached_attention` over two
      `moe.kv_cache` buffers [N, L, KV, D] and [N, L, KV, Dv] of its own
      (named `layers.<i>.keys` / `.values`, by the attention's order), which
      both functions share: prefill writes a prompt's keys and values,
      decode appends one position a call;
    * each `moe.rope` without positions rotating by `positions` (the
      token's place in its sequence);
    * capacity-factor experts dropless: one token of a sequence must not be
      dropped for another's.

    A token at position p sees exactly the keys and values at positions <= p
    that the causal forward sees, so the logits equal the forward's at that
    position (for dropless experts). Every weight of the forward is declared,
    in the forward's order, so the three functions share one weights blob.

    The model must be unmeshed (the decode functions of a mesh are not built
    yet: the pass then does nothing), return its logits first, and use
    only causal attention; a model function that does not is left alone
    with a warning. Non-causal attention, or an attention op whose value is
    [B, S]-shaped in a way the specialisation cannot follow, is a
    diagnostic.
  }];
  let options = [
    Option<"batch", "batch", "int64_t", /*default=*/"1",
           "Sequences generated together (N)">,
    Option<"maxSeq", "max-seq", "int64_t", /*default=*/"0",
           "Positions the cache holds per sequence (L); 0: the forward's "
           "sequence length">,
  ];
  let dependentDialects = ["::mlir::tensor::TensorDialect"];
}

def Shard : Pass<"moe-shard", "::mlir::ModuleOp"> {
  let summary = "Choose a sharding over the mesh for every value";
  let description = [{
    Annotates every tensor value of each model function with upstream
    `shard.shard` ops on the grids of moe-assign-mesh (`@mesh` = dp x cp x tp
    for tokens and dense weights, `@expert_mesh` = edp x ep x tp for expert
    weights): the sharding the value is produced in and, where a user needs
    another, an `annotate_for_users` resharding. The rules (Megatron-Core and
    torchtitan layouts):

    * inputs and activations [batch, seq, ...]: batch split over dp, sequence
      over cp (the token layout); embedding, norms, router gates replicated;
    * tensor parallelism: a projection whose output is reshaped into
      attention heads is column parallel (weight rows split over tp, heads
      split over tp); a projection whose input features are split is row
      parallel (weight columns split); dense and shared-expert SwiGLU FFNs
      split their intermediate features (gate/up rows, down columns);
    * context parallelism (Ulysses): heads reshaped for attention trade the
      sequence split for a head split (the heads dimension split over tp,
      then cp), so that RoPE and attention see whole sequences; the
      attention output returns to the token layout before it is flattened;
    * expert parallelism: stacked expert weights split their expert
      dimension over ep on `@expert_mesh`, replicated over edp and tp;
    * cross-entropy keeps the token layout with the vocabulary whole (each
      rank adds its own tokens' share, moe-partition); the router losses
      and function results are whole (replicated) on every rank.

    Guarantees: every non-scalar value has exactly one produced annotation,
    and every operand is annotated with the sharding its op computes on; the
    annotated program computes what the original does. An op without a rule
    is a diagnostic. Needs `moe.mesh` and the grids (moe-assign-mesh),
    unless `if-meshed`, which leaves a module without `moe.mesh`, or one
    already partitioned (`moe.partitioned`), as it is.
  }];
  let options = [
    Option<"ifMeshed", "if-meshed", "bool", /*default=*/"false",
           "Do nothing to a module without moe.mesh or already partitioned "
           "(the compiler pipeline's policy)">
  ];
  let dependentDialects = ["::mlir::shard::ShardDialect"];
}

def Partition : Pass<"moe-partition", "::mlir::ModuleOp"> {
  let summary = "Turn a sharded model into the per-rank SPMD program";
  let description = [{
    Rewrites each annotated model function (moe-shard) into the program one
    rank runs, on local shapes:

    * every value takes its shard's type; the function takes and returns
      local shards; arguments, results and weights (`moe.param`) carry
      `moe.split` (per dimension, the mesh axes it is split over) and
      `moe.global_shape`, from which the executable slices its inputs and
      checkpoint tensors;
    * a resharding annotation becomes upstream collectives, one grid axis at
      a time: `shard.all_gather` (axis leaves a dimension),
      `shard.all_to_all` (axis moves: Ulysses sequence <-> heads),
      `shard.all_slice` (axis arrives; no communication);
    * row-parallel projections and tensor-parallel FFNs `shard.all_reduce`
      their partial sums over the split axes;
    * expert-parallel `moe.experts` becomes `moe.permute` ->
      `moe.dispatch` (token counts, then a variable all-to-all over ep) ->
      `moe.grouped_swiglu` on the local experts -> `moe.combine` ->
      `moe.unpermute`; the router stays replicated. The dispatch and combine
      of the L-th `moe.experts` (counted from 0) use run-time placement
      table L, and its expert weights take one row per slot: S = E/n +
      `replica-slots` rows on each of the n EP ranks, marked with
      `moe.placement = L`, so that the executable can move experts between
      ranks and replicate hot ones (see ExpertPlacement.h).

    Guarantees: run on every rank, the local programs compute the values of
    the global program (up to the order of floating-point sums); all
    annotations are consumed. A value without an annotation, a split that
    does not divide its dimension, or a resharding other than the above is a
    diagnostic. With `if-meshed`, a module without `moe.mesh`, or one
    already partitioned, is left as it is.
  }];
  let options = [
    Option<"replicaSlots", "replica-slots", "int64_t", /*default=*/"0",
           "Expert slots per EP rank beyond E/n, for replicas of hot "
           "experts (per MoE layer)">,
    Option<"ifMeshed", "if-meshed", "bool", /*default=*/"false",
           "Do nothing to a module without moe.mesh or already partitioned "
           "(the compiler pipeline's policy)">
  ];
  let dependentDialects = ["::mlir::shard::ShardDialect",
                           "::mlir::tensor::TensorDialect"];
}

def ShardWeights : Pass<"moe-shard-weights", "::mlir::ModuleOp"> {
  let summary = "ZeRO stages 2 and 3: split the weights over the data-parallel ranks";
  let description = [{
    Runs on the per-rank program (after moe-partition). Every weight that
    the ranks of the data-parallel plane hold whole (a dense weight, split
    at most over tp, or an expert weight when ep = 1) is split over the dp
    and cp axes too: along its first dimension whose local size they
    divide, as the minor split of that dimension (after tp), recorded in its
    `moe.split`. The ops that read the weight read the whole local block
    from a `shard.all_gather` over those axes:

    * `stage=3`: one right in front of each op, so that no gathered weight
      is live beyond the op that reads it; moe-build-train-step gathers the
      weight again in front of its backward (FSDP, ZeRO stage 3);
    * `stage=2`: one right after the weight, which the training step keeps
      for the backward: the whole weights are live during the step, as
      under ZeRO stage 2, and gathered once a step.

    Either way moe-build-train-step sums the gathered weight's gradient over
    the plane and slices it (the all-gather's transpose, one reduce-scatter),
    so each rank keeps the gradients, fp32 master weights and AdamW moments
    of its slice only, and between steps the weights too. Expert weights
    split over ep keep their layout, and so does a weight with no dimension
    the plane divides.

    Guarantees: the program computes what it computed before, and checkpoint
    tensors map to the new slices through `moe.split`. A module that is not
    partitioned, a mesh with dp = cp = 1 or another stage is a diagnostic.
  }];
  let options = [
    Option<"stage", "stage", "int64_t", /*default=*/"3",
           "ZeRO stage: 3 gathers a weight in front of each op reading it, 2 "
           "once">,
  ];
  let dependentDialects = ["::mlir::shard::ShardDialect"];
}

def ExpandCapacity : Pass<"moe-expand-capacity"> {
  let summary = "Make capacity-factor experts drop their over-capacity slots explicitly";
  let description = [{
    Rewrites every `moe.experts` with a `capacity_factor` cf into

    ```
    %kept = moe.drop_over_capacity %indices experts E capacity C
    %out  = moe.experts %x, %weights, %kept, %gate, %up, %down   // dropless
    ```

    with `C = ceil(cf * T * K / E)` for the op's T tokens and top-k K, at the
    logical (whole-batch) shapes: it runs before moe-shard, which keeps the
    drop replicated so that every mesh drops the same slots as one rank.
    The router weights and the router losses still see every routed slot.

    Guarantees: no `moe.experts` keeps a `capacity_factor`; the result
    computes what the capacity-factor op defines (MoEOps.td).
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def LowerExperts : Pass<"moe-lower-experts"> {
  let summary = "Expand dropless routed experts into permute, grouped FFN, unpermute";
  let description = [{
    Rewrites every dropless `moe.experts` into the pipeline the runtime
    executes, whose pieces the expert-parallel partitioning later separates
    with the all-to-all dispatch and combine:

    ```
    %rows, %offsets, %slots = moe.permute %x, %indices experts E
    %y   = moe.grouped_swiglu %rows, %offsets, %gate, %up, %down
    %out = moe.unpermute %y, %slots, %weights
    ```

    Guarantees: the result equals the `moe.experts` it replaces (the same
    sums in the same order). Experts with a `capacity_factor` are left
    unchanged (moe-expand-capacity makes them dropless first).
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def BuildTrainStep : Pass<"moe-build-train-step", "::mlir::ModuleOp"> {
  let summary = "Build the training step: the loss and every weight's gradient";
  let description = [{
    Adds `@train_step` (same inputs as `@forward`, returns its scalar loss):
    the forward ops the loss needs, then the reverse-mode backward of every
    op, ending in one `moe.param_grad` per weight the loss depends on. The
    executable's optimizer (AdamW) reads those gradients. It also adds
    `@eval_step`, the forward returning its loss alone, which the executable
    evaluates with: the logits the forward returns (whole on every rank) are
    then never built during training.

    It runs on the per-rank program after moe-partition and
    moe-lower-experts, and adds the collectives the gradients need:

    * the transpose of each forward collective: `shard.all_gather` <->
      `shard.all_slice`, `shard.all_to_all` <-> the inverse all-to-all,
      `shard.all_reduce` -> identity, `moe.dispatch` <-> `moe.combine`
      (the same token counts);
    * a `shard.all_reduce` wherever an op combines a value that is the same
      on all ranks of a mesh axis with one that differs along it (from
      `moe.split` of the inputs and weights, through the program): the
      data-parallel (dp x cp) gradient sum of replicated weights, the
      expert-data-parallel sum of expert weights, and the tensor-parallel
      sum in front of column-parallel projections. Shares reaching one value
      are added before they are summed, so each such value costs one
      all-reduce.

    Router gradients flow through the selected scores only; loss ops feed
    the backward with their own gradients (a loss's gradient is 1, since
    losses only reach the returned loss through `moe.add`).

    With `zero=1` it records `moe.zero_stage = 1` on the module: the
    executable's optimizer then keeps, on each of a weight's data-parallel
    replicas (the dp x cp plane for dense weights, edp for expert weights),
    the AdamW state of one slice of the weight only, updates that slice and
    gathers the slices. The gradients stay all-reduced. With `zero=2` or
    `zero=3` it records that stage: moe-shard-weights has split the weights
    (the optimizer treats the ones left whole as under stage 1). A mesh
    without a data-parallel axis (dp = cp = 1) and other stages are
    diagnostics.

    A weight the forward gathers from its slices (`shard.all_gather` of a
    `moe.param`) counts as a weight: it is never recomputed nor a
    checkpoint. Unless `zero=2`, it is gathered again just in front of its
    first backward use, so that the forward's copy dies with the forward op
    reading it. An all-reduce read only by an all-slice over the same axes
    becomes one `shard.reduce_scatter` (the gradient of such a weight).

    With `recompute=full` it keeps, of the forward's activations, only the
    checkpoints: the points of the forward where a single activation is live
    (weights, inputs, integers and scalars aside), which in a transformer
    are the residual stream between two blocks. Each block's forward ops are
    cloned again just in front of its backward, whose gradient ops read the
    clones, so the forward's own intermediates die at their last forward use
    (moe-plan-memory reuses their bytes) and only one block's activations
    are live in the backward at a time. The embedding before the first
    checkpoint and the head and loss after the last are not recomputed. It
    records `moe.recompute = "full"` on the module.

    Guarantees: on every rank, each `moe.param_grad` is the rank's shard of
    the gradient of the global loss (the same loss on every rank) with
    respect to that weight. An op without a gradient rule is a diagnostic;
    so is a model function without a scalar loss, unless `if-loss`, which
    then leaves the module as it is.
  }];
  let options = [
    Option<"fromFunction", "from", "std::string", /*default=*/"\"forward\"",
           "The model function to differentiate">,
    Option<"stepFunction", "name", "std::string", /*default=*/"\"train_step\"",
           "The name of the training-step function to create">,
    Option<"evalFunction", "eval-name", "std::string",
           /*default=*/"\"eval_step\"",
           "The name of the evaluation function to create (the model "
           "function returning its loss alone)">,
    Option<"ifLoss", "if-loss", "bool", /*default=*/"false",
           "Do nothing when the model function returns no scalar loss (the "
           "compiler pipeline's policy)">,
    Option<"zeroStage", "zero", "int64_t", /*default=*/"0",
           "ZeRO stage: 0; 1 to split each weight's optimizer state over "
           "its data-parallel replicas; 2 or 3 when moe-shard-weights has "
           "split the weights too (recorded as moe.zero_stage)">,
    Option<"recompute", "recompute", "std::string", /*default=*/"\"none\"",
           "Activation recompute: none, or full to keep only the activations "
           "between blocks and run each block's forward again before its "
           "backward (recorded as moe.recompute)">,
  ];
  let dependentDialects = ["::mlir::shard::ShardDialect",
                           "::mlir::tensor::TensorDialect"];
}

def LowerToRuntime : Pass<"moe-lower-to-runtime", "::mlir::ModuleOp"> {
  let summary = "Lower model functions to runtime calls on buffers";
  let description = [{
    Rewrites every model function `@f` (tensors and `moe` ops) into the entry
    point `@moe_entry_f(%ctx: !llvm.ptr, %weights: memref<Nxi8>, inputs...,
    outputs...)` of include/moe/Runtime/ModelABI.h:

    * every weight (`moe.param`) is a `memref.view` of the weights blob at an
      offset aligned to 64 bytes, in order of first appearance;
    * every op becomes `func.call`s of the runtime's C API
      (include/moe/Runtime/CApi.h) on bare pointers, sizes and attributes;
      the expert pipeline of moe-lower-experts (`moe.permute`,
      `moe.grouped_swiglu`, `moe.unpermute`) becomes its three runtime calls
      with the row buffers, offsets and row map as planned buffers;
    * reshapes become memref views (no copies); every other result gets a
      `memref.alloc`, except results the function returns, which are
      computed straight into the caller's output buffers;
    * the entry's `moe.entry` dictionary describes the weights (names,
      shapes, offsets), inputs and outputs for the manifest.

    * with `storage=bf16`, every f32 tensor of rank >= 1 (activations,
      weights, gradients, logits) is stored as bf16: its buffer is a bf16
      memref, the weights blob and the arena shrink accordingly, the entry
      starts with `moert_set_storage` so that the runtime reads and writes
      2-byte elements (computing in fp32), collectives name BF16, and the
      manifest says `"storage": "BF16"`. Scalars (the losses) stay f32.

    Guarantees: the entry computes exactly what the model function computes
    (up to the rounding of the chosen storage); anything it cannot lower (an
    unknown op, a type other than f32/i32, a `moe.experts` that
    moe-lower-experts did not expand, i.e. one with a capacity factor) is a
    diagnostic at that op.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::LLVM::LLVMDialect",
                           "::mlir::memref::MemRefDialect"];
  let options = [
    Option<"storage", "storage", "std::string", /*default=*/"\"f32\"",
           "Storage type of floating-point tensors: f32 or bf16 (fp32 "
           "compute either way)">,
  ];
}

def PlanMemory : Pass<"moe-plan-memory", "::mlir::ModuleOp"> {
  let summary = "Place every buffer of an entry point in one reusable arena";
  let description = [{
    Replaces each `memref.alloc` of a lowered entry point by a `memref.view`
    of a new arena argument (inserted after the weights), at offsets chosen
    so that buffers live at the same time never share a byte while buffers
    whose lifetimes are disjoint do (greedy by size, lowest fitting offset).
    A lifetime runs from the allocation to the last use of the buffer or of
    anything derived from it. Records `arena_bytes` (the peak),
    `unplanned_bytes` (no reuse) and `buffers` in `moe.entry`; with
    `report`, also says so in a remark.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::memref::MemRefDialect"];
  let options = [
    Option<"report", "report", "bool", /*default=*/"false",
           "Emit a remark with the arena size, the size without reuse and "
           "the lower bound (the most bytes live at once)">,
  ];
}

def CheckRuntimeCalls : Pass<"moe-check-runtime-calls", "::mlir::ModuleOp"> {
  let summary = "Check every runtime call against the table of calls";
  let description = [{
    Every `func.call` of a runtime function (`moert_*`) and every declaration
    of one must have exactly the operand types of its entry in
    include/moe/Runtime/CApiCalls.def (the context and each buffer an
    `!llvm.ptr`, then i64 / i32 / f32 / f64 scalars) and no results; the
    runtime's CApi.h is checked against the same table when the runtime is
    built. A call the table lacks, or with other operands, is a diagnostic:
    a lowering that passes the wrong operands fails when the model is
    compiled, not when it runs. Runs right after moe-lower-to-runtime.
  }];
}

def ResolveAddresses : Pass<"moe-resolve-addresses", "::mlir::ModuleOp"> {
  let summary = "Turn planned buffers into offsets of the entry's arguments";
  let description = [{
    After moe-plan-memory, the pointer a runtime call takes (the
    `llvm.inttoptr` of a `memref.extract_aligned_pointer_as_index` that
    moe-lower-to-runtime builds) is, for every planned buffer, an entry
    argument (weights, arena, gradients, an input or output) seen through
    `memref.view`s at constant byte offsets and reshapes. This pass replaces
    each such pointer by one `llvm.getelementptr` of the argument's pointer
    (made once, at the top of the entry) and erases the views, reshapes and
    casts that only fed pointers.

    Why: the generic memref-to-LLVM conversion builds a full descriptor per
    view and per call and takes it apart again; at the size of real models
    (tens of thousands of calls) that was most of the IR the conversion and
    LLVM's code generator saw. Guarantees: every call receives the same
    address as before; pointers into anything else are left as they are.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::memref::MemRefDialect"];
}

def ExportManifest : Pass<"moe-export-manifest", "::mlir::ModuleOp"> {
  let summary = "Embed the entry point's JSON manifest in the module";
  let description = [{
    Serialises the `moe.entry` description of the one planned entry point,
    the module's `moe.mesh` and `moe.vocab_chars` into the "moe-model/1" JSON
    manifest of include/moe/Runtime/ModelABI.h and exports it as the
    NUL-terminated constant `llvm.mlir.global @moe_model_manifest`, which the
    executable's driver reads. Fails with a diagnostic when there is no
    planned entry point or more than one.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect"];
}

def PrintStepWork : Pass<"moe-print-step-work", "::mlir::ModuleOp"> {
  let summary = "Report the work one rank does in each model function";
  let description = [{
    The compiler's count behind the cost model (moe/Transforms/StepWork.h),
    as remarks on each defined function of the per-rank program: the
    runtime ops with their FLOPs and bytes, the optimizer's elements, and
    the collectives summed by kind and mesh axes (count, group size,
    bytes). With `hardware` (a built-in profile: h100, h200, cpu), also the
    predicted time of each term. Changes nothing.
  }];
  let options = [
    Option<"storage", "storage", "std::string", /*default=*/"\"f32\"",
           "Storage type of floating-point tensors: f32 or bf16">,
    Option<"hardware", "hardware", "std::string", /*default=*/"\"\"",
           "Built-in hardware profile to predict the time on">,
  ];
}

#endif // MOE_TRANSFORMS_PASSES_TD
