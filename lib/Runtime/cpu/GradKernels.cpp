//===- GradKernels.cpp - Backward of the dense and expert kernels ---------===//
//
// Each kernel recomputes what it needs of its forward (scores, activations)
// instead of keeping it from the forward pass, so that the forward kernels
// stay as they are. Per-row reductions run in double; the GEMMs in fp32
// through OpenBLAS.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuGradKernels.h"

#include "KernelUtils.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using namespace moe::cpu::detail;

namespace moe::cpu {

namespace {

/// Backward of swigluRows for one weight set on `rows` contiguous rows
/// (at most kSwigluRowBlock: swigluRowsGrad below splits longer runs): dx is
/// overwritten; the weight gradients become weightBeta * themselves + these
/// rows' (0: overwrite, 1: accumulate). `scratch` holds 4 * rows * inter
/// floats.
void swigluBlockGrad(const char *kernel, const float *dy, const float *x,
                     int64_t rows, int64_t hidden, const float *gate,
                     const float *up, const float *down, int64_t inter,
                     float weightBeta, float *scratch, float *dx, float *dgate,
                     float *dup, float *ddown) {
  int64_t size = rows * inter;
  float *gateOut = scratch, *upOut = scratch + size;
  float *act = scratch + 2 * size, *dact = scratch + 3 * size;
  project(kernel, x, rows, hidden, gate, inter, gateOut);
  project(kernel, x, rows, hidden, up, inter, upOut);
  for (int64_t i = 0; i < size; ++i)
    act[i] = silu(gateOut[i]) * upOut[i];
  // ddown [hidden, inter] = dy^T @ act; dact = dy @ down.
  gemmT(kernel, /*transA=*/true, /*transB=*/false, hidden, inter, rows, 1.0f,
        dy, hidden, act, inter, weightBeta, ddown, inter);
  gemmT(kernel, false, false, rows, inter, hidden, 1.0f, dy, hidden, down,
        inter, 0.0f, dact, inter);
  // In place: act becomes d(up out), dact becomes d(gate out).
  for (int64_t i = 0; i < size; ++i) {
    float g = gateOut[i], s = sigmoid(g);
    act[i] = dact[i] * g * s;
    dact[i] = dact[i] * upOut[i] * s * (1.0f + g * (1.0f - s));
  }
  gemmT(kernel, true, false, inter, hidden, rows, 1.0f, dact, inter, x, hidden,
        weightBeta, dgate, hidden);
  gemmT(kernel, true, false, inter, hidden, rows, 1.0f, act, inter, x, hidden,
        weightBeta, dup, hidden);
  gemmT(kernel, false, false, rows, hidden, inter, 1.0f, dact, inter, gate,
        hidden, 0.0f, dx, hidden);
  gemmT(kernel, false, false, rows, hidden, inter, 1.0f, act, inter, up, hidden,
        1.0f, dx, hidden);
}

/// swigluBlockGrad over any number of rows, kSwigluRowBlock at a time (the
/// weight gradients accumulate over the blocks). `scratch` holds
/// 4 * swigluBlockRows(rows) * inter floats.
void swigluRowsGrad(const char *kernel, const float *dy, const float *x,
                    int64_t rows, int64_t hidden, const float *gate,
                    const float *up, const float *down, int64_t inter,
                    float weightBeta, float *scratch, float *dx, float *dgate,
                    float *dup, float *ddown) {
  for (int64_t first = 0; first < rows; first += kSwigluRowBlock) {
    int64_t at = first * hidden;
    swigluBlockGrad(kernel, dy + at, x + at, swigluBlockRows(rows - first),
                    hidden, gate, up, down, inter,
                    first == 0 ? weightBeta : 1.0f, scratch, dx + at, dgate,
                    dup, ddown);
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

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
                float *dweight) {
  const char *kernel = "linearGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "in", in);
  checkSize(kernel, "outFeatures", outFeatures);
  gemmT(kernel, /*transA=*/false, /*transB=*/false, rows, in, outFeatures, 1.0f,
        dy, outFeatures, weight, in, 0.0f, dx, in);
  gemmT(kernel, /*transA=*/true, /*transB=*/false, outFeatures, in, rows, 1.0f,
        dy, outFeatures, x, in, 0.0f, dweight, in);
}

void ropeGrad(const float *dy, const int32_t *positions, int64_t batch,
              int64_t seq, int64_t heads, int64_t headDim, double theta,
              float *dx) {
  // A rotation's transpose is the rotation by the opposite angle.
  rotateHalf("ropeGrad", dy, positions, batch, seq, heads, headDim, theta,
             /*inverse=*/true, dx);
}

void attentionGrad(const float *dout, const float *q, const float *k,
                   const float *v, int64_t batch, int64_t seq, int64_t heads,
                   int64_t kvHeads, int64_t headDim, bool causal, float scale,
                   float *dq, float *dk, float *dv) {
  const char *kernel = "attentionGrad";
  checkSize(kernel, "batch", batch);
  checkSize(kernel, "seq", seq);
  checkSize(kernel, "heads", heads, /*positive=*/true);
  checkSize(kernel, "kvHeads", kvHeads, /*positive=*/true);
  checkSize(kernel, "headDim", headDim);
  if (heads % kvHeads != 0)
    fail(kernel, "heads (" + std::to_string(heads) +
                     ") is not a multiple of kvHeads (" +
                     std::to_string(kvHeads) + ")");
  int64_t group = heads / kvHeads;
  int64_t qStride = heads * headDim, kvStride = kvHeads * headDim;
  // The query heads of a kv head accumulate into dk and dv.
  std::fill_n(dk, batch * seq * kvStride, 0.0f);
  std::fill_n(dv, batch * seq * kvStride, 0.0f);
  std::vector<float> probs(seq * seq), dprobs(seq * seq);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      int64_t kvh = h / group;
      int64_t qOff = b * seq * qStride + h * headDim;
      int64_t kvOff = b * seq * kvStride + kvh * headDim;
      const float *qh = q + qOff, *doh = dout + qOff;
      const float *kh = k + kvOff, *vh = v + kvOff;
      float *dqh = dq + qOff, *dkh = dk + kvOff, *dvh = dv + kvOff;
      // P = softmax(scale q k^T), masked as in the forward.
      gemmT(kernel, false, /*transB=*/true, seq, seq, headDim, scale, qh,
            qStride, kh, kvStride, 0.0f, probs.data(), seq);
      for (int64_t s = 0; s < seq; ++s) {
        float *row = probs.data() + s * seq;
        int64_t visible = causal ? s + 1 : seq;
        softmaxRow(row, visible, row);
        std::fill(row + visible, row + seq, 0.0f);
      }
      // dP = dout v^T; dv += P^T dout.
      gemmT(kernel, false, true, seq, seq, headDim, 1.0f, doh, qStride, vh,
            kvStride, 0.0f, dprobs.data(), seq);
      gemmT(kernel, /*transA=*/true, false, seq, headDim, seq, 1.0f,
            probs.data(), seq, doh, qStride, 1.0f, dvh, kvStride);
      // dS = P * (dP - rowsum(P * dP)), in place in dP; masked entries 0.
      for (int64_t s = 0; s < seq; ++s) {
        const float *p = probs.data() + s * seq;
        float *dp = dprobs.data() + s * seq;
        int64_t visible = causal ? s + 1 : seq;
        double rowDot = 0.0;
        for (int64_t j = 0; j < visible; ++j)
          rowDot += double(p[j]) * dp[j];
        for (int64_t j = 0; j < visible; ++j)
          dp[j] = float(p[j] * (dp[j] - rowDot));
        std::fill(dp + visible, dp + seq, 0.0f);
      }
      // dq = scale dS k; dk += scale dS^T q.
      gemmT(kernel, false, false, seq, headDim, seq, scale, dprobs.data(), seq,
            kh, kvStride, 0.0f, dqh, qStride);
      gemmT(kernel, true, false, seq, headDim, seq, scale, dprobs.data(), seq,
            qh, qStride, 1.0f, dkh, kvStride);
    }
  }
}

void swigluMlpGrad(const float *dy, const float *x, int64_t rows,
                   int64_t hidden, const float *gate, const float *up,
                   const float *down, int64_t inter, float *dx, float *dgate,
                   float *dup, float *ddown) {
  const char *kernel = "swigluMlpGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "inter", inter);
  std::vector<float> scratch(4 * swigluBlockRows(rows) * inter);
  swigluRowsGrad(kernel, dy, x, rows, hidden, gate, up, down, inter,
                 /*weightBeta=*/0.0f, scratch.data(), dx, dgate, dup, ddown);
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

void sharedExpertsGrad(const float *dy, const float *x, int64_t rows,
                       int64_t hidden, const float *gate, const float *up,
                       const float *down, int64_t inter,
                       const float *sharedGate, float *dx, float *dgate,
                       float *dup, float *ddown, float *dsharedGate) {
  if (!sharedGate) {
    swigluMlpGrad(dy, x, rows, hidden, gate, up, down, inter, dx, dgate, dup,
                  ddown);
    return;
  }
  const char *kernel = "sharedExpertsGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "inter", inter);
  // out = sigmoid(z) * m with z = x . sharedGate and m the SwiGLU output.
  std::vector<float> z(rows), mlpOut(rows * hidden);
  std::vector<float> scratch(4 * swigluBlockRows(rows) * inter);
  project(kernel, x, rows, hidden, sharedGate, 1, z.data());
  swigluRows(kernel, x, rows, hidden, gate, up, down, inter, scratch.data(),
             mlpOut.data());
  // dz = sigmoid'(z) * (dy . m); then mlpOut becomes dm = sigmoid(z) * dy.
  for (int64_t r = 0; r < rows; ++r) {
    float s = sigmoid(z[r]);
    double dot = 0.0;
    for (int64_t i = 0; i < hidden; ++i) {
      float &m = mlpOut[r * hidden + i];
      dot += double(dy[r * hidden + i]) * m;
      m = s * dy[r * hidden + i];
    }
    z[r] = float(dot * s * (1.0f - s));
  }
  swigluRowsGrad(kernel, mlpOut.data(), x, rows, hidden, gate, up, down, inter,
                 /*weightBeta=*/0.0f, scratch.data(), dx, dgate, dup, ddown);
  std::vector<double> dsg(hidden, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < hidden; ++i) {
      dx[r * hidden + i] += z[r] * sharedGate[i];
      dsg[i] += double(z[r]) * x[r * hidden + i];
    }
  for (int64_t i = 0; i < hidden; ++i)
    dsharedGate[i] = float(dsg[i]);
}

void routerGrad(const float *dweights, const float *dlogits, const float *x,
                int64_t tokens, int64_t hidden, const float *gate,
                const float *logits, const int32_t *indices,
                const RouterConfig &cfg, float *dx, float *dgate) {
  const char *kernel = "routerGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "experts", cfg.experts, /*positive=*/true);
  int64_t numExperts = cfg.experts, topK = cfg.topK;
  if (topK < 1 || topK > numExperts)
    fail(kernel, "topK " + std::to_string(topK) + " is outside [1, " +
                     std::to_string(numExperts) + "]");
  double routeScale = cfg.routeScale;
  std::vector<float> dl(tokens * numExperts);
  std::vector<double> scores(numExperts), dscores(numExperts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = logits + t * numExperts;
    const int32_t *idx = indices + t * topK;
    const float *dw = dweights + t * topK;
    for (int64_t k = 0; k < topK; ++k)
      checkId(kernel, "expert id", idx[k], numExperts, t * topK + k);
    if (cfg.sigmoid) {
      for (int64_t e = 0; e < numExperts; ++e)
        scores[e] = 1.0 / (1.0 + std::exp(-double(row[e])));
    } else {
      double lse = logSumExp(row, numExperts);
      for (int64_t e = 0; e < numExperts; ++e)
        scores[e] = std::exp(double(row[e]) - lse);
    }
    // Through w_k = R * s_k (/ S with S = sum of the selected scores).
    std::fill(dscores.begin(), dscores.end(), 0.0);
    if (cfg.normTopkProb) {
      double sum = 0.0, dot = 0.0;
      for (int64_t k = 0; k < topK; ++k) {
        sum += scores[idx[k]];
        dot += double(dw[k]) * scores[idx[k]];
      }
      for (int64_t k = 0; k < topK; ++k)
        dscores[idx[k]] += routeScale * (dw[k] / sum - dot / (sum * sum));
    } else {
      for (int64_t k = 0; k < topK; ++k)
        dscores[idx[k]] += routeScale * dw[k];
    }
    // Through the scores to the logits.
    float *dlRow = dl.data() + t * numExperts;
    if (cfg.sigmoid) {
      for (int64_t e = 0; e < numExperts; ++e)
        dlRow[e] = float(dscores[e] * scores[e] * (1.0 - scores[e]));
    } else {
      double inner = 0.0;
      for (int64_t e = 0; e < numExperts; ++e)
        inner += dscores[e] * scores[e];
      for (int64_t e = 0; e < numExperts; ++e)
        dlRow[e] = float(scores[e] * (dscores[e] - inner));
    }
    if (dlogits)
      for (int64_t e = 0; e < numExperts; ++e)
        dlRow[e] += dlogits[t * numExperts + e];
  }
  // logits = x gate^T: dx = dl gate, dgate = dl^T x.
  gemmT(kernel, false, false, tokens, hidden, numExperts, 1.0f, dl.data(),
        numExperts, gate, hidden, 0.0f, dx, hidden);
  gemmT(kernel, /*transA=*/true, false, numExperts, hidden, tokens, 1.0f,
        dl.data(), numExperts, x, hidden, 0.0f, dgate, hidden);
}

void permuteGrad(const float *dpermuted, const int32_t *rowToSlot,
                 int64_t tokens, int64_t topK, int64_t hidden, float *dx) {
  const char *kernel = "permuteGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  // The transpose of the row gather sums each token's rows: the combine
  // with unit weights (exact, so the same sums in the same order).
  std::vector<float> ones(static_cast<size_t>(tokens * topK), 1.0f);
  unpermuteCombine(dpermuted, rowToSlot, ones.data(), tokens, topK, hidden,
                   dx);
}

void unpermuteCombineGrad(const float *dout, const float *expertOut,
                          const int32_t *rowToSlot, const float *weights,
                          int64_t tokens, int64_t topK, int64_t hidden,
                          float *dexpertOut, float *dweights) {
  const char *kernel = "unpermuteCombineGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "hidden", hidden);
  std::vector<int64_t> slotToRow =
      invertRowToSlot(kernel, rowToSlot, tokens * topK);
  // Padding rows get no gradient.
  for (int64_t r = 0; r < tokens * topK; ++r)
    if (rowToSlot[r] == kDroppedSlot)
      std::fill_n(dexpertOut + r * hidden, hidden, 0.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *g = dout + t * hidden;
    for (int64_t k = 0; k < topK; ++k) {
      int64_t slot = t * topK + k, row = slotToRow[slot];
      if (row < 0) { // dropped: no output, no weight gradient
        dweights[slot] = 0.0f;
        continue;
      }
      const float *y = expertOut + row * hidden;
      float *dy = dexpertOut + row * hidden;
      float w = weights[slot];
      double dot = 0.0;
      for (int64_t i = 0; i < hidden; ++i) {
        dy[i] = w * g[i];
        dot += double(g[i]) * y[i];
      }
      dweights[slot] = float(dot);
    }
  }
}

void groupedSwiGLUSegmentsGrad(const float *dout, const float *permuted,
                               int64_t rows, const int64_t *offsets,
                               int64_t segments, int64_t experts,
                               int64_t hidden, int64_t inter, const float *gate,
                               const float *up, const float *down,
                               float *dpermuted, float *dgate, float *dup,
                               float *ddown) {
  const char *kernel = "groupedSwiGLUGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  checkSize(kernel, "segments", segments);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "inter", inter);
  int64_t maxRows = checkSegments(kernel, offsets, segments, rows);
  int64_t end = offsets[segments];
  int64_t weightSize = inter * hidden;
  // An expert's weight gradients sum over its segments.
  std::fill_n(dgate, experts * weightSize, 0.0f);
  std::fill_n(dup, experts * weightSize, 0.0f);
  std::fill_n(ddown, experts * weightSize, 0.0f);
  std::fill(dpermuted + end * hidden, dpermuted + rows * hidden, 0.0f);
  std::vector<float> scratch(4 * swigluBlockRows(maxRows) * inter);
  for (int64_t g = 0; g < segments; ++g) {
    int64_t segmentRows = offsets[g + 1] - offsets[g];
    if (segmentRows == 0)
      continue;
    int64_t e = g % experts, first = offsets[g] * hidden;
    swigluRowsGrad(kernel, dout + first, permuted + first, segmentRows, hidden,
                   gate + e * weightSize, up + e * weightSize,
                   down + e * weightSize, inter, /*weightBeta=*/1.0f,
                   scratch.data(), dpermuted + first, dgate + e * weightSize,
                   dup + e * weightSize, ddown + e * weightSize);
  }
}

} // namespace moe::cpu
