//===- FfnKernels.cu - The dense SwiGLU MLP and shared experts on the GPU -===//
//
// The SwiGLU feed-forward of dense layers and of the shared experts (with
// their optional sigmoid gate) on cuBLAS GEMMs, their gradients, and the
// CUDA backend's methods for the calls.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"
#include "CudaKernels.h"
#include "DenseGemm.h"
#include "DeviceMath.cuh"
#include "KernelLaunch.cuh"

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

namespace moe::cuda {

namespace {

constexpr unsigned kThreads = 256;

/// act[i] = silu(gateOut[i]) * up[i], as the CPU's swigluRows, stored as
/// the down projection's operand type T; grid-stride.
template <typename T>
__global__ void siluMulKernel(const float *gateOut, const float *up, int64_t n,
                              T *act) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    act[e] = fromF32<T>(swiglu(gateOut[e], up[e]));
  }
}

/// The SwiGLU backward's elementwise step (CPU swigluRowsGrad): from the
/// gate and up projections and dact = dy @ down, d(gate out) and d(up out),
/// stored as the weight gradients' operand type T; grid-stride.
template <typename T>
__global__ void swigluBackwardKernel(const float *gateOut, const float *upOut,
                                     const float *dact, int64_t n, T *dgateOut,
                                     T *dupOut) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    float dg, du;
    swigluGrad(gateOut[e], upOut[e], dact[e], dg, du);
    dgateOut[e] = fromF32<T>(dg);
    dupOut[e] = fromF32<T>(du);
  }
}

//===----------------------------------------------------------------------===//
// SwiGLU building blocks (scratch carved by the caller)
//===----------------------------------------------------------------------===//

/// The scratch of swigluForward.
template <typename T> struct SwigluScratch {
  float *gateOut, *upOut; // [rows, inter] each
  T *act;                 // [rows, inter]: the down projection's operand
  static size_t bytes(int64_t size) {
    return 2 * ScratchCarver::bytes<float>(size) +
           ScratchCarver::bytes<T>(size);
  }
  SwigluScratch(ScratchCarver &carve, int64_t size)
      : gateOut(carve.take<float>(size)), upOut(carve.take<float>(size)),
        act(carve.take<T>(size)) {}
};

/// tmp.act = silu(x gate^T) * (x up^T), with the gate and up projections
/// in fp32 and act rounded to T for the down projection (a cuBLAS GEMM takes
/// one operand type).
template <typename T>
void swigluHidden(Device &dev, const char *kernel, const T *x, int64_t rows,
                  int64_t hidden, const T *gate, const T *up, int64_t inter,
                  const SwigluScratch<T> &tmp) {
  project(dev, kernel, x, rows, hidden, gate, inter, tmp.gateOut);
  project(dev, kernel, x, rows, hidden, up, inter, tmp.upOut);
  int64_t size = rows * inter;
  if (size > 0) {
    siluMulKernel<<<elementGrid(dev, size), kThreads, 0, dev.stream()>>>(
        tmp.gateOut, tmp.upOut, size, tmp.act);
    checkLaunch("siluMulKernel");
  }
}

/// CPU swigluRows: out = act down^T, act from swigluHidden; out is T or
/// fp32.
template <typename T, typename TO>
void swigluForward(Device &dev, const char *kernel, const T *x, int64_t rows,
                   int64_t hidden, const T *gate, const T *up, const T *down,
                   int64_t inter, const SwigluScratch<T> &tmp, TO *out) {
  swigluHidden(dev, kernel, x, rows, hidden, gate, up, inter, tmp);
  project(dev, kernel, tmp.act, rows, inter, down, hidden, out);
}

/// The scratch of swigluBackward.
template <typename T> struct SwigluGradScratch {
  SwigluScratch<T> fwd; // fwd.act later holds d(up out)
  float *dact;          // [rows, inter]
  T *dgateOut;          // [rows, inter]
  static size_t bytes(int64_t size) {
    return SwigluScratch<T>::bytes(size) + ScratchCarver::bytes<float>(size) +
           ScratchCarver::bytes<T>(size);
  }
  SwigluGradScratch(ScratchCarver &carve, int64_t size)
      : fwd(carve, size), dact(carve.take<float>(size)),
        dgateOut(carve.take<T>(size)) {}
};

