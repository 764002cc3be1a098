//===- DenseGemm.h - Row-major cuBLAS GEMMs of the CUDA kernels -*- C++ -*-===//
//
// Private to lib/Runtime/cuda. The one place the kernels call cuBLAS: dense
// projections, their gradients and the router's logits.
//
// Types: both operands have the storage type TAB (fp32 or bf16); the result
// TC is TAB or fp32 (a bf16 product a kernel keeps working on in fp32).
// fp32 operands multiply in true fp32 (CUBLAS_COMPUTE_32F_PEDANTIC: no TF32,
// whatever NVIDIA_TF32_OVERRIDE says), so results track the CPU reference;
// bf16 operands multiply on the tensor cores with fp32 accumulation
// (CUBLAS_COMPUTE_32F; the Device forbids reduced-precision split-K sums) and
// are rounded once when the result is stored.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_DENSEGEMM_H
#define MOE_LIB_RUNTIME_CUDA_DENSEGEMM_H

#include "Device.h"

#include <cstdint>

namespace moe::cuda {

/// Row-major C [m, n] = alpha * op(A) @ op(B) + beta * C, op(A) [m, k] (A
/// stored [k, m] when `transA`), op(B) [k, n] (B stored [n, k] when
/// `transB`), leading dimensions lda, ldb, ldc. k = 0 scales C by beta.
/// Instantiated for (TAB, TC) = (float, float), (bf16, bf16), (bf16, float).
template <typename TAB, typename TC>
void gemm(Device &dev, const char *kernel, bool transA, bool transB, int64_t m,
          int64_t n, int64_t k, float alpha, const TAB *a, int64_t lda,
          const TAB *b, int64_t ldb, float beta, TC *c, int64_t ldc);

/// y [rows, out] = x [rows, in] @ w [out, in]^T.
template <typename TAB, typename TC>
void project(Device &dev, const char *kernel, const TAB *x, int64_t rows,
             int64_t in, const TAB *w, int64_t out, TC *y) {
  gemm(dev, kernel, /*transA=*/false, /*transB=*/true, rows, out, in, 1.0f, x,
       in, w, in, 0.0f, y, out);
}

} // namespace moe::cuda

#endif // MOE_LIB_RUNTIME_CUDA_DENSEGEMM_H
