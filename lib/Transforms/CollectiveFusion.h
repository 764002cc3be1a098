//===- CollectiveFusion.h - Fusing collectives ------------------*- C++ -*-===//
//
// Private to the passes that emit collectives.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_TRANSFORMS_COLLECTIVEFUSION_H
#define MOE_LIB_TRANSFORMS_COLLECTIVEFUSION_H

#include "mlir/IR/Block.h"

namespace mlir::moe {

/// An all-reduce read only by an all-slice over the same axes is a
/// reduce-scatter: each rank receives its piece of the sum alone, half the
/// bytes of a ring all-reduce. A weight gathered in the forward
/// (moe-shard-weights) gets its gradient this way: summed over the ranks
/// that split its tokens, then sliced by the gather's transpose; so does
/// the output of a tensor-parallel block under sequence parallelism
/// (moe-partition): its partial sums, summed over tp, split again along the
/// sequence.
void fuseReduceScatters(Block &body);

/// Moves each sum read only by an op linear in it (moe.combine,
/// moe.permute_grad, whose other operands are the same on the ranks summed
/// over) after that op: the sum of the op's results is the op of the summed
/// input. Under expert tensor parallelism
/// the expert inputs' gradient, partial over tp in the permuted layout
/// (top_k rows a token), is then summed over the tokens instead, where an
/// all-slice can make it a reduce-scatter.
void sinkAllReduces(Block &body);

/// All-gathers of the same value over the same axes along the same
/// dimension become the first of them: under sequence parallelism, the
/// query, key and value projections each need the same gathered tokens.
void mergeDuplicateGathers(Block &body);

} // namespace mlir::moe

#endif // MOE_LIB_TRANSFORMS_COLLECTIVEFUSION_H
