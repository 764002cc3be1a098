//===- LossKernels.cpp - Cross-entropy, aux and z losses ------------------===//
//
// The losses (reductions in double), their gradients (of the loss value
// itself), and the CPU backend's methods for the calls: a loss value is an
// fp32 scalar whatever the storage.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuKernels.h"

#include "CpuBackend.h"
#include "KernelUtils.h"

#include <algorithm>
#include <cmath>
#include <vector>

using namespace moe::cpu::detail;

namespace moe::cpu {

namespace {
/// The divisor of the mean: *count when given, else the rows counted here.
double meanDivisor(const float *count, int64_t counted) {
  return count ? double(*count) : double(counted);
}
} // namespace

float labelCount(const int32_t *labels, int64_t n, int64_t ignoreIndex) {
  checkSize("labelCount", "n", n);
  return float(std::count_if(
      labels, labels + n, [&](int32_t label) { return label != ignoreIndex; }));
}

float crossEntropy(const float *logits, const int32_t *labels, int64_t n,
                   int64_t vocab, int64_t ignoreIndex, const float *count) {
  checkSize("crossEntropy", "n", n);
  checkSize("crossEntropy", "vocab", vocab, /*positive=*/true);
  double total = 0.0;
  int64_t counted = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (labels[t] == ignoreIndex)
      continue;
    checkId("crossEntropy", "label", labels[t], vocab, t);
    const float *row = logits + t * vocab;
    total += logSumExp(row, vocab) - row[labels[t]];
    ++counted;
  }
  double divisor = meanDivisor(count, counted);
  return divisor > 0.0 ? float(total / divisor) : 0.0f;
}

float auxLoss(const float *logits, const int32_t *indices, int64_t tokens,
              int64_t experts, int64_t topK, bool sigmoid, float coefficient) {
  checkSize("auxLoss", "tokens", tokens);
  checkSize("auxLoss", "experts", experts, /*positive=*/true);
  checkSize("auxLoss", "topK", topK, /*positive=*/true);
  if (tokens == 0)
    return 0.0f;
  std::vector<double> meanScore(experts, 0.0);
  std::vector<int64_t> counts(experts, 0);
  std::vector<float> scores(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = logits + t * experts;
    if (sigmoid) {
      // DeepSeek-V3 normalises the sigmoid scores to sum 1 per token.
      double sum = 0.0;
      for (int64_t e = 0; e < experts; ++e)
        sum += scores[e] = detail::sigmoid(row[e]);
      for (int64_t e = 0; e < experts; ++e)
        meanScore[e] += scores[e] / sum;
    } else {
      softmaxRow(row, experts, scores.data());
      for (int64_t e = 0; e < experts; ++e)
        meanScore[e] += scores[e];
    }
    for (int64_t k = 0; k < topK; ++k) {
      checkId("auxLoss", "expert id", indices[t * topK + k], experts,
              t * topK + k);
      ++counts[indices[t * topK + k]];
    }
  }
  double dot = 0.0;
  for (int64_t e = 0; e < experts; ++e)
    dot += double(counts[e]) / double(tokens * topK) * (meanScore[e] / tokens);
  return float(double(coefficient) * double(experts) * dot);
}

float zLoss(const float *logits, int64_t tokens, int64_t experts,
            float coefficient) {
  checkSize("zLoss", "tokens", tokens);
  checkSize("zLoss", "experts", experts, /*positive=*/true);
  if (tokens == 0)
    return 0.0f;
  double total = 0.0;
  for (int64_t t = 0; t < tokens; ++t) {
    double lse = logSumExp(logits + t * experts, experts);
    total += lse * lse;
  }
  return float(double(coefficient) * total / double(tokens));
}

void crossEntropyGrad(const float *logits, const int32_t *labels, int64_t n,
                      int64_t vocab, int64_t ignoreIndex, float *dlogits,
                      const float *count) {
  const char *kernel = "crossEntropyGrad";
  checkSize(kernel, "n", n);
  checkSize(kernel, "vocab", vocab, /*positive=*/true);
  int64_t counted = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (labels[t] == ignoreIndex)
      continue;
    checkId(kernel, "label", labels[t], vocab, t);
    ++counted;
  }
  // The loss is a mean over the counted rows.
  double divisor = meanDivisor(count, counted);
  double inv = divisor > 0.0 ? 1.0 / divisor : 0.0;
  for (int64_t t = 0; t < n; ++t) {
    float *out = dlogits + t * vocab;
    if (labels[t] == ignoreIndex) {
      std::fill_n(out, vocab, 0.0f);
      continue;
    }
    const float *row = logits + t * vocab;
    double lse = logSumExp(row, vocab);
    for (int64_t i = 0; i < vocab; ++i)
      out[i] = float(std::exp(double(row[i]) - lse) * inv);
    out[labels[t]] =
        float((std::exp(double(row[labels[t]]) - lse) - 1.0) * inv);
  }
}

