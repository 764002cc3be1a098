//===- Shard.cpp - The block of a tensor one rank holds -------------------===//

#include "driver/model/Shard.h"

#include <cstring>
#include <stdexcept>

namespace moe::driver {

namespace {

/// (index of the rank on `axis`, size of `axis`).
std::pair<int64_t, int64_t> axisPlace(const std::string &axis,
                                      const RankPlace &place) {
  const rt::MeshCoordinates &c = place.coords;
  std::optional<MeshAxis> named = parseAxis(axis);
  if (!named)
    throw std::runtime_error("unknown mesh axis '" + axis + "'");
  int64_t size = place.mesh.size(*named);
  switch (*named) {
  case MeshAxis::DP:
    return {c.d, size};
  case MeshAxis::CP:
    return {c.c, size};
  case MeshAxis::TP:
    return {c.t, size};
  case MeshAxis::EP:
    return {c.ep.rank, size};
  case MeshAxis::EDP:
    return {c.edp.rank, size};
  }
  return {0, 1};
}

} // namespace

int64_t splitParts(const std::vector<std::string> &axes,
                   const MeshShape &mesh) {
  RankPlace place{mesh, {}};
  int64_t parts = 1;
  for (const std::string &axis : axes)
    parts *= axisPlace(axis, place).second;
  return parts;
}

Block shardBlock(const std::vector<int64_t> &globalShape, const Split &split,
                 const RankPlace *place) {
  Block block{std::vector<int64_t>(globalShape.size(), 0), globalShape};
  if (!place)
    return block;
  for (size_t d = 0; d < split.size() && d < globalShape.size(); ++d) {
    int64_t index = 0, parts = 1;
    for (const std::string &axis : split[d]) {
      auto [i, n] = axisPlace(axis, *place);
      index = index * n + i;
      parts *= n;
    }
    block.size[d] = globalShape[d] / parts;
    block.start[d] = index * block.size[d];
  }
  return block;
}

void copyBlock(const void *src, const std::vector<int64_t> &globalShape,
               const Block &block, size_t elemSize, void *dst) {
  size_t rank = globalShape.size();
  if (rank == 0) {
    std::memcpy(dst, src, elemSize);
    return;
  }
  // Copy contiguous rows of the last dimension, walking the others.
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < rank; ++d)
    rows *= block.size[d];
  size_t rowBytes = static_cast<size_t>(block.size[rank - 1]) * elemSize;
  std::vector<int64_t> index(rank, 0);
  auto *out = static_cast<char *>(dst);
  const auto *in = static_cast<const char *>(src);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t offset = 0;
    for (size_t d = 0; d < rank; ++d)
      offset = offset * globalShape[d] + block.start[d] + index[d];
    std::memcpy(out + r * rowBytes, in + offset * elemSize, rowBytes);
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < block.size[d])
        break;
      index[d] = 0;
    }
  }
}

} // namespace moe::driver
