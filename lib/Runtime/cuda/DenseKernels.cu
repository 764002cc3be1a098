//===- DenseKernels.cu - Embedding, norms, projections, RoPE, SwiGLU ------===//
//
// The CUDA twins of the dense kernels of lib/Runtime/cpu/DenseKernels.cpp
// and GradKernels.cpp (embedding, rmsNorm, linear, rope, swigluMlp, add,
// sharedExperts and their gradients). Projections go through cuBLAS (fp32,
// no TF32: the Device sets pedantic math); the rest are small kernels:
// grid-stride loops for elementwise work, one block per row for row
// reductions, and deterministic two-stage column reductions (fixed chunks of
// rows, then a fixed-order sum of the chunks) for the weight gradients that
// sum over rows. Row and column sums that the CPU accumulates in double are
// accumulated in double here too; dot products the CPU hands to BLAS are
// accumulated in fp32.
//
// Elementwise formulas are written with __fmul_rn and friends where the CPU
// evaluates a product and a sum separately, so that nvcc does not contract
// them into an FMA and the results round like the CPU's.
//
//===----------------------------------------------------------------------===//

#include "CudaKernels.h"
#include "DeviceMath.cuh"

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

namespace moe::cuda {

namespace {

constexpr unsigned kThreads = 256;

/// Blocks of a grid-stride loop over n elements (capped: each thread then
/// handles several).
unsigned elementGrid(const Device &dev, int64_t n) {
  int64_t cap = std::max<int64_t>(1, int64_t(dev.smCount()) * 32);
  return static_cast<unsigned>(std::min<int64_t>(gridFor(n, kThreads), cap));
}

/// Blocks of a one-block-per-row loop over `rows` rows.
unsigned rowGrid(int64_t rows) {
  return static_cast<unsigned>(std::clamp<int64_t>(rows, 1, int64_t(1) << 20));
}

/// Carves consecutive aligned pieces out of one dev.scratch() block.
class ScratchCarver {
public:
  explicit ScratchCarver(void *base) : base_(static_cast<char *>(base)) {}
  template <typename T> T *take(int64_t count) {
    T *p = reinterpret_cast<T *>(base_ + used_);
    used_ += alignUp(size_t(std::max<int64_t>(count, 1)) * sizeof(T));
    return p;
  }

private:
  char *base_;
  size_t used_ = 0;
};

/// The bytes ScratchCarver::take<T>(count) uses.
template <typename T> size_t scratchBytes(int64_t count) {
  return alignUp(size_t(std::max<int64_t>(count, 1)) * sizeof(T));
}

__device__ __forceinline__ float sigmoidExact(float x) {
  // expf, not __expf: the CPU's sigmoid is 1 / (1 + std::exp(-x)).
  return 1.0f / (1.0f + expf(-x));
}

//===----------------------------------------------------------------------===//
// GEMM
//===----------------------------------------------------------------------===//

__global__ void scaleMatrixKernel(float *c, int64_t m, int64_t n, int64_t ldc,
                                  float beta) {
  int64_t total = m * n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    float *at = c + (i / n) * ldc + i % n;
    *at = beta == 0.0f ? 0.0f : beta * *at;
  }
}

/// The CPU's gemmT on the device: row-major C [m, n] = alpha * op(A) @ op(B)
/// + beta * C, op(A) [m, k] (A stored [k, m] when `transA`), op(B) [k, n] (B
/// stored [n, k] when `transB`), leading dimensions lda, ldb, ldc.
///
/// cuBLAS is column-major. A row-major matrix with leading dimension ld,
/// read column-major with the same ld, is its transpose. So we ask cuBLAS
/// for C^T [n, m] = op(B)^T [n, k] @ op(A)^T [k, m]: the first operand is B
/// (column-major, B's storage reads as B^T when B is stored [k, n], which is
/// op(B)^T as is: CUBLAS_OP_N; when B is stored [n, k] it reads as op(B) and
/// needs CUBLAS_OP_T), the second is A likewise, and C^T written column-major
/// with ldc is C row-major.
void gemm(Device &dev, const char *kernel, bool transA, bool transB, int64_t m,
          int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
          const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m == 0 || n == 0)
    return;
  for (int64_t v : {m, n, k, lda, ldb, ldc})
    if (v > INT_MAX)
      fail(kernel, "GEMM dimension " + std::to_string(v) +
                       " exceeds the cuBLAS integer range");
  if (k == 0) {
    // cuBLAS rejects a leading dimension of 0; the product is empty anyway.
    if (beta != 1.0f) {
      scaleMatrixKernel<<<elementGrid(dev, m * n), kThreads, 0, dev.stream()>>>(
          c, m, n, ldc, beta);
      checkLaunch("scaleMatrixKernel");
    }
    return;
  }
  check(cublasSetPointerMode(dev.cublas(), CUBLAS_POINTER_MODE_HOST),
        "cublasSetPointerMode");
  check(cublasGemmEx(dev.cublas(), transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                     transA ? CUBLAS_OP_T : CUBLAS_OP_N, int(n), int(m), int(k),
                     &alpha, b, CUDA_R_32F, int(ldb), a, CUDA_R_32F, int(lda),
                     &beta, c, CUDA_R_32F, int(ldc), CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT),
        kernel);
}

