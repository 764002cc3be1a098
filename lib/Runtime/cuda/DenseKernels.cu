//===- DenseKernels.cu - Dense layers and RoPE on the GPU -----------------===//
//
// The CUDA twins of the CPU dense kernels (embedding, RMSNorm, linear, add,
// concat and split) and of RoPE, their gradients, and the CUDA backend's
// methods for the calls. Column reductions are deterministic
// (KernelLaunch.cuh: columnSum).
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
#include <cub/device/device_radix_sort.cuh>
#include <stdexcept>
#include <string>

namespace moe::cuda {

namespace {

constexpr unsigned kThreads = 256;

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
/// Pair i is (i, i + half) on both sides, except with `interleaved`: the
/// forward reads it from (2i, 2i + 1), the inverse writes it there.
template <typename T>
__global__ void
rotateHalfKernel(const T *x, const int32_t *positions, int64_t tokens,
                 int64_t seq, int64_t heads, int64_t half, float theta,
                 bool hostFreqs, const __grid_constant__ RopeFreqs freqs,
                 float scale, bool inverse, bool interleaved, T *out) {
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
      if (scale != 1.0f) { // YaRN scales cos and sin (in fp32, as the CPU)
        cosA[i] = __fmul_rn(cosA[i], scale);
        sinA[i] = __fmul_rn(sinA[i], scale);
      }
    }
    __syncthreads();
    const T *xt = x + t * heads * headDim;
    T *ot = out + t * heads * headDim;
    for (int64_t k = threadIdx.x; k < heads * half; k += blockDim.x) {
      int64_t h = k / half, i = k % half;
      int64_t loIn = i, hiIn = i + half, loOut = i, hiOut = i + half;
      if (interleaved && !inverse)
        loIn = 2 * i, hiIn = 2 * i + 1;
      if (interleaved && inverse)
        loOut = 2 * i, hiOut = 2 * i + 1;
      const T *xh = xt + h * headDim;
      T *oh = ot + h * headDim;
      float lo = toF32(xh[loIn]);
      float hi = toF32(xh[hiIn]);
      oh[loOut] =
          fromF32<T>(__fsub_rn(__fmul_rn(lo, cosA[i]), __fmul_rn(hi, sinA[i])));
      oh[hiOut] =
          fromF32<T>(__fadd_rn(__fmul_rn(hi, cosA[i]), __fmul_rn(lo, sinA[i])));
    }
    __syncthreads(); // before the next token overwrites cos/sin
  }
}

template <typename T>
void rotateHalf(Device &dev, const char *kernel, const T *x,
                const int32_t *positions, int64_t batch, int64_t seq,
                int64_t heads, int64_t headDim, double theta,
                const RopeVariant &variant, bool inverse, T *out) {
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
  if (!(variant.factor >= 1.0) || !(variant.scale > 0.0) ||
      !(variant.low >= 0.0) || !(variant.high >= variant.low))
    fail(kernel, "YaRN needs factor >= 1, scale > 0 and 0 <= low <= high");
  // Interleaved pairs move between positions: another thread's input
  // element may be this thread's output element.
  if (variant.interleaved &&
      static_cast<const void *>(x) == static_cast<const void *>(out))
    fail(kernel, "interleaved pairs cannot be rotated in place");
  RopeFreqs freqs{};
  bool hostFreqs = half <= kRopeHostFreqs;
  if (!hostFreqs && !variant.plain())
    fail(kernel, "YaRN supports headDim up to " +
                     std::to_string(2 * kRopeHostFreqs) + ", got " +
                     std::to_string(headDim));
  if (hostFreqs)
    for (int64_t i = 0; i < half; ++i) // exactly the CPU's rotateHalf
      freqs.invFreq[i] = ropeInverseFrequency(i, headDim, theta, variant);
  rotateHalfKernel<<<rowGrid(tokens), kThreads, sharedBytes, dev.stream()>>>(
      x, positions, tokens, seq, heads, half, float(theta), hostFreqs, freqs,
      float(variant.scale), inverse, variant.interleaved, out);
  checkLaunch("rotateHalfKernel");
}

