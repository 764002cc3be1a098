//===- BFloat16.h - bf16 storage on the host --------------------*- C++ -*-===//
//
// bf16 is the upper half of an IEEE fp32: 1 sign, 8 exponent and 7 mantissa
// bits. Widening is exact; narrowing rounds to nearest, ties to even (as
// __float2bfloat16_rn on the GPU and torch's .bfloat16()), and keeps NaNs
// NaN.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_BFLOAT16_H
#define MOE_RUNTIME_BFLOAT16_H

#include <cstdint>
#include <cstring>

namespace moe::rt {

inline float bf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t floatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu))
    return static_cast<uint16_t>((bits >> 16) | 0x0040u); // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline void widenBf16(const uint16_t *src, float *dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    dst[i] = bf16ToFloat(src[i]);
}

inline void narrowToBf16(const float *src, uint16_t *dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    dst[i] = floatToBf16(src[i]);
}

} // namespace moe::rt

#endif // MOE_RUNTIME_BFLOAT16_H
