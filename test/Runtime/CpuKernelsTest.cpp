//===- CpuKernelsTest.cpp - CPU kernels against naive references ----------===//
//
// Every kernel is compared with a reference written here independently:
// straightforward loops in double precision, no BLAS, on random inputs from a
// fixed-seed generator.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuKernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using namespace moe;

namespace {

using Floats = std::vector<float>;
using Doubles = std::vector<double>;
using Ids = std::vector<int32_t>;

// fp32 kernels against double references with reductions of a few dozen
// terms: a few ulps of error relative to the operands.
constexpr double kTol = 1e-5;

Floats randomVector(std::mt19937 &gen, size_t n, float lo = -1.0f,
                    float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats v(n);
  for (float &x : v)
    x = dist(gen);
  return v;
}

Ids randomIds(std::mt19937 &gen, size_t n, int32_t bound) {
  std::uniform_int_distribution<int32_t> dist(0, bound - 1);
  Ids v(n);
  for (int32_t &x : v)
    x = dist(gen);
  return v;
}

/// Errors are measured against the largest expected magnitude: fp32 GEMM
/// errors scale with the operands, not with a result that cancels to ~0.
void expectClose(const Floats &actual, const Doubles &expected, double relTol,
                 const std::string &what) {
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

void expectClose(double actual, double expected, double relTol,
                 const std::string &what) {
  EXPECT_LE(std::abs(actual - expected),
            relTol * std::max(std::abs(expected), 1e-30))
      << what << ": got " << actual << ", expected " << expected;
}

//===----------------------------------------------------------------------===//
// References
//===----------------------------------------------------------------------===//

double sigmoidRef(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// y [rows, out] = x [rows, in] @ w[out, in]^T (+ bias).
Doubles linearRef(const Floats &x, int rows, int in, const Floats &w, int out,
                  const Floats *bias = nullptr) {
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
Doubles swigluRowRef(const float *x, int hidden, const float *gate,
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

Doubles softmaxRef(const float *logits, int n) {
  double maxValue = *std::max_element(logits, logits + n);
  Doubles p(n);
  double sum = 0.0;
  for (int i = 0; i < n; ++i)
    sum += p[i] = std::exp(logits[i] - maxValue);
  for (double &v : p)
    v /= sum;
  return p;
}

double logSumExpRef(const float *logits, int n) {
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
RoutingRef routeRef(const Floats &logits, int tokens,
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
        groups.push_back(
            {groupSize > 1 ? members[0] + members[1] : members[0], g});
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

Doubles expertsRef(const Floats &x, const Floats &weights, const Ids &indices,
                   int tokens, int topK, const ExpertWeights &w) {
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

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

TEST(CpuKernels, EmbeddingCopiesRowsAndRejectsBadTokens) {
  std::mt19937 gen(1);
  const int vocab = 11, hidden = 5;
  Floats table = randomVector(gen, vocab * hidden);
  Ids tokens = {3, 0, 10, 3};
  Floats out(tokens.size() * hidden);
  cpu::embedding(tokens.data(), tokens.size(), table.data(), vocab, hidden,
                 out.data());
  for (size_t i = 0; i < tokens.size(); ++i)
    for (int j = 0; j < hidden; ++j)
      EXPECT_EQ(out[i * hidden + j], table[tokens[i] * hidden + j]);

  for (int32_t bad : {-1, vocab}) {
    Ids badTokens = {1, bad};
    EXPECT_THROW(cpu::embedding(badTokens.data(), 2, table.data(), vocab,
                                hidden, out.data()),
                 std::invalid_argument);
  }
  try {
    Ids badTokens = {vocab};
    cpu::embedding(badTokens.data(), 1, table.data(), vocab, hidden,
                   out.data());
    ADD_FAILURE() << "embedding accepted token id " << vocab;
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("embedding"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("11"), std::string::npos);
  }
}

TEST(CpuKernels, RmsNorm) {
  std::mt19937 gen(2);
  const int rows = 6, dim = 40;
  const float eps = 1e-6f;
  Floats x = randomVector(gen, rows * dim, -3.0f, 3.0f);
  Floats w = randomVector(gen, dim);
  Doubles ref(rows * dim);
  for (int r = 0; r < rows; ++r) {
    double meanSquare = 0.0;
    for (int i = 0; i < dim; ++i)
      meanSquare += double(x[r * dim + i]) * x[r * dim + i] / dim;
    for (int i = 0; i < dim; ++i)
      ref[r * dim + i] = x[r * dim + i] / std::sqrt(meanSquare + eps) * w[i];
  }
  Floats out(rows * dim);
  cpu::rmsNorm(x.data(), w.data(), rows, dim, eps, out.data());
  expectClose(out, ref, kTol, "rmsNorm");
}

TEST(CpuKernels, LinearWithAndWithoutBias) {
  std::mt19937 gen(3);
  const int rows = 7, in = 33, outFeatures = 19;
  Floats x = randomVector(gen, rows * in);
  Floats w = randomVector(gen, outFeatures * in);
  Floats bias = randomVector(gen, outFeatures);
  Floats out(rows * outFeatures);
  cpu::linear(x.data(), rows, in, w.data(), outFeatures, nullptr, out.data());
  expectClose(out, linearRef(x, rows, in, w, outFeatures), kTol, "linear");
  cpu::linear(x.data(), rows, in, w.data(), outFeatures, bias.data(),
              out.data());
  expectClose(out, linearRef(x, rows, in, w, outFeatures, &bias), kTol,
              "linear+bias");
  EXPECT_THROW(
      cpu::linear(x.data(), -1, in, w.data(), outFeatures, nullptr, out.data()),
      std::invalid_argument);
}

/// RoPE in double with the rotate-half pairing (i, i + D/2).
Doubles ropeRef(const Floats &x, const Ids *positions, int batch, int seq,
                int heads, int dim, double theta) {
  Doubles out(x.size());
  int half = dim / 2;
  for (int b = 0; b < batch; ++b)
    for (int s = 0; s < seq; ++s)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < half; ++i) {
          double pos = positions ? (*positions)[b * seq + s] : s;
          double angle = pos * std::pow(theta, -2.0 * i / dim);
          size_t base = ((size_t(b) * seq + s) * heads + h) * dim;
          double lo = x[base + i], hi = x[base + i + half];
          out[base + i] = lo * std::cos(angle) - hi * std::sin(angle);
          out[base + i + half] = hi * std::cos(angle) + lo * std::sin(angle);
        }
  return out;
}

TEST(CpuKernels, RopeWithAndWithoutPositions) {
  std::mt19937 gen(4);
  const int batch = 2, seq = 5, heads = 3, dim = 8;
  const double theta = 10000.0;
  Floats x = randomVector(gen, batch * seq * heads * dim);
  Floats out(x.size());
  // The kernel rounds angles to fp32 as HF does: an absolute angle error of
  // about pos * 6e-8, well under the tolerance for positions below 64.
  cpu::rope(x.data(), nullptr, batch, seq, heads, dim, theta, out.data());
  expectClose(out, ropeRef(x, nullptr, batch, seq, heads, dim, theta), kTol,
              "rope");

  Ids positions = randomIds(gen, batch * seq, 64);
  cpu::rope(x.data(), positions.data(), batch, seq, heads, dim, theta,
            out.data());
  expectClose(out, ropeRef(x, &positions, batch, seq, heads, dim, theta), kTol,
              "rope(positions)");
}

TEST(CpuKernels, RopePairsFirstAndSecondHalf) {
  // One head of dim 4 at position 1: pairs (0, 2) and (1, 3) rotate by angles
  // 1 and 10000^(-1/2) = 0.01.
  Floats x = {1.0f, 2.0f, 3.0f, 4.0f};
  Ids positions = {1};
  Floats out(4);
  cpu::rope(x.data(), positions.data(), 1, 1, 1, 4, 10000.0, out.data());
  EXPECT_NEAR(out[0], 1 * std::cos(1.0) - 3 * std::sin(1.0), 1e-6);
  EXPECT_NEAR(out[2], 3 * std::cos(1.0) + 1 * std::sin(1.0), 1e-6);
  EXPECT_NEAR(out[1], 2 * std::cos(0.01) - 4 * std::sin(0.01), 1e-6);
  EXPECT_NEAR(out[3], 4 * std::cos(0.01) + 2 * std::sin(0.01), 1e-6);
}

Doubles attentionRef(const Floats &q, const Floats &k, const Floats &v,
                     int batch, int seq, int heads, int kvHeads, int dim,
                     bool causal, double scale) {
  Doubles out(q.size(), 0.0);
  auto at = [&](int b, int s, int h, int nh) {
    return ((size_t(b) * seq + s) * nh + h) * dim;
  };
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h) {
      int kvh = h / (heads / kvHeads);
      for (int s = 0; s < seq; ++s) {
        int visible = causal ? s + 1 : seq;
        Doubles p(visible);
        double maxScore = -INFINITY, sum = 0.0;
        for (int j = 0; j < visible; ++j) {
          double dot = 0.0;
          for (int d = 0; d < dim; ++d)
            dot += double(q[at(b, s, h, heads) + d]) *
                   k[at(b, j, kvh, kvHeads) + d];
          p[j] = dot * scale;
          maxScore = std::max(maxScore, p[j]);
        }
        for (double &pj : p)
          sum += pj = std::exp(pj - maxScore);
        for (int j = 0; j < visible; ++j)
          for (int d = 0; d < dim; ++d)
            out[at(b, s, h, heads) + d] +=
                p[j] / sum * v[at(b, j, kvh, kvHeads) + d];
      }
    }
  return out;
}

TEST(CpuKernels, AttentionGqaAndMhaCausalAndNot) {
  const int batch = 2, seq = 7, dim = 8;
  for (int kvHeads : {2, 4}) {
    for (bool causal : {false, true}) {
      const int heads = 4;
      SCOPED_TRACE("kvHeads=" + std::to_string(kvHeads) +
                   " causal=" + std::to_string(causal));
      std::mt19937 gen(5 + kvHeads);
      Floats q = randomVector(gen, batch * seq * heads * dim, -2.0f, 2.0f);
      Floats k = randomVector(gen, batch * seq * kvHeads * dim, -2.0f, 2.0f);
      Floats v = randomVector(gen, batch * seq * kvHeads * dim);
      float scale = 1.0f / std::sqrt(float(dim));
      Floats out(q.size());
      cpu::attention(q.data(), k.data(), v.data(), batch, seq, heads, kvHeads,
                     dim, causal, scale, out.data());
      expectClose(
          out,
          attentionRef(q, k, v, batch, seq, heads, kvHeads, dim, causal, scale),
          kTol, "attention");
    }
  }
  Floats dummy(64);
  EXPECT_THROW(cpu::attention(dummy.data(), dummy.data(), dummy.data(), 1, 1, 4,
                              3, 4, false, 1.0f, dummy.data()),
               std::invalid_argument);
}

// The SiLU's vectorised exp over the whole float range the activations can
// take, element by element: x silu(x) for x from -120 to 120 (hidden = inter
// = 1 and unit weights, so the projections are exact).
TEST(CpuKernels, SwigluMlpSiluAcrossTheRange) {
  const int rows = 24001;
  Floats x(rows);
  for (int r = 0; r < rows; ++r)
    x[r] = -120.0f + 0.01f * float(r);
  Floats one = {1.0f}, out(rows);
  cpu::swigluMlp(x.data(), rows, 1, one.data(), one.data(), one.data(), 1,
                 out.data());
  for (int r = 0; r < rows; ++r) {
    double ref = double(x[r]) * sigmoidRef(x[r]) * double(x[r]);
    // A few ulps, or nothing visible next to the other terms of a sum where
    // the exact result is below float's normal range.
    EXPECT_LE(std::abs(out[r] - ref), 1e-6 * std::abs(ref) + 1e-30)
        << "x = " << x[r] << ": " << out[r] << " instead of " << ref;
  }
}

TEST(CpuKernels, SwigluMlpAndSharedExperts) {
  std::mt19937 gen(6);
  const int rows = 5, hidden = 16, inter = 24;
  ExpertWeights w(gen, 1, hidden, inter);
  Floats x = randomVector(gen, rows * hidden);
  Floats sharedGate = randomVector(gen, hidden);
  Doubles ref(rows * hidden), gatedRef(rows * hidden);
  for (int r = 0; r < rows; ++r) {
    Doubles y = swigluRowRef(x.data() + r * hidden, hidden, w.gate.data(),
                             w.up.data(), w.down.data(), inter);
    double g = 0.0;
    for (int i = 0; i < hidden; ++i)
      g += double(x[r * hidden + i]) * sharedGate[i];
    for (int i = 0; i < hidden; ++i) {
      ref[r * hidden + i] = y[i];
      gatedRef[r * hidden + i] = sigmoidRef(g) * y[i];
    }
  }
  Floats out(rows * hidden);
  cpu::swigluMlp(x.data(), rows, hidden, w.gate.data(), w.up.data(),
                 w.down.data(), inter, out.data());
  expectClose(out, ref, kTol, "swigluMlp");
  cpu::sharedExperts(x.data(), rows, hidden, w.gate.data(), w.up.data(),
                     w.down.data(), inter, nullptr, out.data());
  expectClose(out, ref, kTol, "sharedExperts");
  cpu::sharedExperts(x.data(), rows, hidden, w.gate.data(), w.up.data(),
                     w.down.data(), inter, sharedGate.data(), out.data());
  expectClose(out, gatedRef, kTol, "sharedExperts(gated)");
}

TEST(CpuKernels, Add) {
  std::mt19937 gen(7);
  Floats a = randomVector(gen, 13), b = randomVector(gen, 13), out(13);
  cpu::add(a.data(), b.data(), 13, out.data());
  for (int i = 0; i < 13; ++i)
    EXPECT_EQ(out[i], a[i] + b[i]);
}

//===----------------------------------------------------------------------===//
// Router
//===----------------------------------------------------------------------===//

/// Runs the router kernel and checks logits, indices and weights against the
/// reference. The reference routes from the kernel's logits (checked first)
/// so that GEMM rounding cannot flip a near-tied selection.
void checkRouter(std::mt19937 &gen, int tokens, int hidden,
                 const cpu::RouterConfig &cfg, bool withBias) {
  int numExperts = int(cfg.experts), topK = int(cfg.topK);
  Floats x = randomVector(gen, tokens * hidden);
  Floats gate = randomVector(gen, numExperts * hidden);
  // Biases of the size of the score spread, so they change the choice.
  Floats bias = randomVector(gen, numExperts, -0.3f, 0.3f);
  const Floats *biasPtr = withBias ? &bias : nullptr;

  Floats weights(tokens * topK), logits(tokens * numExperts);
  Ids indices(tokens * topK);
  cpu::router(x.data(), tokens, hidden, gate.data(),
              withBias ? bias.data() : nullptr, cfg, weights.data(),
              indices.data(), logits.data());
  expectClose(logits, linearRef(x, tokens, hidden, gate, numExperts), kTol,
              "router logits");
  RoutingRef ref = routeRef(logits, tokens, cfg, biasPtr);
  EXPECT_EQ(indices, ref.indices);
  expectClose(weights, ref.weights, kTol, "router weights");
}

TEST(CpuKernels, RouterSoftmaxTopKWithRenorm) {
  std::mt19937 gen(8);
  cpu::RouterConfig cfg;
  cfg.experts = 8;
  cfg.topK = 2;
  for (bool norm : {true, false}) {
    cfg.normTopkProb = norm;
    SCOPED_TRACE("normTopkProb=" + std::to_string(norm));
    checkRouter(gen, 32, 24, cfg, /*withBias=*/false);
  }
}

TEST(CpuKernels, RouterSigmoidBiasGroupLimitedWithRouteScale) {
  std::mt19937 gen(9);
  cpu::RouterConfig cfg; // DeepSeek-V3 in miniature
  cfg.experts = 16;
  cfg.topK = 4;
  cfg.sigmoid = true;
  cfg.normTopkProb = true;
  cfg.routeScale = 2.5f;
  cfg.nGroup = 4;
  cfg.topkGroup = 2;
  checkRouter(gen, 48, 20, cfg, /*withBias=*/true);

  // Groups of one expert: a group's score is its only expert's score.
  cfg.experts = 8;
  cfg.topK = 2;
  cfg.nGroup = 8;
  cfg.topkGroup = 3;
  checkRouter(gen, 48, 20, cfg, /*withBias=*/true);
}

TEST(CpuKernels, RouterBreaksTiesTowardLowerIndices) {
  const int tokens = 3, hidden = 4;
  Floats x(tokens * hidden, 1.0f), gate(8 * hidden, 0.0f); // all logits 0
  cpu::RouterConfig cfg;
  cfg.experts = 8;
  cfg.topK = 3;
  cfg.sigmoid = true;
  cfg.nGroup = 4;
  cfg.topkGroup = 2;
  Floats weights(tokens * 3), logits(tokens * 8);
  Ids indices(tokens * 3);
  cpu::router(x.data(), tokens, hidden, gate.data(), nullptr, cfg,
              weights.data(), indices.data(), logits.data());
  for (int t = 0; t < tokens; ++t)
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(indices[t * 3 + k], k); // groups 0 and 1, then experts 0..2
      EXPECT_EQ(weights[t * 3 + k], 0.5f);
    }
  cfg.topK = 5; // only 4 experts are eligible
  EXPECT_THROW(cpu::router(x.data(), tokens, hidden, gate.data(), nullptr, cfg,
                           weights.data(), indices.data(), logits.data()),
               std::invalid_argument);
}

//===----------------------------------------------------------------------===//
// Token permutation and routed experts
//===----------------------------------------------------------------------===//

TEST(CpuKernels, PermuteByExpertSmallExample) {
  // 3 tokens, top-2, 4 experts; slot s = 2t + k.
  Ids indices = {2, 0, /**/ 0, 3, /**/ 2, 0};
  std::vector<int64_t> counts(4), offsets(5);
  Ids rowToSlot(6);
  cpu::permuteByExpert(indices.data(), 3, 2, 4, counts.data(), offsets.data(),
                       rowToSlot.data());
  EXPECT_EQ(counts, (std::vector<int64_t>{3, 0, 2, 1}));
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 3, 3, 5, 6}));
  // Expert 0: slots 1, 2, 5; expert 2: slots 0, 4; expert 3: slot 3.
  EXPECT_EQ(rowToSlot, (Ids{1, 2, 5, 0, 4, 3}));

  Floats x = {10, 11, /**/ 20, 21, /**/ 30, 31}; // 3 tokens, hidden 2
  Floats permuted(12);
  cpu::gatherRows(x.data(), rowToSlot.data(), 6, 2, 2, permuted.data());
  // Rows hold tokens 0, 1, 2, 0, 2, 1.
  EXPECT_EQ(permuted, (Floats{10, 11, 20, 21, 30, 31, 10, 11, 30, 31, 20, 21}));

  Ids bad = {2, 0, 4, 3, 2, 0};
  EXPECT_THROW(cpu::permuteByExpert(bad.data(), 3, 2, 4, counts.data(),
                                    offsets.data(), rowToSlot.data()),
               std::invalid_argument);
}

/// Runs cpu::experts on the given routing and compares with the reference.
void checkExperts(std::mt19937 &gen, const Ids &indices, int tokens, int topK,
                  int numExperts) {
  const int hidden = 12, inter = 20;
  ExpertWeights w(gen, numExperts, hidden, inter);
  Floats x = randomVector(gen, tokens * hidden);
  Floats weights = randomVector(gen, tokens * topK, 0.0f, 1.0f);
  Floats out(tokens * hidden);
  cpu::experts(x.data(), weights.data(), indices.data(), tokens, topK, hidden,
               numExperts, inter, w.gate.data(), w.up.data(), w.down.data(),
               out.data());
  expectClose(out, expertsRef(x, weights, indices, tokens, topK, w), kTol,
              "experts");
}

/// Per token, topK distinct experts drawn from `allowed`.
Ids distinctRouting(std::mt19937 &gen, int tokens, int topK, Ids allowed) {
  Ids indices;
  for (int t = 0; t < tokens; ++t) {
    std::shuffle(allowed.begin(), allowed.end(), gen);
    indices.insert(indices.end(), allowed.begin(), allowed.begin() + topK);
  }
  return indices;
}

TEST(CpuKernels, DropOverCapacityKeepsEachExpertsFirstSlots) {
  // 4 tokens, top-2, 4 experts, capacity 2; slot s = 2t + k.
  Ids indices = {2, 0, /**/ 0, 3, /**/ 2, 0, /**/ 0, 2};
  Ids kept(8);
  // Expert 0 has slots 1, 2, 5, 6: 5 and 6 go; expert 2 has 0, 4, 7: 7 goes.
  EXPECT_EQ(cpu::dropOverCapacity(indices.data(), 4, 2, 4, 2, kept.data()), 3);
  EXPECT_EQ(kept, (Ids{2, 0, 0, 3, 2, -1, -1, -1}));

  // Dropped slots get no row; the rows past the kept ones are zero padding.
  std::vector<int64_t> counts(4), offsets(5);
  Ids rowToSlot(8);
  cpu::permuteByExpert(kept.data(), 4, 2, 4, counts.data(), offsets.data(),
                       rowToSlot.data());
  EXPECT_EQ(counts, (std::vector<int64_t>{2, 0, 2, 1}));
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 2, 2, 4, 5}));
  EXPECT_EQ(rowToSlot, (Ids{1, 2, 0, 4, 3, -1, -1, -1}));
  Floats x = {10, 20, 30, 40}; // hidden 1
  Floats permuted(8, 7.0f);
  cpu::gatherRows(x.data(), rowToSlot.data(), 8, 2, 1, permuted.data());
  EXPECT_EQ(permuted, (Floats{10, 20, 10, 30, 20, 0, 0, 0}));

  // Every slot kept at capacity >= its expert's load; ids are checked.
  EXPECT_EQ(cpu::dropOverCapacity(indices.data(), 4, 2, 4, 4, kept.data()), 0);
  EXPECT_EQ(kept, indices);
  Ids bad = {0, 4};
  EXPECT_THROW(cpu::dropOverCapacity(bad.data(), 1, 2, 4, 1, kept.data()),
               std::invalid_argument);
}

