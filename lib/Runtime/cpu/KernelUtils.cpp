//===- KernelUtils.cpp - Shared helpers of the CPU kernels ----------------===//

#include "KernelUtils.h"

#include "moe/Runtime/CpuKernels.h"

#include <algorithm>
#ifdef MOE_HAVE_OPENBLAS
#include <cblas.h>
#endif
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <vector>

namespace moe::cpu::detail {

void fail(const char *kernel, const std::string &message) {
  throw std::invalid_argument(std::string("moe::cpu::") + kernel + ": " +
                              message);
}

void checkSize(const char *kernel, const char *name, int64_t value,
               bool positive) {
  if (value < (positive ? 1 : 0))
    fail(kernel, std::string(name) + " must be " +
                     (positive ? "positive" : "non-negative") + ", got " +
                     std::to_string(value));
}

void checkId(const char *kernel, const char *what, int64_t id, int64_t bound,
             int64_t at) {
  if (id < 0 || id >= bound)
    fail(kernel, std::string(what) + " " + std::to_string(id) + " at index " +
                     std::to_string(at) + " is outside [0, " +
                     std::to_string(bound) + ")");
}

std::vector<int64_t> invertRowToSlot(const char *kernel,
                                     const int32_t *rowToSlot, int64_t slots) {
  std::vector<int64_t> slotToRow(slots, -1);
  for (int64_t r = 0; r < slots; ++r) {
    if (rowToSlot[r] == kDroppedSlot)
      continue;
    checkId(kernel, "slot", rowToSlot[r], slots, r);
    if (slotToRow[rowToSlot[r]] >= 0)
      fail(kernel, "slot " + std::to_string(rowToSlot[r]) +
                       " is held by rows " +
                       std::to_string(slotToRow[rowToSlot[r]]) + " and " +
                       std::to_string(r) + ": rowToSlot is not a permutation");
    slotToRow[rowToSlot[r]] = r;
  }
  return slotToRow;
}

int64_t checkSegments(const char *kernel, const int64_t *offsets,
                      int64_t segments, int64_t rows) {
  if (segments > 0 && offsets[0] != 0)
    fail(kernel, "offsets do not start at 0");
  int64_t maxRows = 0;
  for (int64_t g = 0; g < segments; ++g) {
    if (offsets[g + 1] < offsets[g])
      fail(kernel, "offsets decrease at segment " + std::to_string(g));
    maxRows = std::max(maxRows, offsets[g + 1] - offsets[g]);
  }
  if (offsets[segments] > rows)
    fail(kernel, "offsets end at row " + std::to_string(offsets[segments]) +
                     " past the " + std::to_string(rows) + " rows");
  return maxRows;
}

void gemmT(const char *kernel, bool transA, bool transB, int64_t m, int64_t n,
           int64_t k, float alpha, const float *a, int64_t lda, const float *b,
           int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m == 0 || n == 0)
    return;
  // OpenBLAS is built with 32-bit blasint on Debian.
  constexpr int64_t maxInt = std::numeric_limits<int>::max();
  for (int64_t v : {m, n, k, lda, ldb, ldc})
    if (v > maxInt)
      fail(kernel, "GEMM dimension " + std::to_string(v) +
                       " exceeds the BLAS integer range");
  if (k == 0) {
    // BLAS may reject k = 0 with lda = 0; the product is empty anyway.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
#ifdef MOE_HAVE_OPENBLAS
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
              transB ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), alpha,
              a, int(lda), b, int(ldb), beta, c, int(ldc));
#else
  // Without OpenBLAS (the runtime-only build on a machine that lacks it):
  // a plain loop, i-k-j order so the inner loop runs along rows of B and C.
  // Slow, but the CPU backend is then only the reference the GPU is checked
  // against.
  for (int64_t i = 0; i < m; ++i) {
    float *ci = c + i * ldc;
    for (int64_t j = 0; j < n; ++j)
      ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
    for (int64_t p = 0; p < k; ++p) {
      float aip = alpha * (transA ? a[p * lda + i] : a[i * lda + p]);
      if (transB)
        for (int64_t j = 0; j < n; ++j)
          ci[j] += aip * b[j * ldb + p];
      else
        for (int64_t j = 0; j < n; ++j)
          ci[j] += aip * b[p * ldb + j];
    }
  }
#endif
}