/// y [rows, out] = x [rows, in] @ w [out, in]^T.
void project(Device &dev, const char *kernel, const float *x, int64_t rows,
             int64_t in, const float *w, int64_t out, float *y) {
  gemm(dev, kernel, /*transA=*/false, /*transB=*/true, rows, out, in, 1.0f, x,
       in, w, in, 0.0f, y, out);
}

//===----------------------------------------------------------------------===//
// Deterministic column sums
//===----------------------------------------------------------------------===//

/// Rows per chunk of a column reduction: at least 64, and at most 4096
/// chunks (gridDim.y).
int64_t chunkRows(int64_t rows) {
  return std::max<int64_t>(64, (rows + 4095) / 4096);
}
int64_t chunkCount(int64_t rows) {
  return (rows + chunkRows(rows) - 1) / chunkRows(rows);
}

/// Stage 1: partial[c, j] = sum over the rows r of chunk c (ascending) of
/// term(r, j), in double. Grid (column blocks, chunks), a thread per column.
template <typename Term>
__global__ void columnPartialsKernel(Term term, int64_t rows, int64_t cols,
                                     int64_t rowsPerChunk, double *partial) {
  int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= cols)
    return;
  int64_t first = blockIdx.y * rowsPerChunk;
  int64_t last = first + rowsPerChunk < rows ? first + rowsPerChunk : rows;
  double sum = 0.0;
  for (int64_t r = first; r < last; ++r)
    sum += term(r, j);
  partial[blockIdx.y * cols + j] = sum;
}

/// Stage 2: out[j] = sum over the chunks (ascending) of partial[c, j].
template <typename T>
__global__ void columnFinishKernel(const double *partial, int64_t chunks,
                                   int64_t cols, T *out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < cols;
       j += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0.0;
    for (int64_t c = 0; c < chunks; ++c)
      sum += partial[c * cols + j];
    out[j] = static_cast<T>(float(sum));
  }
}

/// out[j] = float(sum over rows of term(r, j)), deterministic; `partial`
/// holds chunkCount(rows) * cols doubles.
template <typename Term, typename T>
void columnSum(Device &dev, const Term &term, int64_t rows, int64_t cols,
               double *partial, T *out) {
  if (cols == 0)
    return;
  int64_t chunks = chunkCount(rows);
  if (chunks > 0) {
    dim3 grid(gridFor(cols, kThreads), static_cast<unsigned>(chunks));
    columnPartialsKernel<<<grid, kThreads, 0, dev.stream()>>>(
        term, rows, cols, chunkRows(rows), partial);
    checkLaunch("columnPartialsKernel");
  }
  columnFinishKernel<<<elementGrid(dev, cols), kThreads, 0, dev.stream()>>>(
      partial, chunks, cols, out);
  checkLaunch("columnFinishKernel");
}

//===----------------------------------------------------------------------===//
// Elementwise and row kernels
//===----------------------------------------------------------------------===//

/// out[i, :] = table[tokens[i], :]; a thread per element (grid-stride). A
/// token id outside [0, vocab) (the CPU throws) gives a zero row.
template <typename T>
__global__ void embeddingKernel(const int32_t *tokens, int64_t n,
                                const T *table, int64_t vocab, int64_t hidden,
                                T *out) {
  int64_t total = n * hidden;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t i = e / hidden, j = e % hidden;
    int64_t token = tokens[i];
    out[e] = token >= 0 && token < vocab ? table[token * hidden + j]
                                         : static_cast<T>(0.0f);
  }
}