TEST(CpuKernels, ExpertsSkipDroppedSlots) {
  // A dropped slot adds nothing: the same as routing it anywhere with a
  // zero weight.
  std::mt19937 gen(14);
  const int tokens = 30, topK = 2, numExperts = 4, hidden = 12, inter = 20;
  Ids all = {0, 1, 2, 3};
  Ids indices = distinctRouting(gen, tokens, topK, all), kept(indices.size());
  ASSERT_GT(cpu::dropOverCapacity(indices.data(), tokens, topK, numExperts, 10,
                                  kept.data()),
            0);
  ExpertWeights w(gen, numExperts, hidden, inter);
  Floats x = randomVector(gen, tokens * hidden);
  Floats weights = randomVector(gen, tokens * topK, 0.0f, 1.0f);
  Floats zeroed = weights;
  Ids anywhere = kept;
  for (size_t s = 0; s < kept.size(); ++s)
    if (kept[s] < 0) {
      zeroed[s] = 0.0f;
      anywhere[s] = 3;
    }
  Floats out(tokens * hidden);
  cpu::experts(x.data(), weights.data(), kept.data(), tokens, topK, hidden,
               numExperts, inter, w.gate.data(), w.up.data(), w.down.data(),
               out.data());
  expectClose(out, expertsRef(x, zeroed, anywhere, tokens, topK, w), kTol,
              "experts with dropped slots");
}

