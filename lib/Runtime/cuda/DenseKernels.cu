//===- DenseKernels.cu - Embedding, norms, projections, RoPE, SwiGLU ------===//
//
// The CUDA twins of the dense kernels of lib/Runtime/cpu/DenseKernels.cpp
// and GradKernels.cpp (embedding, rmsNorm, linear, rope, swigluMlp, add,
// sharedExperts and their gradients). Projections go through cuBLAS
// (DenseGemm.h: true fp32, or bf16 on the tensor cores); the rest are small
// kernels:
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
#include "DenseGemm.h"
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
    out[j] = fromF32<T>(float(sum));
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
                                         : fromF32<T>(0.0f);
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
      double v = toF32(row[i]);
      sumSquares += v * v;
    }
    sumSquares = blockSum(sumSquares, shared);
    float inv = 1.0f / sqrtf(float(sumSquares / double(dim)) + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      out[r * dim + i] = fromF32<T>(
          __fmul_rn(__fmul_rn(toF32(row[i]), inv), toF32(weight[i])));
  }
}

/// out[r, o] = product[r, o] + bias[o] (product may be out under fp32
/// storage: one thread reads, then writes, each element); grid-stride.
template <typename T>
__global__ void addBiasKernel(const float *product, const T *bias, int64_t rows,
                              int64_t cols, T *out) {
  int64_t total = rows * cols;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    out[e] = fromF32<T>(product[e] + toF32(bias[e % cols]));
}

/// out = a + b elementwise (out may alias a or b); grid-stride.
template <typename T>
__global__ void addKernel(const T *a, const T *b, int64_t n, T *out) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x)
    out[e] = fromF32<T>(toF32(a[e]) + toF32(b[e]));
}

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
      float lo = toF32(xt[at]);
      float hi = toF32(xt[at + half]);
      ot[at] =
          fromF32<T>(__fsub_rn(__fmul_rn(lo, cosA[i]), __fmul_rn(hi, sinA[i])));
      ot[at + half] =
          fromF32<T>(__fadd_rn(__fmul_rn(hi, cosA[i]), __fmul_rn(lo, sinA[i])));
    }
    __syncthreads(); // before the next token overwrites cos/sin
  }
}

template <typename T>
void rotateHalf(Device &dev, const char *kernel, const T *x,
                const int32_t *positions, int64_t batch, int64_t seq,
                int64_t heads, int64_t headDim, double theta, bool inverse,
                T *out) {
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
        sum += toF32(dy[int64_t(rowsOfKeys[q]) * hidden + j]);
      dtable[token * hidden + j] = fromF32<T>(sum);
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
      double xv = toF32(xr[i]);
      sumSquares += xv * xv;
      dot += double(toF32(gr[i])) * toF32(weight[i]) * xv;
    }
    sumSquares = blockSum(sumSquares, shared);
    dot = blockSum(dot, shared);
    // y = x * inv * w, inv = (mean(x^2) + eps)^(-1/2): d inv / d x_i =
    // -inv^3 x_i / dim.
    double inv = 1.0 / sqrt(sumSquares / double(dim) + double(eps));
    double coef = inv * inv * inv * dot / double(dim);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      dx[r * dim + i] = fromF32<T>(
          float(inv * toF32(gr[i]) * toF32(weight[i]) - coef * toF32(xr[i])));
    if (threadIdx.x == 0)
      invOut[r] = inv;
  }
}

/// dweight[j] terms: dy[r, j] * x[r, j] * inv[r], in double.
template <typename T> struct RmsNormWeightTerm {
  const T *dy, *x;
  const double *inv;
  int64_t dim;
  __device__ double operator()(int64_t r, int64_t j) const {
    return double(toF32(dy[r * dim + j])) * toF32(x[r * dim + j]) * inv[r];
  }
};

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

//===----------------------------------------------------------------------===//
// Forward
//===----------------------------------------------------------------------===//

template <typename T>
void embedding(Device &dev, const int32_t *tokens, int64_t n, const T *table,
               int64_t vocab, int64_t hidden, T *out) {
  checkSize("embedding", "n", n);
  checkSize("embedding", "vocab", vocab);
  checkSize("embedding", "hidden", hidden);
  if (n * hidden == 0)
    return;
  embeddingKernel<<<elementGrid(dev, n * hidden), kThreads, 0, dev.stream()>>>(
      tokens, n, table, vocab, hidden, out);
  checkLaunch("embeddingKernel");
}

template <typename T>
void rmsNorm(Device &dev, const T *x, const T *weight, int64_t rows,
             int64_t dim, float eps, T *out) {
  checkSize("rmsNorm", "rows", rows);
  checkSize("rmsNorm", "dim", dim, /*positive=*/true);
  if (rows == 0)
    return;
  rmsNormKernel<<<rowGrid(rows), kThreads, 0, dev.stream()>>>(x, weight, rows,
                                                              dim, eps, out);
  checkLaunch("rmsNormKernel");
}

template <typename T>
void linear(Device &dev, const T *x, int64_t rows, int64_t in, const T *weight,
            int64_t outFeatures, const T *bias, T *out) {
  checkSize("linear", "rows", rows);
  checkSize("linear", "in", in);
  checkSize("linear", "outFeatures", outFeatures);
  if (!bias) {
    project(dev, "linear", x, rows, in, weight, outFeatures, out);
    return;
  }
  // The product stays fp32 until the bias is added (one rounding).
  int64_t n = rows * outFeatures;
  ScratchCarver carve(dev.scratch(Fp32Accumulator<T>::bytes(n)));
  Fp32Accumulator<T> product(dev, out, n, carve);
  project(dev, "linear", x, rows, in, weight, outFeatures, product.get());
  if (n == 0)
    return;
  addBiasKernel<<<elementGrid(dev, n), kThreads, 0, dev.stream()>>>(
      product.get(), bias, rows, outFeatures, out);
  checkLaunch("addBiasKernel");
}