/// One block per row: sum of squares in double, then (x * inv) * weight.
template <typename T>
__global__ void rmsNormKernel(const T *x, const T *weight, int64_t rows,
                              int64_t dim, float eps, T *out) {
  __shared__ double shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *row = x + r * dim;
    double sumSquares = 0.0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      double v = static_cast<float>(row[i]);
      sumSquares += v * v;
    }
    sumSquares = blockSum(sumSquares, shared);
    float inv = 1.0f / sqrtf(float(sumSquares / double(dim)) + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      out[r * dim + i] =
          static_cast<T>(__fmul_rn(__fmul_rn(static_cast<float>(row[i]), inv),
                                   static_cast<float>(weight[i])));
  }
}

/// out[r, o] += bias[o]; grid-stride.
template <typename T>
__global__ void addBiasKernel(T *out, const T *bias, int64_t rows,
                              int64_t cols) {
  int64_t total = rows * cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    out[e] = static_cast<T>(static_cast<float>(out[e]) +
                            static_cast<float>(bias[e % cols]));
}

/// out = a + b elementwise (out may alias a or b); grid-stride.
template <typename T>
__global__ void addKernel(const T *a, const T *b, int64_t n, T *out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x)
    out[e] =
        static_cast<T>(static_cast<float>(a[e]) + static_cast<float>(b[e]));
}

/// act[i] = silu(gateOut[i]) * up[i], as the CPU's swigluRows (act may be
/// gateOut); grid-stride.
__global__ void siluMulKernel(const float *gateOut, const float *up, int64_t n,
                              float *act) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    float g = gateOut[e];
    act[e] = __fmul_rn(__fmul_rn(g, sigmoidExact(g)), up[e]);
  }
}

/// The SwiGLU backward's elementwise step (CPU swigluRowsGrad): from the
/// gate and up projections and dact = dy @ down, dact becomes d(gate out)
/// and dup d(up out); grid-stride.
__global__ void swigluBackwardKernel(const float *gateOut, const float *upOut,
                                     float *dact, float *dupOut, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    float g = gateOut[e], s = sigmoidExact(g), d = dact[e];
    dupOut[e] = __fmul_rn(__fmul_rn(d, g), s);
    float dsilu = __fadd_rn(1.0f, __fmul_rn(g, 1.0f - s));
    dact[e] = __fmul_rn(__fmul_rn(__fmul_rn(d, upOut[e]), s), dsilu);
  }
}

//===----------------------------------------------------------------------===//
// RoPE
//===----------------------------------------------------------------------===//

/// The inverse frequencies, computed on the host by the CPU's very
/// expression (so bit-identical) when headDim / 2 fits here; passed to the
/// kernel as a __grid_constant__ parameter (2 KiB).
constexpr int64_t kRopeHostFreqs = 512;
struct RopeFreqs {
  float invFreq[kRopeHostFreqs];
};

/// Rotate-half RoPE by +angle, or -angle when `inverse`; one block per token
/// (b, s) (grid-stride): the block's threads compute the token's cos/sin
/// into shared memory (fp32 angle pos * invFreq as the CPU; cos and sin
/// evaluated in double and rounded, i.e. correctly rounded like glibc's
/// cosf/sinf almost always), then rotate every (head, pair) of the token.
template <typename T>
__global__ void rotateHalfKernel(const T *x, const int32_t *positions,
                                 int64_t tokens, int64_t seq, int64_t heads,
                                 int64_t half, float theta, bool hostFreqs,
                                 const __grid_constant__ RopeFreqs freqs,
                                 bool inverse, T *out) {
  extern __shared__ float trig[]; // cos [half], then sin [half]
  float *cosA = trig, *sinA = trig + half;
  int64_t headDim = 2 * half;
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    float pos = positions ? float(positions[t]) : float(t % seq);
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      float invFreq;
      if (hostFreqs) {
        invFreq = freqs.invFreq[i];
      } else {
        // The CPU's 1.0f / powf(theta, float(2i) / float(headDim)), powf
        // evaluated in double and rounded.
        float exponent = float(2 * i) / float(headDim);
        invFreq = 1.0f / float(pow(double(theta), double(exponent)));
      }
      float angle = __fmul_rn(pos, invFreq);
      double s, c;
      sincos(double(angle), &s, &c);
      cosA[i] = float(c);
      sinA[i] = inverse ? -float(s) : float(s);
    }
    __syncthreads();
    const T *xt = x + t * heads * headDim;
    T *ot = out + t * heads * headDim;
    for (int64_t k = threadIdx.x; k < heads * half; k += blockDim.x) {
      int64_t h = k / half, i = k % half;
      int64_t at = h * headDim + i;
      float lo = static_cast<float>(xt[at]);
      float hi = static_cast<float>(xt[at + half]);
      ot[at] = static_cast<T>(
          __fsub_rn(__fmul_rn(lo, cosA[i]), __fmul_rn(hi, sinA[i])));
      ot[at + half] = static_cast<T>(
          __fadd_rn(__fmul_rn(hi, cosA[i]), __fmul_rn(lo, sinA[i])));
    }
    __syncthreads(); // before the next token overwrites cos/sin
  }
}

