//===- CpuKernelsTestUtil.h - Inputs and references -------------*- C++ -*-===//
//
// Shared by the CPU kernel tests (CpuKernelsTest.cpp, CpuMoEKernelsTest.cpp):
// random inputs from a fixed-seed generator, the closeness checks, and
// references written independently of the kernels, in double precision
// with straightforward loops and no BLAS.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_RUNTIME_CPUKERNELSTESTUTIL_H
#define MOE_TEST_RUNTIME_CPUKERNELSTESTUTIL_H

#include "moe/Runtime/CpuKernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace moe::cputest {

using Floats = std::vector<float>;
using Doubles = std::vector<double>;
using Ids = std::vector<int32_t>;

// fp32 kernels against double references with reductions of a few dozen
// terms: a few ulps of error relative to the operands.
inline constexpr double kTol = 1e-5;

inline Floats randomVector(std::mt19937 &gen, size_t n, float lo = -1.0f,
                           float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats v(n);
  for (float &x : v)
    x = dist(gen);
  return v;
}

inline Ids randomIds(std::mt19937 &gen, size_t n, int32_t bound) {
  std::uniform_int_distribution<int32_t> dist(0, bound - 1);
  Ids v(n);
  for (int32_t &x : v)
    x = dist(gen);
  return v;
}

/// Errors are measured against the largest expected magnitude: fp32 GEMM
/// errors scale with the operands, not with a result that cancels to ~0.
inline void expectClose(const Floats &actual, const Doubles &expected,
                        double relTol, const std::string &what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double scale = 0.0;
  for (double e : expected)
    scale = std::max(scale, std::abs(e));
  scale = std::max(scale, 1e-30);
  for (size_t i = 0; i < actual.size(); ++i)
    ASSERT_LE(std::abs(actual[i] - expected[i]), relTol * scale)
        << what << "[" << i << "]: got " << actual[i] << ", expected "
        << expected[i];
}

inline void expectClose(double actual, double expected, double relTol,
                        const std::string &what) {
  EXPECT_LE(std::abs(actual - expected),
            relTol * std::max(std::abs(expected), 1e-30))
      << what << ": got " << actual << ", expected " << expected;
}

//===----------------------------------------------------------------------===//
// References
//===----------------------------------------------------------------------===//

inline double sigmoidRef(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// y [rows, out] = x [rows, in] @ w[out, in]^T (+ bias).
inline Doubles linearRef(const Floats &x, int rows, int in, const Floats &w,
                         int out, const Floats *bias = nullptr) {
  Doubles y(size_t(rows) * out);
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) {
      double acc = bias ? (*bias)[o] : 0.0;
      for (int i = 0; i < in; ++i)
        acc += double(x[size_t(r) * in + i]) * w[size_t(o) * in + i];
      y[size_t(r) * out + o] = acc;
    }
  return y;
}

/// SwiGLU of one row x [hidden] with gate/up [inter, hidden], down [hidden,
/// inter] starting at the given pointers (one expert's slice).
inline Doubles swigluRowRef(const float *x, int hidden, const float *gate,
                            const float *up, const float *down, int inter) {
  Doubles act(inter);
  for (int f = 0; f < inter; ++f) {
    double g = 0.0, u = 0.0;
    for (int i = 0; i < hidden; ++i) {
      g += double(x[i]) * gate[size_t(f) * hidden + i];
      u += double(x[i]) * up[size_t(f) * hidden + i];
    }
    act[f] = g * sigmoidRef(g) * u;
  }
  Doubles y(hidden, 0.0);
  for (int o = 0; o < hidden; ++o)
    for (int f = 0; f < inter; ++f)
      y[o] += act[f] * down[size_t(o) * inter + f];
  return y;
}

inline Doubles softmaxRef(const float *logits, int n) {
  double maxValue = *std::max_element(logits, logits + n);
  Doubles p(n);
  double sum = 0.0;
  for (int i = 0; i < n; ++i)
    sum += p[i] = std::exp(logits[i] - maxValue);
  for (double &v : p)
    v /= sum;
  return p;
}

