//===- AttentionKernels.cpp - Softmax attention ---------------------------===//
//
// Softmax attention (causal or not, grouped-query, value heads as wide as
// the query/key heads or not, as in DeepSeek's MLA), its gradient, and the
// CPU backend's methods for the calls. The backward recomputes the attention
// probabilities instead of keeping them.
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

/// Checks the sizes every attention kernel takes.
static void checkAttentionShape(const char *kernel, int64_t batch, int64_t seq,
                                int64_t heads, int64_t kvHeads, int64_t headDim,
                                int64_t vDim) {
  checkSize(kernel, "batch", batch);
  checkSize(kernel, "seq", seq);
  checkSize(kernel, "heads", heads, /*positive=*/true);
  checkSize(kernel, "kvHeads", kvHeads, /*positive=*/true);
  checkSize(kernel, "headDim", headDim);
  checkSize(kernel, "vDim", vDim);
  if (heads % kvHeads != 0)
    fail(kernel, "heads (" + std::to_string(heads) +
                     ") is not a multiple of kvHeads (" +
                     std::to_string(kvHeads) + ")");
}

void attention(const float *q, const float *k, const float *v, int64_t batch,
               int64_t seq, int64_t heads, int64_t kvHeads, int64_t headDim,
               int64_t vDim, bool causal, float scale, float *out) {
  checkAttentionShape("attention", batch, seq, heads, kvHeads, headDim, vDim);
  int64_t group = heads / kvHeads;
  int64_t qStride = heads * headDim, kStride = kvHeads * headDim;
  int64_t vStride = kvHeads * vDim, outStride = heads * vDim;
  // One [seq, seq] score matrix per (b, h): two GEMMs with strided heads.
  std::vector<float> scores(seq * seq);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      int64_t kvh = h / group;
      const float *qh = q + b * seq * qStride + h * headDim;
      const float *kh = k + b * seq * kStride + kvh * headDim;
      const float *vh = v + b * seq * vStride + kvh * vDim;
      float *oh = out + b * seq * outStride + h * vDim;
      gemm("attention", /*transB=*/true, seq, seq, headDim, scale, qh, qStride,
           kh, kStride, 0.0f, scores.data(), seq);
      for (int64_t s = 0; s < seq; ++s) {
        float *row = scores.data() + s * seq;
        int64_t visible = causal ? s + 1 : seq;
        softmaxRow(row, visible, row);
        std::fill(row + visible, row + seq, 0.0f);
      }
      gemm("attention", /*transB=*/false, seq, vDim, seq, 1.0f, scores.data(),
           seq, vh, vStride, 0.0f, oh, outStride);
    }
  }
}

void cachedAttention(const float *q, const float *k, const float *v,
                     const int32_t *positions, int64_t batch, int64_t newTokens,
                     int64_t cacheLen, int64_t heads, int64_t kvHeads,
                     int64_t headDim, int64_t vDim, float scale, float *kCache,
                     float *vCache, float *out) {
  const char *kernel = "cachedAttention";
  checkAttentionShape(kernel, batch, newTokens, heads, kvHeads, headDim, vDim);
  checkSize(kernel, "cacheLen", cacheLen);
  int64_t group = heads / kvHeads;
  int64_t kRow = kvHeads * headDim, vRow = kvHeads * vDim;
  // Every new key and value goes into the cache before any query reads it:
  // a query sees the other new tokens at earlier positions.
  for (int64_t i = 0; i < batch * newTokens; ++i) {
    int64_t b = i / newTokens, pos = positions[i];
    if (pos < 0 || pos >= cacheLen)
      fail(kernel, "position " + std::to_string(pos) + " of sequence " +
                       std::to_string(b) + " is outside the cache of " +
                       std::to_string(cacheLen) + " positions");
    std::copy_n(k + i * kRow, kRow, kCache + (b * cacheLen + pos) * kRow);
    std::copy_n(v + i * vRow, vRow, vCache + (b * cacheLen + pos) * vRow);
  }
  std::vector<float> scores;
  for (int64_t i = 0; i < batch * newTokens; ++i) {
    int64_t b = i / newTokens, visible = positions[i] + 1;
    const float *keys = kCache + b * cacheLen * kRow;
    const float *values = vCache + b * cacheLen * vRow;
    scores.resize(visible);
    for (int64_t h = 0; h < heads; ++h) {
      int64_t kvh = h / group;
      const float *qh = q + (i * heads + h) * headDim;
      for (int64_t j = 0; j < visible; ++j) {
        const float *kj = keys + j * kRow + kvh * headDim;
        float dot = 0.0f;
        for (int64_t d = 0; d < headDim; ++d)
          dot += qh[d] * kj[d];
        scores[j] = scale * dot;
      }
      softmaxRow(scores.data(), visible, scores.data());
      float *oh = out + (i * heads + h) * vDim;
      std::fill_n(oh, vDim, 0.0f);
      for (int64_t j = 0; j < visible; ++j) {
        const float *vj = values + j * vRow + kvh * vDim;
        for (int64_t d = 0; d < vDim; ++d)
          oh[d] += scores[j] * vj[d];
      }
    }
  }
}