/// CPU swigluRowsGrad with weightBeta 0: dgate, dup, ddown overwritten; dx
/// summed in fp32 into dxAcc [rows, hidden] (overwritten), which the caller
/// rounds into its dx. d(gate out) and d(up out) are rounded to T, the
/// operand type of the GEMMs that read them.
template <typename T>
void swigluBackward(Device &dev, const char *kernel, const T *dy, const T *x,
                    int64_t rows, int64_t hidden, const T *gate, const T *up,
                    const T *down, int64_t inter,
                    const SwigluGradScratch<T> &tmp, float *dxAcc, T *dgate,
                    T *dup, T *ddown) {
  int64_t size = rows * inter;
  swigluHidden(dev, kernel, x, rows, hidden, gate, up, inter, tmp.fwd);
  // ddown [hidden, inter] = dy^T @ act; dact [rows, inter] = dy @ down.
  gemm(dev, kernel, /*transA=*/true, /*transB=*/false, hidden, inter, rows,
       1.0f, dy, hidden, tmp.fwd.act, inter, 0.0f, ddown, inter);
  gemm(dev, kernel, false, false, rows, inter, hidden, 1.0f, dy, hidden, down,
       inter, 0.0f, tmp.dact, inter);
  // act becomes d(up out).
  T *dupOut = tmp.fwd.act;
  if (size > 0) {
    swigluBackwardKernel<<<elementGrid(dev, size), kThreads, 0, dev.stream()>>>(
        tmp.fwd.gateOut, tmp.fwd.upOut, tmp.dact, size, tmp.dgateOut, dupOut);
    checkLaunch("swigluBackwardKernel");
  }
  // dgate = dgateOut^T x, dup = dupOut^T x, dx = dgateOut gate + dupOut up.
  gemm(dev, kernel, true, false, inter, hidden, rows, 1.0f, tmp.dgateOut, inter,
       x, hidden, 0.0f, dgate, hidden);
  gemm(dev, kernel, true, false, inter, hidden, rows, 1.0f, dupOut, inter, x,
       hidden, 0.0f, dup, hidden);
  gemm(dev, kernel, false, false, rows, hidden, inter, 1.0f, tmp.dgateOut,
       inter, gate, hidden, 0.0f, dxAcc, hidden);
  gemm(dev, kernel, false, false, rows, hidden, inter, 1.0f, dupOut, inter, up,
       hidden, 1.0f, dxAcc, hidden);
}

void checkSwiglu(const char *kernel, int64_t rows, int64_t hidden,
                 int64_t inter) {
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "inter", inter);
}

/// x [rows, hidden] . sharedGate [hidden] of row r, fp32 (the CPU's BLAS dot),
/// by the whole block; every thread gets it.
template <typename T>
__device__ float rowDot(const T *x, const T *sharedGate, int64_t r,
                        int64_t hidden, float *shared) {
  float dot = 0.0f;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x)
    dot += toF32(x[r * hidden + i]) * toF32(sharedGate[i]);
  return blockSum(dot, shared);
}

/// out[r, :] = mlpOut[r, :] * sigmoid(x[r] . sharedGate) (out may be
/// mlpOut); one block per row.
template <typename T, typename TM>
__global__ void sharedGateKernel(const T *x, const T *sharedGate, int64_t rows,
                                 int64_t hidden, const TM *mlpOut, T *out) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float g = sigmoidExact(rowDot(x, sharedGate, r, hidden, shared));
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x)
      out[r * hidden + i] = fromF32<T>(toF32(mlpOut[r * hidden + i]) * g);
  }
}

/// The sigmoid gate's backward, one block per row (CPU sharedExpertsGrad):
/// with s = sigmoid(x[r] . sharedGate) and m = mlpOut the SwiGLU output,
/// dz[r] = (dy[r] . m[r]) s (1 - s) (dot in double) and dm[r] = s * dy[r].
template <typename T>
__global__ void sharedGateBackwardKernel(const T *dy, const T *x,
                                         const T *sharedGate, int64_t rows,
                                         int64_t hidden, const float *mlpOut,
                                         T *dm, float *dz) {
  __shared__ float sharedF[32];
  __shared__ double sharedD[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float s = sigmoidExact(rowDot(x, sharedGate, r, hidden, sharedF));
    double dot = 0.0;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
      float g = toF32(dy[r * hidden + i]);
      dot += double(g) * mlpOut[r * hidden + i];
      dm[r * hidden + i] = fromF32<T>(__fmul_rn(s, g));
    }
    dot = blockSum(dot, sharedD);
    if (threadIdx.x == 0)
      dz[r] = float(dot * s * (1.0f - s));
  }
}

/// dx[r, i] += dz[r] * sharedGate[i] (dx the fp32 sums); grid-stride.
template <typename T>
__global__ void addGateInputGradKernel(float *dx, const float *dz,
                                       const T *sharedGate, int64_t rows,
                                       int64_t hidden) {
  int64_t total = rows * hidden;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    dx[e] = __fadd_rn(dx[e],
                      __fmul_rn(dz[e / hidden], toF32(sharedGate[e % hidden])));
}

