//===- LossKernels.cu - Cross-entropy and router losses, and gradients ----===//
//
// The CUDA twins of the losses of lib/Runtime/cpu/LossKernels.cpp and their
// gradients,
// formula for formula. Every row (a token's logits) is one block: the
// row's max in fp32 and its sum of exponentials in double (the CPU's
// logSumExp), block reductions from DeviceMath.cuh. Scalar losses are
// reduced deterministically: per-row values go to scratch, then one block
// sums them in double in a fixed order and writes the float result. The
// aux loss's per-expert mean scores are a two-stage column sum over tokens
// in double; its routing counts are integer atomics (exact, so
// deterministic).
//
// Ids the CPU rejects with an exception cannot throw on the device: a label
// outside [0, vocab) that is not ignoreIndex is treated as ignored (neither
// counted in the mean nor given a gradient), and an expert id outside
// [0, experts) in the aux loss's indices is not counted in any f_e (the
// denominator tokens * topK stays as it is).
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"
#include "CudaKernels.h"
#include "DeviceMath.cuh"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace moe::cuda {

namespace {

constexpr unsigned kFinishThreads = 1024;

/// Blocks of a one-block-per-row loop (grid-stride beyond the cap).
unsigned rowGrid(int64_t rows) {
  return static_cast<unsigned>(std::clamp<int64_t>(rows, 1, int64_t(1) << 20));
}

/// Threads of a block owning a row of `length`: a multiple of 32 (the block
/// reductions need it), no more than 256, no more than the row needs.
unsigned rowThreads(int64_t length) {
  int64_t warps = std::clamp<int64_t>((length + 31) / 32, 1, 8);
  return static_cast<unsigned>(warps * 32);
}

/// The CPU's logSumExp of one row by the whole block (every thread gets it):
/// the max in fp32, sum of exp(x - max) in double, max + log(sum).
template <typename T>
__device__ double rowLogSumExp(const T *row, int64_t n, float *sharedF,
                               double *sharedD) {
  float maxValue = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    maxValue = fmaxf(maxValue, toF32(row[i]));
  maxValue = blockMax(maxValue, sharedF);
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    sum += exp(double(toF32(row[i])) - double(maxValue));
  sum = blockSum(sum, sharedD);
  return double(maxValue) + log(sum);
}

/// Whether row t's label counts: not ignoreIndex and inside [0, vocab).
__device__ __forceinline__ bool labelCounts(int32_t label, int64_t ignoreIndex,
                                            int64_t vocab) {
  return int64_t(label) != ignoreIndex && label >= 0 && label < vocab;
}

__global__ void writeScalarKernel(float *out, float value) { *out = value; }

//===----------------------------------------------------------------------===//
// Cross-entropy
//===----------------------------------------------------------------------===//

/// One block per row: rowLoss[t] = logsumexp(row) - row[label] (0 on an
/// ignored row), rowCounted[t] = whether the label counts.
template <typename T>
__global__ void crossEntropyRowsKernel(const T *logits, const int32_t *labels,
                                       int64_t n, int64_t vocab,
                                       int64_t ignoreIndex, double *rowLoss,
                                       long long *rowCounted) {
  __shared__ float sharedF[32];
  __shared__ double sharedD[32];
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    int32_t label = labels[t];
    if (!labelCounts(label, ignoreIndex, vocab)) { // uniform in the block
      if (threadIdx.x == 0) {
        rowLoss[t] = 0.0;
        rowCounted[t] = 0;
      }
      continue;
    }
    const T *row = logits + t * vocab;
    double lse = rowLogSumExp(row, vocab, sharedF, sharedD);
    if (threadIdx.x == 0) {
      rowLoss[t] = lse - double(toF32(row[label]));
      rowCounted[t] = 1;
    }
  }
}