TEST(CpuKernels, ExpertsUniformRouting) {
  std::mt19937 gen(10);
  const int tokens = 40, topK = 2, numExperts = 6;
  Ids all(numExperts);
  std::iota(all.begin(), all.end(), 0);
  checkExperts(gen, distinctRouting(gen, tokens, topK, all), tokens, topK,
               numExperts);
}

TEST(CpuKernels, ExpertsWithIdleExperts) {
  std::mt19937 gen(11);
  const int tokens = 25, topK = 2, numExperts = 6;
  // Experts 1, 2 and 4 receive nothing.
  checkExperts(gen, distinctRouting(gen, tokens, topK, {0, 3, 5}), tokens, topK,
               numExperts);
}

TEST(CpuKernels, ExpertsAllTokensToOneExpert) {
  std::mt19937 gen(12);
  const int tokens = 17, topK = 1, numExperts = 4;
  checkExperts(gen, Ids(tokens, 2), tokens, topK, numExperts);
}

TEST(CpuKernels, ExpertsTopKEqualsNumExperts) {
  std::mt19937 gen(13);
  const int tokens = 9, numExperts = 4;
  checkExperts(gen, distinctRouting(gen, tokens, numExperts, {0, 1, 2, 3}),
               tokens, numExperts, numExperts);
}