void rotateHalf(Device &dev, const char *kernel, const float *x,
                const int32_t *positions, int64_t batch, int64_t seq,
                int64_t heads, int64_t headDim, double theta, bool inverse,
                float *out) {
  checkSize(kernel, "batch", batch);
  checkSize(kernel, "seq", seq);
  checkSize(kernel, "heads", heads);
  checkSize(kernel, "headDim", headDim, /*positive=*/true);
  if (headDim % 2 != 0)
    fail(kernel, "headDim must be even, got " + std::to_string(headDim));
  if (!(theta > 0.0))
    fail(kernel, "theta must be positive, got " + std::to_string(theta));
  int64_t half = headDim / 2;
  size_t sharedBytes = 2 * size_t(half) * sizeof(float);
  if (sharedBytes > 48 * 1024)
    fail(kernel,
         "headDim " + std::to_string(headDim) + " exceeds the supported 12288");
  int64_t tokens = batch * seq;
  if (tokens == 0 || heads == 0)
    return;
  RopeFreqs freqs{};
  bool hostFreqs = half <= kRopeHostFreqs;
  if (hostFreqs)
    for (int64_t i = 0; i < half; ++i) // exactly the CPU's rotateHalf
      freqs.invFreq[i] =
          1.0f / std::pow(float(theta), float(2 * i) / float(headDim));
  rotateHalfKernel<<<rowGrid(tokens), kThreads, sharedBytes, dev.stream()>>>(
      x, positions, tokens, seq, heads, half, float(theta), hostFreqs, freqs,
      inverse, out);
  checkLaunch("rotateHalfKernel");
}

//===----------------------------------------------------------------------===//
// SwiGLU building blocks (scratch carved by the caller)
//===----------------------------------------------------------------------===//

/// CPU swigluRows: out = (silu(x gate^T) * (x up^T)) down^T; gateOut and
/// upOut hold rows * inter floats each.
void swigluForward(Device &dev, const char *kernel, const float *x,
                   int64_t rows, int64_t hidden, const float *gate,
                   const float *up, const float *down, int64_t inter,
                   float *gateOut, float *upOut, float *out) {
  project(dev, kernel, x, rows, hidden, gate, inter, gateOut);
  project(dev, kernel, x, rows, hidden, up, inter, upOut);
  int64_t size = rows * inter;
  if (size > 0) {
    siluMulKernel<<<elementGrid(dev, size), kThreads, 0, dev.stream()>>>(
        gateOut, upOut, size, gateOut);
    checkLaunch("siluMulKernel");
  }
  project(dev, kernel, gateOut, rows, inter, down, hidden, out);
}

/// CPU swigluRowsGrad with weightBeta 0: dx, dgate, dup, ddown overwritten;
/// `scratch` holds 4 * rows * inter floats.
void swigluBackward(Device &dev, const char *kernel, const float *dy,
                    const float *x, int64_t rows, int64_t hidden,
                    const float *gate, const float *up, const float *down,
                    int64_t inter, float *scratch, float *dx, float *dgate,
                    float *dup, float *ddown) {
  int64_t size = rows * inter;
  float *gateOut = scratch, *upOut = scratch + size;
  float *act = scratch + 2 * size, *dact = scratch + 3 * size;
  project(dev, kernel, x, rows, hidden, gate, inter, gateOut);
  project(dev, kernel, x, rows, hidden, up, inter, upOut);
  if (size > 0) {
    siluMulKernel<<<elementGrid(dev, size), kThreads, 0, dev.stream()>>>(
        gateOut, upOut, size, act);
    checkLaunch("siluMulKernel");
  }
  // ddown [hidden, inter] = dy^T @ act; dact [rows, inter] = dy @ down.
  gemm(dev, kernel, /*transA=*/true, /*transB=*/false, hidden, inter, rows,
       1.0f, dy, hidden, act, inter, 0.0f, ddown, inter);
  gemm(dev, kernel, false, false, rows, inter, hidden, 1.0f, dy, hidden, down,
       inter, 0.0f, dact, inter);
  // act becomes d(up out), dact d(gate out).
  if (size > 0) {
    swigluBackwardKernel<<<elementGrid(dev, size), kThreads, 0, dev.stream()>>>(
        gateOut, upOut, dact, act, size);
    checkLaunch("swigluBackwardKernel");
  }
  // dgate = dact^T x, dup = act^T x, dx = dact gate + act up.
  gemm(dev, kernel, true, false, inter, hidden, rows, 1.0f, dact, inter, x,
       hidden, 0.0f, dgate, hidden);
  gemm(dev, kernel, true, false, inter, hidden, rows, 1.0f, act, inter, x,
       hidden, 0.0f, dup, hidden);
  gemm(dev, kernel, false, false, rows, hidden, inter, 1.0f, dact, inter, gate,
       hidden, 0.0f, dx, hidden);
  gemm(dev, kernel, false, false, rows, hidden, inter, 1.0f, act, inter, up,
       hidden, 1.0f, dx, hidden);
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
    dot += static_cast<float>(x[r * hidden + i]) *
           static_cast<float>(sharedGate[i]);
  return blockSum(dot, shared);
}