void attentionGrad(const float *dout, const float *q, const float *k,
                   const float *v, int64_t batch, int64_t seq, int64_t heads,
                   int64_t kvHeads, int64_t headDim, int64_t vDim, bool causal,
                   float scale, float *dq, float *dk, float *dv) {
  const char *kernel = "attentionGrad";
  checkAttentionShape(kernel, batch, seq, heads, kvHeads, headDim, vDim);
  int64_t group = heads / kvHeads;
  int64_t qStride = heads * headDim, kStride = kvHeads * headDim;
  int64_t vStride = kvHeads * vDim, outStride = heads * vDim;
  // The query heads of a kv head accumulate into dk and dv.
  std::fill_n(dk, batch * seq * kStride, 0.0f);
  std::fill_n(dv, batch * seq * vStride, 0.0f);
  std::vector<float> probs(seq * seq), dprobs(seq * seq);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      int64_t kvh = h / group;
      int64_t qOff = b * seq * qStride + h * headDim;
      int64_t kOff = b * seq * kStride + kvh * headDim;
      int64_t vOff = b * seq * vStride + kvh * vDim;
      const float *qh = q + qOff, *doh = dout + b * seq * outStride + h * vDim;
      const float *kh = k + kOff, *vh = v + vOff;
      float *dqh = dq + qOff, *dkh = dk + kOff, *dvh = dv + vOff;
      // P = softmax(scale q k^T), masked as in the forward.
      gemmT(kernel, false, /*transB=*/true, seq, seq, headDim, scale, qh,
            qStride, kh, kStride, 0.0f, probs.data(), seq);
      for (int64_t s = 0; s < seq; ++s) {
        float *row = probs.data() + s * seq;
        int64_t visible = causal ? s + 1 : seq;
        softmaxRow(row, visible, row);
        std::fill(row + visible, row + seq, 0.0f);
      }
      // dP = dout v^T; dv += P^T dout.
      gemmT(kernel, false, true, seq, seq, vDim, 1.0f, doh, outStride, vh,
            vStride, 0.0f, dprobs.data(), seq);
      gemmT(kernel, /*transA=*/true, false, seq, vDim, seq, 1.0f, probs.data(),
            seq, doh, outStride, 1.0f, dvh, vStride);
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
            kh, kStride, 0.0f, dqh, qStride);
      gemmT(kernel, true, false, seq, headDim, seq, scale, dprobs.data(), seq,
            qh, qStride, 1.0f, dkh, kStride);
    }
  }
}

} // namespace moe::cpu

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

namespace moe::rt {

void CpuBackend::attention(const float *q, const float *k, const float *v,
                           float *out, int64_t batch, int64_t seq,
                           int64_t heads, int64_t kvHeads, int64_t headDim,
                           int64_t vDim, bool causal, float scale) {
  Widened w(storage_);
  int64_t tokens = batch * seq;
  int64_t nq = tokens * heads * headDim, nk = tokens * kvHeads * headDim;
  int64_t nv = tokens * kvHeads * vDim, nout = tokens * heads * vDim;
  cpu::attention(w.in(q, nq), w.in(k, nk), w.in(v, nv), batch, seq, heads,
                 kvHeads, headDim, vDim, causal, scale, w.out(out, nout));
  w.store();
}

void CpuBackend::cachedAttention(const float *q, const float *k, const float *v,
                                 float *kCache, float *vCache,
                                 const int32_t *positions, float *out,
                                 int64_t batch, int64_t newTokens,
                                 int64_t cacheLen, int64_t heads,
                                 int64_t kvHeads, int64_t headDim, int64_t vDim,
                                 float scale) {
  Widened w(storage_);
  int64_t tokens = batch * newTokens, cached = batch * cacheLen;
  cpu::cachedAttention(w.in(q, tokens * heads * headDim),
                       w.in(k, tokens * kvHeads * headDim),
                       w.in(v, tokens * kvHeads * vDim), positions, batch,
                       newTokens, cacheLen, heads, kvHeads, headDim, vDim,
                       scale, w.out(kCache, cached * kvHeads * headDim),
                       w.out(vCache, cached * kvHeads * vDim),
                       w.out(out, tokens * heads * vDim));
  w.store();
}

void CpuBackend::attentionGrad(const float *dout, const float *q,
                               const float *k, const float *v, float *dq,
                               float *dk, float *dv, int64_t batch, int64_t seq,
                               int64_t heads, int64_t kvHeads, int64_t headDim,
                               int64_t vDim, bool causal, float scale) {
  Widened w(storage_);
  int64_t tokens = batch * seq;
  int64_t nq = tokens * heads * headDim, nk = tokens * kvHeads * headDim;
  int64_t nv = tokens * kvHeads * vDim, nout = tokens * heads * vDim;
  cpu::attentionGrad(w.in(dout, nout), w.in(q, nq), w.in(k, nk), w.in(v, nv),
                     batch, seq, heads, kvHeads, headDim, vDim, causal, scale,
                     w.out(dq, nq), w.out(dk, nk), w.out(dv, nv));
  w.store();
}

} // namespace moe::rt
