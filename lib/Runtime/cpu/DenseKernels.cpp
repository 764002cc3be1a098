//===- DenseKernels.cpp - Embedding, RMSNorm, linear, add, concat, RoPE ---===//
//
// The fp32 kernels of the dense calls (RoPE rotate-half with fp32 angles as
// in Hugging Face) and their gradients (per-row loops, GEMMs through
// OpenBLAS), and the CPU backend's methods for the calls (CpuBackend.h:
// under bf16 storage they widen around the fp32 kernel).
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuKernels.h"

#include "CpuBackend.h"
#include "KernelUtils.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using namespace moe::cpu::detail;

namespace moe::cpu {

void embedding(const int32_t *tokens, int64_t n, const float *table,
               int64_t vocab, int64_t hidden, float *out) {
  checkSize("embedding", "n", n);
  checkSize("embedding", "vocab", vocab);
  checkSize("embedding", "hidden", hidden);
  for (int64_t i = 0; i < n; ++i) {
    checkId("embedding", "token id", tokens[i], vocab, i);
    std::copy_n(table + int64_t(tokens[i]) * hidden, hidden, out + i * hidden);
  }
}

void rmsNorm(const float *x, const float *weight, int64_t rows, int64_t dim,
             float eps, float *out) {
  checkSize("rmsNorm", "rows", rows);
  checkSize("rmsNorm", "dim", dim, /*positive=*/true);
  for (int64_t r = 0; r < rows; ++r) {
    const float *row = x + r * dim;
    double sumSquares = 0.0;
    for (int64_t i = 0; i < dim; ++i)
      sumSquares += double(row[i]) * row[i];
    float inv = 1.0f / std::sqrt(float(sumSquares / dim) + eps);
    // HF order: normalise, then scale by the weight.
    for (int64_t i = 0; i < dim; ++i)
      out[r * dim + i] = (row[i] * inv) * weight[i];
  }
}

void linear(const float *x, int64_t rows, int64_t in, const float *weight,
            int64_t outFeatures, const float *bias, float *out) {
  checkSize("linear", "rows", rows);
  checkSize("linear", "in", in);
  checkSize("linear", "outFeatures", outFeatures);
  project("linear", x, rows, in, weight, outFeatures, out);
  if (!bias)
    return;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < outFeatures; ++o)
      out[r * outFeatures + o] += bias[o];
}

void add(const float *a, const float *b, int64_t n, float *out) {
  checkSize("add", "n", n);
  for (int64_t i = 0; i < n; ++i)
    out[i] = a[i] + b[i];
}

void embeddingGrad(const float *dy, const int32_t *tokens, int64_t n,
                   int64_t vocab, int64_t hidden, float *dtable) {
  const char *kernel = "embeddingGrad";
  checkSize(kernel, "n", n);
  checkSize(kernel, "vocab", vocab);
  checkSize(kernel, "hidden", hidden);
  for (int64_t i = 0; i < n; ++i)
    checkId(kernel, "token id", tokens[i], vocab, i);
  std::fill_n(dtable, vocab * hidden, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    float *row = dtable + int64_t(tokens[i]) * hidden;
    const float *g = dy + i * hidden;
    for (int64_t j = 0; j < hidden; ++j)
      row[j] += g[j];
  }
}

void rmsNormGrad(const float *dy, const float *x, const float *weight,
                 int64_t rows, int64_t dim, float eps, float *dx,
                 float *dweight) {
  const char *kernel = "rmsNormGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "dim", dim, /*positive=*/true);
  std::vector<double> dw(dim, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * dim, *gr = dy + r * dim;
    double sumSquares = 0.0, dot = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      sumSquares += double(xr[i]) * xr[i];
      dot += double(gr[i]) * weight[i] * xr[i];
    }
    // y = x * inv * w with inv = (mean(x^2) + eps)^(-1/2), so
    // d inv / d x_i = -inv^3 x_i / dim.
    double inv = 1.0 / std::sqrt(sumSquares / double(dim) + double(eps));
    double coef = inv * inv * inv * dot / double(dim);
    for (int64_t i = 0; i < dim; ++i) {
      dx[r * dim + i] = float(inv * gr[i] * weight[i] - coef * xr[i]);
      dw[i] += double(gr[i]) * xr[i] * inv;
    }
  }
  for (int64_t i = 0; i < dim; ++i)
    dweight[i] = float(dw[i]);
}

