//===- KernelUtils.h - Shared helpers of the CPU kernels --------*- C++ -*-===//
//
// Private to lib/Runtime/cpu: argument checks, the one GEMM entry point, and
// the scalar functions several kernels share.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CPU_KERNELUTILS_H
#define MOE_LIB_RUNTIME_CPU_KERNELUTILS_H

#include "moe/Runtime/RopeFrequencies.h"

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
  gemmT(kernel, /*transA=*/false, transB, m, n, k, alpha, a, lda, b, ldb, beta,
        c, ldc);
}

/// RoPE's rotation of x [batch, seq, heads, headDim] (rotate-half pairs,
/// fp32 angles as HF computes them) by +angle, or by -angle (its transpose,
/// the backward) when `inverse`.
void rotateHalf(const char *kernel, const float *x, const int32_t *positions,
                int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
                double theta, const RopeVariant &variant, bool inverse, float *out);

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
/// Large enough that an expert of a Mixtral-sized batch (a few hundred to a
/// thousand rows) is one GEMM per projection: every block packs the weights
/// again inside the BLAS.
constexpr int64_t kSwigluRowBlock = 1024;
inline int64_t swigluBlockRows(int64_t rows) {
  return rows < kSwigluRowBlock ? rows : kSwigluRowBlock;
}

/// The forward splits `rows` into the fewest blocks of at most
/// kSwigluRowBlock rows, of even sizes (1100 rows: 550 + 550, not 1024 + 76,
/// whose small GEMMs would pack the whole weights for a few rows). Block b of
/// rowBlockCount(rows) covers [rowBlockBegin(rows, b), rowBlockBegin(rows,
/// b + 1)); no block has more than swigluBlockRows(rows) rows.
inline int64_t rowBlockCount(int64_t rows) {
  return (rows + kSwigluRowBlock - 1) / kSwigluRowBlock;
}
inline int64_t rowBlockBegin(int64_t rows, int64_t b) {
  return rows * b / rowBlockCount(rows);
}

/// One block of the SwiGLU FFN: out [rows, hidden] = (silu(x g^T) * (x u^T))
/// d^T for x [rows, hidden]; `act` and `upOut` hold rows * inter floats each.
void swigluBlock(const char *kernel, const float *x, int64_t rows,
                 int64_t hidden, const float *gate, const float *up,
                 const float *down, int64_t inter, float *act, float *upOut,
                 float *out);

/// SwiGLU FFN of one weight set on `rows` contiguous rows, in the blocks of
/// rowBlockCount. `scratch` holds 2 * swigluBlockRows(rows) * inter floats.
void swigluRows(const char *kernel, const float *x, int64_t rows,
                int64_t hidden, const float *gate, const float *up,
                const float *down, int64_t inter, float *scratch, float *out);

/// act[i] = silu(act[i]) * up[i] for i < n, vectorised (an exp accurate to
/// about 2 ulp in place of libm's scalar expf, which took more time than the
/// GEMMs at small widths).
void siluMul(float *act, const float *up, int64_t n);

/// Per-thread memory that the kernels reuse from call to call instead of
/// allocating (and page-faulting in) fresh buffers every time. A kernel opens
/// one Scratch for its whole call, with the bytes of all its buffers
/// (Scratch::bytes), and takes them in turn; the memory stays with the
/// thread, at the size of the largest call so far. One Scratch at a time per
/// thread: a kernel holding one must not call a kernel that opens one
/// (checked: that is a logic_error).
class Scratch {
public:
  Scratch(const char *kernel, size_t bytes);
  ~Scratch();
  Scratch(const Scratch &) = delete;
  Scratch &operator=(const Scratch &) = delete;

  /// Bytes that take<T>(n) uses: n elements, rounded up to a cache line.
  template <typename T> static size_t bytes(int64_t n) {
    return (size_t(n) * sizeof(T) + kAlign - 1) / kAlign * kAlign;
  }
  /// The next n elements of T, 64-byte aligned, uninitialised.
  template <typename T> T *take(int64_t n) {
    return static_cast<T *>(takeBytes(bytes<T>(n)));
  }

private:
  static constexpr size_t kAlign = 64;
  void *takeBytes(size_t bytes);
  const char *kernel;
  size_t size, used = 0;
  char *base;
};

/// Backward of swigluRows for one weight set on `rows` contiguous rows (at
/// most kSwigluRowBlock): dx is overwritten; the weight gradients become
/// weightBeta * themselves + these rows' (0: overwrite, 1: accumulate).
/// `scratch` holds 4 * rows * inter floats.
void swigluBlockGrad(const char *kernel, const float *dy, const float *x,
                     int64_t rows, int64_t hidden, const float *gate,
                     const float *up, const float *down, int64_t inter,
                     float weightBeta, float *scratch, float *dx, float *dgate,
                     float *dup, float *ddown);

/// swigluBlockGrad over any number of rows, kSwigluRowBlock at a time (the
/// weight gradients accumulate over the blocks). `scratch` holds
/// 4 * swigluBlockRows(rows) * inter floats.
void swigluRowsGrad(const char *kernel, const float *dy, const float *x,
                    int64_t rows, int64_t hidden, const float *gate,
                    const float *up, const float *down, int64_t inter,
                    float weightBeta, float *scratch, float *dx, float *dgate,
                    float *dup, float *ddown);

/// log(sum_i exp(x[i])) with max subtraction, accumulated in double so that
/// the result does not depend on the length of the row.
double logSumExp(const float *x, int64_t n);

/// Softmax of one row in fp32 with max subtraction.
void softmaxRow(const float *x, int64_t n, float *out);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x * sigmoid(x); }

} // namespace moe::cpu::detail

#endif // MOE_LIB_RUNTIME_CPU_KERNELUTILS_H
