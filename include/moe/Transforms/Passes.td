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

#endif // MOE_TRANSFORMS_PASSES_TD