/// One block: *out = float(sum rowLoss / divisor), with divisor *count when
/// given, else sum rowCounted; 0 when nothing counts (the CPU's value).
__global__ void crossEntropyFinishKernel(const double *rowLoss,
                                         const long long *rowCounted, int64_t n,
                                         const float *count, float *out) {
  __shared__ double sharedD[32];
  __shared__ long long sharedI[32];
  double total = 0.0;
  long long counted = 0;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x) {
    total += rowLoss[t];
    counted += rowCounted[t];
  }
  total = blockSum(total, sharedD);
  counted = blockSum(counted, sharedI);
  if (threadIdx.x == 0) {
    double divisor = count ? double(*count) : double(counted);
    *out = divisor > 0.0 ? float(total / divisor) : 0.0f;
  }
}

/// One block: *out = the number of labels != ignoreIndex, as a float.
__global__ void labelCountKernel(const int32_t *labels, int64_t n,
                                 int64_t ignoreIndex, float *out) {
  __shared__ long long shared[32];
  long long count = 0;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x)
    count += int64_t(labels[t]) != ignoreIndex ? 1 : 0;
  count = blockSum(count, shared);
  if (threadIdx.x == 0)
    *out = float(count);
}

/// One block: *counted = the number of rows whose label counts.
__global__ void countLabelsKernel(const int32_t *labels, int64_t n,
                                  int64_t vocab, int64_t ignoreIndex,
                                  long long *counted) {
  __shared__ long long shared[32];
  long long count = 0;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x)
    count += labelCounts(labels[t], ignoreIndex, vocab) ? 1 : 0;
  count = blockSum(count, shared);
  if (threadIdx.x == 0)
    *counted = count;
}

/// One block per row: (softmax - onehot) / divisor (*count when given, else
/// *counted), zeros on ignored rows.
template <typename T>
__global__ void crossEntropyGradKernel(const T *logits, const int32_t *labels,
                                       int64_t n, int64_t vocab,
                                       int64_t ignoreIndex,
                                       const long long *counted,
                                       const float *count, T *dlogits) {
  __shared__ float sharedF[32];
  __shared__ double sharedD[32];
  double divisor = count ? double(*count) : double(*counted);
  double inv = divisor > 0.0 ? 1.0 / divisor : 0.0;
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    int32_t label = labels[t];
    T *out = dlogits + t * vocab;
    if (!labelCounts(label, ignoreIndex, vocab)) { // uniform in the block
      for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
        out[i] = fromF32<T>(0.0f);
      continue;
    }
    const T *row = logits + t * vocab;
    double lse = rowLogSumExp(row, vocab, sharedF, sharedD);
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      double p = exp(double(toF32(row[i])) - lse);
      out[i] = fromF32<T>(float((i == label ? p - 1.0 : p) * inv));
    }
  }
}

//===----------------------------------------------------------------------===//
// Router losses
//===----------------------------------------------------------------------===//

/// counts[e] += 1 for every valid expert id (atomics on integers: exact).
__global__ void countExpertsKernel(const int32_t *indices, int64_t slots,
                                   int64_t experts,
                                   unsigned long long *counts) {
  for (int64_t s = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; s < slots;
       s += int64_t(gridDim.x) * blockDim.x) {
    int32_t e = indices[s];
    if (e >= 0 && e < experts)
      atomicAdd(counts + e, 1ull);
  }
}

void countExperts(Device &dev, const int32_t *indices, int64_t slots,
                  int64_t experts, unsigned long long *counts) {
  check(cudaMemsetAsync(counts, 0, size_t(experts) * sizeof(*counts),
                        dev.stream()),
        "cudaMemsetAsync (expert counts)");
  if (slots == 0)
    return;
  int64_t cap = std::max<int64_t>(1, int64_t(dev.smCount()) * 8);
  unsigned grid =
      static_cast<unsigned>(std::min<int64_t>(gridFor(slots, 256), cap));
  countExpertsKernel<<<grid, 256, 0, dev.stream()>>>(indices, slots, experts,
                                                     counts);
  checkLaunch("countExpertsKernel");
}

