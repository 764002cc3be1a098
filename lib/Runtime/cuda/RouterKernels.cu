//===- RouterKernels.cu - The router on the GPU ---------------------------===//
//
// The router (logits on cuBLAS, then one warp per token: softmax or sigmoid,
// expert bias, group-limited top-k with the CPU's tie rule, renormalisation,
// route scale), its gradient, and the CUDA backend's methods for the calls.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"
#include "CudaKernels.h"
#include "DenseGemm.h"
#include "DeviceMath.cuh"
#include "KernelLaunch.cuh"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace moe::cuda {

namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();

void checkRouterConfig(const RouterConfig &cfg) {
  if (std::string problem = cfg.problem(); !problem.empty())
    fail("router", problem);
  if (cfg.experts > kMaxInt32)
    fail("router", "experts " + std::to_string(cfg.experts) + " is too large");
}

/// Scores, group limit, top-k and weights of one token per warp, from the
/// logits [tokens, experts]; exactly cpu::router's steps. Each warp keeps its
/// token's scores, selection scores, group scores and ranks and the chosen
/// experts in its slice of dynamic shared memory (wordsPerWarp 4-byte words).
///
/// The top-k walks the order "select descending, expert ascending" (a strict
/// total order, the CPU's partial_sort comparator): pick k is the best
/// eligible expert strictly after pick k - 1 in that order, found by a lane
/// scan and a warp argmax under the same order. Group g is eligible when
/// fewer than topkGroup groups come before it (score descending, group
/// ascending).
template <typename T>
__global__ void __launch_bounds__(128)
    routerSelectKernel(const float *logits, int64_t tokens, int experts,
                       const T *bias, int topK, bool sigmoid, bool normTopkProb,
                       float routeScale, int nGroup, int topkGroup,
                       int groupTop, int wordsPerWarp, T *weights,
                       int32_t *indices, T *storedLogits) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t t = int64_t(blockIdx.x) * (blockDim.x / kWarp) + warp;
  if (t >= tokens)
    return; // whole warps only: no block barrier below
  float *scores = smem + int64_t(warp) * wordsPerWarp;
  float *select = scores + experts;
  float *groupScore = select + experts;
  int *groupRank = reinterpret_cast<int *>(groupScore + nGroup);
  int *chosen = groupRank + nGroup;
  const float *row = logits + t * experts;
  if (storedLogits)
    for (int e = lane; e < experts; e += kWarp)
      storedLogits[t * experts + e] = fromF32<T>(row[e]);

  if (sigmoid) {
    for (int e = lane; e < experts; e += kWarp)
      scores[e] = sigmoidExact(row[e]);
  } else {
    // cpu::detail::softmaxRow: fp32 max and exponentials, double sum.
    float maxValue = -INFINITY;
    for (int e = lane; e < experts; e += kWarp)
      maxValue = row[e] > maxValue ? row[e] : maxValue;
    maxValue = warpMax(maxValue);
    double partial = 0.0;
    for (int e = lane; e < experts; e += kWarp) {
      float v = expf(row[e] - maxValue);
      scores[e] = v;
      partial += v;
    }
    float inv = float(1.0 / warpSum(partial));
    for (int e = lane; e < experts; e += kWarp)
      scores[e] *= inv;
  }
  // The bias steers the choice only; the weights use the unbiased scores.
  for (int e = lane; e < experts; e += kWarp)
    select[e] = bias ? scores[e] + toF32(bias[e]) : scores[e];
  __syncwarp();

  const int groupSize = experts / nGroup;
  if (nGroup > 1) {
    // A group's score: the sum of its two best selection scores (its only
    // one for groups of one), or its best alone (groupTop 1), the CPU's
    // running best/second scan.
    for (int g = lane; g < nGroup; g += kWarp) {
      const float *s = select + int64_t(g) * groupSize;
      float best = s[0], second = -INFINITY;
      for (int i = 1; i < groupSize; ++i) {
        if (s[i] > best) {
          second = best;
          best = s[i];
        } else if (s[i] > second) {
          second = s[i];
        }
      }
      groupScore[g] = groupSize > 1 && groupTop > 1 ? best + second : best;
    }
    __syncwarp();
    for (int g = lane; g < nGroup; g += kWarp) {
      int rank = 0;
      for (int h = 0; h < nGroup; ++h)
        rank += groupScore[h] > groupScore[g] ||
                (groupScore[h] == groupScore[g] && h < g);
      groupRank[g] = rank;
    }
    __syncwarp();
  }

  float prevValue = 0.0f;
  int prevExpert = -1;
  for (int k = 0; k < topK; ++k) {
    float bestValue = 0.0f;
    int bestExpert = -1; // none yet
    if (k == 0 || prevExpert >= 0) {
      for (int e = lane; e < experts; e += kWarp) {
        if (nGroup > 1 && groupRank[e / groupSize] >= topkGroup)
          continue;
        float v = select[e];
        if (k > 0 && !(v < prevValue || (v == prevValue && e > prevExpert)))
          continue; // not after the previous pick
        if (bestExpert < 0 || v > bestValue ||
            (v == bestValue && e < bestExpert)) {
          bestValue = v;
          bestExpert = e;
        }
      }
    }
    for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
      float otherValue = __shfl_xor_sync(kFullMask, bestValue, offset);
      int otherExpert = __shfl_xor_sync(kFullMask, bestExpert, offset);
      if (otherExpert >= 0 &&
          (bestExpert < 0 || otherValue > bestValue ||
           (otherValue == bestValue && otherExpert < bestExpert))) {
        bestValue = otherValue;
        bestExpert = otherExpert;
      }
    }
    // Every lane holds the same pick. Only NaN scores can leave none:
    // the slot is then written as dropped with weight 0.
    if (lane == 0)
      chosen[k] = bestExpert;
    prevValue = bestValue;
    prevExpert = bestExpert;
  }
  __syncwarp();

  // The weights, with the CPU's sequential fp32 sum for the renormalisation.
  float sum = 0.0f;
  if (lane == 0)
    for (int k = 0; k < topK; ++k)
      if (chosen[k] >= 0)
        sum += scores[chosen[k]];
  sum = __shfl_sync(kFullMask, sum, 0);
  for (int k = lane; k < topK; k += kWarp) {
    int e = chosen[k];
    float w = 0.0f;
    if (e >= 0)
      w = normTopkProb ? scores[e] / sum * routeScale : scores[e] * routeScale;
    indices[t * topK + k] = e;
    weights[t * topK + k] = fromF32<T>(w);
  }
}