/// out[r, :] *= sigmoid(x[r] . sharedGate); one block per row.
template <typename T>
__global__ void sharedGateKernel(const T *x, const T *sharedGate, int64_t rows,
                                 int64_t hidden, T *out) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float g = sigmoidExact(rowDot(x, sharedGate, r, hidden, shared));
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x)
      out[r * hidden + i] =
          static_cast<T>(static_cast<float>(out[r * hidden + i]) * g);
  }
}

/// The sigmoid gate's backward, one block per row (CPU sharedExpertsGrad):
/// with s = sigmoid(x[r] . sharedGate) and m the SwiGLU output, dz[r] =
/// (dy[r] . m[r]) s (1 - s) (dot in double) and m[r] becomes s * dy[r].
__global__ void sharedGateBackwardKernel(const float *dy, const float *x,
                                         const float *sharedGate, int64_t rows,
                                         int64_t hidden, float *mlpOut,
                                         float *dz) {
  __shared__ float sharedF[32];
  __shared__ double sharedD[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float s = sigmoidExact(rowDot(x, sharedGate, r, hidden, sharedF));
    double dot = 0.0;
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
      float &m = mlpOut[r * hidden + i];
      float g = dy[r * hidden + i];
      dot += double(g) * m;
      m = __fmul_rn(s, g);
    }
    dot = blockSum(dot, sharedD);
    if (threadIdx.x == 0)
      dz[r] = float(dot * s * (1.0f - s));
  }
}

/// dx[r, i] += dz[r] * sharedGate[i]; grid-stride.
__global__ void addGateInputGradKernel(float *dx, const float *dz,
                                       const float *sharedGate, int64_t rows,
                                       int64_t hidden) {
  int64_t total = rows * hidden;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    dx[e] = __fadd_rn(dx[e], __fmul_rn(dz[e / hidden], sharedGate[e % hidden]));
}

//===----------------------------------------------------------------------===//
// Gradient helpers
//===----------------------------------------------------------------------===//

/// values[i] = i.
__global__ void iotaKernel(int32_t *values, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x)
    values[e] = int32_t(e);
}

/// After a stable sort of (token, i) by token: the block of the first
/// position p of each run of equal tokens writes dtable[token, :] = the sum
/// of the run's dy rows in ascending i (the CPU's order, from 0.0f), a
/// thread per column. Other positions' blocks do nothing; so do runs of
/// token ids outside [0, vocab) (the CPU throws): they are skipped.
template <typename T>
__global__ void embeddingGradRunsKernel(const T *dy, const int32_t *keys,
                                        const int32_t *rowsOfKeys, int64_t n,
                                        int64_t vocab, int64_t hidden,
                                        T *dtable) {
  for (int64_t p = blockIdx.x; p < n; p += gridDim.x) {
    int64_t token = keys[p];
    if ((p > 0 && keys[p - 1] == token) || token < 0 || token >= vocab)
      continue;
    for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) {
      float sum = 0.0f;
      for (int64_t q = p; q < n && keys[q] == token; ++q)
        sum += static_cast<float>(dy[int64_t(rowsOfKeys[q]) * hidden + j]);
      dtable[token * hidden + j] = static_cast<T>(sum);
    }
  }
}

