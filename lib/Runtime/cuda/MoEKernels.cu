//===- MoEKernels.cu - Router, token permutation and expert FFNs on CUDA --===//
//
// The CUDA twins of lib/Runtime/cpu/MoEKernels.cpp and the expert part of
// lib/Runtime/cpu/GradKernels.cpp (the same formulas, tie rules and special
// ids; see CudaKernels.h for the conventions). In short:
//   - router: logits by cuBLAS, then one warp per token for the scores, the
//     group limit and the top-k (and routerGrad the reverse, in double as on
//     the CPU);
//   - permuteByExpert and dropOverCapacity: a stable CUB radix sort of the
//     (expert, slot) pairs, then binary searches in the sorted experts;
//   - gatherRows, unpermuteCombine and their gradients: element- or
//     warp-parallel loops, through a slot -> row inverse built in scratch;
//   - groupedSwiGLUSegments(Grad): the segmented GEMMs of GroupedGemm.h,
//     which read the offsets on the device; the forward fuses the gate and
//     up projections with SwiGLU, the backward recomputes them separately
//     (it needs both) and runs elementwise SwiGLU kernels. Under bf16
//     storage they run on the tensor cores through cuBLAS instead
//     (GroupedCublas.h), unless MOE_CUDA_EXPERT_GEMM=tiled.
// Nothing here synchronises with the host (except the cuBLAS expert GEMMs,
// which read their offsets back); temporaries come from one dev.scratch()
// block per call.
//
//===----------------------------------------------------------------------===//

#include "CudaKernels.h"
#include "DenseGemm.h"
#include "DeviceMath.cuh"
#include "GroupedCublas.h"
#include "GroupedGemm.h"

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace moe::cuda {

namespace {

using moe::kDroppedSlot;

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();

//===----------------------------------------------------------------------===//
// Host-side helpers
//===----------------------------------------------------------------------===//

/// Slots are indexed by int32 (indices, rowToSlot): tokens * topK must fit.
int64_t checkSlots(const char *kernel, int64_t tokens, int64_t topK) {
  if (tokens > kMaxInt32 / std::max<int64_t>(topK, 1))
    fail(kernel, "tokens * topK (" + std::to_string(tokens) + " * " +
                     std::to_string(topK) + ") exceeds the int32 slot range");
  return tokens * topK;
}

/// Blocks of kThreads for a grid-stride loop over n items: enough to fill
/// the GPU, at least one.
unsigned strideBlocks(const Device &dev, int64_t n) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  int64_t cap = int64_t(std::max(dev.smCount(), 1)) * 32;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, cap)));
}

/// Blocks of kThreads giving one thread per item (n <= 2^31 * 256).
unsigned itemBlocks(int64_t n) { return gridFor(n, kThreads); }