void linearGrad(const float *dy, const float *x, int64_t rows, int64_t in,
                const float *weight, int64_t outFeatures, float *dx,
                float *dweight, float *dbias) {
  const char *kernel = "linearGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "in", in);
  checkSize(kernel, "outFeatures", outFeatures);
  gemmT(kernel, /*transA=*/false, /*transB=*/false, rows, in, outFeatures, 1.0f,
        dy, outFeatures, weight, in, 0.0f, dx, in);
  gemmT(kernel, /*transA=*/true, /*transB=*/false, outFeatures, in, rows, 1.0f,
        dy, outFeatures, x, in, 0.0f, dweight, in);
  if (dbias) {
    std::vector<double> sum(outFeatures, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < outFeatures; ++o)
        sum[o] += dy[r * outFeatures + o];
    for (int64_t o = 0; o < outFeatures; ++o)
      dbias[o] = float(sum[o]);
  }
}

/// Checks the sizes concat and split take (concatProblem).
static void checkConcatShape(const char *kernel, int64_t rows, int64_t aWidth,
                             int64_t bWidth, int64_t aRepeat, int64_t bRepeat) {
  std::string problem = concatProblem(rows, aWidth, bWidth, aRepeat, bRepeat);
  if (!problem.empty())
    fail(kernel, problem);
}

void concat(const float *a, const float *b, int64_t rows, int64_t aWidth,
            int64_t bWidth, int64_t aRepeat, int64_t bRepeat, float *out) {
  checkConcatShape("concat", rows, aWidth, bWidth, aRepeat, bRepeat);
  int64_t width = aWidth + bWidth;
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(a + (r / aRepeat) * aWidth, aWidth, out + r * width);
    std::copy_n(b + (r / bRepeat) * bWidth, bWidth, out + r * width + aWidth);
  }
}

void split(const float *x, int64_t rows, int64_t aWidth, int64_t bWidth,
           int64_t aRepeat, int64_t bRepeat, float *a, float *b) {
  checkConcatShape("split", rows, aWidth, bWidth, aRepeat, bRepeat);
  int64_t width = aWidth + bWidth;
  // Each part's rows sum their repeats in order, in fp32 (a repeat is a
  // broadcast over a few heads).
  auto part = [&](int64_t offset, int64_t partWidth, int64_t repeat,
                  float *dst) {
    for (int64_t p = 0; p < rows / repeat; ++p) {
      float *row = dst + p * partWidth;
      std::copy_n(x + p * repeat * width + offset, partWidth, row);
      for (int64_t r = 1; r < repeat; ++r) {
        const float *src = x + (p * repeat + r) * width + offset;
        for (int64_t i = 0; i < partWidth; ++i)
          row[i] += src[i];
      }
    }
  };
  part(0, aWidth, aRepeat, a);
  part(aWidth, bWidth, bRepeat, b);
}

void rope(const float *x, const int32_t *positions, int64_t batch, int64_t seq,
          int64_t heads, int64_t headDim, double theta, float *out,
          const RopeVariant &variant) {
  rotateHalf("rope", x, positions, batch, seq, heads, headDim, theta, variant,
             /*inverse=*/false, out);
}

void ropeGrad(const float *dy, const int32_t *positions, int64_t batch,
              int64_t seq, int64_t heads, int64_t headDim, double theta,
              float *dx, const RopeVariant &variant) {
  // A rotation's transpose is the rotation by the opposite angle (times the
  // same YaRN scale).
  rotateHalf("ropeGrad", dy, positions, batch, seq, heads, headDim, theta,
             variant,
             /*inverse=*/true, dx);
}

} // namespace moe::cpu

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

