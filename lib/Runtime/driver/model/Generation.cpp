//===- Generation.cpp - Continuing a text token by token ------------------===//

#include "driver/model/Generation.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace moe::driver {

CachedGenerator::CachedGenerator(const Manifest &m, ModelRunner &runner,
                                 const Entries &entries)
    : decode_(*m.decode), prefill_(*m.prefill), runner_(runner),
      decodeEntry_(entries.decode), prefillEntry_(entries.prefill),
      vocab_(m.vocab) {}

const float *CachedGenerator::start(const std::vector<int32_t> &context) {
  int64_t len = static_cast<int64_t>(context.size());
  if (len < 1 || len > capacity())
    throw std::invalid_argument(
        "the context has " + std::to_string(len) +
        " tokens, but the key/value cache holds 1 to " +
        std::to_string(capacity()) +
        " (compile with moec --max-seq for a longer one)");
  context_ = context;
  // Chunks of prefill_.newTokens positions. A chunk's positions past the
  // context hold token 0: they write keys and values at positions the
  // context has not reached, which decode overwrites before any query can
  // see them (prefill's chunk divides the cache, so they stay inside it).
  int64_t chunk = prefill_.newTokens, rows = prefill_.sequences;
  std::vector<int32_t> tokens(rows * chunk), positions(rows * chunk);
  const float *logits = nullptr;
  for (int64_t first = 0; first < len; first += chunk) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t t = 0; t < chunk; ++t) {
        int64_t pos = first + t;
        tokens[r * chunk + t] = pos < len ? context[pos] : 0;
        positions[r * chunk + t] = static_cast<int32_t>(pos);
      }
    logits = runner_.generate(prefill_, prefillEntry_, tokens, positions);
  }
  // Row 0's logits at the context's last position.
  return logits + ((len - 1) % chunk) * vocab_;
}

const float *CachedGenerator::next(int32_t token) {
  if (static_cast<int64_t>(context_.size()) >= capacity()) {
    // Full: keep the last half and start again from position 0.
    std::vector<int32_t> window(context_.end() - capacity() / 2,
                                context_.end());
    window.push_back(token);
    return start(window);
  }
  int64_t rows = decode_.sequences;
  std::vector<int32_t> tokens(rows, token);
  std::vector<int32_t> positions(rows, static_cast<int32_t>(context_.size()));
  context_.push_back(token);
  return runner_.generate(decode_, decodeEntry_, tokens, positions);
}

void continueTokens(const Manifest &m, ModelRunner &runner,
                    const Entries &entries, std::vector<int32_t> &context,
                    int64_t count, const SamplingOptions &sampling,
                    std::mt19937_64 &rng,
                    const std::function<void(int32_t)> &emit) {
  if (count <= 0)
    return;
  if (!CachedGenerator::available(m, entries)) {
    for (int64_t i = 0; i < count; ++i) {
      context.push_back(nextToken(m, runner, context, sampling, rng));
      emit(context.back());
    }
    return;
  }
  CachedGenerator generator(m, runner, entries);
  // A context longer than the cache starts from its last positions, as the
  // full forward sees its last seq tokens.
  int64_t keep = std::min<int64_t>(context.size(), generator.capacity());
  const float *logits = generator.start(
      std::vector<int32_t>(context.end() - keep, context.end()));
  for (int64_t i = 0; i < count; ++i) {
    context.push_back(sampleToken(logits, m.vocab, sampling, rng));
    emit(context.back());
    if (i + 1 < count)
      logits = generator.next(context.back());
  }
}

} // namespace moe::driver