void checkRouterConfig(const RouterConfig &cfg) {
  const char *kernel = "router";
  checkSize(kernel, "experts", cfg.experts, /*positive=*/true);
  checkSize(kernel, "nGroup", cfg.nGroup, /*positive=*/true);
  if (cfg.experts > kMaxInt32)
    fail(kernel, "experts " + std::to_string(cfg.experts) + " is too large");
  if (cfg.experts % cfg.nGroup != 0)
    fail(kernel, "experts (" + std::to_string(cfg.experts) +
                     ") is not divisible by nGroup (" +
                     std::to_string(cfg.nGroup) + ")");
  if (cfg.topkGroup < 1 || cfg.topkGroup > cfg.nGroup)
    fail(kernel, "topkGroup " + std::to_string(cfg.topkGroup) +
                     " is outside [1, " + std::to_string(cfg.nGroup) + "]");
  int64_t eligible = cfg.topkGroup * (cfg.experts / cfg.nGroup);
  if (cfg.topK < 1 || cfg.topK > eligible)
    fail(kernel, "topK " + std::to_string(cfg.topK) + " is outside [1, " +
                     std::to_string(eligible) + "] (the eligible experts)");
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
                       int wordsPerWarp, T *weights, int32_t *indices,
                       T *storedLogits) {
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
    // one for groups of one), the CPU's running best/second scan.
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
      groupScore[g] = groupSize > 1 ? best + second : best;
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

//===----------------------------------------------------------------------===//
// Sorting slots by expert
//===----------------------------------------------------------------------===//

/// The temporaries of a stable sort of `slots` slots by expert.
struct SlotSort {
  uint32_t *keysIn = nullptr, *keysOut = nullptr;
  int32_t *slotsIn = nullptr, *slotsOut = nullptr;
  void *temp = nullptr;
  size_t tempBytes = 0;
  int endBit = 1;
};

/// Bits of the sort keys, which lie in [0, experts].
int keyBits(int64_t experts) {
  int bits = 1;
  while (bits < 32 && (int64_t(1) << bits) <= experts)
    ++bits;
  return bits;
}

/// The scratch bytes of a SlotSort (slotsOut included when `ownSlotsOut`).
size_t slotSortBytes(int64_t slots, int endBit, bool ownSlotsOut,
                     size_t &tempBytes) {
  tempBytes = 0;
  check(cub::DeviceRadixSort::SortPairs(
            nullptr, tempBytes, static_cast<const uint32_t *>(nullptr),
            static_cast<uint32_t *>(nullptr),
            static_cast<const int32_t *>(nullptr),
            static_cast<int32_t *>(nullptr), int(slots), 0, endBit),
        "cub::DeviceRadixSort::SortPairs (size query)");
  size_t ints = alignUp(size_t(slots) * 4);
  return (ownSlotsOut ? 4 : 3) * ints + alignUp(tempBytes);
}

/// Carves a SlotSort out of `scratch` (laid out as slotSortBytes counts).
SlotSort carveSlotSort(void *scratch, int64_t slots, int endBit,
                       bool ownSlotsOut, size_t tempBytes) {
  char *p = static_cast<char *>(scratch);
  size_t ints = alignUp(size_t(slots) * 4);
  SlotSort sort;
  sort.keysIn = reinterpret_cast<uint32_t *>(p);
  sort.keysOut = reinterpret_cast<uint32_t *>(p + ints);
  sort.slotsIn = reinterpret_cast<int32_t *>(p + 2 * ints);
  p += 3 * ints;
  if (ownSlotsOut) {
    sort.slotsOut = reinterpret_cast<int32_t *>(p);
    p += ints;
  }
  sort.temp = p;
  sort.tempBytes = tempBytes;
  sort.endBit = endBit;
  return sort;
}

/// keys[s] = indices[s], or `experts` (sorted last) for a dropped or
/// out-of-range id; slots[s] = s.
__global__ void slotKeysKernel(const int32_t *indices, int64_t slots,
                               int64_t experts, uint32_t *keys,
                               int32_t *slotIds) {
  int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s >= slots)
    return;
  int32_t id = indices[s];
  keys[s] = id >= 0 && id < experts ? uint32_t(id) : uint32_t(experts);
  slotIds[s] = int32_t(s);
}

/// Sorts the slots by expert (radix sort is stable: slot order within an
/// expert). sort.slotsOut must be set.
void sortSlots(Device &dev, const int32_t *indices, int64_t slots,
               int64_t experts, const SlotSort &sort) {
  slotKeysKernel<<<itemBlocks(slots), kThreads, 0, dev.stream()>>>(
      indices, slots, experts, sort.keysIn, sort.slotsIn);
  checkLaunch("slotKeysKernel");
  size_t tempBytes = sort.tempBytes;
  check(cub::DeviceRadixSort::SortPairs(
            sort.temp, tempBytes, sort.keysIn, sort.keysOut, sort.slotsIn,
            sort.slotsOut, int(slots), 0, sort.endBit, dev.stream()),
        "cub::DeviceRadixSort::SortPairs");
}

/// The first p in [0, n) with keys[p] >= value, or n.
__device__ __forceinline__ int64_t lowerBound(const uint32_t *keys, int64_t n,
                                              uint32_t value) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < value)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/// offsets[e] = first sorted position of expert e (e <= experts, so
/// offsets[experts] counts the kept slots); rowToSlot[r] = -1 for the sorted
/// positions of dropped slots (rowToSlot already holds the sorted slots).
__global__ void offsetsKernel(const uint32_t *sortedKeys, int64_t slots,
                              int64_t experts, int64_t *offsets,
                              int32_t *rowToSlot) {
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i <= experts)
    offsets[i] = lowerBound(sortedKeys, slots, uint32_t(i));
  if (i < slots && sortedKeys[i] == uint32_t(experts))
    rowToSlot[i] = kDroppedSlot;
}