// An expert with more rows than the FFN computes at once (1024: here 1300
// rows, run as two blocks of 650), and top-3, whose slots the fused combine
// adds in expert order rather than slot order.
TEST(CpuKernels, ExpertsLongerThanOneRowBlock) {
  std::mt19937 gen(15);
  const int tokens = 1300, topK = 3, numExperts = 5;
  // Expert 0 takes every token's first slot; the other two are spread.
  Ids indices = distinctRouting(gen, tokens, topK - 1, {1, 2, 3, 4});
  Ids routed;
  for (int t = 0; t < tokens; ++t) {
    routed.push_back(0);
    routed.insert(routed.end(), indices.begin() + t * (topK - 1),
                  indices.begin() + (t + 1) * (topK - 1));
  }
  checkExperts(gen, routed, tokens, topK, numExperts);
}

TEST(CpuKernels, ExpertsRejectBadExpertId) {
  Floats x(8), weights(4), w(64), out(8);
  Ids indices = {0, 1, 5, 0}; // 2 tokens, top-2, 4 experts
  EXPECT_THROW(cpu::experts(x.data(), weights.data(), indices.data(), 2, 2, 4,
                            4, 4, w.data(), w.data(), w.data(), out.data()),
               std::invalid_argument);
  EXPECT_THROW(cpu::experts(x.data(), weights.data(), indices.data(), -2, 2, 4,
                            4, 4, w.data(), w.data(), w.data(), out.data()),
               std::invalid_argument);
}

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

