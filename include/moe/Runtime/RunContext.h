//===- RunContext.h - What a driver sets and reads in a context -*- C++ -*-===//
//
// The public face of `moert_context` (ModelABI.h; its state is private to
// lib/Runtime/core) for programs that run compiled models: which backend and
// which communicators the context's calls use, the expert placement and
// dispatch policy they follow, the tracer that records them, and the
// statistics they leave behind (tokens per expert, dropped slots, time per
// MoE layer).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_RUNCONTEXT_H
#define MOE_RUNTIME_RUNCONTEXT_H

#include "moe/Runtime/Backend.h"
#include "moe/Runtime/Communicator.h" // MeshGroups
#include "moe/Runtime/ExpertPlacement.h"
#include "moe/Runtime/ModelABI.h"
#include "moe/Runtime/Trace.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace moe::rt {

/// Runs compiled code of `ctx` with the mesh groups `groups` (may be null).
void setMeshGroups(moert_context *ctx, MeshGroups *groups);
/// Gives `ctx` mesh groups that work on its backend's device memory (may be
/// null: collectives of a device backend then stage through the host).
void setDeviceMeshGroups(moert_context *ctx, MeshGroups *groups);
/// Makes `ctx` run on `backend` (the context owns it from then on).
void setBackend(moert_context *ctx, std::unique_ptr<Backend> backend);
Backend &backendOf(moert_context *ctx);

/// Makes placement table `id` `placement` from the next call on.
void setExpertPlacement(moert_context *ctx, int64_t id,
                        ExpertPlacement placement);
void setDispatchPolicy(moert_context *ctx,
                       std::shared_ptr<DispatchPolicy> policy);
/// Records every runtime call in `tracer` from now on, or none (null).
void setTracer(moert_context *ctx, Tracer *tracer);

/// The per-expert counts recorded since the last take or clear; leaves
/// none behind.
std::vector<std::vector<int64_t>> takeExpertCounts(moert_context *ctx);
/// The dropped-slot counts recorded since the last take or clear.
std::vector<int64_t> takeDroppedSlots(moert_context *ctx);
void clearExpertCounts(moert_context *ctx);
/// The time per MoE layer recorded since the last take (resolving the
/// timings, so traced calls reach the tracer too).
std::vector<LayerStats> takeLayerStats(moert_context *ctx);

} // namespace moe::rt

#endif // MOE_RUNTIME_RUNCONTEXT_H