/// One block per token: the token's scores as auxLoss averages them, in
/// double: softmax (the CPU's softmaxRow: fp32 exp(x - max) times the fp32
/// inverse of their double sum) or sigmoids divided by their double sum.
template <typename T>
__global__ void auxScoresKernel(const T *logits, int64_t tokens,
                                int64_t experts, bool sigmoid, double *scores) {
  __shared__ float sharedF[32];
  __shared__ double sharedD[32];
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const T *row = logits + t * experts;
    double *out = scores + t * experts;
    if (sigmoid) {
      double sum = 0.0;
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
        sum += sigmoidExact(toF32(row[e]));
      sum = blockSum(sum, sharedD);
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
        out[e] = sigmoidExact(toF32(row[e])) / sum;
    } else {
      float maxValue = -INFINITY;
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
        maxValue = fmaxf(maxValue, toF32(row[e]));
      maxValue = blockMax(maxValue, sharedF);
      double sum = 0.0;
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
        sum += expf(toF32(row[e]) - maxValue);
      sum = blockSum(sum, sharedD);
      float inv = float(1.0 / sum);
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
        out[e] = __fmul_rn(expf(toF32(row[e]) - maxValue), inv);
    }
  }
}

/// Rows per chunk of the scores' column sum: at least 64, at most 4096
/// chunks (gridDim.y).
int64_t chunkRows(int64_t rows) {
  return std::max<int64_t>(64, (rows + 4095) / 4096);
}
int64_t chunkCount(int64_t rows) {
  return (rows + chunkRows(rows) - 1) / chunkRows(rows);
}

/// partial[c, e] = sum over the tokens of chunk c (ascending) of scores[t,
/// e]; grid (expert blocks, chunks), a thread per expert.
__global__ void scorePartialsKernel(const double *scores, int64_t tokens,
                                    int64_t experts, int64_t rowsPerChunk,
                                    double *partial) {
  int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= experts)
    return;
  int64_t first = blockIdx.y * rowsPerChunk;
  int64_t last = first + rowsPerChunk < tokens ? first + rowsPerChunk : tokens;
  double sum = 0.0;
  for (int64_t t = first; t < last; ++t)
    sum += scores[t * experts + e];
  partial[blockIdx.y * experts + e] = sum;
}

/// One block: meanScore_e = sum of the chunks (ascending) / tokens, then
/// *out = coefficient * E * sum_e f_e * meanScore_e.
__global__ void auxFinishKernel(const double *partial, int64_t chunks,
                                const unsigned long long *counts,
                                int64_t tokens, int64_t experts, int64_t topK,
                                float coefficient, float *out) {
  __shared__ double shared[32];
  double dot = 0.0;
  for (int64_t e = threadIdx.x; e < experts; e += blockDim.x) {
    double meanScore = 0.0;
    for (int64_t c = 0; c < chunks; ++c)
      meanScore += partial[c * experts + e];
    dot += double(counts[e]) / double(tokens * topK) *
           (meanScore / double(tokens));
  }
  dot = blockSum(dot, shared);
  if (threadIdx.x == 0)
    *out = float(double(coefficient) * double(experts) * dot);
}

/// One block per token: the aux loss's dlogits (CPU auxLossGrad), with
/// dp_e = c E f_e / T from the counts; scores recomputed in double.
template <typename T>
__global__ void
auxLossGradKernel(const T *logits, int64_t tokens, int64_t experts,
                  int64_t topK, bool sigmoid, float coefficient,
                  const unsigned long long *counts, T *dlogits) {
  __shared__ float sharedF[32];
  __shared__ double sharedD[32];
  auto dp = [&](int64_t e) {
    return double(coefficient) * double(experts) * double(counts[e]) /
           double(tokens * topK) / double(tokens);
  };
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const T *row = logits + t * experts;
    T *out = dlogits + t * experts;
    auto x = [&](int64_t e) { return double(toF32(row[e])); };
    if (sigmoid) {
      // p_e = sigma_e / S: d / d sigma_e = (dp_e - sum_f dp_f p_f) / S.
      double sum = 0.0;
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
        sum += 1.0 / (1.0 + exp(-x(e)));
      sum = blockSum(sum, sharedD);
      double inner = 0.0;
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
        inner += dp(e) * (1.0 / (1.0 + exp(-x(e)))) / sum;
      inner = blockSum(inner, sharedD);
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x) {
        double score = 1.0 / (1.0 + exp(-x(e)));
        out[e] =
            fromF32<T>(float((dp(e) - inner) / sum * score * (1.0 - score)));
      }
    } else {
      double lse = rowLogSumExp(row, experts, sharedF, sharedD);
      double inner = 0.0;
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
        inner += dp(e) * exp(x(e) - lse);
      inner = blockSum(inner, sharedD);
      for (int64_t e = threadIdx.x; e < experts; e += blockDim.x) {
        double score = exp(x(e) - lse);
        out[e] = fromF32<T>(float(score * (dp(e) - inner)));
      }
    }
  }
}