/// d logits [tokens, experts] of the router weights (plus dlogits), one warp
/// per token, in double as cpu::routerGrad: the scores are recomputed from
/// the logits, d score_e sums the selected slots k with indices[k] = e in k
/// order, then through the sigmoid or the softmax Jacobian. Expert ids out
/// of range contribute nothing.
template <typename T>
__global__ void __launch_bounds__(128)
    routerGradLogitsKernel(const T *dweights, const T *dlogits, const T *logits,
                           const int32_t *indices, int64_t tokens, int experts,
                           int topK, bool sigmoid, bool normTopkProb,
                           double routeScale, T *dl) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t t = int64_t(blockIdx.x) * (blockDim.x / kWarp) + warp;
  if (t >= tokens)
    return;
  const T *row = logits + t * experts;
  const int32_t *idx = indices + t * topK;
  const T *dwStored = dweights + t * topK;
  auto logit = [&](int e) { return toF32(row[e]); };
  auto dw = [&](int k) { return double(toF32(dwStored[k])); };

  double lse = 0.0; // cpu::detail::logSumExp
  if (!sigmoid) {
    float maxValue = -INFINITY;
    for (int e = lane; e < experts; e += kWarp)
      maxValue = logit(e) > maxValue ? logit(e) : maxValue;
    maxValue = warpMax(maxValue);
    double partial = 0.0;
    for (int e = lane; e < experts; e += kWarp)
      partial += exp(double(logit(e)) - maxValue);
    lse = maxValue + log(warpSum(partial));
  }
  auto score = [&](int e) {
    return sigmoid ? 1.0 / (1.0 + exp(-double(logit(e))))
                   : exp(double(logit(e)) - lse);
  };
  auto valid = [&](int32_t e) { return e >= 0 && e < experts; };

  // Through w_k = R * s_k (/ S with S the sum of the selected scores).
  double sum = 0.0, dot = 0.0;
  if (normTopkProb)
    for (int k = 0; k < topK; ++k)
      if (valid(idx[k])) {
        double s = score(idx[k]);
        sum += s;
        dot += dw(k) * s;
      }
  auto dscore = [&](int e) {
    double d = 0.0;
    for (int k = 0; k < topK; ++k)
      if (idx[k] == e)
        d += normTopkProb ? routeScale * (dw(k) / sum - dot / (sum * sum))
                          : routeScale * dw(k);
    return d;
  };
  double inner = 0.0;
  if (!sigmoid) {
    double partial = 0.0;
    for (int e = lane; e < experts; e += kWarp)
      partial += dscore(e) * score(e);
    inner = warpSum(partial);
  }
  for (int e = lane; e < experts; e += kWarp) {
    double s = score(e), d = dscore(e);
    float v = float(sigmoid ? d * s * (1.0 - s) : s * (d - inner));
    if (dlogits)
      v += toF32(dlogits[t * experts + e]);
    dl[t * experts + e] = fromF32<T>(v);
  }
}

