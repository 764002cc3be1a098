//===- GroupedSwigluKernels.cu - The experts' grouped SwiGLU on the GPU ---===//
//
// The SwiGLU of every expert over its segment of the permuted rows, on the
// grouped GEMMs (GroupedCublas.h under bf16 by default, GroupedGemm.h
// otherwise; MOE_CUDA_EXPERT_GEMM picks), its gradient, and the CUDA
// backend's methods for the calls.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"
#include "CudaKernels.h"
#include "DenseGemm.h"
#include "DeviceMath.cuh"
#include "GroupedCublas.h"
#include "GroupedGemm.h"
#include "KernelLaunch.cuh"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace moe::cuda {

namespace {

constexpr int kThreads = 256;

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
      return grouped::swigluCublas(dev, kernel, permuted, rows, offsets,
                                   segments, experts, hidden, inter, gate, up,
                                   down, out,
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
          dev, kernel, dout, permuted, rows, offsets, segments, experts, hidden,
          inter, gate, up, down, dpermuted, dgate, dup, ddown,
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

#define MOE_INSTANTIATE_GROUPED_SWIGLU_KERNELS(T)                              \
  template void groupedSwiGLUSegments<T>(                                      \
      Device &, const T *, int64_t, const int64_t *, int64_t, int64_t,         \
      int64_t, int64_t, const T *, const T *, const T *, T *);                 \
  template void groupedSwiGLUSegmentsGrad<T>(                                  \
      Device &, const T *, const T *, int64_t, const int64_t *, int64_t,       \
      int64_t, int64_t, int64_t, const T *, const T *, const T *, T *, T *,    \
      T *, T *);
MOE_INSTANTIATE_GROUPED_SWIGLU_KERNELS(float)
MOE_INSTANTIATE_GROUPED_SWIGLU_KERNELS(bf16)
#undef MOE_INSTANTIATE_GROUPED_SWIGLU_KERNELS

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

void CudaBackend::groupedSwiglu(const float *permuted, const int64_t *offsets,
                                const float *gate, const float *up,
                                const float *down, float *out, int64_t rows,
                                int64_t segments, int64_t experts,
                                int64_t hidden, int64_t inter) {
  onStorage([&](Device &d, auto s) {
    cuda::groupedSwiGLUSegments(d, s(permuted), rows, offsets, segments,
                                experts, hidden, inter, s(gate), s(up), s(down),
                                s(out));
  });
}

void CudaBackend::groupedSwigluGrad(const float *dout, const float *permuted,
                                    const int64_t *offsets, const float *gate,
                                    const float *up, const float *down,
                                    float *dpermuted, float *dgate, float *dup,
                                    float *ddown, int64_t rows,
                                    int64_t segments, int64_t experts,
                                    int64_t hidden, int64_t inter) {
  onStorage([&](Device &d, auto s) {
    cuda::groupedSwiGLUSegmentsGrad(d, s(dout), s(permuted), rows, offsets,
                                    segments, experts, hidden, inter, s(gate),
                                    s(up), s(down), s(dpermuted), s(dgate),
                                    s(dup), s(ddown));
  });
}

} // namespace moe::cuda
