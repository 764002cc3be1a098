//===- Generation.h - Continuing a text token by token ----------*- C++ -*-===//
//
// With the compiled decode and prefill entries (moe-build-decode), a prompt
// is prefilled into the key/value cache in chunks and every new token is one
// decode call over the cache. Without them, every token is one full forward
// of the last seq tokens (nextToken).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_GENERATION_H
#define MOE_LIB_RUNTIME_DRIVER_GENERATION_H

#include "driver/model/Entries.h"
#include "driver/model/ModelRun.h"

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace moe::driver {

/// Feeds one sequence into the cache and continues it, in row 0 of the
/// decode batch (the other rows repeat it). When the cache is full, the
/// last half of the context is prefilled again at positions from 0 (a
/// sliding window, as the full forward's last seq tokens are).
class CachedGenerator {
public:
  CachedGenerator(const Manifest &m, ModelRunner &runner,
                  const Entries &entries);

  /// Whether the model has the entries this needs.
  static bool available(const Manifest &m, const Entries &entries) {
    return m.decode && m.prefill && entries.decode && entries.prefill;
  }
  /// Empties the cache and feeds `context` (1 to cacheLen tokens); returns
  /// the logits [vocab] after its last token.
  const float *start(const std::vector<int32_t> &context);
  /// Feeds `token` after the context; returns the logits after it.
  const float *next(int32_t token);
  /// Positions the cache holds.
  int64_t capacity() const { return decode_.cacheLen; }

private:
  const GenerationInfo &decode_, &prefill_;
  ModelRunner &runner_;
  GenerationEntry decodeEntry_, prefillEntry_;
  int64_t vocab_;
  /// The tokens in the cache, in order from position 0.
  std::vector<int32_t> context_;
};

/// Appends `count` tokens sampled after `context` to it, calling `emit`
/// with each as it comes: with CachedGenerator when the model has decode
/// entries, else one full forward a token.
void continueTokens(const Manifest &m, ModelRunner &runner,
                    const Entries &entries, std::vector<int32_t> &context,
                    int64_t count, const SamplingOptions &sampling,
                    std::mt19937_64 &rng,
                    const std::function<void(int32_t)> &emit);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_GENERATION_H
