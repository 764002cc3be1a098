//===- Context.h - The state behind moert_context ---------------*- C++ -*-===//

#ifndef MOE_RUNTIME_CORE_CONTEXT_H
#define MOE_RUNTIME_CORE_CONTEXT_H

#include "moe/Runtime/Backend.h"
#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/ModelABI.h"

#include <cstdint>
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
  /// A group of this rank alone, made on first use.
  std::unique_ptr<moe::rt::Communicator> self;
  /// Where the calls run (CPU unless the driver installs another); it also
  /// keeps the routing statistics of the calls (tokens per expert of every
  /// permute, slots dropped by every capacity drop) until they are taken.
  std::unique_ptr<moe::rt::Backend> backend;
};

namespace moe::rt {

/// Runs compiled code of `ctx` with the mesh groups `groups` (may be null).
inline void setMeshGroups(moert_context *ctx, MeshGroups *groups) {
  ctx->groups = groups;
}

/// Makes `ctx` run on `backend` (the context owns it from then on).
inline void setBackend(moert_context *ctx, std::unique_ptr<Backend> backend) {
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

inline void clearExpertCounts(moert_context *ctx) {
  ctx->backend->takeExpertCounts();
  ctx->backend->takeDroppedSlots();
}

} // namespace moe::rt

#endif // MOE_RUNTIME_CORE_CONTEXT_H
