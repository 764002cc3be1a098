//===- Sampling.cpp - Pick the next token from logits ---------------------===//

#include "driver/model/Sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::driver {

namespace {

void checkLogits(const float *logits, int64_t vocab) {
  for (int64_t i = 0; i < vocab; ++i)
    if (std::isnan(logits[i]) || logits[i] == INFINITY)
      throw std::runtime_error("cannot sample: the logit of token " +
                               std::to_string(i) + " is " +
                               (std::isnan(logits[i]) ? "NaN" : "+inf"));
}

// Uniform in [0, 1) from the top 53 bits of one draw.
double uniform(std::mt19937_64 &rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

} // namespace

int32_t argmax(const float *logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best])
      best = i;
  return static_cast<int32_t>(best);
}

int32_t sampleToken(const float *logits, int64_t vocab,
                    const SamplingOptions &options, std::mt19937_64 &rng) {
  checkLogits(logits, vocab);
  if (options.temperature == 0.0)
    return argmax(logits, vocab);

  std::vector<int32_t> candidates(static_cast<size_t>(vocab));
  std::iota(candidates.begin(), candidates.end(), 0);
  if (options.topK > 0 && options.topK < vocab) {
    auto higher = [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::partial_sort(candidates.begin(), candidates.begin() + options.topK,
                      candidates.end(), higher);
    candidates.resize(static_cast<size_t>(options.topK));
    std::sort(candidates.begin(), candidates.end());
  }

  float maxLogit = -INFINITY;
  for (int32_t id : candidates)
    maxLogit = std::max(maxLogit, logits[id]);
  if (maxLogit == -INFINITY) // Every candidate is impossible: stay defined.
    return candidates.front();
  std::vector<double> weights(candidates.size());
  double total = 0.0;
  for (size_t i = 0; i < candidates.size(); ++i)
    total += weights[i] = std::exp((double(logits[candidates[i]]) - maxLogit) /
                                   options.temperature);

  double target = uniform(rng) * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    cumulative += weights[i];
    if (target < cumulative)
      return candidates[i];
  }
  // Rounding left target >= the last sum: take the last possible candidate.
  for (size_t i = candidates.size(); i-- > 0;)
    if (weights[i] > 0.0)
      return candidates[i];
  return candidates.front();
}

} // namespace moe::driver