template <typename T>
void rope(Device &dev, const T *x, const int32_t *positions, int64_t batch,
          int64_t seq, int64_t heads, int64_t headDim, double theta, T *out) {
  rotateHalf(dev, "rope", x, positions, batch, seq, heads, headDim, theta,
             /*inverse=*/false, out);
}

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

template <typename T>
void add(Device &dev, const T *a, const T *b, int64_t n, T *out) {
  checkSize("add", "n", n);
  if (n == 0)
    return;
  addKernel<<<elementGrid(dev, n), kThreads, 0, dev.stream()>>>(a, b, n, out);
  checkLaunch("addKernel");
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

//===----------------------------------------------------------------------===//
// Backward
//===----------------------------------------------------------------------===//

// Deterministic: a stable radix sort of (token, i) by token (CUB), then one
// block per run of equal tokens sums its dy rows in ascending i, the CPU's
// order, so dtable matches the CPU bit for bit. Rows of tokens that do not
// occur are zeroed first.
template <typename T>
void embeddingGrad(Device &dev, const T *dy, const int32_t *tokens, int64_t n,
                   int64_t vocab, int64_t hidden, T *dtable) {
  const char *kernel = "embeddingGrad";
  checkSize(kernel, "n", n);
  checkSize(kernel, "vocab", vocab);
  checkSize(kernel, "hidden", hidden);
  if (n > INT_MAX)
    fail(kernel, "n " + std::to_string(n) + " exceeds the sort's range");
  if (vocab * hidden > 0)
    check(cudaMemsetAsync(dtable, 0, size_t(vocab * hidden) * sizeof(T),
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
  ScratchCarver carve(
      dev.scratch(3 * ScratchCarver::bytes<int32_t>(n) +
                  ScratchCarver::bytes<char>(int64_t(sortBytes))));
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
template <typename T>
void rmsNormGrad(Device &dev, const T *dy, const T *x, const T *weight,
                 int64_t rows, int64_t dim, float eps, T *dx, T *dweight) {
  const char *kernel = "rmsNormGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "dim", dim, /*positive=*/true);
  ScratchCarver carve(
      dev.scratch(ScratchCarver::bytes<double>(rows) +
                  ScratchCarver::bytes<double>(chunkCount(rows) * dim)));
  double *inv = carve.take<double>(rows);
  double *partial = carve.take<double>(chunkCount(rows) * dim);
  if (rows > 0) {
    rmsNormGradKernel<<<rowGrid(rows), kThreads, 0, dev.stream()>>>(
        dy, x, weight, rows, dim, eps, dx, inv);
    checkLaunch("rmsNormGradKernel");
  }
  columnSum(dev, RmsNormWeightTerm<T>{dy, x, inv, dim}, rows, dim, partial,
            dweight);
}

template <typename T>
void linearGrad(Device &dev, const T *dy, const T *x, int64_t rows, int64_t in,
                const T *weight, int64_t outFeatures, T *dx, T *dweight) {
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

template <typename T>
void ropeGrad(Device &dev, const T *dy, const int32_t *positions, int64_t batch,
              int64_t seq, int64_t heads, int64_t headDim, double theta,
              T *dx) {
  // A rotation's transpose is the rotation by the opposite angle.
  rotateHalf(dev, "ropeGrad", dy, positions, batch, seq, heads, headDim, theta,
             /*inverse=*/true, dx);
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

#define MOE_INSTANTIATE_DENSE_KERNELS(T)                                       \
  template void embedding<T>(Device &, const int32_t *, int64_t, const T *,    \
                             int64_t, int64_t, T *);                           \
  template void rmsNorm<T>(Device &, const T *, const T *, int64_t, int64_t,   \
                           float, T *);                                        \
  template void linear<T>(Device &, const T *, int64_t, int64_t, const T *,    \
                          int64_t, const T *, T *);                            \
  template void rope<T>(Device &, const T *, const int32_t *, int64_t,         \
                        int64_t, int64_t, int64_t, double, T *);               \
  template void swigluMlp<T>(Device &, const T *, int64_t, int64_t, const T *, \
                             const T *, const T *, int64_t, T *);              \
  template void add<T>(Device &, const T *, const T *, int64_t, T *);          \
  template void sharedExperts<T>(Device &, const T *, int64_t, int64_t,        \
                                 const T *, const T *, const T *, int64_t,     \
                                 const T *, T *);                              \
  template void embeddingGrad<T>(Device &, const T *, const int32_t *,         \
                                 int64_t, int64_t, int64_t, T *);              \
  template void rmsNormGrad<T>(Device &, const T *, const T *, const T *,      \
                               int64_t, int64_t, float, T *, T *);             \
  template void linearGrad<T>(Device &, const T *, const T *, int64_t,         \
                              int64_t, const T *, int64_t, T *, T *);          \
  template void ropeGrad<T>(Device &, const T *, const int32_t *, int64_t,     \
                            int64_t, int64_t, int64_t, double, T *);           \
  template void swigluMlpGrad<T>(Device &, const T *, const T *, int64_t,      \
                                 int64_t, const T *, const T *, const T *,     \
                                 int64_t, T *, T *, T *, T *);                 \
  template void sharedExpertsGrad<T>(                                          \
      Device &, const T *, const T *, int64_t, int64_t, const T *, const T *,  \
      const T *, int64_t, const T *, T *, T *, T *, T *, T *);
MOE_INSTANTIATE_DENSE_KERNELS(float)
MOE_INSTANTIATE_DENSE_KERNELS(bf16)
#undef MOE_INSTANTIATE_DENSE_KERNELS

} // namespace moe::cuda