//===----------------------------------------------------------------------===//
// Concat and split
//===----------------------------------------------------------------------===//

/// Checks the sizes concat and split take (concatProblem).
void checkConcatShape(const char *kernel, int64_t rows, int64_t aWidth,
                      int64_t bWidth, int64_t aRepeat, int64_t bRepeat) {
  std::string problem = concatProblem(rows, aWidth, bWidth, aRepeat, bRepeat);
  if (!problem.empty())
    fail(kernel, problem);
}

/// out[r, c] = a[r / aRepeat, c] for c < aWidth, else
/// b[r / bRepeat, c - aWidth]; a thread per element of out (grid-stride).
template <typename T>
__global__ void concatKernel(const T *a, const T *b, int64_t rows,
                             int64_t aWidth, int64_t bWidth, int64_t aRepeat,
                             int64_t bRepeat, T *out) {
  int64_t width = aWidth + bWidth, total = rows * width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = e / width, c = e % width;
    out[e] = c < aWidth ? a[(r / aRepeat) * aWidth + c]
                        : b[(r / bRepeat) * bWidth + (c - aWidth)];
  }
}

/// One part of split: dst[p, i] = the fp32 sum of x[p * repeat + r,
/// offset + i] over r = 0 .. repeat - 1 in ascending order (the CPU's), for
/// p < parts and i < partWidth; x's rows are `width` elements long. A thread
/// per element of dst (grid-stride).
template <typename T>
__global__ void splitPartKernel(const T *x, int64_t parts, int64_t width,
                                int64_t offset, int64_t partWidth,
                                int64_t repeat, T *dst) {
  int64_t total = parts * partWidth;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t p = e / partWidth, i = e % partWidth;
    const T *src = x + p * repeat * width + offset + i;
    float sum = toF32(src[0]);
    for (int64_t r = 1; r < repeat; ++r)
      sum += toF32(src[r * width]);
    dst[e] = fromF32<T>(sum);
  }
}

