//===- OptimizerShards.cpp - ZeRO stage 1: who keeps which AdamW slice ----===//

#include "moe/Support/OptimizerShards.h"

#include <algorithm>

namespace moe {

ShardGroup
optimizerShardGroup(const std::vector<std::vector<std::string>> &split) {
  bool experts = false;
  for (const std::vector<std::string> &axes : split)
    for (const std::string &axis : axes) {
      if (axis == "ep")
        experts = true;
      else if (axis != "tp")
        return ShardGroup::None; // its replicas are not a whole group
    }
  return experts ? ShardGroup::ExpertDataParallel : ShardGroup::DataParallel;
}

int64_t shardGroupSize(ShardGroup group, const MeshShape &mesh) {
  switch (group) {
  case ShardGroup::None:
    return 1;
  case ShardGroup::DataParallel:
    return mesh.dp * mesh.cp;
  case ShardGroup::ExpertDataParallel:
    return mesh.expertDataParallelSize();
  }
  return 1;
}

int64_t shardElements(int64_t elements, int64_t ranks) {
  int64_t each = (elements + ranks - 1) / ranks;
  return (each + 15) / 16 * 16;
}

int64_t gatherPieceElements(int64_t sliceElements, int64_t ranks,
                            uint64_t scratchBytes) {
  int64_t bound = static_cast<int64_t>(scratchBytes / 4) / (ranks + 1);
  return std::min(sliceElements, std::max<int64_t>(16, bound / 16 * 16));
}

std::vector<MomentSlot> momentSlots(const std::vector<ParamBlock> &params,
                                    const MeshShape &mesh) {
  std::vector<MomentSlot> slots;
  uint64_t offset = 0;
  for (const ParamBlock &p : params) {
    MomentSlot slot;
    slot.ranks = p.elements > 0 ? shardGroupSize(p.group, mesh) : 1;
    slot.slice = shardElements(p.elements, slot.ranks);
    slot.offset = offset;
    offset += static_cast<uint64_t>(slot.slice) * 4;
    slots.push_back(slot);
  }
  return slots;
}

MomentFootprint momentFootprint(const std::vector<ParamBlock> &params,
                                const MeshShape &mesh, int zeroStage) {
  MomentFootprint f;
  if (zeroStage == 0) {
    for (const ParamBlock &p : params)
      f.momentBytes += static_cast<uint64_t>(shardElements(p.elements, 1)) * 4;
    return f;
  }
  for (const MomentSlot &slot : momentSlots(params, mesh)) {
    f.momentBytes = slot.offset + static_cast<uint64_t>(slot.slice) * 4;
    if (slot.ranks > 1)
      f.gatherBytes = std::max(
          f.gatherBytes,
          static_cast<uint64_t>(gatherPieceElements(slot.slice, slot.ranks)) *
              4 * static_cast<uint64_t>(slot.ranks + 1));
  }
  return f;
}

} // namespace moe
