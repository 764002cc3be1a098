//===- RouterKernels.cpp - Routing and capacity ---------------------------===//
//
// The router (softmax or sigmoid scores, expert bias, group-limited top-k,
// renormalisation and route scale), its gradient, and the CPU backend's
// methods for the calls. The gradient flows through the selected scores
// only; the choice itself has none.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuKernels.h"

#include "CpuBackend.h"
#include "KernelUtils.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

using namespace moe::cpu::detail;

namespace moe::cpu {

namespace {

void checkRouterConfig(const RouterConfig &cfg) {
  if (std::string problem = cfg.problem(); !problem.empty())
    fail("router", problem);
}

/// The topkGroup groups with the highest group scores (the sum of a group's
/// groupTop best selection scores; ties to the lower group), as a per-expert
/// eligibility mask.
void markEligibleGroups(const float *select, const RouterConfig &cfg,
                        std::vector<int64_t> &groupOrder,
                        std::vector<float> &groupScore,
                        std::vector<char> &eligible) {
  int64_t groupSize = cfg.experts / cfg.nGroup;
  for (int64_t g = 0; g < cfg.nGroup; ++g) {
    const float *scores = select + g * groupSize;
    float best = scores[0];
    float second = -std::numeric_limits<float>::infinity();
    for (int64_t i = 1; i < groupSize; ++i) {
      if (scores[i] > best) {
        second = best;
        best = scores[i];
      } else if (scores[i] > second) {
        second = scores[i];
      }
    }
    groupScore[g] = groupSize > 1 && cfg.groupTop > 1 ? best + second : best;
  }
  std::iota(groupOrder.begin(), groupOrder.end(), 0);
  std::partial_sort(groupOrder.begin(), groupOrder.begin() + cfg.topkGroup,
                    groupOrder.end(), [&](int64_t a, int64_t b) {
                      return groupScore[a] > groupScore[b] ||
                             (groupScore[a] == groupScore[b] && a < b);
                    });
  std::fill(eligible.begin(), eligible.end(), 0);
  for (int64_t i = 0; i < cfg.topkGroup; ++i)
    std::fill_n(eligible.begin() + groupOrder[i] * groupSize, groupSize, 1);
}

} // namespace

void router(const float *x, int64_t tokens, int64_t hidden, const float *gate,
            const float *expertBias, const RouterConfig &cfg, float *weights,
            int32_t *indices, float *logits) {
  checkSize("router", "tokens", tokens);
  checkSize("router", "hidden", hidden);
  checkRouterConfig(cfg);
  int64_t numExperts = cfg.experts, topK = cfg.topK;
  project("router", x, tokens, hidden, gate, numExperts, logits);

  std::vector<float> scores(numExperts), select(numExperts);
  std::vector<char> eligible(numExperts, 1);
  std::vector<int64_t> groupOrder(cfg.nGroup), candidates;
  std::vector<float> groupScore(cfg.nGroup);
  candidates.reserve(numExperts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = logits + t * numExperts;
    if (cfg.sigmoid)
      for (int64_t e = 0; e < numExperts; ++e)
        scores[e] = sigmoid(row[e]);
    else
      softmaxRow(row, numExperts, scores.data());
    // The bias steers the choice only; weights use the unbiased scores.
    for (int64_t e = 0; e < numExperts; ++e)
      select[e] = expertBias ? scores[e] + expertBias[e] : scores[e];
    if (cfg.nGroup > 1)
      markEligibleGroups(select.data(), cfg, groupOrder, groupScore, eligible);

    candidates.clear();
    for (int64_t e = 0; e < numExperts; ++e)
      if (eligible[e])
        candidates.push_back(e);
    std::partial_sort(candidates.begin(), candidates.begin() + topK,
                      candidates.end(), [&](int64_t a, int64_t b) {
                        return select[a] > select[b] ||
                               (select[a] == select[b] && a < b);
                      });

    float sum = 0.0f;
    for (int64_t k = 0; k < topK; ++k)
      sum += scores[candidates[k]];
    for (int64_t k = 0; k < topK; ++k) {
      indices[t * topK + k] = int32_t(candidates[k]);
      weights[t * topK + k] = cfg.normTopkProb
                                  ? scores[candidates[k]] / sum * cfg.routeScale
                                  : scores[candidates[k]] * cfg.routeScale;
    }
  }
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

} // namespace moe::cpu

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

namespace moe::rt {

void CpuBackend::router(const float *x, const float *gate,
                        const float *expertBias, float *weights,
                        int32_t *indices, float *logits, int64_t tokens,
                        int64_t hidden, int64_t experts, int64_t topK,
                        bool sigmoid, bool normTopkProb, float routeScale,
                        int64_t nGroup, int64_t topkGroup, int64_t groupTop) {
  RouterConfig cfg = routerConfig(experts, topK, sigmoid, normTopkProb,
                                  routeScale, nGroup, topkGroup, groupTop);
  Widened w(storage_);
  cpu::router(w.in(x, tokens * hidden), tokens, hidden,
              w.in(gate, cfg.experts * hidden), w.in(expertBias, cfg.experts),
              cfg, w.out(weights, tokens * cfg.topK), indices,
              w.out(logits, tokens * cfg.experts));
  w.store();
}

void CpuBackend::routerGrad(const float *dweights, const float *dlogits,
                            const float *x, const float *gate,
                            const float *logits, const int32_t *indices,
                            float *dx, float *dgate, int64_t tokens,
                            int64_t hidden, int64_t experts, int64_t topK,
                            bool sigmoid, bool normTopkProb, float routeScale) {
  RouterConfig cfg =
      routerConfig(experts, topK, sigmoid, normTopkProb, routeScale);
  Widened w(storage_);
  int64_t nl = tokens * cfg.experts, nw = cfg.experts * hidden;
  cpu::routerGrad(w.in(dweights, tokens * cfg.topK), w.in(dlogits, nl),
                  w.in(x, tokens * hidden), tokens, hidden, w.in(gate, nw),
                  w.in(logits, nl), indices, cfg, w.out(dx, tokens * hidden),
                  w.out(dgate, nw));
  w.store();
}

} // namespace moe::rt
