//===- Context.h - The state behind moert_context ---------------*- C++ -*-===//

#ifndef MOE_RUNTIME_CORE_CONTEXT_H
#define MOE_RUNTIME_CORE_CONTEXT_H

#include "ScratchPool.h"
#include "moe/Runtime/Backend.h"
#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/ExpertPlacement.h"
#include "moe/Runtime/ModelABI.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>


struct moert_context {
  /// The first error recorded since the last reset; empty when none.
  std::string error;
  bool failed = false;
  /// The rank's mesh-axis groups, owned by the caller (the driver); null in
  /// a 1-rank program, where every group is `self`.
  moe::rt::MeshGroups *groups = nullptr;
  /// The same groups over communicators that work on the backend's device
  /// memory (NCCL), installed by the driver when it has them: collectives
  /// then run on the device buffers. Without them a device backend's
  /// collectives stage through host copies. Owned by the caller.
  moe::rt::MeshGroups *deviceGroups = nullptr;
  /// A group of this rank alone, made on first use.
  std::unique_ptr<moe::rt::Communicator> self;
  /// Where the calls run (CPU unless the driver installs another); it also
  /// keeps the routing statistics of the calls (tokens per expert of every
  /// permute, slots dropped by every capacity drop) until they are taken.
  std::unique_ptr<moe::rt::Backend> backend;
  /// The collectives' scratch blocks in the backend's memory, kept for
  /// reuse (made on first use; declared after `backend`, which it frees
  /// into, so destroyed before it).
  std::unique_ptr<moe::rt::ScratchPool> scratch;
  /// Expert placement tables by id (moe.dispatch's `placement`, the MoE
  /// layer), installed by the driver; a call whose table is not installed
  /// installs the static split. The policy splits rows over replicas.
  std::map<int64_t, moe::rt::ExpertPlacement> placements;
  std::shared_ptr<moe::rt::DispatchPolicy> dispatchPolicy;
  /// Statistics per placement id; expert compute counts toward the layer
  /// of the last dispatch or combine (-1 before any).
  std::vector<moe::rt::LayerStats> layerStats;
  int64_t currentLayer = -1;
};

namespace moe::rt {

/// Runs compiled code of `ctx` with the mesh groups `groups` (may be null).
inline void setMeshGroups(moert_context *ctx, MeshGroups *groups) {
  ctx->groups = groups;
}

/// Gives `ctx` mesh groups that work on its backend's device memory (may be
/// null: collectives of a device backend then stage through the host).
inline void setDeviceMeshGroups(moert_context *ctx, MeshGroups *groups) {
  ctx->deviceGroups = groups;
}

/// Makes `ctx` run on `backend` (the context owns it from then on).
inline void setBackend(moert_context *ctx, std::unique_ptr<Backend> backend) {
  ctx->scratch.reset();
  ctx->backend = std::move(backend);
}

inline Backend &backendOf(moert_context *ctx) { return *ctx->backend; }

/// The per-expert counts recorded since the last take or clear; leaves
/// none behind.
inline std::vector<std::vector<int64_t>> takeExpertCounts(moert_context *ctx) {
  return ctx->backend->takeExpertCounts();
}

/// The dropped-slot counts recorded since the last take or clear.
inline std::vector<int64_t> takeDroppedSlots(moert_context *ctx) {
  return ctx->backend->takeDroppedSlots();
}

/// The statistics of the layer of the last dispatch or combine, or null.
inline LayerStats *currentLayerStats(moert_context *ctx) {
  int64_t layer = ctx->currentLayer;
  if (layer < 0)
    return nullptr;
  if (ctx->layerStats.size() <= static_cast<size_t>(layer))
    ctx->layerStats.resize(layer + 1);
  return &ctx->layerStats[layer];
}

/// Adds the wall time of its scope to `field` of the current layer.
class LayerTimer {
public:
  LayerTimer(moert_context *ctx, double LayerStats::*field)
      : ctx(ctx), field(field), start(std::chrono::steady_clock::now()) {}
  ~LayerTimer() {
    if (LayerStats *stats = currentLayerStats(ctx))
      stats->*field += std::chrono::duration<double>(
                           std::chrono::steady_clock::now() - start)
                           .count();
  }
  LayerTimer(const LayerTimer &) = delete;
  LayerTimer &operator=(const LayerTimer &) = delete;

private:
  moert_context *ctx;
  double LayerStats::*field;
  std::chrono::steady_clock::time_point start;
};

/// Makes placement table `id` `placement` from the next call on.
inline void setExpertPlacement(moert_context *ctx, int64_t id,
                               ExpertPlacement placement) {
  ctx->placements[id] = std::move(placement);
}

inline void setDispatchPolicy(moert_context *ctx,
                              std::shared_ptr<DispatchPolicy> policy) {
  ctx->dispatchPolicy = std::move(policy);
}

/// The time per MoE layer recorded since the last take.
inline std::vector<LayerStats> takeLayerStats(moert_context *ctx) {
  std::vector<LayerStats> taken;
  taken.swap(ctx->layerStats);
  return taken;
}

inline void clearExpertCounts(moert_context *ctx) {
  ctx->backend->takeExpertCounts();
  ctx->backend->takeDroppedSlots();
}

} // namespace moe::rt

#endif // MOE_RUNTIME_CORE_CONTEXT_H
