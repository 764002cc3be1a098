//===- DenseKernels.cpp - Embedding, norms, projections, attention --------===//

#include "moe/Runtime/CpuKernels.h"

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

void rope(const float *x, const int32_t *positions, int64_t batch, int64_t seq,
          int64_t heads, int64_t headDim, double theta, float *out) {
  rotateHalf("rope", x, positions, batch, seq, heads, headDim, theta,
             /*inverse=*/false, out);
}

void attention(const float *q, const float *k, const float *v, int64_t batch,
               int64_t seq, int64_t heads, int64_t kvHeads, int64_t headDim,
               bool causal, float scale, float *out) {
  checkSize("attention", "batch", batch);
  checkSize("attention", "seq", seq);
  checkSize("attention", "heads", heads, /*positive=*/true);
  checkSize("attention", "kvHeads", kvHeads, /*positive=*/true);
  checkSize("attention", "headDim", headDim);
  if (heads % kvHeads != 0)
    fail("attention", "heads (" + std::to_string(heads) +
                          ") is not a multiple of kvHeads (" +
                          std::to_string(kvHeads) + ")");
  int64_t group = heads / kvHeads;
  int64_t qStride = heads * headDim, kvStride = kvHeads * headDim;
  // One [seq, seq] score matrix per (b, h): two GEMMs with strided heads.
  std::vector<float> scores(seq * seq);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      int64_t kvh = h / group;
      const float *qh = q + b * seq * qStride + h * headDim;
      const float *kh = k + b * seq * kvStride + kvh * headDim;
      const float *vh = v + b * seq * kvStride + kvh * headDim;
      float *oh = out + b * seq * qStride + h * headDim;
      gemm("attention", /*transB=*/true, seq, seq, headDim, scale, qh, qStride,
           kh, kvStride, 0.0f, scores.data(), seq);
      for (int64_t s = 0; s < seq; ++s) {
        float *row = scores.data() + s * seq;
        int64_t visible = causal ? s + 1 : seq;
        softmaxRow(row, visible, row);
        std::fill(row + visible, row + seq, 0.0f);
      }
      gemm("attention", /*transB=*/false, seq, headDim, seq, 1.0f,
           scores.data(), seq, vh, kvStride, 0.0f, oh, qStride);
    }
  }
}

void swigluMlp(const float *x, int64_t rows, int64_t hidden, const float *gate,
               const float *up, const float *down, int64_t inter, float *out) {
  checkSize("swigluMlp", "rows", rows);
  checkSize("swigluMlp", "hidden", hidden);
  checkSize("swigluMlp", "inter", inter);
  int64_t blockSize = 2 * swigluBlockRows(rows) * inter;
  Scratch scratch("swigluMlp", Scratch::bytes<float>(blockSize));
  swigluRows("swigluMlp", x, rows, hidden, gate, up, down, inter,
             scratch.take<float>(blockSize), out);
}

void add(const float *a, const float *b, int64_t n, float *out) {
  checkSize("add", "n", n);
  for (int64_t i = 0; i < n; ++i)
    out[i] = a[i] + b[i];
}

} // namespace moe::cpu