void rotateHalf(const char *kernel, const float *x, const int32_t *positions,
                int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
                double theta, const RopeVariant &variant, bool inverse,
                float *out) {
  checkSize(kernel, "batch", batch);
  checkSize(kernel, "seq", seq);
  checkSize(kernel, "heads", heads);
  checkSize(kernel, "headDim", headDim, /*positive=*/true);
  if (headDim % 2 != 0)
    fail(kernel, "headDim must be even, got " + std::to_string(headDim));
  if (!(theta > 0.0))
    fail(kernel, "theta must be positive, got " + std::to_string(theta));
  if (!(variant.factor >= 1.0) || !(variant.scale > 0.0) ||
      !(variant.low >= 0.0) || !(variant.high >= variant.low))
    fail(kernel, "YaRN needs factor >= 1, scale > 0 and 0 <= low <= high");
  int64_t half = headDim / 2;
  // HF computes inv_freq and the angles in fp32; so do we, to match it.
  std::vector<float> invFreq(half);
  for (int64_t i = 0; i < half; ++i)
    invFreq[i] = ropeInverseFrequency(i, headDim, theta, variant);
  float scale = float(variant.scale);
  std::vector<float> cosA(half), sinA(half);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t s = 0; s < seq; ++s) {
      float pos = positions ? float(positions[b * seq + s]) : float(s);
      for (int64_t i = 0; i < half; ++i) {
        float angle = pos * invFreq[i];
        cosA[i] = std::cos(angle);
        sinA[i] = inverse ? -std::sin(angle) : std::sin(angle);
        if (scale != 1.0f) { // YaRN scales cos and sin (in fp32, as HF)
          cosA[i] *= scale;
          sinA[i] *= scale;
        }
      }
      for (int64_t h = 0; h < heads; ++h) {
        int64_t base = ((b * seq + s) * heads + h) * headDim;
        const float *xv = x + base;
        float *ov = out + base;
        for (int64_t i = 0; i < half; ++i) {
          // Pair i: rotate-half positions, or interleaved ones on the side
          // the variant says (read forward, written by the inverse).
          int64_t loIn = i, hiIn = i + half, loOut = i, hiOut = i + half;
          if (variant.interleaved && !inverse)
            loIn = 2 * i, hiIn = 2 * i + 1;
          if (variant.interleaved && inverse)
            loOut = 2 * i, hiOut = 2 * i + 1;
          float lo = xv[loIn], hi = xv[hiIn];
          ov[loOut] = lo * cosA[i] - hi * sinA[i];
          ov[hiOut] = hi * cosA[i] + lo * sinA[i];
        }
      }
    }
  }
}

void swigluBlock(const char *kernel, const float *x, int64_t rows,
                 int64_t hidden, const float *gate, const float *up,
                 const float *down, int64_t inter, float *act, float *upOut,
                 float *out) {
  project(kernel, x, rows, hidden, gate, inter, act);
  project(kernel, x, rows, hidden, up, inter, upOut);
  siluMul(act, upOut, rows * inter);
  project(kernel, act, rows, inter, down, hidden, out);
}

void swigluRows(const char *kernel, const float *x, int64_t rows,
                int64_t hidden, const float *gate, const float *up,
                const float *down, int64_t inter, float *scratch, float *out) {
  float *act = scratch;
  float *upOut = scratch + swigluBlockRows(rows) * inter;
  for (int64_t b = 0, blocks = rowBlockCount(rows); b < blocks; ++b) {
    int64_t first = rowBlockBegin(rows, b);
    swigluBlock(kernel, x + first * hidden, rowBlockBegin(rows, b + 1) - first,
                hidden, gate, up, down, inter, act, upOut,
                out + first * hidden);
  }
}

namespace {

/// e^x, branch-free so that the loops calling it vectorise: Cephes' expf
/// (2^n times a degree-7 polynomial on [-ln2/2, ln2/2]), about 2 ulp; x is
/// clamped to [-87, 88], where 2^n stays a normal float.
inline float expVectorisable(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // Adding 1.5 * 2^23 rounds to an integer in the low mantissa bits.
  const float roundMagic = 12582912.0f;
  float n = (x * 1.44269504088896341f + roundMagic) - roundMagic;
  // r = x - n ln2, with ln2 split in two so that n * high part is exact.
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/// Scratch's per-thread memory.
struct ScratchArena {
  char *base = nullptr;
  size_t capacity = 0;
  bool open = false;
  ~ScratchArena() { ::operator delete(base, std::align_val_t(64)); }
};
thread_local ScratchArena scratchArena;

} // namespace

// One copy per instruction set, picked when the library loads: the runtime is
// built for baseline x86-64, where SSE2 would do 4 lanes instead of 16.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void siluMul(float *act, const float *up, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    act[i] = act[i] / (1.0f + expVectorisable(-act[i])) * up[i];
}

