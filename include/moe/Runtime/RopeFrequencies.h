//===- RopeFrequencies.h - RoPE frequencies, with YaRN ----------*- C++ -*-===//
//
// The inverse frequency of each rotated pair, shared by the CPU and CUDA
// kernels so that both compute the very same fp32 values, in the order of
// operations transformers uses (fp32 pow, then the reciprocal).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_ROPEFREQUENCIES_H
#define MOE_RUNTIME_ROPEFREQUENCIES_H

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace moe {

/// YaRN context extension (moe.rope's yarn_* attributes): frequencies
/// blended between f / factor and f by a ramp over the pair index from
/// `low` to `high`, cos and sin scaled by `scale`. factor 1 is plain RoPE.
struct RopeYarn {
  double factor = 1.0, low = 0.0, high = 0.0, scale = 1.0;
  bool plain() const { return factor == 1.0; }
};

/// The inverse frequency of pair `i` of a head of `headDim`.
inline float ropeInverseFrequency(int64_t i, int64_t headDim, double theta,
                                  const RopeYarn &yarn = {}) {
  float posFreq = std::pow(float(theta), float(2 * i) / float(headDim));
  float extrapolated = 1.0f / posFreq;
  if (yarn.plain())
    return extrapolated;
  float interpolated = 1.0f / (float(yarn.factor) * posFreq);
  double high = yarn.high == yarn.low ? yarn.high + 0.001 : yarn.high;
  float ramp = (float(i) - float(yarn.low)) / float(high - yarn.low);
  ramp = std::min(1.0f, std::max(0.0f, ramp));
  float keep = 1.0f - ramp; // the share of the original frequency
  return interpolated * (1.0f - keep) + extrapolated * keep;
}

} // namespace moe

#endif // MOE_RUNTIME_ROPEFREQUENCIES_H
