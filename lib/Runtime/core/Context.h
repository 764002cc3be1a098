//===- Context.h - The state behind moert_context ---------------*- C++ -*-===//

#ifndef MOE_RUNTIME_CORE_CONTEXT_H
#define MOE_RUNTIME_CORE_CONTEXT_H

#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/ModelABI.h"

#include <memory>
#include <string>

struct moert_context {
  /// The first error recorded since the last reset; empty when none.
  std::string error;
  bool failed = false;
  /// The rank's mesh-axis groups, owned by the caller (the driver); null in
  /// a 1-rank program, where every group is `self`.
  moe::rt::MeshGroups *groups = nullptr;
  /// A group of this rank alone, made on first use.
  std::unique_ptr<moe::rt::Communicator> self;
};

namespace moe::rt {

/// Runs compiled code of `ctx` with the mesh groups `groups` (may be null).
inline void setMeshGroups(moert_context *ctx, MeshGroups *groups) {
  ctx->groups = groups;
}

} // namespace moe::rt

#endif // MOE_RUNTIME_CORE_CONTEXT_H