TEST(CpuKernels, CrossEntropyWithIgnoreIndex) {
  std::mt19937 gen(14);
  const int n = 10, vocab = 37, ignore = -100;
  Floats logits = randomVector(gen, n * vocab, -4.0f, 4.0f);
  Ids labels = randomIds(gen, n, vocab);
  labels[2] = labels[7] = ignore;
  double total = 0.0;
  int counted = 0;
  for (int t = 0; t < n; ++t)
    if (labels[t] != ignore) {
      total += logSumExpRef(&logits[t * vocab], vocab) -
               logits[t * vocab + labels[t]];
      ++counted;
    }
  expectClose(cpu::crossEntropy(logits.data(), labels.data(), n, vocab, ignore),
              total / counted, kTol, "crossEntropy");

  Ids ignored(n, ignore);
  EXPECT_EQ(cpu::crossEntropy(logits.data(), ignored.data(), n, vocab, ignore),
            0.0f);
  labels[0] = vocab;
  EXPECT_THROW(
      cpu::crossEntropy(logits.data(), labels.data(), n, vocab, ignore),
      std::invalid_argument);
}

double auxLossRef(const Floats &logits, const Ids &indices, int tokens,
                  int numExperts, int topK, bool sigmoid, double coefficient) {
  Doubles meanScore(numExperts, 0.0), fraction(numExperts, 0.0);
  for (int t = 0; t < tokens; ++t) {
    const float *row = &logits[t * numExperts];
    Doubles scores(numExperts);
    if (sigmoid) {
      double sum = 0.0;
      for (int e = 0; e < numExperts; ++e)
        sum += scores[e] = sigmoidRef(row[e]);
      for (double &s : scores)
        s /= sum;
    } else {
      scores = softmaxRef(row, numExperts);
    }
    for (int e = 0; e < numExperts; ++e)
      meanScore[e] += scores[e] / tokens;
    for (int k = 0; k < topK; ++k)
      fraction[indices[t * topK + k]] += 1.0 / (tokens * topK);
  }
  double loss = 0.0;
  for (int e = 0; e < numExperts; ++e)
    loss += fraction[e] * meanScore[e];
  return coefficient * numExperts * loss;
}