/// dsharedGate[j] terms: dz[r] * x[r, j], in double.
template <typename T> struct SharedGateTerm {
  const float *dz;
  const T *x;
  int64_t hidden;
  __device__ double operator()(int64_t r, int64_t j) const {
    return double(dz[r]) * toF32(x[r * hidden + j]);
  }
};

} // namespace

template <typename T>
void swigluMlp(Device &dev, const T *x, int64_t rows, int64_t hidden,
               const T *gate, const T *up, const T *down, int64_t inter,
               T *out) {
  const char *kernel = "swigluMlp";
  checkSwiglu(kernel, rows, hidden, inter);
  ScratchCarver carve(dev.scratch(SwigluScratch<T>::bytes(rows * inter)));
  SwigluScratch<T> tmp(carve, rows * inter);
  swigluForward(dev, kernel, x, rows, hidden, gate, up, down, inter, tmp, out);
}

// With a gate, the SwiGLU output stays fp32 until the gate has scaled it.
template <typename T>
void sharedExperts(Device &dev, const T *x, int64_t rows, int64_t hidden,
                   const T *gate, const T *up, const T *down, int64_t inter,
                   const T *sharedGate, T *out) {
  const char *kernel = "sharedExperts";
  checkSwiglu(kernel, rows, hidden, inter);
  if (!sharedGate) {
    swigluMlp(dev, x, rows, hidden, gate, up, down, inter, out);
    return;
  }
  ScratchCarver carve(dev.scratch(SwigluScratch<T>::bytes(rows * inter) +
                                  ScratchCarver::bytes<float>(rows * hidden)));
  SwigluScratch<T> tmp(carve, rows * inter);
  float *mlpOut = carve.take<float>(rows * hidden);
  swigluForward(dev, kernel, x, rows, hidden, gate, up, down, inter, tmp,
                mlpOut);
  if (rows * hidden == 0)
    return;
  sharedGateKernel<<<rowGrid(rows), kThreads, 0, dev.stream()>>>(
      x, sharedGate, rows, hidden, mlpOut, out);
  checkLaunch("sharedGateKernel");
}

template <typename T>
void swigluMlpGrad(Device &dev, const T *dy, const T *x, int64_t rows,
                   int64_t hidden, const T *gate, const T *up, const T *down,
                   int64_t inter, T *dx, T *dgate, T *dup, T *ddown) {
  const char *kernel = "swigluMlpGrad";
  checkSwiglu(kernel, rows, hidden, inter);
  ScratchCarver carve(dev.scratch(SwigluGradScratch<T>::bytes(rows * inter) +
                                  Fp32Accumulator<T>::bytes(rows * hidden)));
  SwigluGradScratch<T> tmp(carve, rows * inter);
  Fp32Accumulator<T> dxAcc(dev, dx, rows * hidden, carve);
  swigluBackward(dev, kernel, dy, x, rows, hidden, gate, up, down, inter, tmp,
                 dxAcc.get(), dgate, dup, ddown);
  dxAcc.store(dev);
}