Scratch::Scratch(const char *kernel, size_t bytes)
    : kernel(kernel), size(bytes) {
  ScratchArena &arena = scratchArena;
  if (arena.open)
    throw std::logic_error(std::string("moe::cpu::") + kernel +
                           ": opens a Scratch while one is open");
  if (arena.capacity < bytes) {
    ::operator delete(arena.base, std::align_val_t(kAlign));
    arena.base = nullptr;
    arena.capacity = 0;
    arena.base =
        static_cast<char *>(::operator new(bytes, std::align_val_t(kAlign)));
    arena.capacity = bytes;
  }
  arena.open = true;
  base = arena.base;
}

Scratch::~Scratch() { scratchArena.open = false; }

void *Scratch::takeBytes(size_t bytes) {
  if (used + bytes > size)
    throw std::logic_error(std::string("moe::cpu::") + kernel +
                           ": takes more Scratch than it asked for");
  void *p = base + used;
  used += bytes;
  return p;
}

double logSumExp(const float *x, int64_t n) {
  float maxValue = *std::max_element(x, x + n);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i)
    sum += std::exp(double(x[i]) - maxValue);
  return maxValue + std::log(sum);
}

void softmaxRow(const float *x, int64_t n, float *out) {
  float maxValue = *std::max_element(x, x + n);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = std::exp(x[i] - maxValue);
    sum += out[i];
  }
  float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i)
    out[i] *= inv;
}

/// Backward of swigluRows for one weight set on `rows` contiguous rows
/// (at most kSwigluRowBlock: swigluRowsGrad below splits longer runs): dx is
/// overwritten; the weight gradients become weightBeta * themselves + these
/// rows' (0: overwrite, 1: accumulate). `scratch` holds 4 * rows * inter
/// floats.
void swigluBlockGrad(const char *kernel, const float *dy, const float *x,
                     int64_t rows, int64_t hidden, const float *gate,
                     const float *up, const float *down, int64_t inter,
                     float weightBeta, float *scratch, float *dx, float *dgate,
                     float *dup, float *ddown) {
  int64_t size = rows * inter;
  float *gateOut = scratch, *upOut = scratch + size;
  float *act = scratch + 2 * size, *dact = scratch + 3 * size;
  project(kernel, x, rows, hidden, gate, inter, gateOut);
  project(kernel, x, rows, hidden, up, inter, upOut);
  for (int64_t i = 0; i < size; ++i)
    act[i] = silu(gateOut[i]) * upOut[i];
  // ddown [hidden, inter] = dy^T @ act; dact = dy @ down.
  gemmT(kernel, /*transA=*/true, /*transB=*/false, hidden, inter, rows, 1.0f,
        dy, hidden, act, inter, weightBeta, ddown, inter);
  gemmT(kernel, false, false, rows, inter, hidden, 1.0f, dy, hidden, down,
        inter, 0.0f, dact, inter);
  // In place: act becomes d(up out), dact becomes d(gate out).
  for (int64_t i = 0; i < size; ++i) {
    float g = gateOut[i], s = sigmoid(g);
    act[i] = dact[i] * g * s;
    dact[i] = dact[i] * upOut[i] * s * (1.0f + g * (1.0f - s));
  }
  gemmT(kernel, true, false, inter, hidden, rows, 1.0f, dact, inter, x, hidden,
        weightBeta, dgate, hidden);
  gemmT(kernel, true, false, inter, hidden, rows, 1.0f, act, inter, x, hidden,
        weightBeta, dup, hidden);
  gemmT(kernel, false, false, rows, hidden, inter, 1.0f, dact, inter, gate,
        hidden, 0.0f, dx, hidden);
  gemmT(kernel, false, false, rows, hidden, inter, 1.0f, act, inter, up, hidden,
        1.0f, dx, hidden);
}

/// swigluBlockGrad over any number of rows, kSwigluRowBlock at a time (the
/// weight gradients accumulate over the blocks). `scratch` holds
/// 4 * swigluBlockRows(rows) * inter floats.
void swigluRowsGrad(const char *kernel, const float *dy, const float *x,
                    int64_t rows, int64_t hidden, const float *gate,
                    const float *up, const float *down, int64_t inter,
                    float weightBeta, float *scratch, float *dx, float *dgate,
                    float *dup, float *ddown) {
  for (int64_t first = 0; first < rows; first += kSwigluRowBlock) {
    int64_t at = first * hidden;
    swigluBlockGrad(kernel, dy + at, x + at, swigluBlockRows(rows - first),
                    hidden, gate, up, down, inter,
                    first == 0 ? weightBeta : 1.0f, scratch, dx + at, dgate,
                    dup, ddown);
  }
}

} // namespace moe::cpu::detail