void auxLossGrad(const float *logits, const int32_t *indices, int64_t tokens,
                 int64_t experts, int64_t topK, bool sigmoid, float coefficient,
                 float *dlogits) {
  const char *kernel = "auxLossGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  if (tokens == 0)
    return;
  std::vector<int64_t> counts(experts, 0);
  for (int64_t s = 0, e = tokens * topK; s < e; ++s) {
    checkId(kernel, "expert id", indices[s], experts, s);
    ++counts[indices[s]];
  }
  // loss = c E sum_e f_e (1/T) sum_t p_te, so d loss / d p_te = c E f_e / T.
  std::vector<double> dp(experts);
  for (int64_t e = 0; e < experts; ++e)
    dp[e] = double(coefficient) * double(experts) * double(counts[e]) /
            double(tokens * topK) / double(tokens);
  std::vector<double> scores(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = logits + t * experts;
    float *out = dlogits + t * experts;
    if (sigmoid) {
      // p_e = sigma_e / S: d / d sigma_e = (dp_e - sum_f dp_f p_f) / S.
      double sum = 0.0;
      for (int64_t e = 0; e < experts; ++e)
        sum += scores[e] = 1.0 / (1.0 + std::exp(-double(row[e])));
      double inner = 0.0;
      for (int64_t e = 0; e < experts; ++e)
        inner += dp[e] * scores[e] / sum;
      for (int64_t e = 0; e < experts; ++e)
        out[e] = float((dp[e] - inner) / sum * scores[e] * (1.0 - scores[e]));
    } else {
      double lse = logSumExp(row, experts), inner = 0.0;
      for (int64_t e = 0; e < experts; ++e) {
        scores[e] = std::exp(double(row[e]) - lse);
        inner += dp[e] * scores[e];
      }
      for (int64_t e = 0; e < experts; ++e)
        out[e] = float(scores[e] * (dp[e] - inner));
    }
  }
}

void zLossGrad(const float *logits, int64_t tokens, int64_t experts,
               float coefficient, float *dlogits) {
  const char *kernel = "zLossGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  if (tokens == 0)
    return;
  // d (c/T sum_t lse_t^2) / d l_te = 2 c / T * lse_t * softmax_te.
  double factor = 2.0 * double(coefficient) / double(tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = logits + t * experts;
    double lse = logSumExp(row, experts);
    for (int64_t e = 0; e < experts; ++e)
      dlogits[t * experts + e] =
          float(factor * lse * std::exp(double(row[e]) - lse));
  }
}

} // namespace moe::cpu

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

namespace moe::rt {

// Loss values are fp32 scalars whatever the storage.
void CpuBackend::crossEntropy(const float *logits, const int32_t *labels,
                              const float *count, float *out, int64_t n,
                              int64_t vocab, int64_t ignoreIndex) {
  Widened w(storage_);
  *out = cpu::crossEntropy(w.in(logits, n * vocab), labels, n, vocab,
                           ignoreIndex, count);
}

void CpuBackend::labelCount(const int32_t *labels, float *out, int64_t n,
                            int64_t ignoreIndex) {
  *out = cpu::labelCount(labels, n, ignoreIndex);
}

void CpuBackend::auxLoss(const float *logits, const int32_t *indices,
                         float *out, int64_t tokens, int64_t experts,
                         int64_t topK, bool sigmoid, float coefficient) {
  Widened w(storage_);
  *out = cpu::auxLoss(w.in(logits, tokens * experts), indices, tokens, experts,
                      topK, sigmoid, coefficient);
}

void CpuBackend::zLoss(const float *logits, float *out, int64_t tokens,
                       int64_t experts, float coefficient) {
  Widened w(storage_);
  *out =
      cpu::zLoss(w.in(logits, tokens * experts), tokens, experts, coefficient);
}

void CpuBackend::crossEntropyGrad(const float *logits, const int32_t *labels,
                                  const float *count, float *dlogits, int64_t n,
                                  int64_t vocab, int64_t ignoreIndex) {
  Widened w(storage_);
  cpu::crossEntropyGrad(w.in(logits, n * vocab), labels, n, vocab, ignoreIndex,
                        w.out(dlogits, n * vocab), count);
  w.store();
}

void CpuBackend::auxLossGrad(const float *logits, const int32_t *indices,
                             float *dlogits, int64_t tokens, int64_t experts,
                             int64_t topK, bool sigmoid, float coefficient) {
  Widened w(storage_);
  int64_t n = tokens * experts;
  cpu::auxLossGrad(w.in(logits, n), indices, tokens, experts, topK, sigmoid,
                   coefficient, w.out(dlogits, n));
  w.store();
}

void CpuBackend::zLossGrad(const float *logits, float *dlogits, int64_t tokens,
                           int64_t experts, float coefficient) {
  Widened w(storage_);
  int64_t n = tokens * experts;
  cpu::zLossGrad(w.in(logits, n), tokens, experts, coefficient,
                 w.out(dlogits, n));
  w.store();
}

} // namespace moe::rt
