//===- Context.h - The state behind moert_context ---------------*- C++ -*-===//

#ifndef MOE_RUNTIME_CORE_CONTEXT_H
#define MOE_RUNTIME_CORE_CONTEXT_H

#include "moe/Runtime/ModelABI.h"

#include <string>

struct moert_context {
  /// The first error recorded since the last reset; empty when none.
  std::string error;
  bool failed = false;
};

#endif // MOE_RUNTIME_CORE_CONTEXT_H
