//===- Shard.h - The block of a tensor one rank holds -----------*- C++ -*-===//
//
// A partitioned model records, for every weight, input and output, which mesh
// axes split each dimension (manifest "split"). The driver uses it to hand
// each rank its block of a checkpoint tensor or an input batch.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_SHARD_H
#define MOE_LIB_RUNTIME_DRIVER_SHARD_H

#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/ExpertPlacement.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moe::driver {

/// Per dimension, the mesh axes ("dp", "cp", "tp", "ep", "edp") the dimension
/// is split over, major first; an empty list is a whole dimension.
using Split = std::vector<std::vector<std::string>>;

/// The expert placement of every expert-parallel MoE layer, by layer.
using PlacementTables = std::vector<rt::ExpertPlacement>;

/// Where a rank sits on the mesh, for slicing, and which experts the slots
/// of its placed expert weights hold (the same tables on every rank).
struct RankPlace {
  MeshShape mesh;
  rt::MeshCoordinates coords;
  PlacementTables placements;
};

/// A box [start, start + size) per dimension.
struct Block {
  std::vector<int64_t> start, size;
};

/// Number of parts `axes` split a dimension into on `mesh`; throws
/// std::runtime_error on an unknown axis name.
int64_t splitParts(const std::vector<std::string> &axes,
                   const MeshShape &mesh);

/// The block of a tensor of `globalShape` that `place` holds under `split`
/// (the whole tensor when `place` is null).
Block shardBlock(const std::vector<int64_t> &globalShape, const Split &split,
                 const RankPlace *place);

/// dst (dense, the block's shape) = the block of src (dense, globalShape),
/// for elements of elemSize bytes.
void copyBlock(const void *src, const std::vector<int64_t> &globalShape,
               const Block &block, size_t elemSize, void *dst);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_SHARD_H