/// One block per token: rowValue[t] = logsumexp(row)^2.
template <typename T>
__global__ void zLossRowsKernel(const T *logits, int64_t tokens,
                                int64_t experts, double *rowValue) {
  __shared__ float sharedF[32];
  __shared__ double sharedD[32];
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    double lse = rowLogSumExp(logits + t * experts, experts, sharedF, sharedD);
    if (threadIdx.x == 0)
      rowValue[t] = lse * lse;
  }
}

/// One block: *out = float(coefficient * sum rowValue / tokens).
__global__ void zLossFinishKernel(const double *rowValue, int64_t tokens,
                                  float coefficient, float *out) {
  __shared__ double shared[32];
  double total = 0.0;
  for (int64_t t = threadIdx.x; t < tokens; t += blockDim.x)
    total += rowValue[t];
  total = blockSum(total, shared);
  if (threadIdx.x == 0)
    *out = float(double(coefficient) * total / double(tokens));
}

/// One block per token: dlogits = factor * lse * softmax, factor = 2 c / T.
template <typename T>
__global__ void zLossGradKernel(const T *logits, int64_t tokens,
                                int64_t experts, double factor, T *dlogits) {
  __shared__ float sharedF[32];
  __shared__ double sharedD[32];
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const T *row = logits + t * experts;
    double lse = rowLogSumExp(row, experts, sharedF, sharedD);
    for (int64_t e = threadIdx.x; e < experts; e += blockDim.x)
      dlogits[t * experts + e] =
          fromF32<T>(float(factor * lse * exp(double(toF32(row[e])) - lse)));
  }
}

void writeScalar(Device &dev, float *out, float value) {
  writeScalarKernel<<<1, 1, 0, dev.stream()>>>(out, value);
  checkLaunch("writeScalarKernel");
}

} // namespace

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

template <typename T>
void crossEntropy(Device &dev, const T *logits, const int32_t *labels,
                  int64_t n, int64_t vocab, int64_t ignoreIndex,
                  const float *count, float *out) {
  const char *kernel = "crossEntropy";
  checkSize(kernel, "n", n);
  checkSize(kernel, "vocab", vocab, /*positive=*/true);
  using Carver = ScratchCarver;
  Carver carve(
      dev.scratch(Carver::bytes<double>(n) + Carver::bytes<long long>(n)));
  double *rowLoss = carve.take<double>(n);
  long long *rowCounted = carve.take<long long>(n);
  if (n > 0) {
    crossEntropyRowsKernel<<<rowGrid(n), rowThreads(vocab), 0, dev.stream()>>>(
        logits, labels, n, vocab, ignoreIndex, rowLoss, rowCounted);
    checkLaunch("crossEntropyRowsKernel");
  }
  crossEntropyFinishKernel<<<1, kFinishThreads, 0, dev.stream()>>>(
      rowLoss, rowCounted, n, count, out);
  checkLaunch("crossEntropyFinishKernel");
}

void labelCount(Device &dev, const int32_t *labels, int64_t n,
                int64_t ignoreIndex, float *out) {
  checkSize("labelCount", "n", n);
  labelCountKernel<<<1, kFinishThreads, 0, dev.stream()>>>(labels, n,
                                                           ignoreIndex, out);
  checkLaunch("labelCountKernel");
}