/// Warps per block and dynamic shared memory of the router kernel.
struct RouterLaunch {
  int warps = 4;
  size_t sharedBytes = 0;
  int wordsPerWarp = 0;
};

RouterLaunch routerLaunch(const RouterConfig &cfg) {
  RouterLaunch launch;
  launch.wordsPerWarp =
      int(2 * cfg.experts + 2 * cfg.nGroup + cfg.topK); // see the kernel
  size_t perWarp = size_t(launch.wordsPerWarp) * 4;
  const size_t defaultLimit = 48 * 1024;
  launch.warps = int(std::clamp<size_t>(defaultLimit / perWarp, 1, 4));
  launch.sharedBytes = perWarp * launch.warps;
  return launch;
}

} // namespace

//===----------------------------------------------------------------------===//
// Forward
//===----------------------------------------------------------------------===//

// The logits are selected on in fp32: under bf16 storage the GEMM writes
// them to fp32 scratch and the selection kernel stores their rounded copy,
// so routing decisions do not see the rounding (as on the CPU).
template <typename T>
void router(Device &dev, const T *x, int64_t tokens, int64_t hidden,
            const T *gate, const T *expertBias, const RouterConfig &cfg,
            T *weights, int32_t *indices, T *logits) {
  const char *kernel = "router";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "hidden", hidden);
  checkRouterConfig(cfg);
  checkSlots(kernel, tokens, cfg.topK);
  if (tokens == 0)
    return;
  // logits [tokens, experts] = x [tokens, hidden] @ gate [experts, hidden]^T.
  constexpr bool kFp32 = std::is_same_v<T, float>;
  float *logits32 = kFp32 ? reinterpret_cast<float *>(logits)
                          : static_cast<float *>(dev.scratch(
                                size_t(tokens * cfg.experts) * sizeof(float)));
  project(dev, kernel, x, tokens, hidden, gate, cfg.experts, logits32);
  RouterLaunch launch = routerLaunch(cfg);
  if (launch.sharedBytes > 48 * 1024)
    check(cudaFuncSetAttribute(routerSelectKernel<T>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(launch.sharedBytes)),
          "cudaFuncSetAttribute (router shared memory)");
  int64_t blocks = (tokens + launch.warps - 1) / launch.warps;
  routerSelectKernel<<<static_cast<unsigned>(blocks), launch.warps * kWarp,
                       launch.sharedBytes, dev.stream()>>>(
      logits32, tokens, int(cfg.experts), expertBias, int(cfg.topK),
      cfg.sigmoid, cfg.normTopkProb, cfg.routeScale, int(cfg.nGroup),
      int(cfg.topkGroup), int(cfg.groupTop), launch.wordsPerWarp, weights,
      indices, kFp32 ? nullptr : logits);
  checkLaunch("routerSelectKernel");
}

//===----------------------------------------------------------------------===//
// Backward
//===----------------------------------------------------------------------===//

