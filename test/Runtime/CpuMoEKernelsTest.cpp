//===- CpuMoEKernelsTest.cpp - Router, experts and losses -----------------===//
//
// The router, capacity drop, permutation, the experts block and the losses,
// each compared with a reference written independently
// (CpuKernelsTestUtil.h) on random or hand-made inputs.
//
//===----------------------------------------------------------------------===//

#include "CpuKernelsTestUtil.h"

#include <stdexcept>

using namespace moe;
using namespace moe::cputest;

namespace {

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

TEST(CpuKernels, RouterGroupsScoredByTheirBestExpert) {
  // DeepSeek-V2's group_limited_greedy in miniature: softmax, groups scored
  // by their best expert, no renormalisation, a route scale.
  std::mt19937 gen(10);
  cpu::RouterConfig cfg;
  cfg.experts = 16;
  cfg.topK = 3;
  cfg.routeScale = 2.0f;
  cfg.nGroup = 4;
  cfg.topkGroup = 2;
  cfg.groupTop = 1;
  checkRouter(gen, 64, 20, cfg, /*withBias=*/false);

  // One group strong in its best expert only, one strong in its second best
  // too: by best it is group 0, by the two best summed group 1.
  const int hidden = 16;
  Floats x(hidden, 0.0f), gate(16 * hidden, 0.0f);
  x[0] = 1.0f;
  const float logit[16] = {3.0f, 0, 0, 0, 2.5f, 2.4f, 0, 0,
                           0,    0, 0, 0, 0,    0,    0, 0};
  for (int e = 0; e < 16; ++e)
    gate[e * hidden] = logit[e];
  cfg.topK = 1;
  cfg.topkGroup = 1;
  Floats weights(1), logits(16);
  Ids indices(1);
  for (int64_t groupTop : {1, 2}) {
    cfg.groupTop = groupTop;
    cpu::router(x.data(), 1, hidden, gate.data(), nullptr, cfg, weights.data(),
                indices.data(), logits.data());
    EXPECT_EQ(indices[0], groupTop == 1 ? 0 : 4) << "groupTop " << groupTop;
  }
  cfg.groupTop = 3;
  EXPECT_THROW(cpu::router(x.data(), 1, hidden, gate.data(), nullptr, cfg,
                           weights.data(), indices.data(), logits.data()),
               std::invalid_argument);
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

// Tokens split between ranks: each share divides its sum by the labels
// counted on all of them, and the shares add up to the whole mean and its
// gradient.
TEST(CpuKernels, CrossEntropySharesAddUpToTheMean) {
  std::mt19937 gen(15);
  const int n = 12, vocab = 29, ignore = -100, first = 5;
  Floats logits = randomVector(gen, n * vocab, -4.0f, 4.0f);
  Ids labels = randomIds(gen, n, vocab);
  labels[1] = labels[8] = labels[9] = ignore;
  double total = 0.0;
  for (int t = 0; t < n; ++t)
    if (labels[t] != ignore)
      total += logSumExpRef(&logits[t * vocab], vocab) -
               logits[t * vocab + labels[t]];
  const int rest = n - first;
  const int32_t *restLabels = labels.data() + first;
  const float *restLogits = logits.data() + first * vocab;
  float count = cpu::labelCount(labels.data(), first, ignore) +
                cpu::labelCount(restLabels, rest, ignore);
  EXPECT_EQ(count, 9.0f);
  float shares =
      cpu::crossEntropy(logits.data(), labels.data(), first, vocab, ignore,
                        &count) +
      cpu::crossEntropy(restLogits, restLabels, rest, vocab, ignore, &count);
  expectClose(shares, total / 9.0, kTol, "crossEntropy shares");

  Floats whole(n * vocab), split(n * vocab);
  cpu::crossEntropyGrad(logits.data(), labels.data(), n, vocab, ignore,
                        whole.data());
  cpu::crossEntropyGrad(logits.data(), labels.data(), first, vocab, ignore,
                        split.data(), &count);
  cpu::crossEntropyGrad(restLogits, restLabels, rest, vocab, ignore,
                        split.data() + first * vocab, &count);
  expectClose(split, Doubles(whole.begin(), whole.end()), kTol,
              "crossEntropyGrad shares");

  // No label counted anywhere: the shares are 0.
  float none = 0.0f;
  EXPECT_EQ(cpu::crossEntropy(logits.data(), labels.data(), first, vocab,
                              ignore, &none),
            0.0f);
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
