//===- DenseGemm.cu - Row-major cuBLAS GEMMs of the CUDA kernels ----------===//
//
// See DenseGemm.h.
//
// cuBLAS is column-major. A row-major matrix with leading dimension ld, read
// column-major with the same ld, is its transpose. So we ask cuBLAS for C^T
// [n, m] = op(B)^T [n, k] @ op(A)^T [k, m]: the first operand is B (B's
// storage reads as B^T when B is stored [k, n], which is op(B)^T as is:
// CUBLAS_OP_N; when B is stored [n, k] it reads as op(B) and needs
// CUBLAS_OP_T), the second is A likewise, and C^T written column-major with
// ldc is C row-major.
//
//===----------------------------------------------------------------------===//

#include "DenseGemm.h"
#include "DeviceMath.cuh"

#include <algorithm>
#include <climits>
#include <string>
#include <type_traits>

namespace moe::cuda {

namespace {

constexpr unsigned kThreads = 256;

template <typename T> constexpr cudaDataType_t dataType();
template <> constexpr cudaDataType_t dataType<float>() { return CUDA_R_32F; }
template <> constexpr cudaDataType_t dataType<bf16>() { return CUDA_R_16BF; }

/// C = beta * C (0 when beta is 0, whatever C held); grid-stride.
template <typename T>
__global__ void scaleMatrixKernel(T *c, int64_t m, int64_t n, int64_t ldc,
                                  float beta) {
  int64_t total = m * n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    T *at = c + (i / n) * ldc + i % n;
    *at = fromF32<T>(beta == 0.0f ? 0.0f : beta * toF32(*at));
  }
}

} // namespace

template <typename TAB, typename TC>
void gemm(Device &dev, const char *kernel, bool transA, bool transB, int64_t m,
          int64_t n, int64_t k, float alpha, const TAB *a, int64_t lda,
          const TAB *b, int64_t ldb, float beta, TC *c, int64_t ldc) {
  if (m == 0 || n == 0)
    return;
  for (int64_t v : {m, n, k, lda, ldb, ldc})
    if (v > INT_MAX)
      fail(kernel, "GEMM dimension " + std::to_string(v) +
                       " exceeds the cuBLAS integer range");
  if (k == 0) {
    // cuBLAS rejects a leading dimension of 0; the product is empty anyway.
    if (beta != 1.0f) {
      int64_t cap = std::max<int64_t>(1, int64_t(dev.smCount()) * 32);
      unsigned grid = static_cast<unsigned>(
          std::min<int64_t>(gridFor(m * n, kThreads), cap));
      scaleMatrixKernel<<<grid, kThreads, 0, dev.stream()>>>(c, m, n, ldc,
                                                             beta);
      checkLaunch("scaleMatrixKernel");
    }
    return;
  }
  constexpr bool kBf16 = std::is_same_v<TAB, bf16>;
  check(cublasSetPointerMode(dev.cublas(), CUBLAS_POINTER_MODE_HOST),
        "cublasSetPointerMode");
  check(cublasGemmEx(dev.cublas(), transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                     transA ? CUBLAS_OP_T : CUBLAS_OP_N, int(n), int(m), int(k),
                     &alpha, b, dataType<TAB>(), int(ldb), a, dataType<TAB>(),
                     int(lda), &beta, c, dataType<TC>(), int(ldc),
                     kBf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC,
                     CUBLAS_GEMM_DEFAULT),
        kernel);
}

#define MOE_INSTANTIATE_GEMM(TAB, TC)                                          \
  template void gemm<TAB, TC>(Device &, const char *, bool, bool, int64_t,     \
                              int64_t, int64_t, float, const TAB *, int64_t,   \
                              const TAB *, int64_t, float, TC *, int64_t);
MOE_INSTANTIATE_GEMM(float, float)
MOE_INSTANTIATE_GEMM(bf16, bf16)
MOE_INSTANTIATE_GEMM(bf16, float)
#undef MOE_INSTANTIATE_GEMM

} // namespace moe::cuda