/// kept[s] for the slot at sorted position p: its expert when fewer than
/// `capacity` slots of that expert come before it (its rank p - first
/// position of the expert), else kDroppedSlot; counts the drops into
/// *dropped (one atomic per block). Invalid ids (-1 included) stay
/// kDroppedSlot and are not counted.
__global__ void __launch_bounds__(kThreads)
    dropKernel(const uint32_t *sortedKeys, const int32_t *sortedSlots,
               int64_t slots, int64_t experts, int64_t capacity, int32_t *kept,
               int64_t *dropped) {
  int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int drop = 0;
  if (p < slots) {
    uint32_t e = sortedKeys[p];
    int32_t s = sortedSlots[p];
    if (e >= uint32_t(experts)) {
      kept[s] = kDroppedSlot;
    } else {
      int64_t rank = p - lowerBound(sortedKeys, slots, e);
      bool keep = rank < capacity;
      kept[s] = keep ? int32_t(e) : kDroppedSlot;
      drop = keep ? 0 : 1;
    }
  }
  int blockDrops = __syncthreads_count(drop);
  if (threadIdx.x == 0 && blockDrops > 0)
    atomicAdd(reinterpret_cast<unsigned long long *>(dropped),
              static_cast<unsigned long long>(blockDrops));
}

//===----------------------------------------------------------------------===//
// Gather, combine and their gradients
//===----------------------------------------------------------------------===//

/// permuted[r, :] = x[rowToSlot[r] / topK, :], zero for a padding row;
/// one thread per element, grid-stride.
template <typename T>
__global__ void gatherRowsKernel(const T *x, const int32_t *rowToSlot,
                                 int64_t rows, int64_t topK, int64_t hidden,
                                 T *permuted) {
  const int64_t n = rows * hidden;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / hidden, c = i % hidden;
    // A row without a slot (a dropped one, or an index past the slots that
    // would read past x) is zero.
    int32_t slot = rowToSlot[r];
    permuted[i] = slot >= 0 && slot < rows ? x[(slot / topK) * hidden + c]
                                           : fromF32<T>(0.0f);
  }
}

/// slotToRow[rowToSlot[r]] = r for the rows holding a slot in [0, slots)
/// (slotToRow is preset to -1: dropped slots keep it).
__global__ void invertRowToSlotKernel(const int32_t *rowToSlot, int64_t slots,
                                      int32_t *slotToRow) {
  int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= slots)
    return;
  int32_t s = rowToSlot[r];
  if (s >= 0 && s < slots)
    slotToRow[s] = int32_t(r);
}

/// out[t, i] = sum over k ascending of w[t, k] * y[row(t, k), i] (w = 1 when
/// `weights` is null), skipping dropped slots; one thread per element,
/// grid-stride. The product is rounded before the sum, as the CPU's
/// `o += w * y` (no fused multiply-add), so the sums match it bit for bit.
template <typename T>
__global__ void combineKernel(const T *y, const int32_t *slotToRow,
                              const T *weights, int64_t tokens, int64_t topK,
                              int64_t hidden, T *out) {
  const int64_t n = tokens * hidden;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = i / hidden, c = i % hidden;
    float acc = 0.0f;
    for (int64_t k = 0; k < topK; ++k) {
      int64_t slot = t * topK + k;
      int32_t row = slotToRow[slot];
      if (row < 0)
        continue; // dropped
      float w = weights ? toF32(weights[slot]) : 1.0f;
      acc = __fadd_rn(acc, __fmul_rn(w, toF32(y[row * hidden + c])));
    }
    out[i] = fromF32<T>(acc);
  }
}

/// dexpertOut[r, :] = weights[s] * dout[s / topK, :] for the slot s of row r,
/// zero for a padding row; one thread per element, grid-stride.
template <typename T>
__global__ void scatterGradKernel(const T *dout, const int32_t *rowToSlot,
                                  const T *weights, int64_t slots, int64_t topK,
                                  int64_t hidden, T *dexpertOut) {
  const int64_t n = slots * hidden;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / hidden, c = i % hidden;
    int32_t s = rowToSlot[r];
    T v = fromF32<T>(0.0f);
    if (s >= 0 && s < slots)
      v = fromF32<T>(toF32(weights[s]) * toF32(dout[(s / topK) * hidden + c]));
    dexpertOut[i] = v;
  }
}

