//===- Entries.h - The compiled model's entry points ------------*- C++ -*-===//
//
// The signatures of the entry points moec compiles into an executable
// (include/moe/Runtime/ModelABI.h states their contract).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_ENTRIES_H
#define MOE_LIB_RUNTIME_DRIVER_ENTRIES_H

#include "moe/Runtime/ModelABI.h"

#include <cstdint>

namespace moe::driver {

/// The signature of moe_entry_forward (ModelABI.h).
using ForwardEntry = void (*)(moert_context *ctx, uint8_t *weights,
                              uint8_t *arena, const int32_t *tokens,
                              const int32_t *labels, float *logits,
                              float *loss);

/// The signature of moe_entry_train_step (ModelABI.h): `grads` is laid out
/// like `weights`; `loss` receives the global mean loss.
using TrainStepEntry = void (*)(moert_context *ctx, uint8_t *weights,
                                uint8_t *arena, uint8_t *grads,
                                const int32_t *tokens, const int32_t *labels,
                                float *loss);

/// The signature of moe_entry_eval_step (ModelABI.h): the forward's loss
/// alone, written to `loss`.
using EvalStepEntry = void (*)(moert_context *ctx, uint8_t *weights,
                               uint8_t *arena, const int32_t *tokens,
                               const int32_t *labels, float *loss);

/// The signature of moe_entry_decode and moe_entry_prefill (ModelABI.h):
/// new tokens of each sequence at their positions, against the key/value
/// cache blob `cache` the caller keeps between calls.
using GenerationEntry = void (*)(moert_context *ctx, uint8_t *weights,
                                 uint8_t *arena, uint8_t *cache,
                                 const int32_t *tokens,
                                 const int32_t *positions, float *logits);

/// The entry points of a model: all but the forward are null when the
/// model was compiled without them.
struct Entries {
  ForwardEntry forward = nullptr;
  TrainStepEntry trainStep = nullptr;
  EvalStepEntry evalStep = nullptr;
  GenerationEntry decode = nullptr;
  GenerationEntry prefill = nullptr;
};

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_ENTRIES_H
