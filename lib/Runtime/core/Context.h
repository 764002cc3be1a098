//===- Context.h - The state behind moert_context ---------------*- C++ -*-===//

#ifndef MOE_RUNTIME_CORE_CONTEXT_H
#define MOE_RUNTIME_CORE_CONTEXT_H

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
  /// Tokens routed to each expert: one entry per moert_permute call (one per
  /// MoE layer and pass, in program order), indexed by global expert. Grows
  /// until the driver takes it (takeExpertCounts) or clears it.
  std::vector<std::vector<int64_t>> expertCounts;
  /// Token-slots dropped over capacity: one entry per
  /// moert_drop_over_capacity call, in program order; taken like the counts.
  std::vector<int64_t> droppedSlots;
};

namespace moe::rt {

/// Runs compiled code of `ctx` with the mesh groups `groups` (may be null).
inline void setMeshGroups(moert_context *ctx, MeshGroups *groups) {
  ctx->groups = groups;
}

/// The per-expert counts recorded since the last take or clear; leaves
/// none behind.
inline std::vector<std::vector<int64_t>> takeExpertCounts(moert_context *ctx) {
  std::vector<std::vector<int64_t>> counts;
  counts.swap(ctx->expertCounts);
  return counts;
}

/// The dropped-slot counts recorded since the last take or clear.
inline std::vector<int64_t> takeDroppedSlots(moert_context *ctx) {
  std::vector<int64_t> dropped;
  dropped.swap(ctx->droppedSlots);
  return dropped;
}

inline void clearExpertCounts(moert_context *ctx) {
  ctx->expertCounts.clear();
  ctx->droppedSlots.clear();
}

} // namespace moe::rt

#endif // MOE_RUNTIME_CORE_CONTEXT_H