template <typename T>
void auxLoss(Device &dev, const T *logits, const int32_t *indices,
             int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
             float coefficient, float *out) {
  const char *kernel = "auxLoss";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  if (tokens == 0) {
    writeScalar(dev, out, 0.0f);
    return;
  }
  int64_t chunks = chunkCount(tokens);
  using Carver = ScratchCarver;
  Carver carve(dev.scratch(Carver::bytes<double>(tokens * experts) +
                           Carver::bytes<double>(chunks * experts) +
                           Carver::bytes<unsigned long long>(experts)));
  double *scores = carve.take<double>(tokens * experts);
  double *partial = carve.take<double>(chunks * experts);
  auto *counts = carve.take<unsigned long long>(experts);
  auxScoresKernel<<<rowGrid(tokens), rowThreads(experts), 0, dev.stream()>>>(
      logits, tokens, experts, sigmoid, scores);
  checkLaunch("auxScoresKernel");
  dim3 grid(gridFor(experts, 256), static_cast<unsigned>(chunks));
  scorePartialsKernel<<<grid, 256, 0, dev.stream()>>>(
      scores, tokens, experts, chunkRows(tokens), partial);
  checkLaunch("scorePartialsKernel");
  countExperts(dev, indices, tokens * topK, experts, counts);
  auxFinishKernel<<<1, kFinishThreads, 0, dev.stream()>>>(
      partial, chunks, counts, tokens, experts, topK, coefficient, out);
  checkLaunch("auxFinishKernel");
}

template <typename T>
void zLoss(Device &dev, const T *logits, int64_t tokens, int64_t experts,
           float coefficient, float *out) {
  const char *kernel = "zLoss";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  if (tokens == 0) {
    writeScalar(dev, out, 0.0f);
    return;
  }
  double *rowValue =
      static_cast<double *>(dev.scratch(ScratchCarver::bytes<double>(tokens)));
  zLossRowsKernel<<<rowGrid(tokens), rowThreads(experts), 0, dev.stream()>>>(
      logits, tokens, experts, rowValue);
  checkLaunch("zLossRowsKernel");
  zLossFinishKernel<<<1, kFinishThreads, 0, dev.stream()>>>(rowValue, tokens,
                                                            coefficient, out);
  checkLaunch("zLossFinishKernel");
}

//===----------------------------------------------------------------------===//
// Loss gradients (d loss = 1)
//===----------------------------------------------------------------------===//

template <typename T>
void crossEntropyGrad(Device &dev, const T *logits, const int32_t *labels,
                      int64_t n, int64_t vocab, int64_t ignoreIndex,
                      const float *count, T *dlogits) {
  const char *kernel = "crossEntropyGrad";
  checkSize(kernel, "n", n);
  checkSize(kernel, "vocab", vocab, /*positive=*/true);
  if (n == 0)
    return;
  auto *counted =
      static_cast<long long *>(dev.scratch(ScratchCarver::bytes<long long>(1)));
  countLabelsKernel<<<1, kFinishThreads, 0, dev.stream()>>>(
      labels, n, vocab, ignoreIndex, counted);
  checkLaunch("countLabelsKernel");
  crossEntropyGradKernel<<<rowGrid(n), rowThreads(vocab), 0, dev.stream()>>>(
      logits, labels, n, vocab, ignoreIndex, counted, count, dlogits);
  checkLaunch("crossEntropyGradKernel");
}

template <typename T>
void auxLossGrad(Device &dev, const T *logits, const int32_t *indices,
                 int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
                 float coefficient, T *dlogits) {
  const char *kernel = "auxLossGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  if (tokens == 0)
    return;
  auto *counts = static_cast<unsigned long long *>(
      dev.scratch(ScratchCarver::bytes<unsigned long long>(experts)));
  countExperts(dev, indices, tokens * topK, experts, counts);
  auxLossGradKernel<<<rowGrid(tokens), rowThreads(experts), 0, dev.stream()>>>(
      logits, tokens, experts, topK, sigmoid, coefficient, counts, dlogits);
  checkLaunch("auxLossGradKernel");
}