TEST(CpuKernels, AuxLoss) {
  std::mt19937 gen(15);
  const float coefficient = 0.01f;
  for (bool sigmoid : {false, true}) {
    SCOPED_TRACE("sigmoid=" + std::to_string(sigmoid));
    // Balanced: every expert takes 2 of the 8 slots, so the loss is the
    // coefficient whatever the scores are.
    Floats logits = randomVector(gen, 4 * 4, -3.0f, 3.0f);
    Ids balanced = {0, 1, /**/ 2, 3, /**/ 0, 2, /**/ 1, 3};
    expectClose(cpu::auxLoss(logits.data(), balanced.data(), 4, 4, 2, sigmoid,
                             coefficient),
                coefficient, 1e-6, "auxLoss(balanced)");

    const int tokens = 30, numExperts = 8, topK = 2;
    logits = randomVector(gen, tokens * numExperts, -3.0f, 3.0f);
    Ids indices = randomIds(gen, tokens * topK, numExperts);
    expectClose(cpu::auxLoss(logits.data(), indices.data(), tokens, numExperts,
                             topK, sigmoid, coefficient),
                auxLossRef(logits, indices, tokens, numExperts, topK, sigmoid,
                           coefficient),
                kTol, "auxLoss");
    indices[3] = numExperts;
    EXPECT_THROW(cpu::auxLoss(logits.data(), indices.data(), tokens, numExperts,
                              topK, sigmoid, coefficient),
                 std::invalid_argument);
  }
}

TEST(CpuKernels, ZLoss) {
  std::mt19937 gen(16);
  const int tokens = 21, numExperts = 9;
  const float coefficient = 1e-3f;
  Floats logits = randomVector(gen, tokens * numExperts, -5.0f, 5.0f);
  double ref = 0.0;
  for (int t = 0; t < tokens; ++t) {
    double lse = logSumExpRef(&logits[t * numExperts], numExperts);
    ref += lse * lse / tokens;
  }
  expectClose(cpu::zLoss(logits.data(), tokens, numExperts, coefficient),
              double(coefficient) * ref, kTol, "zLoss");
}

} // namespace
