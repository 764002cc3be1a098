//===- BFloat16.h - bf16 storage on the host --------------------*- C++ -*-===//
//
// bf16 is the upper half of an IEEE fp32: 1 sign, 8 exponent and 7 mantissa
// bits. Widening is exact; narrowing rounds to nearest, ties to even (as
// __float2bfloat16_rn on the GPU and torch's .bfloat16()). Shared by bf16
// storage (the CPU backend, bf16 sums) and safetensors' BF16 tensors.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_BFLOAT16_H
#define MOE_RUNTIME_BFLOAT16_H

#include <cstdint>
#include <cstring>

namespace moe::rt {

/// bf16 bits -> fp32 (exact).
inline float bf16ToF32(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof f);
  return f;
}

/// fp32 -> bf16 bits, rounding to nearest with ties to even; infinities stay
/// infinite, values that round past the largest bf16 become infinite, and a
/// NaN stays a NaN (quieted, sign and upper payload kept).
inline uint16_t f32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

inline void widenBf16(const uint16_t *src, float *dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    dst[i] = bf16ToF32(src[i]);
}

inline void narrowToBf16(const float *src, uint16_t *dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    dst[i] = f32ToBf16(src[i]);
}

} // namespace moe::rt

#endif // MOE_RUNTIME_BFLOAT16_H