// out = sigmoid(z) * m, z = x . sharedGate, m the SwiGLU output: the SwiGLU
// is recomputed (m in fp32), the gate's backward runs one block per row, the
// SwiGLU's backward gets dm = sigmoid(z) dy, then dx += dz sharedGate (in
// the fp32 sums) and dsharedGate = dz^T x (deterministic column sum in
// double).
template <typename T>
void sharedExpertsGrad(Device &dev, const T *dy, const T *x, int64_t rows,
                       int64_t hidden, const T *gate, const T *up,
                       const T *down, int64_t inter, const T *sharedGate, T *dx,
                       T *dgate, T *dup, T *ddown, T *dsharedGate) {
  const char *kernel = "sharedExpertsGrad";
  checkSwiglu(kernel, rows, hidden, inter);
  if (!sharedGate) {
    swigluMlpGrad(dev, dy, x, rows, hidden, gate, up, down, inter, dx, dgate,
                  dup, ddown);
    return;
  }
  const int64_t size = rows * inter, n = rows * hidden;
  int64_t chunks = chunkCount(rows);
  ScratchCarver carve(dev.scratch(
      ScratchCarver::bytes<float>(rows) + ScratchCarver::bytes<float>(n) +
      ScratchCarver::bytes<T>(n) + SwigluGradScratch<T>::bytes(size) +
      ScratchCarver::bytes<double>(chunks * hidden) +
      Fp32Accumulator<T>::bytes(n)));
  float *dz = carve.take<float>(rows);
  float *mlpOut = carve.take<float>(n);
  T *dm = carve.take<T>(n);
  SwigluGradScratch<T> tmp(carve, size);
  double *partial = carve.take<double>(chunks * hidden);
  Fp32Accumulator<T> dxAcc(dev, dx, n, carve);
  swigluForward(dev, kernel, x, rows, hidden, gate, up, down, inter, tmp.fwd,
                mlpOut);
  if (rows > 0) {
    sharedGateBackwardKernel<<<rowGrid(rows), kThreads, 0, dev.stream()>>>(
        dy, x, sharedGate, rows, hidden, mlpOut, dm, dz);
    checkLaunch("sharedGateBackwardKernel");
  }
  swigluBackward(dev, kernel, static_cast<const T *>(dm), x, rows, hidden, gate,
                 up, down, inter, tmp, dxAcc.get(), dgate, dup, ddown);
  if (n > 0) {
    addGateInputGradKernel<<<elementGrid(dev, n), kThreads, 0, dev.stream()>>>(
        dxAcc.get(), dz, sharedGate, rows, hidden);
    checkLaunch("addGateInputGradKernel");
  }
  dxAcc.store(dev);
  // The CPU writes dsharedGate only when it is given a sharedGate; a null
  // dsharedGate here skips it instead of faulting.
  if (dsharedGate)
    columnSum(dev, SharedGateTerm<T>{dz, x, hidden}, rows, hidden, partial,
              dsharedGate);
}

#define MOE_INSTANTIATE_FFN_KERNELS(T)                                         \
  template void swigluMlp<T>(Device &, const T *, int64_t, int64_t, const T *, \
                             const T *, const T *, int64_t, T *);              \
  template void sharedExperts<T>(Device &, const T *, int64_t, int64_t,        \
                                 const T *, const T *, const T *, int64_t,     \
                                 const T *, T *);                              \
  template void swigluMlpGrad<T>(Device &, const T *, const T *, int64_t,      \
                                 int64_t, const T *, const T *, const T *,     \
                                 int64_t, T *, T *, T *, T *);                 \
  template void sharedExpertsGrad<T>(                                          \
      Device &, const T *, const T *, int64_t, int64_t, const T *, const T *,  \
      const T *, int64_t, const T *, T *, T *, T *, T *, T *);
MOE_INSTANTIATE_FFN_KERNELS(float)
MOE_INSTANTIATE_FFN_KERNELS(bf16)
#undef MOE_INSTANTIATE_FFN_KERNELS

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

void CudaBackend::mlp(const float *x, const float *gate, const float *up,
                      const float *down, float *out, int64_t rows,
                      int64_t hidden, int64_t inter) {
  onStorage([&](Device &d, auto s) {
    cuda::swigluMlp(d, s(x), rows, hidden, s(gate), s(up), s(down), inter,
                    s(out));
  });
}

void CudaBackend::sharedExperts(const float *x, const float *gate,
                                const float *up, const float *down,
                                const float *sharedGate, float *out,
                                int64_t rows, int64_t hidden, int64_t inter) {
  onStorage([&](Device &d, auto s) {
    cuda::sharedExperts(d, s(x), rows, hidden, s(gate), s(up), s(down), inter,
                        s(sharedGate), s(out));
  });
}

void CudaBackend::mlpGrad(const float *dy, const float *x, const float *gate,
                          const float *up, const float *down, float *dx,
                          float *dgate, float *dup, float *ddown, int64_t rows,
                          int64_t hidden, int64_t inter) {
  onStorage([&](Device &d, auto s) {
    cuda::swigluMlpGrad(d, s(dy), s(x), rows, hidden, s(gate), s(up), s(down),
                        inter, s(dx), s(dgate), s(dup), s(ddown));
  });
}

void CudaBackend::sharedExpertsGrad(const float *dy, const float *x,
                                    const float *gate, const float *up,
                                    const float *down, const float *sharedGate,
                                    float *dx, float *dgate, float *dup,
                                    float *ddown, float *dsharedGate,
                                    int64_t rows, int64_t hidden,
                                    int64_t inter) {
  onStorage([&](Device &d, auto s) {
    cuda::sharedExpertsGrad(d, s(dy), s(x), rows, hidden, s(gate), s(up),
                            s(down), inter, s(sharedGate), s(dx), s(dgate),
                            s(dup), s(ddown), s(dsharedGate));
  });
}

} // namespace moe::cuda
