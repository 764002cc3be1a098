//===- MoEInterfaces.td - moe dialect op interfaces --------*- tablegen -*-===//
//
// What an op knows about itself that a pass or a module-level check asks
// for, found through the op rather than through a central switch.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEINTERFACES_TD
#define MOE_DIALECT_MOE_IR_MOEINTERFACES_TD

include "mlir/IR/OpBase.td"

def MoE_MeshFitOpInterface : OpInterface<"MeshFitOpInterface"> {
  let description = [{
    An op whose shapes constrain the device mesh a model can be sharded over
    (a dimension that a mesh axis splits must be divisible by the axis's
    size). `verifyModelFitsMesh` asks every such op of a module when the
    module gets its `moe.mesh`; an op that constrains nothing does not
    implement the interface.
  }];
  let cppNamespace = "::mlir::moe";
  let methods = [
    InterfaceMethod<[{
        Emits one diagnostic at this op per dimension that `mesh` cannot
        split, naming the dimension, its size and the axis. Runs before the
        op's own verifier: every shape access must check the rank first.
      }],
      "::llvm::LogicalResult", "verifyFitsMesh",
      (ins "::mlir::moe::MeshAttr":$mesh)>
  ];
}

#endif // MOE_DIALECT_MOE_IR_MOEINTERFACES_TD