/// Launches splitPartKernel for one part (nothing when it is empty).
template <typename T>
void splitPart(Device &dev, const T *x, int64_t rows, int64_t width,
               int64_t offset, int64_t partWidth, int64_t repeat, T *dst) {
  int64_t n = (rows / repeat) * partWidth;
  if (n == 0)
    return;
  splitPartKernel<<<elementGrid(dev, n), kThreads, 0, dev.stream()>>>(
      x, rows / repeat, width, offset, partWidth, repeat, dst);
  checkLaunch("splitPartKernel");
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

/// dbias[j] terms: dy[r, j].
template <typename T> struct RowTerm {
  const T *dy;
  int64_t cols;
  __device__ double operator()(int64_t r, int64_t j) const {
    return toF32(dy[r * cols + j]);
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
          int64_t seq, int64_t heads, int64_t headDim, double theta, T *out,
          const RopeVariant &variant) {
  rotateHalf(dev, "rope", x, positions, batch, seq, heads, headDim, theta,
             variant, /*inverse=*/false, out);
}

template <typename T>
void add(Device &dev, const T *a, const T *b, int64_t n, T *out) {
  checkSize("add", "n", n);
  if (n == 0)
    return;
  addKernel<<<elementGrid(dev, n), kThreads, 0, dev.stream()>>>(a, b, n, out);
  checkLaunch("addKernel");
}

template <typename T>
void concat(Device &dev, const T *a, const T *b, int64_t rows, int64_t aWidth,
            int64_t bWidth, int64_t aRepeat, int64_t bRepeat, T *out) {
  checkConcatShape("concat", rows, aWidth, bWidth, aRepeat, bRepeat);
  int64_t n = rows * (aWidth + bWidth);
  if (n == 0)
    return;
  concatKernel<<<elementGrid(dev, n), kThreads, 0, dev.stream()>>>(
      a, b, rows, aWidth, bWidth, aRepeat, bRepeat, out);
  checkLaunch("concatKernel");
}

template <typename T>
void split(Device &dev, const T *x, int64_t rows, int64_t aWidth,
           int64_t bWidth, int64_t aRepeat, int64_t bRepeat, T *a, T *b) {
  checkConcatShape("split", rows, aWidth, bWidth, aRepeat, bRepeat);
  int64_t width = aWidth + bWidth;
  splitPart(dev, x, rows, width, /*offset=*/0, aWidth, aRepeat, a);
  splitPart(dev, x, rows, width, /*offset=*/aWidth, bWidth, bRepeat, b);
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
                const T *weight, int64_t outFeatures, T *dx, T *dweight,
                T *dbias) {
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
  // dbias [out] = dy summed over rows (deterministic column sum).
  if (dbias) {
    ScratchCarver carve(dev.scratch(
        ScratchCarver::bytes<double>(chunkCount(rows) * outFeatures)));
    double *partial = carve.take<double>(chunkCount(rows) * outFeatures);
    columnSum(dev, RowTerm<T>{dy, outFeatures}, rows, outFeatures, partial,
              dbias);
  }
}

template <typename T>
void ropeGrad(Device &dev, const T *dy, const int32_t *positions, int64_t batch,
              int64_t seq, int64_t heads, int64_t headDim, double theta, T *dx,
              const RopeVariant &variant) {
  // A rotation's transpose is the rotation by the opposite angle (times the
  // same YaRN scale).
  rotateHalf(dev, "ropeGrad", dy, positions, batch, seq, heads, headDim, theta,
             variant, /*inverse=*/true, dx);
}

#define MOE_INSTANTIATE_DENSE_KERNELS(T)                                       \
  template void embedding<T>(Device &, const int32_t *, int64_t, const T *,    \
                             int64_t, int64_t, T *);                           \
  template void rmsNorm<T>(Device &, const T *, const T *, int64_t, int64_t,   \
                           float, T *);                                        \
  template void linear<T>(Device &, const T *, int64_t, int64_t, const T *,    \
                          int64_t, const T *, T *);                            \
  template void rope<T>(Device &, const T *, const int32_t *, int64_t,         \
                        int64_t, int64_t, int64_t, double, T *,                \
                        const RopeVariant &);                                  \
  template void add<T>(Device &, const T *, const T *, int64_t, T *);          \
  template void concat<T>(Device &, const T *, const T *, int64_t, int64_t,    \
                          int64_t, int64_t, int64_t, T *);                     \
  template void split<T>(Device &, const T *, int64_t, int64_t, int64_t,       \
                         int64_t, int64_t, T *, T *);                          \
  template void embeddingGrad<T>(Device &, const T *, const int32_t *,         \
                                 int64_t, int64_t, int64_t, T *);              \
  template void rmsNormGrad<T>(Device &, const T *, const T *, const T *,      \
                               int64_t, int64_t, float, T *, T *);             \
  template void linearGrad<T>(Device &, const T *, const T *, int64_t,         \
                              int64_t, const T *, int64_t, T *, T *, T *);     \
  template void ropeGrad<T>(Device &, const T *, const int32_t *, int64_t,     \
                            int64_t, int64_t, int64_t, double, T *,            \
                            const RopeVariant &);
MOE_INSTANTIATE_DENSE_KERNELS(float)
MOE_INSTANTIATE_DENSE_KERNELS(bf16)
#undef MOE_INSTANTIATE_DENSE_KERNELS

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

void CudaBackend::embedding(const int32_t *tokens, const float *table,
                            float *out, int64_t n, int64_t vocab,
                            int64_t hidden) {
  onStorage([&](Device &d, auto s) {
    cuda::embedding(d, tokens, n, s(table), vocab, hidden, s(out));
  });
}

void CudaBackend::rmsNorm(const float *x, const float *weight, float *out,
                          int64_t rows, int64_t dim, float eps) {
  onStorage([&](Device &d, auto s) {
    cuda::rmsNorm(d, s(x), s(weight), rows, dim, eps, s(out));
  });
}

void CudaBackend::linear(const float *x, const float *weight, const float *bias,
                         float *out, int64_t rows, int64_t in,
                         int64_t outFeatures) {
  onStorage([&](Device &d, auto s) {
    cuda::linear(d, s(x), rows, in, s(weight), outFeatures, s(bias), s(out));
  });
}

void CudaBackend::rope(const float *x, const int32_t *positions, float *out,
                       int64_t batch, int64_t seq, int64_t heads,
                       int64_t headDim, double theta, double yarnFactor,
                       double yarnLow, double yarnHigh, double yarnScale,
                       bool interleaved) {
  onStorage([&](Device &d, auto s) {
    cuda::rope(d, s(x), positions, batch, seq, heads, headDim, theta, s(out),
               {yarnFactor, yarnLow, yarnHigh, yarnScale, interleaved});
  });
}

void CudaBackend::add(const float *a, const float *b, float *out, int64_t n) {
  onStorage([&](Device &d, auto s) { cuda::add(d, s(a), s(b), n, s(out)); });
}

void CudaBackend::concat(const float *a, const float *b, float *out,
                         int64_t rows, int64_t aWidth, int64_t bWidth,
                         int64_t aRepeat, int64_t bRepeat) {
  onStorage([&](Device &d, auto s) {
    cuda::concat(d, s(a), s(b), rows, aWidth, bWidth, aRepeat, bRepeat, s(out));
  });
}

void CudaBackend::split(const float *x, float *a, float *b, int64_t rows,
                        int64_t aWidth, int64_t bWidth, int64_t aRepeat,
                        int64_t bRepeat) {
  onStorage([&](Device &d, auto s) {
    cuda::split(d, s(x), rows, aWidth, bWidth, aRepeat, bRepeat, s(a), s(b));
  });
}

void CudaBackend::embeddingGrad(const float *dy, const int32_t *tokens,
                                float *dtable, int64_t n, int64_t vocab,
                                int64_t hidden) {
  onStorage([&](Device &d, auto s) {
    cuda::embeddingGrad(d, s(dy), tokens, n, vocab, hidden, s(dtable));
  });
}

void CudaBackend::rmsNormGrad(const float *dy, const float *x,
                              const float *weight, float *dx, float *dweight,
                              int64_t rows, int64_t dim, float eps) {
  onStorage([&](Device &d, auto s) {
    cuda::rmsNormGrad(d, s(dy), s(x), s(weight), rows, dim, eps, s(dx),
                      s(dweight));
  });
}

void CudaBackend::linearGrad(const float *dy, const float *x,
                             const float *weight, float *dx, float *dweight,
                             float *dbias, int64_t rows, int64_t in,
                             int64_t outFeatures) {
  onStorage([&](Device &d, auto s) {
    cuda::linearGrad(d, s(dy), s(x), rows, in, s(weight), outFeatures, s(dx),
                     s(dweight), s(dbias));
  });
}

void CudaBackend::ropeGrad(const float *dy, const int32_t *positions, float *dx,
                           int64_t batch, int64_t seq, int64_t heads,
                           int64_t headDim, double theta, double yarnFactor,
                           double yarnLow, double yarnHigh, double yarnScale,
                           bool interleaved) {
  onStorage([&](Device &d, auto s) {
    cuda::ropeGrad(d, s(dy), positions, batch, seq, heads, headDim, theta,
                   s(dx),
                   {yarnFactor, yarnLow, yarnHigh, yarnScale, interleaved});
  });
}

} // namespace moe::cuda
