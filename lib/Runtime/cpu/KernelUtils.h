//===- KernelUtils.h - Shared helpers of the CPU kernels --------*- C++ -*-===//
//
// Private to lib/Runtime/cpu: argument checks, the one GEMM entry point, and
// the scalar functions several kernels share.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CPU_KERNELUTILS_H
#define MOE_LIB_RUNTIME_CPU_KERNELUTILS_H

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace moe::cpu::detail {

/// Throws std::invalid_argument("moe::cpu::<kernel>: <message>").
[[noreturn]] void fail(const char *kernel, const std::string &message);

/// Throws unless value >= 0 (sizes) or value >= 1 when `positive`.
void checkSize(const char *kernel, const char *name, int64_t value,
               bool positive = false);

/// Throws unless 0 <= id < bound; `what` names the id ("token id", ...).
void checkId(const char *kernel, const char *what, int64_t id, int64_t bound,
             int64_t at);

/// C [m, n] = alpha * op(A) @ op(B) + beta * C, row-major: op(A) is [m, k]
/// (A stored [k, m] when `transA`, the weight gradients' dy^T), op(B) is
/// [k, n] (B stored [n, k] when `transB`). Leading dimensions allow strided
/// row blocks (attention heads). No-op when m or n is 0.
void gemmT(const char *kernel, bool transA, bool transB, int64_t m, int64_t n,
           int64_t k, float alpha, const float *a, int64_t lda, const float *b,
           int64_t ldb, float beta, float *c, int64_t ldc);

/// Checks grouped-GEMM segment offsets [segments + 1]: from 0, non-decreasing,
/// ending at most at `rows`. Returns the largest segment's row count.
int64_t checkSegments(const char *kernel, const int64_t *offsets,
                      int64_t segments, int64_t rows);

/// slot -> row of a permutation's rowToSlot [slots]: rows holding -1
/// (kDroppedSlot) are padding, and a slot no row holds (dropped) maps to -1.
/// A slot out of range or held twice is a failure of `kernel`.
std::vector<int64_t> invertRowToSlot(const char *kernel,
                                     const int32_t *rowToSlot, int64_t slots);

/// gemmT without a transposed A.
inline void gemm(const char *kernel, bool transB, int64_t m, int64_t n,
                 int64_t k, float alpha, const float *a, int64_t lda,
                 const float *b, int64_t ldb, float beta, float *c,
                 int64_t ldc) {
  gemmT(kernel, /*transA=*/false, transB, m, n, k, alpha, a, lda, b, ldb,
        beta, c, ldc);
}

/// RoPE's rotation of x [batch, seq, heads, headDim] (rotate-half pairs,
/// fp32 angles as HF computes them) by +angle, or by -angle (its transpose,
/// the backward) when `inverse`.
void rotateHalf(const char *kernel, const float *x, const int32_t *positions,
                int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
                double theta, bool inverse, float *out);

/// y = x @ w^T for x [rows, in], w [out, in]: the projection every layer uses.
inline void project(const char *kernel, const float *x, int64_t rows,
                    int64_t in, const float *w, int64_t out, float *y) {
  gemm(kernel, /*transB=*/true, rows, out, in, 1.0f, x, in, w, in, 0.0f, y,
       out);
}

/// Rows the SwiGLU kernels compute at once: their fp32 intermediates (2, or
/// 4 in the backward, [rows, inter] blocks) fit a workspace of this many rows
/// however many tokens an expert or a dense FFN receives, so that memory stays
/// what the compiler planned (moec --memory-report) plus this bounded block.
constexpr int64_t kSwigluRowBlock = 512;
inline int64_t swigluBlockRows(int64_t rows) {
  return rows < kSwigluRowBlock ? rows : kSwigluRowBlock;
}

/// SwiGLU FFN of one weight set on `rows` contiguous rows: out = (silu(x g^T)
/// * (x u^T)) d^T, kSwigluRowBlock rows at a time. `scratch` holds
/// 2 * swigluBlockRows(rows) * inter floats.
void swigluRows(const char *kernel, const float *x, int64_t rows,
                int64_t hidden, const float *gate, const float *up,
                const float *down, int64_t inter, float *scratch, float *out);

/// log(sum_i exp(x[i])) with max subtraction, accumulated in double so that
/// the result does not depend on the length of the row.
double logSumExp(const float *x, int64_t n);

/// Softmax of one row in fp32 with max subtraction.
void softmaxRow(const float *x, int64_t n, float *out);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x * sigmoid(x); }

} // namespace moe::cpu::detail

#endif // MOE_LIB_RUNTIME_CPU_KERNELUTILS_H
