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

/// How a rotary embedding differs from plain rotate-half RoPE (moe.rope's
/// attributes). YaRN context extension: frequencies blended between
/// f / factor and f by a ramp over the pair index from `low` to `high`, cos
/// and sin scaled by `scale`; factor 1 is plain RoPE. `interleaved`: the
/// input's pairs are (2i, 2i + 1), and the rotated pairs are written in
/// rotate-half order (i, i + headDim / 2), as DeepSeek's models do; the
/// inverse rotation reads rotate-half pairs and writes interleaved ones.
struct RopeVariant {
  double factor = 1.0, low = 0.0, high = 0.0, scale = 1.0;
  bool interleaved = false;
  bool plain() const { return factor == 1.0; }
};

/// The inverse frequency of pair `i` of a head of `headDim`.
inline float ropeInverseFrequency(int64_t i, int64_t headDim, double theta,
                                  const RopeVariant &variant = {}) {
  float posFreq = std::pow(float(theta), float(2 * i) / float(headDim));
  float extrapolated = 1.0f / posFreq;
  if (variant.plain())
    return extrapolated;
  float interpolated = 1.0f / (float(variant.factor) * posFreq);
  double high =
      variant.high == variant.low ? variant.high + 0.001 : variant.high;
  float ramp = (float(i) - float(variant.low)) / float(high - variant.low);
  ramp = std::min(1.0f, std::max(0.0f, ramp));
  float keep = 1.0f - ramp; // the share of the original frequency
  return interpolated * (1.0f - keep) + extrapolated * keep;
}

} // namespace moe

#endif // MOE_RUNTIME_ROPEFREQUENCIES_H
