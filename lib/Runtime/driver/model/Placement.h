//===- Placement.h - Expert placement in the driver -------------*- C++ -*-===//
//
// A model compiled for expert parallelism keeps each MoE layer's expert
// weights in slots (ParamInfo::placement): rank j of an EP group holds, in
// slot l, the expert that the layer's ExpertPlacement names, or nothing. The
// driver keeps the tables in RankPlace::placements (the same on every rank),
// gives them to the runtime's dispatch, and everything that moves weights
// between files and ranks goes through localPieces: the pieces of the whole
// tensor a rank holds, one block for an ordinary parameter and one per
// occupied slot for a placed one.
//
// Training keeps replicas identical (reduceReplicaGrads sums their
// gradients before the update) and changes placement between steps
// (movePlacedState carries weights and AdamW moments along).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_PLACEMENT_H
#define MOE_LIB_RUNTIME_DRIVER_PLACEMENT_H

#include "driver/model/AlignedBuffer.h"
#include "driver/model/Manifest.h"

#include <cstdint>
#include <vector>

namespace moe::driver {

struct RankEnv;

/// The static split of every placed layer of `m` (empty when none); throws
/// std::runtime_error when the manifest's placed weights of a layer
/// disagree on experts or slots.
PlacementTables staticPlacements(const Manifest &m);

/// A piece of a parameter's whole tensor that a rank holds: `block`, at
/// element `offset` of the parameter's local buffer.
struct Piece {
  Block block;
  int64_t offset = 0;
};

/// The pieces of `param` that `place` holds (the whole tensor when `place`
/// is null). Empty slots of a placed weight are in no piece (their
/// elements are zero).
std::vector<Piece> localPieces(const ParamInfo &param, const RankPlace *place);

/// The expert slots of `param` on `place` (placed weights only): the
/// expert in each slot, -1 for an empty one.
std::vector<int32_t> slotExperts(const ParamInfo &param,
                                 const RankPlace &place);

/// How many ranks of the job hold the elements of each slot of placed
/// `param` (replicas x expert-data-parallel copies; 0 for an empty slot).
std::vector<int64_t> slotHolders(const ParamInfo &param,
                                 const RankPlace &place);

/// Sums, over the EP group, the gradients of every expert with more than
/// one replica, so that the replicas take the same update. Collective over
/// the EP group; a no-op without replicas.
void reduceReplicaGrads(const Manifest &m, const RankEnv &env,
                        AlignedBuffer &grads);

/// Whether any placement table of this rank has replicated experts.
bool hasReplicas(const RankEnv &env);

/// Whether some MoE layer has spare expert slots, where a re-placement may
/// put replicas (false without expert parallelism).
bool maySpawnReplicas(const RankEnv &env);

/// Installs `next` as the placement: every rank's slots take the weights
/// and AdamW moments (`buffers`, laid out like the weights) of the experts
/// `next` gives them, from the rank that held each before (a copy when it
/// was this rank). Collective over the EP group.
void movePlacedState(const Manifest &m, RankEnv &env,
                     const PlacementTables &next,
                     const std::vector<AlignedBuffer *> &buffers);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_PLACEMENT_H