/// dweights[s] = dout[s / topK, :] . expertOut[row(s), :] in double (0 for a
/// dropped slot); one warp per slot.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    dweightsKernel(const T *dout, const T *expertOut, const int32_t *slotToRow,
                   int64_t slots, int64_t topK, int64_t hidden, T *dweights) {
  const int64_t s = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (s >= slots)
    return;
  int32_t row = slotToRow[s];
  double dot = 0.0;
  if (row >= 0) {
    const T *g = dout + (s / topK) * hidden;
    const T *y = expertOut + int64_t(row) * hidden;
    for (int64_t i = lane; i < hidden; i += kWarp)
      dot += double(toF32(g[i])) * toF32(y[i]);
    dot = warpSum(dot);
  }
  if (lane == 0)
    dweights[s] = fromF32<T>(float(dot));
}

/// The combine of unpermuteCombine and permuteGrad (weights null: unit).
template <typename T>
void combine(Device &dev, const char *kernel, const T *y,
             const int32_t *rowToSlot, const T *weights, int64_t tokens,
             int64_t topK, int64_t hidden, T *out) {
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "hidden", hidden);
  int64_t slots = checkSlots(kernel, tokens, topK);
  if (slots == 0 || hidden == 0)
    return;
  auto *slotToRow =
      static_cast<int32_t *>(dev.scratch(size_t(slots) * sizeof(int32_t)));
  check(cudaMemsetAsync(slotToRow, 0xff, size_t(slots) * sizeof(int32_t),
                        dev.stream()),
        "cudaMemsetAsync"); // all -1
  invertRowToSlotKernel<<<itemBlocks(slots), kThreads, 0, dev.stream()>>>(
      rowToSlot, slots, slotToRow);
  checkLaunch("invertRowToSlotKernel");
  combineKernel<T>
      <<<strideBlocks(dev, tokens * hidden), kThreads, 0, dev.stream()>>>(
          y, slotToRow, weights, tokens, topK, hidden, out);
  checkLaunch(kernel);
}

//===----------------------------------------------------------------------===//
// SwiGLU elementwise steps
//===----------------------------------------------------------------------===//

/// The first `*end` rows (clamped to [0, rows]) as an element count.
__device__ __forceinline__ int64_t usedElements(const int64_t *end,
                                                int64_t rows, int64_t width) {
  int64_t e = *end;
  e = e < 0 ? 0 : (e > rows ? rows : e);
  return e * width;
}

/// act[i] = silu(gateOut[i]) * upOut[i] over the rows before *end (act may
/// be gateOut: each element is read, then written, by one thread);
/// grid-stride. The expert FFN's intermediates are fp32 whatever the storage.
__global__ void swigluKernel(const float *gateOut, const float *upOut,
                             float *act, const int64_t *end, int64_t rows,
                             int64_t inter) {
  const int64_t n = usedElements(end, rows, inter);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    act[i] = swiglu(gateOut[i], upOut[i]);
  }
}

/// The backward of swigluKernel over the rows before *end: d(gate out) into
/// dact (in place) and d(up out) into dupOut (swigluGrad); grid-stride.
__global__ void swigluGradKernel(const float *gateOut, const float *upOut,
                                 float *dact, float *dupOut, const int64_t *end,
                                 int64_t rows, int64_t inter) {
  const int64_t n = usedElements(end, rows, inter);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    swigluGrad(gateOut[i], upOut[i], dact[i], dact[i], dupOut[i]);
  }
}

/// out[r, :] = 0 for the rows r in [*end, rows); grid-stride.
template <typename T>
__global__ void zeroTailKernel(T *out, const int64_t *end, int64_t rows,
                               int64_t width) {
  const int64_t n = rows * width;
  for (int64_t i = usedElements(end, rows, width) +
                   int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
       i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = fromF32<T>(0.0f);
}

template <typename T>
void zeroTail(Device &dev, T *out, const int64_t *end, int64_t rows,
              int64_t width) {
  if (rows == 0 || width == 0)
    return;
  zeroTailKernel<T>
      <<<strideBlocks(dev, rows * width), kThreads, 0, dev.stream()>>>(
          out, end, rows, width);
  checkLaunch("zeroTailKernel");
}

void checkGrouped(const char *kernel, int64_t rows, int64_t segments,
                  int64_t experts, int64_t hidden, int64_t inter) {
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  checkSize(kernel, "segments", segments);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "inter", inter);
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
      int(cfg.topkGroup), launch.wordsPerWarp, weights, indices,
      kFp32 ? nullptr : logits);
  checkLaunch("routerSelectKernel");
}