/// One block per row of rmsNormGrad: dx, and inv[r] for dweight.
template <typename T>
__global__ void rmsNormGradKernel(const T *dy, const T *x, const T *weight,
                                  int64_t rows, int64_t dim, float eps, T *dx,
                                  double *invOut) {
  __shared__ double shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * dim, *gr = dy + r * dim;
    double sumSquares = 0.0, dot = 0.0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      double xv = static_cast<float>(xr[i]);
      sumSquares += xv * xv;
      dot += double(static_cast<float>(gr[i])) * static_cast<float>(weight[i]) *
             xv;
    }
    sumSquares = blockSum(sumSquares, shared);
    dot = blockSum(dot, shared);
    // y = x * inv * w, inv = (mean(x^2) + eps)^(-1/2): d inv / d x_i =
    // -inv^3 x_i / dim.
    double inv = 1.0 / sqrt(sumSquares / double(dim) + double(eps));
    double coef = inv * inv * inv * dot / double(dim);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      dx[r * dim + i] = static_cast<T>(float(inv * static_cast<float>(gr[i]) *
                                                 static_cast<float>(weight[i]) -
                                             coef * static_cast<float>(xr[i])));
    if (threadIdx.x == 0)
      invOut[r] = inv;
  }
}

/// dweight[j] terms: dy[r, j] * x[r, j] * inv[r], in double.
struct RmsNormWeightTerm {
  const float *dy, *x;
  const double *inv;
  int64_t dim;
  __device__ double operator()(int64_t r, int64_t j) const {
    return double(dy[r * dim + j]) * x[r * dim + j] * inv[r];
  }
};

/// dsharedGate[j] terms: dz[r] * x[r, j], in double.
struct SharedGateTerm {
  const float *dz, *x;
  int64_t hidden;
  __device__ double operator()(int64_t r, int64_t j) const {
    return double(dz[r]) * x[r * hidden + j];
  }
};

} // namespace

//===----------------------------------------------------------------------===//
// Forward
//===----------------------------------------------------------------------===//

void embedding(Device &dev, const int32_t *tokens, int64_t n,
               const float *table, int64_t vocab, int64_t hidden, float *out) {
  checkSize("embedding", "n", n);
  checkSize("embedding", "vocab", vocab);
  checkSize("embedding", "hidden", hidden);
  if (n * hidden == 0)
    return;
  embeddingKernel<<<elementGrid(dev, n * hidden), kThreads, 0, dev.stream()>>>(
      tokens, n, table, vocab, hidden, out);
  checkLaunch("embeddingKernel");
}

void rmsNorm(Device &dev, const float *x, const float *weight, int64_t rows,
             int64_t dim, float eps, float *out) {
  checkSize("rmsNorm", "rows", rows);
  checkSize("rmsNorm", "dim", dim, /*positive=*/true);
  if (rows == 0)
    return;
  rmsNormKernel<<<rowGrid(rows), kThreads, 0, dev.stream()>>>(x, weight, rows,
                                                              dim, eps, out);
  checkLaunch("rmsNormKernel");
}

void linear(Device &dev, const float *x, int64_t rows, int64_t in,
            const float *weight, int64_t outFeatures, const float *bias,
            float *out) {
  checkSize("linear", "rows", rows);
  checkSize("linear", "in", in);
  checkSize("linear", "outFeatures", outFeatures);
  project(dev, "linear", x, rows, in, weight, outFeatures, out);
  if (!bias || rows * outFeatures == 0)
    return;
  addBiasKernel<<<elementGrid(dev, rows * outFeatures), kThreads, 0,
                  dev.stream()>>>(out, bias, rows, outFeatures);
  checkLaunch("addBiasKernel");
}

void rope(Device &dev, const float *x, const int32_t *positions, int64_t batch,
          int64_t seq, int64_t heads, int64_t headDim, double theta,
          float *out) {
  rotateHalf(dev, "rope", x, positions, batch, seq, heads, headDim, theta,
             /*inverse=*/false, out);
}

void swigluMlp(Device &dev, const float *x, int64_t rows, int64_t hidden,
               const float *gate, const float *up, const float *down,
               int64_t inter, float *out) {
  const char *kernel = "swigluMlp";
  checkSwiglu(kernel, rows, hidden, inter);
  ScratchCarver carve(dev.scratch(2 * scratchBytes<float>(rows * inter)));
  float *gateOut = carve.take<float>(rows * inter);
  float *upOut = carve.take<float>(rows * inter);
  swigluForward(dev, kernel, x, rows, hidden, gate, up, down, inter, gateOut,
                upOut, out);
}

void add(Device &dev, const float *a, const float *b, int64_t n, float *out) {
  checkSize("add", "n", n);
  if (n == 0)
    return;
  addKernel<<<elementGrid(dev, n), kThreads, 0, dev.stream()>>>(a, b, n, out);
  checkLaunch("addKernel");
}

