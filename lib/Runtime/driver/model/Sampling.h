//===- Sampling.h - Pick the next token from logits -------------*- C++ -*-===//
//
// Temperature 0 is greedy (argmax, ties to the lower id). Otherwise the
// candidates (all ids, or the top k by logit, ties to the lower id) are drawn
// from softmax(logits / T), computed in double, by inverting the cumulative
// distribution at one uniform draw from the generator. The draw is our own
// (the top 53 bits of one mt19937_64 output) rather than a std distribution,
// whose algorithm the standard leaves to each library: the same seed gives
// the same text everywhere.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_SAMPLING_H
#define MOE_LIB_RUNTIME_DRIVER_SAMPLING_H

#include <cstdint>
#include <random>

namespace moe::driver {

struct SamplingOptions {
  double temperature = 1.0; ///< >= 0; 0 is greedy.
  int64_t topK = 0;         ///< 0 or >= vocab: every id is a candidate.
};

/// The id of the largest logit, the lowest id among equals.
int32_t argmax(const float *logits, int64_t vocab);

/// Draws the next token; throws std::runtime_error when a logit is NaN or
/// +inf (-inf is a token that can never be drawn).
int32_t sampleToken(const float *logits, int64_t vocab,
                    const SamplingOptions &options, std::mt19937_64 &rng);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_SAMPLING_H
