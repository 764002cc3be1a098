//===- DeviceMath.cuh - Reductions shared by the CUDA kernels ---*- CUDA -*-===//
//
// Warp and block reductions over float and double. Block reductions need
// blockDim.x to be a multiple of 32 (at most 1024), every thread of the block
// to call them, and a __shared__ array of 32 elements; every thread gets the
// result. They end with a barrier, so the shared array may be reused at once.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_DEVICEMATH_CUH
#define MOE_LIB_RUNTIME_CUDA_DEVICEMATH_CUH

#include <cuda_runtime.h>

namespace moe::cuda {

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

__device__ __forceinline__ float sigmoidf(float x) {
  return 1.0f / (1.0f + __expf(-x));
}

} // namespace moe::cuda

#endif // MOE_LIB_RUNTIME_CUDA_DEVICEMATH_CUH
