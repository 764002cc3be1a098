//===- Placement.cpp - Expert placement in the driver ---------------------===//

#include "driver/model/Placement.h"

#include "driver/model/ModelRun.h"

#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

namespace moe::driver {

namespace {

/// Elements of one expert's slice of a stacked parameter.
int64_t sliceElements(const ParamInfo &param) {
  int64_t n = 1;
  for (size_t d = 1; d < param.shape.size(); ++d)
    n *= param.shape[d];
  return n;
}

const rt::ExpertPlacement &tableOf(const ParamInfo &param,
                                   const RankPlace &place) {
  size_t layer = static_cast<size_t>(*param.placement);
  if (layer >= place.placements.size())
    throw std::runtime_error("no expert placement for MoE layer " +
                             std::to_string(layer) + " (" + param.name + ")");
  return place.placements[layer];
}

/// The placed parameters of `m`, in manifest order.
std::vector<const ParamInfo *> placedParams(const Manifest &m) {
  std::vector<const ParamInfo *> placed;
  for (const ParamInfo &param : m.params)
    if (param.placement)
      placed.push_back(&param);
  return placed;
}

} // namespace

PlacementTables staticPlacements(const Manifest &m) {
  // Layer -> (experts, slots), agreed by all of the layer's weights.
  std::map<int64_t, std::pair<int64_t, int64_t>> layers;
  for (const ParamInfo &param : m.params) {
    if (!param.placement)
      continue;
    std::pair<int64_t, int64_t> shape{param.globalShape[0], param.shape[0]};
    auto [it, inserted] = layers.emplace(*param.placement, shape);
    if (!inserted && it->second != shape)
      throw std::runtime_error(
          "manifest: the expert weights of placement " +
          std::to_string(*param.placement) +
          " disagree on their experts or slots (" + param.name + ")");
  }
  PlacementTables tables;
  for (auto &[layer, shape] : layers) {
    if (layer != static_cast<int64_t>(tables.size()))
      throw std::runtime_error("manifest: expert placements are not numbered "
                               "0, 1, ...: placement " +
                               std::to_string(layer) + " follows " +
                               std::to_string(tables.size()));
    tables.push_back(
        rt::ExpertPlacement::staticSplit(shape.first, m.mesh.ep, shape.second));
  }
  return tables;
}

std::vector<int32_t> slotExperts(const ParamInfo &param,
                                 const RankPlace &place) {
  const rt::ExpertPlacement &table = tableOf(param, place);
  int64_t rank = place.coords.ep.rank;
  return std::vector<int32_t>(
      table.slotExperts().begin() + rank * table.slots(),
      table.slotExperts().begin() + (rank + 1) * table.slots());
}

std::vector<int64_t> slotHolders(const ParamInfo &param,
                                 const RankPlace &place) {
  const rt::ExpertPlacement &table = tableOf(param, place);
  // The ranks holding the same slice of a slot: expert tensor parallelism
  // gives each tp rank its own.
  int64_t copies = place.mesh.worldSize() / place.mesh.ep / place.mesh.etp;
  std::vector<int64_t> holders;
  for (int32_t e : slotExperts(param, place))
    holders.push_back(e < 0 ? 0 : table.numReplicas(e) * copies);
  return holders;
}

std::vector<Piece> localPieces(const ParamInfo &param, const RankPlace *place) {
  if (!param.placement || !place)
    return {Piece{shardBlock(param.globalShape, param.split, place), 0}};
  std::vector<Piece> pieces;
  std::vector<int32_t> experts = slotExperts(param, *place);
  for (size_t l = 0; l < experts.size(); ++l) {
    if (experts[l] < 0)
      continue;
    // The expert's row, and of it this rank's block of the other
    // dimensions (split over tp by expert tensor parallelism).
    Block block = shardBlock(param.globalShape, param.split, place);
    block.start[0] = experts[l];
    block.size[0] = 1;
    pieces.push_back(
        Piece{std::move(block), static_cast<int64_t>(l) * sliceElements(param)});
  }
  return pieces;
}

bool hasReplicas(const RankEnv &env) {
  if (!env.place)
    return false;
  for (const rt::ExpertPlacement &table : env.place->placements)
    if (table.hasReplicas())
      return true;
  return false;
}

bool maySpawnReplicas(const RankEnv &env) {
  if (!env.place)
    return false;
  for (const rt::ExpertPlacement &table : env.place->placements)
    if (table.ranks() * table.slots() > table.experts())
      return true;
  return false;
}

void reduceReplicaGrads(const Manifest &m, const RankEnv &env,
                        AlignedBuffer &grads) {
  const RankPlace *place = env.placePtr();
  if (!place || !env.groups)
    return;
  // Every replicated expert's slice of every placed weight, in a fixed
  // order: (weight, expert). Ranks without a replica add zeros.
  struct Entry {
    const ParamInfo *param;
    int64_t slot; ///< this rank's slot holding the expert, or -1
  };
  std::vector<Entry> entries;
  int64_t elements = 0;
  for (const ParamInfo *param : placedParams(m)) {
    const rt::ExpertPlacement &table = tableOf(*param, *place);
    if (!table.hasReplicas())
      continue;
    std::vector<int32_t> mine = slotExperts(*param, *place);
    for (int64_t e = 0; e < table.experts(); ++e) {
      if (table.numReplicas(e) < 2)
        continue;
      int64_t slot = -1;
      for (size_t l = 0; l < mine.size(); ++l)
        if (mine[l] == e)
          slot = static_cast<int64_t>(l);
      entries.push_back({param, slot});
      elements += sliceElements(*param);
    }
  }
  if (entries.empty())
    return;
  std::vector<float> sum(elements, 0.0f);
  int64_t at = 0;
  for (const Entry &entry : entries) {
    int64_t n = sliceElements(*entry.param);
    if (entry.slot >= 0)
      std::memcpy(sum.data() + at,
                  grads.f32(entry.param->offset) + entry.slot * n,
                  n * sizeof(float));
    at += n;
  }
  env.groups->ep->allReduceSum(sum.data(), elements, rt::CommDType::F32);
  at = 0;
  for (const Entry &entry : entries) {
    int64_t n = sliceElements(*entry.param);
    if (entry.slot >= 0)
      std::memcpy(grads.f32(entry.param->offset) + entry.slot * n,
                  sum.data() + at, n * sizeof(float));
    at += n;
  }
}

void movePlacedState(const Manifest &m, RankEnv &env,
                     const PlacementTables &next,
                     const std::vector<AlignedBuffer *> &buffers) {
  if (!env.place)
    return;
  RankPlace &place = *env.place;
  if (next.size() != place.placements.size())
    throw std::runtime_error("a new expert placement has " +
                             std::to_string(next.size()) +
                             " layers, the model " +
                             std::to_string(place.placements.size()));
  const int n = static_cast<int>(m.mesh.ep);
  const int me = place.coords.ep.rank;
  std::vector<const ParamInfo *> placed = placedParams(m);

  // A transfer fills new slot (dst rank, slot) of a layer with the expert
  // from the first rank that held it before; all ranks list the same ones.
  struct Transfer {
    int64_t layer, dstSlot, srcSlot;
    int src, dst;
  };
  std::vector<Transfer> transfers;
  for (size_t layer = 0; layer < next.size(); ++layer) {
    const rt::ExpertPlacement &from = place.placements[layer];
    const rt::ExpertPlacement &to = next[layer];
    if (to.experts() != from.experts() || to.ranks() != from.ranks() ||
        to.slots() != from.slots())
      throw std::runtime_error("a new expert placement of layer " +
                               std::to_string(layer) +
                               " has another shape than the model's");
    for (int dst = 0; dst < n; ++dst)
      for (int64_t l = 0; l < to.slots(); ++l) {
        int32_t e = to.expertAt(dst, l);
        if (e < 0)
          continue;
        // Kept on this rank when it held the expert already.
        int64_t source = from.replicasBegin(e)[0];
        for (const int64_t *g = from.replicasBegin(e),
                           *end = g + from.numReplicas(e);
             g != end; ++g)
          if (*g / from.slots() == dst)
            source = *g;
        transfers.push_back({static_cast<int64_t>(layer), l,
                             source % from.slots(),
                             static_cast<int>(source / from.slots()), dst});
      }
  }

  // The slices of one transfer, in (weight, buffer) order.
  auto forEachSlice = [&](const Transfer &t, auto &&fn) {
    for (const ParamInfo *param : placed) {
      if (*param->placement != t.layer)
        continue;
      int64_t elements = sliceElements(*param);
      for (AlignedBuffer *buffer : buffers)
        fn(buffer->f32(param->offset), elements);
    }
  };
  std::vector<std::vector<float>> send(n), recv(n);
  for (const Transfer &t : transfers) {
    if (t.src != me || t.dst == me)
      continue;
    forEachSlice(t, [&](float *base, int64_t elements) {
      const float *slice = base + t.srcSlot * elements;
      send[t.dst].insert(send[t.dst].end(), slice, slice + elements);
    });
  }
  std::vector<int64_t> sendCounts(n), sendOffsets(n), recvCounts(n, 0),
      recvOffsets(n);
  std::vector<float> sendBuffer;
  for (int j = 0; j < n; ++j) {
    sendOffsets[j] = static_cast<int64_t>(sendBuffer.size());
    sendCounts[j] = static_cast<int64_t>(send[j].size());
    sendBuffer.insert(sendBuffer.end(), send[j].begin(), send[j].end());
  }
  for (const Transfer &t : transfers)
    if (t.dst == me && t.src != me)
      forEachSlice(t, [&](float *, int64_t elements) {
        recvCounts[t.src] += elements;
      });
  int64_t received = 0;
  for (int j = 0; j < n; ++j) {
    recvOffsets[j] = received;
    received += recvCounts[j];
  }
  std::vector<float> recvBuffer(received);
  if (env.groups)
    env.groups->ep->allToAllV(sendBuffer.data(), sendCounts.data(),
                              sendOffsets.data(), recvBuffer.data(),
                              recvCounts.data(), recvOffsets.data(),
                              rt::CommDType::F32);

  // Rebuild this rank's slots: kept experts from the old slots, the others
  // from what arrived (in transfer order per source), empty slots zero.
  std::vector<std::vector<float>> old; // [placed weight][buffer]
  for (const ParamInfo *param : placed)
    for (AlignedBuffer *buffer : buffers)
      old.emplace_back(buffer->f32(param->offset),
                       buffer->f32(param->offset) + param->numElements());
  for (const ParamInfo *param : placed)
    for (AlignedBuffer *buffer : buffers)
      std::memset(buffer->f32(param->offset), 0, param->bytes());
  std::vector<int64_t> cursor = recvOffsets;
  for (const Transfer &t : transfers) {
    if (t.dst != me)
      continue;
    for (size_t i = 0; i < placed.size(); ++i) {
      const ParamInfo *param = placed[i];
      if (*param->placement != t.layer)
        continue;
      int64_t elements = sliceElements(*param);
      for (size_t k = 0; k < buffers.size(); ++k) {
        float *dst = buffers[k]->f32(param->offset) + t.dstSlot * elements;
        const float *src =
            t.src == me ? old[i * buffers.size() + k].data() +
                              t.srcSlot * elements
                        : recvBuffer.data() + cursor[t.src];
        std::memcpy(dst, src, elements * sizeof(float));
        if (t.src != me)
          cursor[t.src] += elements;
      }
    }
  }
  place.placements = next;
}

} // namespace moe::driver
