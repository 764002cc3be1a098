//===- DeviceMath.cuh - Device helpers shared by the CUDA kernels -*- CUDA
//-*-===//
//
// Storage loads and stores (fp32 or bf16), and warp and block reductions
// over float and double. Block reductions need blockDim.x to be a multiple
// of 32 (at most 1024), every thread of the block to call them, and a
// __shared__ array of 32 elements; every thread gets the result. They end with
// a barrier, so the shared array may be reused at once.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_DEVICEMATH_CUH
#define MOE_LIB_RUNTIME_CUDA_DEVICEMATH_CUH

#include "CudaKernels.h" // convertStorage
#include "Device.h"

#include <cuda_runtime.h>

#include <type_traits>

namespace moe::cuda {

// Storage elements: every load widens to fp32 (exact), every store rounds
// from fp32 to nearest even; the arithmetic in between is fp32 (or double).
__device__ __forceinline__ float toF32(float v) { return v; }
__device__ __forceinline__ float toF32(bf16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T fromF32(float v);
template <> __device__ __forceinline__ float fromF32<float>(float v) {
  return v;
}
template <> __device__ __forceinline__ bf16 fromF32<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T> __device__ __forceinline__ T warpSum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T> __device__ __forceinline__ T warpMax(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    T other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

template <typename T> __device__ T blockSum(T v, T *shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = warpSum(v);
  if (lane == 0)
    shared[warp] = v;
  __syncthreads();
  T total = lane < warps ? shared[lane] : T(0);
  total = warpSum(total);
  __syncthreads();
  return total;
}

template <typename T> __device__ T blockMax(T v, T *shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = warpMax(v);
  if (lane == 0)
    shared[warp] = v;
  __syncthreads();
  T best = lane < warps ? shared[lane] : shared[0];
  best = warpMax(best);
  __syncthreads();
  return best;
}

/// Where a T output is summed in fp32 before its one rounding: the output
/// itself under fp32 storage; under bf16, fp32 scratch (bytes(n) of it,
/// 0 under fp32) that starts as the widened output and that store() rounds
/// back, so elements no kernel writes keep their value exactly.
template <typename T> class Fp32Accumulator {
public:
  static constexpr bool kDirect = std::is_same_v<T, float>;
  static size_t bytes(int64_t n) {
    return kDirect ? 0 : ScratchCarver::bytes<float>(n);
  }
  Fp32Accumulator(Device &dev, T *out, int64_t n, ScratchCarver &carve)
      : out_(out), n_(n),
        acc_(kDirect ? reinterpret_cast<float *>(out) : carve.take<float>(n)) {
    if (!kDirect && n_ > 0)
      convertStorage(dev, acc_, /*dstBf16=*/false, out_, /*srcBf16=*/true, n_);
  }
  float *get() const { return acc_; }
  void store(Device &dev) const {
    if (!kDirect && n_ > 0)
      convertStorage(dev, out_, /*dstBf16=*/true, acc_, /*srcBf16=*/false, n_);
  }

private:
  T *out_;
  int64_t n_;
  float *acc_;
};

/// The CPU's sigmoid, 1 / (1 + std::exp(-x)): expf, not __expf.
__device__ __forceinline__ float sigmoidExact(float x) {
  return 1.0f / (1.0f + expf(-x));
}

// SwiGLU on the gate and up projections g and u, as the CPU's swigluRows and
// swigluRowsGrad: the same expressions, rounded alike (no fused
// multiply-add). Shared by the dense, grouped and fused kernels.
/// silu(g) * u.
__device__ __forceinline__ float swiglu(float g, float u) {
  return __fmul_rn(__fmul_rn(g, sigmoidExact(g)), u);
}
/// From d = d(silu(g) u): dg = d u s (1 + g (1 - s)) and du = d g s, with
/// s = sigmoid(g).
__device__ __forceinline__ void swigluGrad(float g, float u, float d, float &dg,
                                           float &du) {
  float s = sigmoidExact(g);
  du = __fmul_rn(__fmul_rn(d, g), s);
  float slope = __fadd_rn(1.0f, __fmul_rn(g, 1.0f - s));
  dg = __fmul_rn(__fmul_rn(__fmul_rn(d, u), s), slope);
}

} // namespace moe::cuda

#endif // MOE_LIB_RUNTIME_CUDA_DEVICEMATH_CUH