template <typename T>
void zLossGrad(Device &dev, const T *logits, int64_t tokens, int64_t experts,
               float coefficient, T *dlogits) {
  const char *kernel = "zLossGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  if (tokens == 0)
    return;
  // d (c/T sum_t lse_t^2) / d l_te = 2 c / T * lse_t * softmax_te.
  double factor = 2.0 * double(coefficient) / double(tokens);
  zLossGradKernel<<<rowGrid(tokens), rowThreads(experts), 0, dev.stream()>>>(
      logits, tokens, experts, factor, dlogits);
  checkLaunch("zLossGradKernel");
}

#define MOE_INSTANTIATE_LOSS_KERNELS(T)                                        \
  template void crossEntropy<T>(Device &, const T *, const int32_t *, int64_t, \
                                int64_t, int64_t, const float *, float *);     \
  template void auxLoss<T>(Device &, const T *, const int32_t *, int64_t,      \
                           int64_t, int64_t, bool, float, float *);            \
  template void zLoss<T>(Device &, const T *, int64_t, int64_t, float,         \
                         float *);                                             \
  template void crossEntropyGrad<T>(Device &, const T *, const int32_t *,      \
                                    int64_t, int64_t, int64_t, const float *,  \
                                    T *);                                      \
  template void auxLossGrad<T>(Device &, const T *, const int32_t *, int64_t,  \
                               int64_t, int64_t, bool, float, T *);            \
  template void zLossGrad<T>(Device &, const T *, int64_t, int64_t, float, T *);
MOE_INSTANTIATE_LOSS_KERNELS(float)
MOE_INSTANTIATE_LOSS_KERNELS(bf16)
#undef MOE_INSTANTIATE_LOSS_KERNELS

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

void CudaBackend::crossEntropy(const float *logits, const int32_t *labels,
                               const float *count, float *out, int64_t n,
                               int64_t vocab, int64_t ignoreIndex) {
  onStorage([&](Device &d, auto s) {
    cuda::crossEntropy(d, s(logits), labels, n, vocab, ignoreIndex, count, out);
  });
}

void CudaBackend::labelCount(const int32_t *labels, float *out, int64_t n,
                             int64_t ignoreIndex) {
  cuda::labelCount(current(), labels, n, ignoreIndex, out);
}

void CudaBackend::auxLoss(const float *logits, const int32_t *indices,
                          float *out, int64_t tokens, int64_t experts,
                          int64_t topK, bool sigmoid, float coefficient) {
  onStorage([&](Device &d, auto s) {
    cuda::auxLoss(d, s(logits), indices, tokens, experts, topK, sigmoid,
                  coefficient, out);
  });
}

void CudaBackend::zLoss(const float *logits, float *out, int64_t tokens,
                        int64_t experts, float coefficient) {
  onStorage([&](Device &d, auto s) {
    cuda::zLoss(d, s(logits), tokens, experts, coefficient, out);
  });
}

void CudaBackend::crossEntropyGrad(const float *logits, const int32_t *labels,
                                   const float *count, float *dlogits,
                                   int64_t n, int64_t vocab,
                                   int64_t ignoreIndex) {
  onStorage([&](Device &d, auto s) {
    cuda::crossEntropyGrad(d, s(logits), labels, n, vocab, ignoreIndex, count,
                           s(dlogits));
  });
}

void CudaBackend::auxLossGrad(const float *logits, const int32_t *indices,
                              float *dlogits, int64_t tokens, int64_t experts,
                              int64_t topK, bool sigmoid, float coefficient) {
  onStorage([&](Device &d, auto s) {
    cuda::auxLossGrad(d, s(logits), indices, tokens, experts, topK, sigmoid,
                      coefficient, s(dlogits));
  });
}

void CudaBackend::zLossGrad(const float *logits, float *dlogits, int64_t tokens,
                            int64_t experts, float coefficient) {
  onStorage([&](Device &d, auto s) {
    cuda::zLossGrad(d, s(logits), tokens, experts, coefficient, s(dlogits));
  });
}

} // namespace moe::cuda
