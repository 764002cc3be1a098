//===- MoEOps.td - moe dialect ops -------------------------*- tablegen -*-===//
//
// Model-level ops of MoE decoders. Conventions shared by all ops:
//  * tensors are ranked and statically shaped; "[..., H]" means any number of
//    leading (token) dimensions followed by a hidden dimension H;
//  * projection weights use the Hugging Face layout [out, in];
//  * stacked expert weights put the expert dimension first: [E, out, in];
//  * losses are rank-0 f32 tensors.
// Each op's gradient op (`<name>_grad`) is defined beside it; gradient ops
// are what `moe-build-train-step` emits:
//  * `<name>_grad` operands and results are cotangents: the gradient of the
//    training loss with respect to the forward value `<name>`, of its type;
//  * the primal operands are the forward op's operands, with the forward
//    op's shape rules (the verifiers are the forward ones);
//  * a loss gradient op is the gradient of its loss itself (the loss's
//    cotangent is 1: losses only ever reach the returned loss through
//    `moe.add`).
// The ops are defined by family: DenseOps.td, ExpertOps.td, LossOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEOPS_TD
#define MOE_DIALECT_MOE_IR_MOEOPS_TD

include "moe/Dialect/MoE/IR/MoEBase.td"
include "moe/Dialect/MoE/IR/MoEAttrs.td"
include "moe/Dialect/MoE/IR/MoEInterfaces.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"

def MoE_FloatTensor : StaticShapeTensorOf<[AnyFloat]>;
def MoE_IndexTensor : StaticShapeTensorOf<[AnySignlessInteger]>;
def MoE_Scalar : 0DTensorOf<[F32]>;

//===----------------------------------------------------------------------===//
// Parameters and their gradients
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

include "moe/Dialect/MoE/IR/DenseOps.td"
include "moe/Dialect/MoE/IR/ExpertOps.td"
include "moe/Dialect/MoE/IR/LossOps.td"

#endif // MOE_DIALECT_MOE_IR_MOEOPS_TD
