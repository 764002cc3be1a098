//===- MoEBase.td - the moe dialect ------------------------*- tablegen -*-===//
//
// The `moe` dialect describes a Mixture-of-Experts decoder at logical shapes:
// no parallelism appears in a model written in it. Passes shard it over a
// DP x CP x TP x EP mesh and lower it to runtime calls.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEBASE_TD
#define MOE_DIALECT_MOE_IR_MOEBASE_TD

include "mlir/IR/OpBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Model-level ops of Mixture-of-Experts decoders";
  let description = [{
    Ops for Qwen3-MoE, DeepSeek-V3 and Mixtral style decoders, written at
    logical (unsharded) shapes on ranked tensors. Weights are introduced by
    `moe.param`, which carries the tensor's Hugging Face checkpoint name, so a
    model's parameters map one to one onto a safetensors checkpoint.

    The module attribute `moe.mesh` (a `#moe.mesh<...>`) records the device
    mesh the model is compiled for; the dialect verifies that the model can be
    sharded over it.
  }];
  let useDefaultAttributePrinterParser = 1;
  let hasConstantMaterializer = 1;
  let hasOperationAttrVerify = 1;
  let hasRegionArgAttrVerify = 1;
  let hasRegionResultAttrVerify = 1;
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
  let extraClassDeclaration = [{
    /// Name of the module attribute that holds the `#moe.mesh`.
    static constexpr ::llvm::StringLiteral getMeshAttrName() {
      return ::llvm::StringLiteral("moe.mesh");
    }
    /// Name of the module attribute of character-level models: a string
    /// whose i-th character is token i.
    static constexpr ::llvm::StringLiteral getVocabCharsAttrName() {
      return ::llvm::StringLiteral("moe.vocab_chars");
    }
    /// Name of the module attribute of an imported model: the Hugging Face
    /// config.json it was built from (a JSON object, as a string), which
    /// the executable writes beside the checkpoints it saves.
    static constexpr ::llvm::StringLiteral getHFConfigAttrName() {
      return ::llvm::StringLiteral("moe.hf_config");
    }
    /// Name of the module attribute that asks for ZeRO: the stage (1: the
    /// AdamW state of each weight is split over its data-parallel
    /// replicas), recorded by moe-build-train-step and carried into the
    /// manifest, where the executable's optimizer reads it.
    static constexpr ::llvm::StringLiteral getZeroStageAttrName() {
      return ::llvm::StringLiteral("moe.zero_stage");
    }
    /// Name of the module attribute that records activation recompute in
    /// the training step ("full"), set by moe-build-train-step and carried
    /// into the manifest.
    static constexpr ::llvm::StringLiteral getRecomputeAttrName() {
      return ::llvm::StringLiteral("moe.recompute");
    }
    /// Name of the dictionary on a lowered entry point that describes it
    /// (moe-lower-to-runtime, moe-plan-memory; the manifest is made of it).
    static constexpr ::llvm::StringLiteral getEntryAttrName() {
      return ::llvm::StringLiteral("moe.entry");
    }
    /// Unit attribute on a module whose functions moe-partition turned into
    /// per-rank programs: shapes are local, so the mesh is not checked
    /// against them again.
    static constexpr ::llvm::StringLiteral getPartitionedAttrName() {
      return ::llvm::StringLiteral("moe.partitioned");
    }
    /// On a partitioned function's arguments and results and on its
    /// `moe.param`s: per dimension, the names of the mesh axes ("dp", "cp",
    /// "tp", "ep", "edp") the dimension is split over, major first.
    static constexpr ::llvm::StringLiteral getSplitAttrName() {
      return ::llvm::StringLiteral("moe.split");
    }
    /// Beside `moe.split`: the shape of the whole (unsplit) tensor.
    static constexpr ::llvm::StringLiteral getGlobalShapeAttrName() {
      return ::llvm::StringLiteral("moe.global_shape");
    }
    /// On a partitioned expert weight (`moe.param`) of an expert-parallel
    /// layer: the run-time placement table (the MoE layer) whose expert
    /// slots its dim-0 rows are, instead of a block of the experts.
    static constexpr ::llvm::StringLiteral getPlacementAttrName() {
      return ::llvm::StringLiteral("moe.placement");
    }
  }];
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOE_DIALECT_MOE_IR_MOEBASE_TD