// Under bf16 storage d logits is rounded to bf16 before the two GEMMs (both
// of their operands must be bf16 for cuBLAS).
template <typename T>
void routerGrad(Device &dev, const T *dweights, const T *dlogits, const T *x,
                int64_t tokens, int64_t hidden, const T *gate, const T *logits,
                const int32_t *indices, const RouterConfig &cfg, T *dx,
                T *dgate) {
  const char *kernel = "routerGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "experts", cfg.experts, /*positive=*/true);
  int64_t experts = cfg.experts, topK = cfg.topK;
  if (topK < 1 || topK > experts)
    fail(kernel, "topK " + std::to_string(topK) + " is outside [1, " +
                     std::to_string(experts) + "]");
  if (experts > kMaxInt32)
    fail(kernel, "experts " + std::to_string(experts) + " is too large");
  checkSlots(kernel, tokens, topK);
  if (hidden == 0)
    return; // dx and dgate are empty
  T *dl = static_cast<T *>(
      dev.scratch(std::max<size_t>(size_t(tokens) * experts, 1) * sizeof(T)));
  if (tokens > 0) {
    const int warps = 4;
    int64_t blocks = (tokens + warps - 1) / warps;
    routerGradLogitsKernel<<<static_cast<unsigned>(blocks), warps * kWarp, 0,
                             dev.stream()>>>(
        dweights, dlogits, logits, indices, tokens, int(experts), int(topK),
        cfg.sigmoid, cfg.normTopkProb, double(cfg.routeScale), dl);
    checkLaunch("routerGradLogitsKernel");
  }
  // logits = x gate^T: dx [tokens, hidden] = dl @ gate, dgate [experts,
  // hidden] = dl^T @ x (zero when there are no tokens).
  gemm(dev, kernel, false, false, tokens, hidden, experts, 1.0f, dl, experts,
       gate, hidden, 0.0f, dx, hidden);
  gemm(dev, kernel, /*transA=*/true, false, experts, hidden, tokens, 1.0f, dl,
       experts, x, hidden, 0.0f, dgate, hidden);
}

#define MOE_INSTANTIATE_ROUTER_KERNELS(T)                                      \
  template void router<T>(Device &, const T *, int64_t, int64_t, const T *,    \
                          const T *, const RouterConfig &, T *, int32_t *,     \
                          T *);                                                \
  template void routerGrad<T>(                                                 \
      Device &, const T *, const T *, const T *, int64_t, int64_t, const T *,  \
      const T *, const int32_t *, const RouterConfig &, T *, T *);
MOE_INSTANTIATE_ROUTER_KERNELS(float)
MOE_INSTANTIATE_ROUTER_KERNELS(bf16)
#undef MOE_INSTANTIATE_ROUTER_KERNELS

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

void CudaBackend::router(const float *x, const float *gate,
                         const float *expertBias, float *weights,
                         int32_t *indices, float *logits, int64_t tokens,
                         int64_t hidden, int64_t experts, int64_t topK,
                         bool sigmoid, bool normTopkProb, float routeScale,
                         int64_t nGroup, int64_t topkGroup, int64_t groupTop) {
  RouterConfig cfg = routerConfig(experts, topK, sigmoid, normTopkProb,
                                  routeScale, nGroup, topkGroup, groupTop);
  onStorage([&](Device &d, auto s) {
    cuda::router(d, s(x), tokens, hidden, s(gate), s(expertBias), cfg,
                 s(weights), indices, s(logits));
  });
}

void CudaBackend::routerGrad(const float *dweights, const float *dlogits,
                             const float *x, const float *gate,
                             const float *logits, const int32_t *indices,
                             float *dx, float *dgate, int64_t tokens,
                             int64_t hidden, int64_t experts, int64_t topK,
                             bool sigmoid, bool normTopkProb,
                             float routeScale) {
  RouterConfig cfg =
      routerConfig(experts, topK, sigmoid, normTopkProb, routeScale);
  onStorage([&](Device &d, auto s) {
    cuda::routerGrad(d, s(dweights), s(dlogits), s(x), tokens, hidden, s(gate),
                     s(logits), indices, cfg, s(dx), s(dgate));
  });
}

} // namespace moe::cuda
