//===- Context.cpp - What a driver sets and reads in a context ------------===//
//
// The functions of include/moe/Runtime/RunContext.h on the context's state
// (Context.h).
//
//===----------------------------------------------------------------------===//

#include "Context.h"

namespace moe::rt {

void setMeshGroups(moert_context *ctx, MeshGroups *groups) {
  ctx->groups = groups;
}

void setDeviceMeshGroups(moert_context *ctx, MeshGroups *groups) {
  ctx->deviceGroups = groups;
}

void setBackend(moert_context *ctx, std::unique_ptr<Backend> backend) {
  ctx->scratch.reset(); // its blocks belong to the old backend
  ctx->backend = std::move(backend);
}

Backend &backendOf(moert_context *ctx) { return *ctx->backend; }

void setExpertPlacement(moert_context *ctx, int64_t id,
                        ExpertPlacement placement) {
  ctx->placements[id] = std::move(placement);
}

void setDispatchPolicy(moert_context *ctx,
                       std::shared_ptr<DispatchPolicy> policy) {
  ctx->dispatchPolicy = std::move(policy);
}

void setTracer(moert_context *ctx, Tracer *tracer) {
  resolveTimings(ctx);
  ctx->tracer = tracer;
}

std::vector<std::vector<int64_t>> takeExpertCounts(moert_context *ctx) {
  return ctx->backend->takeExpertCounts();
}

std::vector<int64_t> takeDroppedSlots(moert_context *ctx) {
  return ctx->backend->takeDroppedSlots();
}

void clearExpertCounts(moert_context *ctx) {
  ctx->backend->takeExpertCounts();
  ctx->backend->takeDroppedSlots();
}

std::vector<LayerStats> takeLayerStats(moert_context *ctx) {
  resolveTimings(ctx);
  std::vector<LayerStats> taken;
  taken.swap(ctx->layerStats);
  return taken;
}

} // namespace moe::rt
