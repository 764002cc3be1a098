//===- Optimizer.cu - AdamW and the gradient norm on the device -----------===//
//
// The CUDA twins of lib/Runtime/cpu/Optimizer.cpp. sumSquares is a
// deterministic two-stage reduction in double: a grid whose size depends on
// n alone (so the result does not depend on the GPU) writes one partial sum
// per block, then one block adds the partials in a fixed order. adamw is
// elementwise (grid-stride) with the CPU's scalars computed on the host by
// the CPU's very expressions, and the elementwise arithmetic spelled with
// __fmul_rn and friends so that nvcc does not fuse it into FMAs: each step
// rounds like torch.optim.AdamW's (and the CPU's) fp32 arithmetic.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"
#include "CudaKernels.h"
#include "DeviceMath.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace moe::cuda {

namespace {

constexpr unsigned kThreads = 256;
/// The most blocks of the first stage of sumSquares.
constexpr int64_t kMaxPartials = 1024;

/// Stage 1: partial[block] = sum of x[i]^2 over the block's grid-stride
/// elements, in double.
template <typename T>
__global__ void sumSquaresPartialKernel(const T *x, int64_t n,
                                        double *partial) {
  __shared__ double shared[32];
  double sum = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    double v = toF32(x[i]);
    sum += v * v;
  }
  sum = blockSum(sum, shared);
  if (threadIdx.x == 0)
    partial[blockIdx.x] = sum;
}

/// Stage 2, one block: *out = sum of the partials.
__global__ void sumSquaresFinishKernel(const double *partial, int64_t count,
                                       double *out) {
  __shared__ double shared[32];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x)
    sum += partial[i];
  sum = blockSum(sum, shared);
  if (threadIdx.x == 0)
    *out = sum;
}

/// One AdamW step per element, as the CPU's loop body.
template <typename T>
__global__ void adamwKernel(T *param, const T *grad, float *m, float *v,
                            int64_t n, float decay, float stepSize,
                            float biasCorrection2Sqrt, float beta2,
                            float oneMinusBeta1, float oneMinusBeta2, float eps,
                            float gradScale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float g = __fmul_rn(toF32(grad[i]), gradScale);
    float p = __fmul_rn(toF32(param[i]), decay);
    float mOld = m[i], vOld = v[i];
    // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(...).
    float mi = __fadd_rn(mOld, __fmul_rn(oneMinusBeta1, __fsub_rn(g, mOld)));
    float vi = __fadd_rn(__fmul_rn(vOld, beta2),
                         __fmul_rn(__fmul_rn(oneMinusBeta2, g), g));
    float denom =
        __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), biasCorrection2Sqrt), eps);
    param[i] =
        fromF32<T>(__fsub_rn(p, __fmul_rn(stepSize, __fdiv_rn(mi, denom))));
    m[i] = mi;
    v[i] = vi;
  }
}

__global__ void widenKernel(const __nv_bfloat16 *src, float *dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

__global__ void narrowKernel(const float *src, __nv_bfloat16 *dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

} // namespace

void convertStorage(Device &dev, void *dst, bool dstBf16, const void *src,
                    bool srcBf16, int64_t n) {
  checkSize("convertStorage", "n", n);
  if (n == 0)
    return;
  if (dstBf16 == srcBf16) {
    check(cudaMemcpyAsync(dst, src, size_t(n) * (dstBf16 ? 2 : 4),
                          cudaMemcpyDeviceToDevice, dev.stream()),
          "cudaMemcpyAsync (device to device)");
    return;
  }
  int64_t cap = std::max<int64_t>(1, int64_t(dev.smCount()) * 32);
  unsigned grid =
      static_cast<unsigned>(std::min<int64_t>(gridFor(n, kThreads), cap));
  if (dstBf16) {
    narrowKernel<<<grid, kThreads, 0, dev.stream()>>>(
        static_cast<const float *>(src), static_cast<__nv_bfloat16 *>(dst), n);
    checkLaunch("narrowKernel");
  } else {
    widenKernel<<<grid, kThreads, 0, dev.stream()>>>(
        static_cast<const __nv_bfloat16 *>(src), static_cast<float *>(dst), n);
    checkLaunch("widenKernel");
  }
}

void sumSquares(Device &dev, const float *x, int64_t n, double *out) {
  checkSize("sumSquares", "n", n);
  int64_t blocks = std::min<int64_t>(gridFor(n, kThreads), kMaxPartials);
  auto *partial =
      static_cast<double *>(dev.scratch(size_t(blocks) * sizeof(double)));
  sumSquaresPartialKernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                            dev.stream()>>>(x, n, partial);
  checkLaunch("sumSquaresPartialKernel");
  sumSquaresFinishKernel<<<1, 1024, 0, dev.stream()>>>(partial, blocks, out);
  checkLaunch("sumSquaresFinishKernel");
}

void adamw(Device &dev, float *param, const float *grad, float *m, float *v,
           int64_t n, float lr, float beta1, float beta2, float eps,
           float weightDecay, float gradScale, int64_t step) {
  const char *kernel = "adamw";
  checkSize(kernel, "n", n);
  if (step < 1)
    fail(kernel, "step must be at least 1, got " + std::to_string(step));
  // The CPU's scalars, by the CPU's expressions.
  float decay = float(1.0 - double(lr) * double(weightDecay));
  double biasCorrection1 = 1.0 - std::pow(double(beta1), double(step));
  double biasCorrection2 = 1.0 - std::pow(double(beta2), double(step));
  float stepSize = float(double(lr) / biasCorrection1);
  float biasCorrection2Sqrt = float(std::sqrt(biasCorrection2));
  float oneMinusBeta1 = 1.0f - beta1, oneMinusBeta2 = 1.0f - beta2;
  if (n == 0)
    return;
  int64_t cap = std::max<int64_t>(1, int64_t(dev.smCount()) * 32);
  unsigned grid =
      static_cast<unsigned>(std::min<int64_t>(gridFor(n, kThreads), cap));
  adamwKernel<<<grid, kThreads, 0, dev.stream()>>>(
      param, grad, m, v, n, decay, stepSize, biasCorrection2Sqrt, beta2,
      oneMinusBeta1, oneMinusBeta2, eps, gradScale);
  checkLaunch("adamwKernel");
}

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

void CudaBackend::sumSquares(const float *x, double *out, int64_t n) {
  cuda::sumSquares(current(), x, n, out);
}

void CudaBackend::adamw(float *param, const float *grad, float *m, float *v,
                        int64_t n, float lr, float beta1, float beta2,
                        float eps, float weightDecay, float gradScale,
                        int64_t step) {
  cuda::adamw(current(), param, grad, m, v, n, lr, beta1, beta2, eps,
              weightDecay, gradScale, step);
}

} // namespace moe::cuda