void sharedExperts(Device &dev, const float *x, int64_t rows, int64_t hidden,
                   const float *gate, const float *up, const float *down,
                   int64_t inter, const float *sharedGate, float *out) {
  const char *kernel = "sharedExperts";
  checkSwiglu(kernel, rows, hidden, inter);
  ScratchCarver carve(dev.scratch(2 * scratchBytes<float>(rows * inter)));
  float *gateOut = carve.take<float>(rows * inter);
  float *upOut = carve.take<float>(rows * inter);
  swigluForward(dev, kernel, x, rows, hidden, gate, up, down, inter, gateOut,
                upOut, out);
  if (!sharedGate || rows * hidden == 0)
    return;
  sharedGateKernel<<<rowGrid(rows), kThreads, 0, dev.stream()>>>(
      x, sharedGate, rows, hidden, out);
  checkLaunch("sharedGateKernel");
}

//===----------------------------------------------------------------------===//
// Backward
//===----------------------------------------------------------------------===//

// Deterministic: a stable radix sort of (token, i) by token (CUB), then one
// block per run of equal tokens sums its dy rows in ascending i, the CPU's
// order, so dtable matches the CPU bit for bit. Rows of tokens that do not
// occur are zeroed first.
void embeddingGrad(Device &dev, const float *dy, const int32_t *tokens,
                   int64_t n, int64_t vocab, int64_t hidden, float *dtable) {
  const char *kernel = "embeddingGrad";
  checkSize(kernel, "n", n);
  checkSize(kernel, "vocab", vocab);
  checkSize(kernel, "hidden", hidden);
  if (n > INT_MAX)
    fail(kernel, "n " + std::to_string(n) + " exceeds the sort's range");
  if (vocab * hidden > 0)
    check(cudaMemsetAsync(dtable, 0, size_t(vocab * hidden) * sizeof(float),
                          dev.stream()),
          "cudaMemsetAsync (embeddingGrad)");
  if (n == 0 || vocab * hidden == 0)
    return;
  size_t sortBytes = 0;
  check(cub::DeviceRadixSort::SortPairs(
            nullptr, sortBytes, tokens, static_cast<int32_t *>(nullptr),
            static_cast<const int32_t *>(nullptr),
            static_cast<int32_t *>(nullptr), int(n), 0, 32, dev.stream()),
        "cub::DeviceRadixSort::SortPairs (size)");
  ScratchCarver carve(dev.scratch(3 * scratchBytes<int32_t>(n) +
                                  scratchBytes<char>(int64_t(sortBytes))));
  int32_t *rowIds = carve.take<int32_t>(n);
  int32_t *sortedTokens = carve.take<int32_t>(n);
  int32_t *sortedRows = carve.take<int32_t>(n);
  void *sortTemp = carve.take<char>(int64_t(sortBytes));
  iotaKernel<<<elementGrid(dev, n), kThreads, 0, dev.stream()>>>(rowIds, n);
  checkLaunch("iotaKernel");
  check(cub::DeviceRadixSort::SortPairs(sortTemp, sortBytes, tokens,
                                        sortedTokens, rowIds, sortedRows,
                                        int(n), 0, 32, dev.stream()),
        "cub::DeviceRadixSort::SortPairs");
  embeddingGradRunsKernel<<<rowGrid(n), kThreads, 0, dev.stream()>>>(
      dy, sortedTokens, sortedRows, n, vocab, hidden, dtable);
  checkLaunch("embeddingGradRunsKernel");
}

// dx one block per row (double sums, as the CPU); dweight by the
// deterministic two-stage column sum of dy * x * inv over rows.
void rmsNormGrad(Device &dev, const float *dy, const float *x,
                 const float *weight, int64_t rows, int64_t dim, float eps,
                 float *dx, float *dweight) {
  const char *kernel = "rmsNormGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "dim", dim, /*positive=*/true);
  ScratchCarver carve(
      dev.scratch(scratchBytes<double>(rows) +
                  scratchBytes<double>(chunkCount(rows) * dim)));
  double *inv = carve.take<double>(rows);
  double *partial = carve.take<double>(chunkCount(rows) * dim);
  if (rows > 0) {
    rmsNormGradKernel<<<rowGrid(rows), kThreads, 0, dev.stream()>>>(
        dy, x, weight, rows, dim, eps, dx, inv);
    checkLaunch("rmsNormGradKernel");
  }
  columnSum(dev, RmsNormWeightTerm{dy, x, inv, dim}, rows, dim, partial,
            dweight);
}