inline double logSumExpRef(const float *logits, int n) {
  double sum = 0.0;
  for (int i = 0; i < n; ++i)
    sum += std::exp(double(logits[i]));
  return std::log(sum);
}

struct RoutingRef {
  Ids indices;
  Doubles weights;
};

/// moe.router steps 2-6 from the logits, the obvious way: sort (score,
/// index) pairs, best first, ties to the lower index.
inline RoutingRef routeRef(const Floats &logits, int tokens,
                           const cpu::RouterConfig &cfg, const Floats *bias) {
  int numExperts = int(cfg.experts), topK = int(cfg.topK);
  int groupSize = numExperts / int(cfg.nGroup);
  auto bestFirst = [](const std::pair<double, int> &a,
                      const std::pair<double, int> &b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  RoutingRef ref;
  for (int t = 0; t < tokens; ++t) {
    const float *row = logits.data() + size_t(t) * numExperts;
    Doubles scores(numExperts);
    if (cfg.sigmoid)
      for (int e = 0; e < numExperts; ++e)
        scores[e] = sigmoidRef(row[e]);
    else
      scores = softmaxRef(row, numExperts);
    Doubles select = scores;
    if (bias)
      for (int e = 0; e < numExperts; ++e)
        select[e] += (*bias)[e];

    std::vector<bool> eligible(numExperts, true);
    if (cfg.nGroup > 1) {
      std::vector<std::pair<double, int>> groups;
      for (int g = 0; g < cfg.nGroup; ++g) {
        Doubles members(select.begin() + g * groupSize,
                        select.begin() + (g + 1) * groupSize);
        std::sort(members.rbegin(), members.rend());
        groups.push_back({groupSize > 1 && cfg.groupTop > 1
                              ? members[0] + members[1]
                              : members[0],
                          g});
      }
      std::sort(groups.begin(), groups.end(), bestFirst);
      std::fill(eligible.begin(), eligible.end(), false);
      for (int i = 0; i < cfg.topkGroup; ++i)
        for (int j = 0; j < groupSize; ++j)
          eligible[groups[i].second * groupSize + j] = true;
    }

    std::vector<std::pair<double, int>> candidates;
    for (int e = 0; e < numExperts; ++e)
      if (eligible[e])
        candidates.push_back({select[e], e});
    std::sort(candidates.begin(), candidates.end(), bestFirst);
    double sum = 0.0;
    for (int k = 0; k < topK; ++k)
      sum += scores[candidates[k].second];
    for (int k = 0; k < topK; ++k) {
      int e = candidates[k].second;
      ref.indices.push_back(e);
      ref.weights.push_back((cfg.normTopkProb ? scores[e] / sum : scores[e]) *
                            cfg.routeScale);
    }
  }
  return ref;
}

/// Weights of an MoE layer with E experts.
struct ExpertWeights {
  int experts, hidden, inter;
  Floats gate, up, down;
  ExpertWeights(std::mt19937 &gen, int experts, int hidden, int inter)
      : experts(experts), hidden(hidden), inter(inter),
        gate(randomVector(gen, size_t(experts) * inter * hidden)),
        up(randomVector(gen, size_t(experts) * inter * hidden)),
        down(randomVector(gen, size_t(experts) * hidden * inter)) {}
};

inline Doubles expertsRef(const Floats &x, const Floats &weights,
                          const Ids &indices, int tokens, int topK,
                          const ExpertWeights &w) {
  size_t slice = size_t(w.inter) * w.hidden;
  Doubles out(size_t(tokens) * w.hidden, 0.0);
  for (int t = 0; t < tokens; ++t)
    for (int k = 0; k < topK; ++k) {
      int e = indices[size_t(t) * topK + k];
      Doubles y = swigluRowRef(
          x.data() + size_t(t) * w.hidden, w.hidden, w.gate.data() + e * slice,
          w.up.data() + e * slice, w.down.data() + e * slice, w.inter);
      for (int i = 0; i < w.hidden; ++i)
        out[size_t(t) * w.hidden + i] += weights[size_t(t) * topK + k] * y[i];
    }
  return out;
}

} // namespace moe::cputest

#endif // MOE_TEST_RUNTIME_CPUKERNELSTESTUTIL_H
