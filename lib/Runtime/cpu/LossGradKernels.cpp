//===- LossGradKernels.cpp - Gradients of the losses ----------------------===//
//
// The gradient of each loss of LossKernels.cpp with respect to its logits,
// for d loss = 1. Scores are recomputed per row in double.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuGradKernels.h"

#include "KernelUtils.h"

#include <algorithm>
#include <cmath>
#include <vector>

using namespace moe::cpu::detail;

namespace moe::cpu {

void crossEntropyGrad(const float *logits, const int32_t *labels, int64_t n,
                      int64_t vocab, int64_t ignoreIndex, float *dlogits) {
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
  double inv = counted ? 1.0 / double(counted) : 0.0;
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