void linearGrad(Device &dev, const float *dy, const float *x, int64_t rows,
                int64_t in, const float *weight, int64_t outFeatures, float *dx,
                float *dweight) {
  const char *kernel = "linearGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "in", in);
  checkSize(kernel, "outFeatures", outFeatures);
  // dx [rows, in] = dy [rows, out] @ weight [out, in].
  gemm(dev, kernel, /*transA=*/false, /*transB=*/false, rows, in, outFeatures,
       1.0f, dy, outFeatures, weight, in, 0.0f, dx, in);
  // dweight [out, in] = dy^T @ x [rows, in].
  gemm(dev, kernel, /*transA=*/true, /*transB=*/false, outFeatures, in, rows,
       1.0f, dy, outFeatures, x, in, 0.0f, dweight, in);
}

void ropeGrad(Device &dev, const float *dy, const int32_t *positions,
              int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
              double theta, float *dx) {
  // A rotation's transpose is the rotation by the opposite angle.
  rotateHalf(dev, "ropeGrad", dy, positions, batch, seq, heads, headDim, theta,
             /*inverse=*/true, dx);
}

void swigluMlpGrad(Device &dev, const float *dy, const float *x, int64_t rows,
                   int64_t hidden, const float *gate, const float *up,
                   const float *down, int64_t inter, float *dx, float *dgate,
                   float *dup, float *ddown) {
  const char *kernel = "swigluMlpGrad";
  checkSwiglu(kernel, rows, hidden, inter);
  float *scratch =
      static_cast<float *>(dev.scratch(scratchBytes<float>(4 * rows * inter)));
  swigluBackward(dev, kernel, dy, x, rows, hidden, gate, up, down, inter,
                 scratch, dx, dgate, dup, ddown);
}

// out = sigmoid(z) * m, z = x . sharedGate, m the SwiGLU output: the SwiGLU
// is recomputed, the gate's backward runs one block per row, the SwiGLU's
// backward gets dm = sigmoid(z) dy, then dx += dz sharedGate and
// dsharedGate = dz^T x (deterministic column sum in double).
void sharedExpertsGrad(Device &dev, const float *dy, const float *x,
                       int64_t rows, int64_t hidden, const float *gate,
                       const float *up, const float *down, int64_t inter,
                       const float *sharedGate, float *dx, float *dgate,
                       float *dup, float *ddown, float *dsharedGate) {
  const char *kernel = "sharedExpertsGrad";
  checkSwiglu(kernel, rows, hidden, inter);
  if (!sharedGate) {
    float *scratch = static_cast<float *>(
        dev.scratch(scratchBytes<float>(4 * rows * inter)));
    swigluBackward(dev, kernel, dy, x, rows, hidden, gate, up, down, inter,
                   scratch, dx, dgate, dup, ddown);
    return;
  }
  int64_t chunks = chunkCount(rows);
  ScratchCarver carve(dev.scratch(scratchBytes<float>(rows) +
                                  scratchBytes<float>(rows * hidden) +
                                  scratchBytes<float>(4 * rows * inter) +
                                  scratchBytes<double>(chunks * hidden)));
  float *dz = carve.take<float>(rows);
  float *mlpOut = carve.take<float>(rows * hidden);
  float *swiglu = carve.take<float>(4 * rows * inter);
  double *partial = carve.take<double>(chunks * hidden);
  swigluForward(dev, kernel, x, rows, hidden, gate, up, down, inter, swiglu,
                swiglu + rows * inter, mlpOut);
  if (rows > 0) {
    sharedGateBackwardKernel<<<rowGrid(rows), kThreads, 0, dev.stream()>>>(
        dy, x, sharedGate, rows, hidden, mlpOut, dz);
    checkLaunch("sharedGateBackwardKernel");
  }
  swigluBackward(dev, kernel, mlpOut, x, rows, hidden, gate, up, down, inter,
                 swiglu, dx, dgate, dup, ddown);
  if (rows * hidden > 0) {
    addGateInputGradKernel<<<elementGrid(dev, rows * hidden), kThreads, 0,
                             dev.stream()>>>(dx, dz, sharedGate, rows, hidden);
    checkLaunch("addGateInputGradKernel");
  }
  // The CPU writes dsharedGate only when it is given a sharedGate; a null
  // dsharedGate here skips it instead of faulting.
  if (dsharedGate)
    columnSum(dev, SharedGateTerm{dz, x, hidden}, rows, hidden, partial,
              dsharedGate);
}

} // namespace moe::cuda
