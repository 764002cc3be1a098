//===- MoEOps.h - moe dialect ops -------------------------------*- C++ -*-===//

#ifndef MOE_DIALECT_MOE_IR_MOEOPS_H
#define MOE_DIALECT_MOE_IR_MOEOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "moe/Dialect/MoE/IR/MoEAttrs.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "moe/Dialect/MoE/IR/MoEInterfaces.h.inc"

#define GET_OP_CLASSES
#include "moe/Dialect/MoE/IR/MoEOps.h.inc"

namespace mlir::moe {

/// Checks that `module`'s model can be sharded over `mesh` by asking each op
/// that implements MeshFitOpInterface (ep divides every experts op's expert
/// count, tp divides attention heads and KV heads, cp divides sequence
/// lengths, dp divides batch sizes, ...). Emits one diagnostic per violation
/// at the offending op.
LogicalResult verifyModelFitsMesh(Operation *module, MeshAttr mesh);

} // namespace mlir::moe

#endif // MOE_DIALECT_MOE_IR_MOEOPS_H
