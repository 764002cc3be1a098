//===- ExpertKernels.cu - Capacity, permutation and combine on the GPU ----===//
//
// Capacity drop and permutation by expert on the device (CUB stable radix
// sort, offsets by search: no host synchronisation), the row gather, the
// weighted combine, their gradients, and the CUDA backend's methods for the
// calls. The grouped SwiGLU between them is GroupedSwigluKernels.cu.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"
#include "CudaKernels.h"
#include "DeviceMath.cuh"
#include "KernelLaunch.cuh"

#include <algorithm>
#include <cmath>
#include <cub/device/device_radix_sort.cuh>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace moe::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();

using moe::kDroppedSlot;

/// Blocks of kThreads giving one thread per item (n <= 2^31 * 256).
unsigned itemBlocks(int64_t n) { return gridFor(n, kThreads); }

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

} // namespace

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
void unpermuteCombine(Device &dev, const T *expertOut, const int32_t *rowToSlot,
                      const T *weights, int64_t tokens, int64_t topK,
                      int64_t hidden, T *out) {
  combine(dev, "unpermuteCombine", expertOut, rowToSlot, weights, tokens, topK,
          hidden, out);
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

#define MOE_INSTANTIATE_EXPERT_KERNELS(T)                                      \
  template void gatherRows<T>(Device &, const T *, const int32_t *, int64_t,   \
                              int64_t, int64_t, T *);                          \
  template void unpermuteCombine<T>(Device &, const T *, const int32_t *,      \
                                    const T *, int64_t, int64_t, int64_t,      \
                                    T *);                                      \
  template void permuteGrad<T>(Device &, const T *, const int32_t *, int64_t,  \
                               int64_t, int64_t, T *);                         \
  template void unpermuteCombineGrad<T>(Device &, const T *, const T *,        \
                                        const int32_t *, const T *, int64_t,   \
                                        int64_t, int64_t, T *, T *);
MOE_INSTANTIATE_EXPERT_KERNELS(float)
MOE_INSTANTIATE_EXPERT_KERNELS(bf16)
#undef MOE_INSTANTIATE_EXPERT_KERNELS

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

void CudaBackend::dropOverCapacity(const int32_t *indices, int32_t *kept,
                                   int64_t tokens, int64_t topK,
                                   int64_t experts, int64_t capacity) {
  Device &d = current();
  int64_t *count = dropCounter();
  cuda::dropOverCapacity(d, indices, tokens, topK, experts, capacity, kept,
                         count);
  queueStat(Stat::Dropped, count, 1, 0);
}

void CudaBackend::permute(const float *x, const int32_t *indices,
                          float *permuted, int64_t *offsets, int32_t *rowToSlot,
                          int64_t tokens, int64_t topK, int64_t hidden,
                          int64_t experts) {
  cuda::permuteByExpert(current(), indices, tokens, topK, experts, offsets,
                        rowToSlot);
  onStorage([&](Device &d, auto s) {
    cuda::gatherRows(d, s(x), rowToSlot, tokens * topK, topK, hidden,
                     s(permuted));
  });
  queueStat(Stat::Counts, offsets, experts + 1, experts);
}

void CudaBackend::unpermuteCombine(const float *expertOut,
                                   const int32_t *rowToSlot,
                                   const float *weights, float *out,
                                   int64_t tokens, int64_t topK,
                                   int64_t hidden) {
  onStorage([&](Device &d, auto s) {
    cuda::unpermuteCombine(d, s(expertOut), rowToSlot, s(weights), tokens, topK,
                           hidden, s(out));
  });
}

void CudaBackend::permuteGrad(const float *dpermuted, const int32_t *rowToSlot,
                              float *dx, int64_t tokens, int64_t topK,
                              int64_t hidden) {
  onStorage([&](Device &d, auto s) {
    cuda::permuteGrad(d, s(dpermuted), rowToSlot, tokens, topK, hidden, s(dx));
  });
}

void CudaBackend::unpermuteGrad(const float *dout, const float *expertOut,
                                const int32_t *rowToSlot, const float *weights,
                                float *dexpertOut, float *dweights,
                                int64_t tokens, int64_t topK, int64_t hidden) {
  onStorage([&](Device &d, auto s) {
    cuda::unpermuteCombineGrad(d, s(dout), s(expertOut), rowToSlot, s(weights),
                               tokens, topK, hidden, s(dexpertOut),
                               s(dweights));
  });
}

} // namespace moe::cuda