namespace moe::rt {

void CpuBackend::embedding(const int32_t *tokens, const float *table,
                           float *out, int64_t n, int64_t vocab,
                           int64_t hidden) {
  Widened w(storage_);
  cpu::embedding(tokens, n, w.in(table, vocab * hidden), vocab, hidden,
                 w.out(out, n * hidden));
  w.store();
}

void CpuBackend::rmsNorm(const float *x, const float *weight, float *out,
                         int64_t rows, int64_t dim, float eps) {
  Widened w(storage_);
  cpu::rmsNorm(w.in(x, rows * dim), w.in(weight, dim), rows, dim, eps,
               w.out(out, rows * dim));
  w.store();
}

void CpuBackend::linear(const float *x, const float *weight, const float *bias,
                        float *out, int64_t rows, int64_t in,
                        int64_t outFeatures) {
  Widened w(storage_);
  cpu::linear(w.in(x, rows * in), rows, in, w.in(weight, outFeatures * in),
              outFeatures, w.in(bias, outFeatures),
              w.out(out, rows * outFeatures));
  w.store();
}

void CpuBackend::add(const float *a, const float *b, float *out, int64_t n) {
  Widened w(storage_);
  cpu::add(w.in(a, n), w.in(b, n), n, w.out(out, n));
  w.store();
}

void CpuBackend::embeddingGrad(const float *dy, const int32_t *tokens,
                               float *dtable, int64_t n, int64_t vocab,
                               int64_t hidden) {
  Widened w(storage_);
  cpu::embeddingGrad(w.in(dy, n * hidden), tokens, n, vocab, hidden,
                     w.out(dtable, vocab * hidden));
  w.store();
}

void CpuBackend::rmsNormGrad(const float *dy, const float *x,
                             const float *weight, float *dx, float *dweight,
                             int64_t rows, int64_t dim, float eps) {
  Widened w(storage_);
  int64_t n = rows * dim;
  cpu::rmsNormGrad(w.in(dy, n), w.in(x, n), w.in(weight, dim), rows, dim, eps,
                   w.out(dx, n), w.out(dweight, dim));
  w.store();
}

void CpuBackend::linearGrad(const float *dy, const float *x,
                            const float *weight, float *dx, float *dweight,
                            float *dbias, int64_t rows, int64_t in,
                            int64_t outFeatures) {
  Widened w(storage_);
  int64_t nw = outFeatures * in;
  cpu::linearGrad(w.in(dy, rows * outFeatures), w.in(x, rows * in), rows, in,
                  w.in(weight, nw), outFeatures, w.out(dx, rows * in),
                  w.out(dweight, nw), w.out(dbias, outFeatures));
  w.store();
}

void CpuBackend::concat(const float *a, const float *b, float *out,
                        int64_t rows, int64_t aWidth, int64_t bWidth,
                        int64_t aRepeat, int64_t bRepeat) {
  Widened w(storage_);
  int64_t aRows = aRepeat > 0 ? rows / aRepeat : 0;
  int64_t bRows = bRepeat > 0 ? rows / bRepeat : 0;
  cpu::concat(w.in(a, aRows * aWidth), w.in(b, bRows * bWidth), rows, aWidth,
              bWidth, aRepeat, bRepeat, w.out(out, rows * (aWidth + bWidth)));
  w.store();
}

void CpuBackend::split(const float *x, float *a, float *b, int64_t rows,
                       int64_t aWidth, int64_t bWidth, int64_t aRepeat,
                       int64_t bRepeat) {
  Widened w(storage_);
  int64_t aRows = aRepeat > 0 ? rows / aRepeat : 0;
  int64_t bRows = bRepeat > 0 ? rows / bRepeat : 0;
  cpu::split(w.in(x, rows * (aWidth + bWidth)), rows, aWidth, bWidth, aRepeat,
             bRepeat, w.out(a, aRows * aWidth), w.out(b, bRows * bWidth));
  w.store();
}

void CpuBackend::rope(const float *x, const int32_t *positions, float *out,
                      int64_t batch, int64_t seq, int64_t heads,
                      int64_t headDim, double theta, double yarnFactor,
                      double yarnLow, double yarnHigh, double yarnScale,
                      bool interleaved) {
  Widened w(storage_);
  int64_t n = batch * seq * heads * headDim;
  cpu::rope(w.in(x, n), positions, batch, seq, heads, headDim, theta,
            w.out(out, n),
            {yarnFactor, yarnLow, yarnHigh, yarnScale, interleaved});
  w.store();
}

void CpuBackend::ropeGrad(const float *dy, const int32_t *positions, float *dx,
                          int64_t batch, int64_t seq, int64_t heads,
                          int64_t headDim, double theta, double yarnFactor,
                          double yarnLow, double yarnHigh, double yarnScale,
                          bool interleaved) {
  Widened w(storage_);
  int64_t n = batch * seq * heads * headDim;
  cpu::ropeGrad(w.in(dy, n), positions, batch, seq, heads, headDim, theta,
                w.out(dx, n),
                {yarnFactor, yarnLow, yarnHigh, yarnScale, interleaved});
  w.store();
}

} // namespace moe::rt