void dropOverCapacity(Device &dev, const int32_t *indices, int64_t tokens,
                      int64_t topK, int64_t experts, int64_t capacity,
                      int32_t *kept, int64_t *droppedOut) {
  const char *kernel = "dropOverCapacity";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  checkSize(kernel, "capacity", capacity);
  if (experts >= kMaxInt32)
    fail(kernel, "experts " + std::to_string(experts) + " is too large");
  int64_t slots = checkSlots(kernel, tokens, topK);
  check(cudaMemsetAsync(droppedOut, 0, sizeof(int64_t), dev.stream()),
        "cudaMemsetAsync");
  if (slots == 0)
    return;
  int endBit = keyBits(experts);
  size_t tempBytes = 0;
  size_t bytes = slotSortBytes(slots, endBit, /*ownSlotsOut=*/true, tempBytes);
  SlotSort sort = carveSlotSort(dev.scratch(bytes), slots, endBit,
                                /*ownSlotsOut=*/true, tempBytes);
  sortSlots(dev, indices, slots, experts, sort);
  dropKernel<<<itemBlocks(slots), kThreads, 0, dev.stream()>>>(
      sort.keysOut, sort.slotsOut, slots, experts, capacity, kept, droppedOut);
  checkLaunch("dropKernel");
}

void permuteByExpert(Device &dev, const int32_t *indices, int64_t tokens,
                     int64_t topK, int64_t experts, int64_t *offsets,
                     int32_t *rowToSlot) {
  const char *kernel = "permuteByExpert";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  if (experts >= kMaxInt32)
    fail(kernel, "experts " + std::to_string(experts) + " is too large");
  int64_t slots = checkSlots(kernel, tokens, topK);
  if (slots == 0) {
    check(cudaMemsetAsync(offsets, 0, size_t(experts + 1) * sizeof(int64_t),
                          dev.stream()),
          "cudaMemsetAsync");
    return;
  }
  // The sorted slots go straight to rowToSlot; dropped ones sort last and
  // become padding rows.
  int endBit = keyBits(experts);
  size_t tempBytes = 0;
  size_t bytes = slotSortBytes(slots, endBit, /*ownSlotsOut=*/false, tempBytes);
  SlotSort sort = carveSlotSort(dev.scratch(bytes), slots, endBit,
                                /*ownSlotsOut=*/false, tempBytes);
  sort.slotsOut = rowToSlot;
  sortSlots(dev, indices, slots, experts, sort);
  offsetsKernel<<<itemBlocks(std::max(slots, experts + 1)), kThreads, 0,
                  dev.stream()>>>(sort.keysOut, slots, experts, offsets,
                                  rowToSlot);
  checkLaunch("offsetsKernel");
}

template <typename T>
void gatherRows(Device &dev, const T *x, const int32_t *rowToSlot, int64_t rows,
                int64_t topK, int64_t hidden, T *permuted) {
  const char *kernel = "gatherRows";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "hidden", hidden);
  if (rows == 0 || hidden == 0)
    return;
  gatherRowsKernel<T>
      <<<strideBlocks(dev, rows * hidden), kThreads, 0, dev.stream()>>>(
          x, rowToSlot, rows, topK, hidden, permuted);
  checkLaunch(kernel);
}

template <typename T>
void groupedSwiGLUSegments(Device &dev, const T *permuted, int64_t rows,
                           const int64_t *offsets, int64_t segments,
                           int64_t experts, int64_t hidden, int64_t inter,
                           const T *gate, const T *up, const T *down, T *out) {
  const char *kernel = "groupedSwiGLUSegments";
  checkGrouped(kernel, rows, segments, experts, hidden, inter);
  if (rows == 0 || hidden == 0)
    return; // out is empty
  if constexpr (std::is_same_v<T, bf16>) {
    grouped::ExpertGemm path = grouped::bf16ExpertGemm();
    if (path != grouped::ExpertGemm::Tiled)
      return grouped::swigluCublas(
          dev, kernel, permuted, rows, offsets, segments, experts, hidden,
          inter, gate, up, down, out,
          path == grouped::ExpertGemm::CublasGrouped);
  }
  ScratchCarver carve(dev.scratch(alignUp(grouped::tileMapBytes(segments)) +
                                  ScratchCarver::bytes<float>(rows * inter)));
  auto *tileStart = carve.take<int64_t>(segments + 1);
  float *act = carve.take<float>(rows * inter);

  grouped::buildTileMap(dev, offsets, segments, rows, tileStart);
  grouped::Segments s{offsets, segments, experts, rows, tileStart};
  const int64_t *end = offsets + segments;
  // act = silu(x gate_e^T) * (x up_e^T) in one pass (fused: the two
  // projections stay in registers), then out = act @ down_e^T (zero when
  // inter is 0), then zero padding rows.
  if (inter > 0)
    grouped::gemmXWtSwiGLU(dev, kernel, s, permuted, hidden, gate, up, inter,
                           act);
  grouped::gemmXWt(dev, kernel, s, static_cast<const float *>(act), inter, down,
                   hidden, out);
  zeroTail(dev, out, end, rows, hidden);
}

