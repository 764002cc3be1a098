//===- LossKernels.cpp - Cross-entropy and router losses ------------------===//
//
// Losses are scalars; they accumulate in double and round once at the end.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuKernels.h"

#include "KernelUtils.h"

#include <vector>

using namespace moe::cpu::detail;

namespace moe::cpu {

float crossEntropy(const float *logits, const int32_t *labels, int64_t n,
                   int64_t vocab, int64_t ignoreIndex) {
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
  return counted ? float(total / counted) : 0.0f;
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

} // namespace moe::cpu
