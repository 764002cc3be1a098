//===- MoEAttrs.td - moe dialect attributes ----------------*- tablegen -*-===//

#ifndef MOE_DIALECT_MOE_IR_MOEATTRS_TD
#define MOE_DIALECT_MOE_IR_MOEATTRS_TD

include "moe/Dialect/MoE/IR/MoEBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def MoE_ScoreFunc : I32EnumAttr<"ScoreFunc", "router scoring function", [
    I32EnumAttrCase<"softmax", 0>,
    I32EnumAttrCase<"sigmoid", 1>
  ]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::mlir::moe";
}

def MoE_ScoreFuncAttr : EnumAttr<MoE_Dialect, MoE_ScoreFunc, "score_func"> {
  let assemblyFormat = "$value";
}

/// A flag parameter written `true` or `false`, `false` when omitted.
def MoE_FlagParameter : AttrParameter<"bool", "a flag"> {
  let parser = "::mlir::moe::parseFlag($_parser)";
  let printer = "$_printer << ($_self ? \"true\" : \"false\")";
  let defaultValue = "false";
}

def MoE_MeshAttr : AttrDef<MoE_Dialect, "Mesh"> {
  let mnemonic = "mesh";
  let summary = "A DP x CP x TP x EP device mesh";
  let description = [{
    The mesh a model is compiled for, with the semantics of torchtitan and
    AReaL's Archon engine: the world is `dp * cp * tp` ranks; expert
    parallelism borrows its `ep` ranks from the `dp * cp` plane, so `ep` must
    divide `dp * cp`; the remaining `dp * cp / ep` ranks of that plane form
    the expert-data-parallel group that replicates each expert shard.

    `sp = true` adds sequence parallelism over tp (Megatron-Core's): outside
    the tensor-parallel attention and FFN blocks, the activations are split
    over tp along the sequence as well, so the norms, the residual stream,
    the router and the routed experts each see 1/tp of the tokens. A
    tensor-parallel block then starts with an all-gather over tp and ends
    with a reduce-scatter instead of an all-reduce. It needs tp > 1.

    `etp = tp` adds expert tensor parallelism: each routed expert's FFN is
    split over tp along its intermediate features, as the dense FFNs are,
    so each tp rank holds and computes 1/tp of every local expert. The
    tokens are gathered over tp before the dispatch and the expert outputs'
    partial sums are summed over tp after the combine. `etp` is 1 or tp.

    Omitted sizes are 1:

    ```mlir
    #moe.mesh<dp = 2, ep = 2>          // 2 ranks, each holding half the experts
    #moe.mesh<dp = 2, cp = 2, tp = 2, ep = 4>
    #moe.mesh<dp = 2, tp = 2, ep = 2, sp = true>
    #moe.mesh<dp = 2, tp = 2, ep = 2, etp = 2, sp = true>
    ```

    The `moe-assign-mesh` pass materialises two upstream `shard.grid`s over
    the same ranks: `@mesh` with axes (dp, cp, tp) for dense values and
    `@expert_mesh` with axes (edp, ep, tp) for expert weights.
  }];
  let parameters = (ins
    DefaultValuedParameter<"int64_t", "1">:$dp,
    DefaultValuedParameter<"int64_t", "1">:$cp,
    DefaultValuedParameter<"int64_t", "1">:$tp,
    DefaultValuedParameter<"int64_t", "1">:$ep,
    DefaultValuedParameter<"int64_t", "1">:$etp,
    MoE_FlagParameter:$sp
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Number of ranks the mesh spans: dp * cp * tp.
    int64_t getWorldSize() const { return getDp() * getCp() * getTp(); }
    /// Size of the expert-data-parallel group: dp * cp / ep.
    int64_t getExpertDataParallelSize() const {
      return getDp() * getCp() / getEp();
    }
  }];
}

#endif // MOE_DIALECT_MOE_IR_MOEATTRS_TD