template <typename T>
void unpermuteCombine(Device &dev, const T *expertOut, const int32_t *rowToSlot,
                      const T *weights, int64_t tokens, int64_t topK,
                      int64_t hidden, T *out) {
  combine(dev, "unpermuteCombine", expertOut, rowToSlot, weights, tokens, topK,
          hidden, out);
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

template <typename T>
void permuteGrad(Device &dev, const T *dpermuted, const int32_t *rowToSlot,
                 int64_t tokens, int64_t topK, int64_t hidden, T *dx) {
  // The transpose of the row gather: the combine with unit weights.
  combine<T>(dev, "permuteGrad", dpermuted, rowToSlot, nullptr, tokens, topK,
             hidden, dx);
}

template <typename T>
void unpermuteCombineGrad(Device &dev, const T *dout, const T *expertOut,
                          const int32_t *rowToSlot, const T *weights,
                          int64_t tokens, int64_t topK, int64_t hidden,
                          T *dexpertOut, T *dweights) {
  const char *kernel = "unpermuteCombineGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "hidden", hidden);
  int64_t slots = checkSlots(kernel, tokens, topK);
  if (slots == 0)
    return;
  if (hidden > 0) {
    scatterGradKernel<T>
        <<<strideBlocks(dev, slots * hidden), kThreads, 0, dev.stream()>>>(
            dout, rowToSlot, weights, slots, topK, hidden, dexpertOut);
    checkLaunch("scatterGradKernel");
  }
  auto *slotToRow =
      static_cast<int32_t *>(dev.scratch(size_t(slots) * sizeof(int32_t)));
  check(cudaMemsetAsync(slotToRow, 0xff, size_t(slots) * sizeof(int32_t),
                        dev.stream()),
        "cudaMemsetAsync"); // all -1
  invertRowToSlotKernel<<<itemBlocks(slots), kThreads, 0, dev.stream()>>>(
      rowToSlot, slots, slotToRow);
  checkLaunch("invertRowToSlotKernel");
  dweightsKernel<T><<<itemBlocks(slots * kWarp), kThreads, 0, dev.stream()>>>(
      dout, expertOut, slotToRow, slots, topK, hidden, dweights);
  checkLaunch("dweightsKernel");
}

template <typename T>
void groupedSwiGLUSegmentsGrad(Device &dev, const T *dout, const T *permuted,
                               int64_t rows, const int64_t *offsets,
                               int64_t segments, int64_t experts,
                               int64_t hidden, int64_t inter, const T *gate,
                               const T *up, const T *down, T *dpermuted,
                               T *dgate, T *dup, T *ddown) {
  const char *kernel = "groupedSwiGLUSegmentsGrad";
  checkGrouped(kernel, rows, segments, experts, hidden, inter);
  if constexpr (std::is_same_v<T, bf16>) {
    grouped::ExpertGemm path = grouped::bf16ExpertGemm();
    if (path != grouped::ExpertGemm::Tiled && rows > 0 && hidden > 0)
      return grouped::swigluGradCublas(
          dev, kernel, dout, permuted, rows, offsets, segments, experts,
          hidden, inter, gate, up, down, dpermuted, dgate, dup, ddown,
          path == grouped::ExpertGemm::CublasGrouped);
  }
  const int64_t size = rows * inter;
  ScratchCarver carve(dev.scratch(alignUp(grouped::tileMapBytes(segments)) +
                                  4 * ScratchCarver::bytes<float>(size) +
                                  Fp32Accumulator<T>::bytes(rows * hidden)));
  auto *tileStart = carve.take<int64_t>(segments + 1);
  float *gateOut = carve.take<float>(size), *upOut = carve.take<float>(size);
  float *act = carve.take<float>(size), *dact = carve.take<float>(size);
  Fp32Accumulator<T> dx(dev, dpermuted, rows * hidden, carve);

  grouped::buildTileMap(dev, offsets, segments, rows, tileStart);
  grouped::Segments s{offsets, segments, experts, rows, tileStart};
  const int64_t *end = offsets + segments;
  const unsigned actBlocks = strideBlocks(dev, size);
  const bool anyAct = size > 0;

  // Recompute the forward: gate and up outputs, act = silu(g) * u.
  grouped::gemmXWt(dev, kernel, s, permuted, hidden, gate, inter, gateOut);
  grouped::gemmXWt(dev, kernel, s, permuted, hidden, up, inter, upOut);
  if (anyAct) {
    swigluKernel<<<actBlocks, kThreads, 0, dev.stream()>>>(gateOut, upOut, act,
                                                           end, rows, inter);
    checkLaunch("swigluKernel");
  }
  // ddown_e [hidden, inter] = sum dout^T @ act; d act = dout @ down_e.
  grouped::gemmDw(dev, kernel, s, dout, hidden, act, inter, ddown);
  grouped::gemmDyW(dev, kernel, s, dout, hidden, down, inter,
                   /*accumulate=*/false, dact);
  // act becomes d(up out), dact becomes d(gate out).
  if (anyAct) {
    swigluGradKernel<<<actBlocks, kThreads, 0, dev.stream()>>>(
        gateOut, upOut, dact, act, end, rows, inter);
    checkLaunch("swigluGradKernel");
  }
  // dgate_e / dup_e [inter, hidden] = sum d(gate|up out)^T @ x.
  grouped::gemmDw(dev, kernel, s, dact, inter, permuted, hidden, dgate);
  grouped::gemmDw(dev, kernel, s, act, inter, permuted, hidden, dup);
  // dx = d(gate out) @ gate_e + d(up out) @ up_e, summed in fp32; 0 on the
  // padding rows.
  grouped::gemmDyW(dev, kernel, s, dact, inter, gate, hidden,
                   /*accumulate=*/false, dx.get());
  grouped::gemmDyW(dev, kernel, s, act, inter, up, hidden,
                   /*accumulate=*/true, dx.get());
  zeroTail(dev, dx.get(), end, rows, hidden);
  dx.store(dev);
}

#define MOE_INSTANTIATE_MOE_KERNELS(T)                                         \
  template void router<T>(Device &, const T *, int64_t, int64_t, const T *,    \
                          const T *, const RouterConfig &, T *, int32_t *,     \
                          T *);                                                \
  template void gatherRows<T>(Device &, const T *, const int32_t *, int64_t,   \
                              int64_t, int64_t, T *);                          \
  template void groupedSwiGLUSegments<T>(                                      \
      Device &, const T *, int64_t, const int64_t *, int64_t, int64_t,         \
      int64_t, int64_t, const T *, const T *, const T *, T *);                 \
  template void unpermuteCombine<T>(Device &, const T *, const int32_t *,      \
                                    const T *, int64_t, int64_t, int64_t,      \
                                    T *);                                      \
  template void routerGrad<T>(                                                 \
      Device &, const T *, const T *, const T *, int64_t, int64_t, const T *,  \
      const T *, const int32_t *, const RouterConfig &, T *, T *);             \
  template void permuteGrad<T>(Device &, const T *, const int32_t *, int64_t,  \
                               int64_t, int64_t, T *);                         \
  template void unpermuteCombineGrad<T>(Device &, const T *, const T *,        \
                                        const int32_t *, const T *, int64_t,   \
                                        int64_t, int64_t, T *, T *);           \
  template void groupedSwiGLUSegmentsGrad<T>(                                  \
      Device &, const T *, const T *, int64_t, const int64_t *, int64_t,       \
      int64_t, int64_t, int64_t, const T *, const T *, const T *, T *, T *,    \
      T *, T *);
MOE_INSTANTIATE_MOE_KERNELS(float)
MOE_INSTANTIATE_MOE_KERNELS(bf16)
#undef MOE_INSTANTIATE_MOE_KERNELS

} // namespace moe::cuda
