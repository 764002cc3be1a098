//===- GroupedCublas.h - bf16 expert FFN on the tensor cores ----*- C++ -*-===//
//
// Private to lib/Runtime/cuda. Under bf16 storage the grouped expert FFN
// (groupedSwiGLUSegments and its gradient, GroupedSwigluKernels.cu) runs its GEMMs
// through cuBLAS on the tensor cores instead of the tiled fp32-FMA kernels of
// GroupedGemm.h. cuBLAS takes problem sizes on the host, so the segment
// offsets are read back first (one host synchronisation per call; the tiled
// kernels need none) and checked (SegmentPlan.h); then every non-empty
// segment is one GEMM, either all of them in one cublasGemmGroupedBatchedEx
// call per projection or one cublasGemmEx each.
//
// Precision: bf16 operands, fp32 accumulation. The gate and up projections
// and d(act) are rounded to bf16 (the next GEMM's operands must be bf16),
// SwiGLU and its gradient are computed in fp32 from them; the weight
// gradients of an expert with several segments, and dx = d(gate out) @ gate
// + d(up out) @ up, are summed in fp32 and rounded once. The tiled kernels
// keep every intermediate in fp32, so the two agree to bf16 rounding
// (docs/cuda.md).
//
// MOE_CUDA_EXPERT_GEMM picks the path for bf16: `cublas-grouped` (the
// default), `cublas` (one cuBLAS call per segment) or `tiled`. fp32 storage
// always runs the tiled kernels, which track the CPU reference.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_GROUPEDCUBLAS_H
#define MOE_LIB_RUNTIME_CUDA_GROUPEDCUBLAS_H

#include "Device.h"

#include <cstdint>

namespace moe::cuda::grouped {

enum class ExpertGemm { Tiled, Cublas, CublasGrouped };

/// The bf16 expert GEMM path from MOE_CUDA_EXPERT_GEMM (read on every call,
/// so a test may switch it); throws std::runtime_error naming the variable
/// for an unknown value.
ExpertGemm bf16ExpertGemm();

/// groupedSwiGLUSegments<bf16> through cuBLAS (`grouped`: one grouped
/// batched call per projection). Same contract as the tiled version.
void swigluCublas(Device &dev, const char *kernel, const bf16 *permuted,
                  int64_t rows, const int64_t *offsets, int64_t segments,
                  int64_t experts, int64_t hidden, int64_t inter,
                  const bf16 *gate, const bf16 *up, const bf16 *down, bf16 *out,
                  bool grouped);

/// groupedSwiGLUSegmentsGrad<bf16> through cuBLAS.
void swigluGradCublas(Device &dev, const char *kernel, const bf16 *dout,
                      const bf16 *permuted, int64_t rows,
                      const int64_t *offsets, int64_t segments, int64_t experts,
                      int64_t hidden, int64_t inter, const bf16 *gate,
                      const bf16 *up, const bf16 *down, bf16 *dpermuted,
                      bf16 *dgate, bf16 *dup, bf16 *ddown, bool grouped);

} // namespace moe::cuda::grouped

#endif // MOE_LIB_RUNTIME_CUDA_GROUPEDCUBLAS_H
