//===- OptimizerShards.h - ZeRO-1: who keeps which AdamW slice --*- C++ -*-===//
//
// Plain C++ (no LLVM/MLIR), shared by the executable's optimizer, which
// allocates and updates the slices, and moec's memory report, which counts
// them, so the two cannot disagree.
//
// Under ZeRO stage 1 the ranks that hold the same block of a parameter (its
// data-parallel replicas) split that block's optimizer state between them:
// each rank keeps the AdamW moments of one contiguous slice of the block,
// updates only that slice of the weights, and the slices are then gathered
// so that every replica holds the whole updated block again. A dense
// parameter's replicas are the ranks of the dp x cp plane with the same tp
// position; an expert weight's are its expert-data-parallel ranks (edp),
// since ep already splits the experts over that plane.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_SUPPORT_OPTIMIZERSHARDS_H
#define MOE_SUPPORT_OPTIMIZERSHARDS_H

#include "moe/Support/MeshShape.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

/// The group of ranks over which a parameter's optimizer state is split.
enum class ShardGroup {
  None,                ///< kept whole (split over a data-parallel axis itself)
  DataParallel,        ///< the dp x cp plane (dense weights)
  ExpertDataParallel,  ///< edp (expert weights, split over ep)
};

/// The group of a parameter split over the mesh axes `split` (per
/// dimension, the axis names, as the manifest and moe.split record them).
ShardGroup optimizerShardGroup(const std::vector<std::vector<std::string>> &split);

/// How many ranks `group` has on `mesh` (1 for None).
int64_t shardGroupSize(ShardGroup group, const MeshShape &mesh);

/// The elements each of `ranks` ranks keeps of a block of `elements`: the
/// ceiling of the quotient, rounded up to 16 (64 bytes of fp32), so every
/// slice starts aligned. Rank r keeps [r * n, min((r + 1) * n, elements)),
/// which may be empty for the last ranks.
int64_t shardElements(int64_t elements, int64_t ranks);

/// The updated slices of a block are gathered in pieces: each rank sends up
/// to this many elements of its slice at a time and receives the group's
/// (ranks of them), so the scratch stays bounded by kGatherScratchBytes
/// whatever the size of the block (an embedding of 151,936 x 2,048 would
/// otherwise need 1.2 GiB).
inline constexpr uint64_t kGatherScratchBytes = uint64_t{64} << 20;

/// Under bf16 storage the optimizer reads the training step's bf16
/// gradients, widened to fp32 at most this many elements at a time (a
/// 64 MiB scratch), so no fp32 gradient blob is needed.
inline constexpr int64_t kGradChunkElements = int64_t{1} << 24;
int64_t gatherPieceElements(int64_t sliceElements, int64_t ranks,
                            uint64_t scratchBytes = kGatherScratchBytes);

/// One rank's block of a parameter, as the optimizer sees it.
struct ParamBlock {
  int64_t elements = 0;
  ShardGroup group = ShardGroup::DataParallel;
};

/// Where one block's moments lie in a rank's moment blob under ZeRO stage 1:
/// the block is cut into `slice`-element pieces over `ranks` ranks (1: the
/// block is whole here), this rank's piece at byte `offset`.
struct MomentSlot {
  int64_t ranks = 1;
  int64_t slice = 0;
  uint64_t offset = 0;
};

/// The slots of `params` (in weights-blob order) on `mesh` under ZeRO stage
/// 1, one after another; the blob's size is the last offset plus its slice.
std::vector<MomentSlot> momentSlots(const std::vector<ParamBlock> &params,
                                    const MeshShape &mesh);

/// What one rank's AdamW state takes for `params` (in weights-blob order)
/// on `mesh` under ZeRO stage `zeroStage` (0: every block whole).
struct MomentFootprint {
  /// One moment (m or v): the blocks 64-byte aligned (stage 0), or this
  /// rank's slices one after another (stage 1; shardElements each).
  uint64_t momentBytes = 0;
  /// Stage 1: the host scratch that gathers one block's updated slices
  /// over its group (one piece sent, the group's pieces received), the
  /// largest over the blocks; 0 at stage 0.
  uint64_t gatherBytes = 0;
};
MomentFootprint momentFootprint(const std::vector<ParamBlock> &params,
                                const MeshShape &mesh, int zeroStage);

} // namespace moe

#endif // MOE_SUPPORT_OPTIMIZERSHARDS_H
