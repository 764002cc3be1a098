//===- CudaMoEKernelsTest.cpp - CUDA MoE kernels vs their CPU twins -------===//
//
// Each moe::cuda kernel of RouterKernels.cu, ExpertKernels.cu and
// GroupedSwigluKernels.cu runs on random inputs and is
// compared with the moe::cpu kernel of the same name (and the grouped GEMM of
// GroupedGemm.h with a naive host loop in double). Integer outputs (expert
// indices, offsets, rowToSlot, kept ids, drop counts) must be exactly equal;
// float outputs are compared relative to the largest reference magnitude,
// with the tolerance of each check stated where it is made. Device outputs
// start as garbage, so a kernel that leaves an element unwritten, or
// accumulates instead of overwriting, fails.
//
// Without a GPU every test skips ("skipped: no GPU").
//
//===----------------------------------------------------------------------===//

#include "CudaTestUtil.h"

#include "cuda/CudaKernels.h"
#include "cuda/GroupedGemm.h"
#include "moe/Runtime/CpuKernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using namespace moe;
using namespace moe::cuda::test;

namespace {

using Floats = std::vector<float>;
using Ids = std::vector<int32_t>;
using Offsets = std::vector<int64_t>;

constexpr float kGarbage = 7.0f;

// fp32 GEMMs on both sides, summed in different orders (cuBLAS or the
// grouped kernel against OpenBLAS): the CudaTestUtil.h default, 1e-4
// relative to the largest reference magnitude.
constexpr double kGemmTol = 1e-4;
// Elementwise results computed with the CPU's expressions and roundings
// (no fused multiply-add on the device side): they differ at most by the
// host compiler's own contractions, so 1e-6.
constexpr double kElementTol = 1e-6;
// Router weights: the same formulas, but CUDA's expf may differ from glibc's
// by an ulp or two, and the softmax sum is a warp reduction: 1e-5.
constexpr double kScoreTol = 1e-5;
// Double dot products rounded to float on both sides: 1e-5.
constexpr double kDotTol = 1e-5;

class CudaMoEKernels : public CudaTest {};

/// Multiples of 1/8 in [-1, 1]: their products and sums of a few dozen are
/// exact in fp32 whatever the order, so the router logits of cuBLAS and
/// OpenBLAS are bit-identical and any index difference is the kernel's.
Floats dyadic(size_t n, uint64_t seed) {
  Ids ints = randomInts(n, seed, -8, 8);
  Floats v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = float(ints[i]) / 8.0f;
  return v;
}

Floats scaled(Floats v, float scale) {
  for (float &x : v)
    x *= scale;
  return v;
}

Offsets offsetsOf(const std::vector<int64_t> &sizes) {
  Offsets offsets(sizes.size() + 1, 0);
  for (size_t g = 0; g < sizes.size(); ++g)
    offsets[g + 1] = offsets[g] + sizes[g];
  return offsets;
}

//===----------------------------------------------------------------------===//
// Router
//===----------------------------------------------------------------------===//

void checkRouter(cuda::Device &dev, int64_t tokens, int64_t hidden,
                 const cpu::RouterConfig &cfg, bool withBias, uint64_t seed) {
  SCOPED_TRACE(
      "experts " + std::to_string(cfg.experts) + " topK " +
      std::to_string(cfg.topK) + " sigmoid " + std::to_string(cfg.sigmoid) +
      " norm " + std::to_string(cfg.normTopkProb) + " routeScale " +
      std::to_string(cfg.routeScale) + " nGroup " + std::to_string(cfg.nGroup) +
      " topkGroup " + std::to_string(cfg.topkGroup) + " bias " +
      std::to_string(withBias) + " hidden " + std::to_string(hidden));
  int64_t experts = cfg.experts, topK = cfg.topK;
  Floats x = dyadic(tokens * hidden, seed);
  // Every fifth token is all zero: all its logits tie.
  for (int64_t t = 0; t < tokens; t += 5)
    std::fill_n(x.begin() + t * hidden, hidden, 0.0f);
  Floats gate = dyadic(experts * hidden, seed + 1);
  Floats bias = randomFloats(experts, seed + 2, -0.3f, 0.3f);

  Floats weights(tokens * topK), logits(tokens * experts);
  Ids indices(tokens * topK);
  cpu::router(x.data(), tokens, hidden, gate.data(),
              withBias ? bias.data() : nullptr, cfg, weights.data(),
              indices.data(), logits.data());

  DeviceBuffer<float> dX(x), dGate(gate), dBias(bias);
  DeviceBuffer<float> dWeights(Floats(tokens * topK, kGarbage));
  DeviceBuffer<int32_t> dIndices(Ids(tokens * topK, 12345));
  DeviceBuffer<float> dLogits(Floats(tokens * experts, kGarbage));
  cuda::router<float>(dev, dX, tokens, hidden, dGate,
                      withBias ? dBias.get() : nullptr, cfg, dWeights, dIndices,
                      dLogits);
  // Exact: the dyadic inputs make both GEMMs exact.
  EXPECT_EQ(dLogits.download(), logits);
  EXPECT_EQ(dIndices.download(), indices);
  expectClose(dWeights.download(), weights, kScoreTol, "router weights");
}

TEST_F(CudaMoEKernels, RouterSoftmaxAndSigmoidWithBiasNormAndScale) {
  uint64_t seed = 100;
  for (bool sigmoid : {false, true})
    for (bool withBias : {false, true})
      for (bool norm : {false, true})
        for (float routeScale : {1.0f, 2.5f}) {
          cpu::RouterConfig cfg;
          cfg.experts = 8;
          cfg.topK = 2;
          cfg.sigmoid = sigmoid;
          cfg.normTopkProb = norm;
          cfg.routeScale = routeScale;
          checkRouter(*dev, 37, 16, cfg, withBias, seed++);
        }
}

TEST_F(CudaMoEKernels, RouterGroupLimited) {
  uint64_t seed = 200;
  for (bool sigmoid : {false, true})
    for (bool withBias : {false, true}) {
      cpu::RouterConfig cfg; // 8 experts in 4 groups, 2 groups eligible
      cfg.experts = 8;
      cfg.topK = 3;
      cfg.sigmoid = sigmoid;
      cfg.normTopkProb = true;
      cfg.routeScale = 2.5f;
      cfg.nGroup = 4;
      cfg.topkGroup = 2;
      checkRouter(*dev, 41, 12, cfg, withBias, seed++);

      cfg.nGroup = 8; // groups of one expert
      cfg.topkGroup = 3;
      checkRouter(*dev, 41, 12, cfg, withBias, seed++);

      // More experts than a warp has lanes, DeepSeek-like.
      cfg.experts = 96;
      cfg.topK = 6;
      cfg.nGroup = 8;
      cfg.topkGroup = 3;
      checkRouter(*dev, 23, 20, cfg, withBias, seed++);

      // topK = every eligible expert.
      cfg.experts = 8;
      cfg.nGroup = 4;
      cfg.topkGroup = 2;
      cfg.topK = 4;
      checkRouter(*dev, 9, 8, cfg, withBias, seed++);

      // Groups scored by their best expert (DeepSeek-V2).
      cfg.groupTop = 1;
      cfg.topK = 3;
      checkRouter(*dev, 41, 12, cfg, withBias, seed++);
    }
}

TEST_F(CudaMoEKernels, RouterEdgeSizes) {
  cpu::RouterConfig cfg;
  cfg.experts = 5;
  cfg.topK = 5; // all experts
  cfg.normTopkProb = true;
  checkRouter(*dev, 6, 4, cfg, /*withBias=*/true, 300);
  cfg.topK = 1;
  checkRouter(*dev, 6, 0, cfg, /*withBias=*/false, 301); // hidden 0: ties
  checkRouter(*dev, 0, 4, cfg, /*withBias=*/false, 302); // no tokens
  checkRouter(*dev, 1, 3, cfg, /*withBias=*/false, 303);
  // Many experts: several per lane, and groups of 48.
  cfg.experts = 384;
  cfg.topK = 8;
  cfg.sigmoid = true;
  cfg.nGroup = 8;
  cfg.topkGroup = 4;
  checkRouter(*dev, 17, 16, cfg, /*withBias=*/true, 304);
  // So many that one warp's scores need more than the default 48 KiB of
  // shared memory; hidden 4 makes many logits tie.
  cfg.experts = 8192;
  cfg.topK = 4;
  cfg.sigmoid = false;
  cfg.nGroup = 1;
  cfg.topkGroup = 1;
  checkRouter(*dev, 5, 4, cfg, /*withBias=*/false, 305);
}

TEST_F(CudaMoEKernels, RouterRejectsBadConfigs) {
  DeviceBuffer<float> buf(64);
  DeviceBuffer<int32_t> ids(64);
  cpu::RouterConfig cfg;
  cfg.experts = 8;
  cfg.topK = 5;
  cfg.nGroup = 4;
  cfg.topkGroup = 2; // 4 eligible experts
  EXPECT_THROW(
      cuda::router<float>(*dev, buf, 2, 4, buf, nullptr, cfg, buf, ids, buf),
      std::invalid_argument);
  cfg.topK = 2;
  cfg.nGroup = 3; // 8 % 3 != 0
  EXPECT_THROW(
      cuda::router<float>(*dev, buf, 2, 4, buf, nullptr, cfg, buf, ids, buf),
      std::invalid_argument);
  cfg.nGroup = 1;
  EXPECT_THROW(
      cuda::router<float>(*dev, buf, -1, 4, buf, nullptr, cfg, buf, ids, buf),
      std::invalid_argument);
}

void checkRouterGrad(cuda::Device &dev, int64_t tokens, int64_t hidden,
                     const cpu::RouterConfig &cfg, bool withDlogits,
                     uint64_t seed) {
  SCOPED_TRACE("sigmoid " + std::to_string(cfg.sigmoid) + " norm " +
               std::to_string(cfg.normTopkProb) + " routeScale " +
               std::to_string(cfg.routeScale) + " dlogits " +
               std::to_string(withDlogits) + " tokens " +
               std::to_string(tokens));
  int64_t experts = cfg.experts, topK = cfg.topK;
  Floats x = randomFloats(tokens * hidden, seed);
  Floats gate = randomFloats(experts * hidden, seed + 1);
  Floats bias = randomFloats(experts, seed + 2, -0.3f, 0.3f);
  Floats weights(tokens * topK), logits(tokens * experts);
  Ids indices(tokens * topK);
  cpu::router(x.data(), tokens, hidden, gate.data(), bias.data(), cfg,
              weights.data(), indices.data(), logits.data());
  Floats dweights = randomFloats(tokens * topK, seed + 3);
  Floats dlogits = randomFloats(tokens * experts, seed + 4, -0.1f, 0.1f);

  Floats dx(tokens * hidden), dgate(experts * hidden);
  cpu::routerGrad(dweights.data(), withDlogits ? dlogits.data() : nullptr,
                  x.data(), tokens, hidden, gate.data(), logits.data(),
                  indices.data(), cfg, dx.data(), dgate.data());

  DeviceBuffer<float> dDw(dweights), dDl(dlogits), dX(x), dGate(gate),
      dLogits(logits);
  DeviceBuffer<int32_t> dIndices(indices);
  DeviceBuffer<float> outDx(Floats(tokens * hidden, kGarbage));
  DeviceBuffer<float> outDgate(Floats(experts * hidden, kGarbage));
  cuda::routerGrad<float>(dev, dDw, withDlogits ? dDl.get() : nullptr, dX,
                          tokens, hidden, dGate, dLogits, dIndices, cfg, outDx,
                          outDgate);
  expectClose(outDx.download(), dx, kGemmTol, "routerGrad dx");
  expectClose(outDgate.download(), dgate, kGemmTol, "routerGrad dgate");
}

TEST_F(CudaMoEKernels, RouterGrad) {
  uint64_t seed = 400;
  for (bool sigmoid : {false, true})
    for (bool norm : {false, true})
      for (bool withDlogits : {false, true}) {
        cpu::RouterConfig cfg;
        cfg.experts = 8;
        cfg.topK = 3;
        cfg.sigmoid = sigmoid;
        cfg.normTopkProb = norm;
        cfg.routeScale = norm ? 2.5f : 1.0f;
        cfg.nGroup = 4; // the choice only: the gradient ignores it
        cfg.topkGroup = 2;
        checkRouterGrad(*dev, 29, 24, cfg, withDlogits, seed++);
      }
  cpu::RouterConfig cfg;
  cfg.experts = 64;
  cfg.topK = 6;
  cfg.sigmoid = true;
  cfg.normTopkProb = true;
  checkRouterGrad(*dev, 50, 40, cfg, true, seed++);
  checkRouterGrad(*dev, 0, 8, cfg, true, seed++); // dgate = 0
}

//===----------------------------------------------------------------------===//
// Capacity, permutation, gather and combine
//===----------------------------------------------------------------------===//

/// The drop rule written out, skipping invalid ids (kept -1, not counted) as
/// the CUDA kernel does where the CPU throws.
std::pair<Ids, int64_t> dropRef(const Ids &indices, int64_t experts,
                                int64_t capacity) {
  std::vector<int64_t> taken(experts, 0);
  Ids kept(indices.size());
  int64_t dropped = 0;
  for (size_t s = 0; s < indices.size(); ++s) {
    int32_t e = indices[s];
    if (e < 0 || e >= experts) {
      kept[s] = cpu::kDroppedSlot;
      continue;
    }
    bool keep = taken[e]++ < capacity;
    kept[s] = keep ? e : cpu::kDroppedSlot;
    dropped += keep ? 0 : 1;
  }
  return {kept, dropped};
}

void checkDrop(cuda::Device &dev, const Ids &indices, int64_t tokens,
               int64_t topK, int64_t experts, int64_t capacity, bool cpuValid) {
  SCOPED_TRACE("tokens " + std::to_string(tokens) + " experts " +
               std::to_string(experts) + " capacity " +
               std::to_string(capacity));
  auto [kept, dropped] = dropRef(indices, experts, capacity);
  if (cpuValid) {
    Ids cpuKept(indices.size());
    int64_t cpuDropped = cpu::dropOverCapacity(
        indices.data(), tokens, topK, experts, capacity, cpuKept.data());
    ASSERT_EQ(cpuKept, kept);
    ASSERT_EQ(cpuDropped, dropped);
  }
  DeviceBuffer<int32_t> dIndices(indices);
  DeviceBuffer<int32_t> dKept(Ids(indices.size(), 12345));
  DeviceBuffer<int64_t> dDropped(std::vector<int64_t>{99});
  cuda::dropOverCapacity(dev, dIndices, tokens, topK, experts, capacity, dKept,
                         dDropped);
  EXPECT_EQ(dKept.download(), kept);
  EXPECT_EQ(dDropped.download()[0], dropped);
}

TEST_F(CudaMoEKernels, DropOverCapacity) {
  // Experts 1 and 4 get no token.
  const int64_t tokens = 50, topK = 3, experts = 6;
  Ids indices = distinctRouting(500, tokens, topK, {0, 2, 3, 5});
  for (int64_t capacity : {0, 1, 7, 1000})
    checkDrop(*dev, indices, tokens, topK, experts, capacity, true);
  // Already-dropped slots stay dropped and are not counted.
  Ids withDropped = indices;
  for (size_t s = 0; s < withDropped.size(); s += 4)
    withDropped[s] = cpu::kDroppedSlot;
  for (int64_t capacity : {1, 5, 1000})
    checkDrop(*dev, withDropped, tokens, topK, experts, capacity, false);
  // Many blocks.
  Ids big = randomInts(3000 * 8, 501, 0, 63);
  checkDrop(*dev, big, 3000, 8, 64, 300, true);
  checkDrop(*dev, big, 3000, 8, 64, 1, true);
  // No tokens: zero dropped.
  checkDrop(*dev, Ids{}, 0, 2, 4, 1, true);
}

/// permuteByExpert against the CPU, then gatherRows on its rowToSlot.
void checkPermute(cuda::Device &dev, const Ids &indices, int64_t tokens,
                  int64_t topK, int64_t experts, int64_t hidden,
                  uint64_t seed) {
  SCOPED_TRACE("tokens " + std::to_string(tokens) + " topK " +
               std::to_string(topK) + " experts " + std::to_string(experts));
  int64_t slots = tokens * topK;
  std::vector<int64_t> counts(experts);
  Offsets offsets(experts + 1);
  Ids rowToSlot(slots);
  cpu::permuteByExpert(indices.data(), tokens, topK, experts, counts.data(),
                       offsets.data(), rowToSlot.data());

  DeviceBuffer<int32_t> dIndices(indices);
  DeviceBuffer<int64_t> dOffsets(Offsets(experts + 1, 777));
  DeviceBuffer<int32_t> dRowToSlot(Ids(slots, 12345));
  cuda::permuteByExpert(dev, dIndices, tokens, topK, experts, dOffsets,
                        dRowToSlot);
  EXPECT_EQ(dOffsets.download(), offsets);
  EXPECT_EQ(dRowToSlot.download(), rowToSlot);

  // Gather every row, the padding rows included (pure copies: exact).
  Floats x = randomFloats(tokens * hidden, seed);
  Floats permuted(slots * hidden);
  cpu::gatherRows(x.data(), rowToSlot.data(), slots, topK, hidden,
                  permuted.data());
  DeviceBuffer<float> dX(x), dPermuted(Floats(slots * hidden, kGarbage));
  cuda::gatherRows<float>(dev, dX, dRowToSlot, slots, topK, hidden, dPermuted);
  EXPECT_EQ(dPermuted.download(), permuted);
}

TEST_F(CudaMoEKernels, PermuteByExpertAndGatherRows) {
  // The CPU test's small example.
  checkPermute(*dev, Ids{2, 0, 0, 3, 2, 0}, 3, 2, 4, 2, 600);
  // Experts 0, 3, 4 and 7 get no token.
  checkPermute(*dev, distinctRouting(601, 50, 2, {1, 2, 5, 6}), 50, 2, 8, 5,
               602);
  // Dropped slots leave padding rows at the end.
  Ids routed = randomInts(40 * 3, 603, 0, 5);
  Ids kept(routed.size());
  cpu::dropOverCapacity(routed.data(), 40, 3, 6, 9, kept.data());
  ASSERT_NE(std::count(kept.begin(), kept.end(), cpu::kDroppedSlot), 0);
  checkPermute(*dev, kept, 40, 3, 6, 3, 604);
  // Every slot dropped.
  checkPermute(*dev, Ids(12, cpu::kDroppedSlot), 4, 3, 5, 2, 605);
  // Many blocks, 256 experts, top-8.
  checkPermute(*dev, randomInts(4000 * 8, 606, 0, 255), 4000, 8, 256, 4, 607);
  // One expert, top-1; and no tokens.
  checkPermute(*dev, Ids(17, 0), 17, 1, 1, 3, 608);
  checkPermute(*dev, Ids{}, 0, 2, 4, 3, 609);
}

// A row whose slot is past the slots (tokens * topK) gathers a zero row, as a
// dropped one does, instead of reading past x.
TEST_F(CudaMoEKernels, GatherRowsIgnoresSlotsPastTheEnd) {
  const int64_t tokens = 3, topK = 2, hidden = 4, slots = tokens * topK;
  Floats x = randomFloats(tokens * hidden, 610);
  Ids rowToSlot = {5, 0, int32_t(slots), -1, 1 << 30, 2};
  DeviceBuffer<float> dX(x), dPermuted(Floats(slots * hidden, kGarbage));
  DeviceBuffer<int32_t> dRowToSlot(rowToSlot);
  cuda::gatherRows<float>(*dev, dX, dRowToSlot, slots, topK, hidden, dPermuted);
  Floats got = dPermuted.download();
  for (int64_t r = 0; r < slots; ++r)
    for (int64_t c = 0; c < hidden; ++c) {
      int32_t slot = rowToSlot[r];
      float want =
          slot >= 0 && slot < slots ? x[(slot / topK) * hidden + c] : 0.0f;
      EXPECT_EQ(got[r * hidden + c], want) << "row " << r << " column " << c;
    }
}

/// unpermuteCombine, permuteGrad and unpermuteCombineGrad on the routing
/// `indices` (which may hold dropped slots).
void checkCombine(cuda::Device &dev, const Ids &indices, int64_t tokens,
                  int64_t topK, int64_t experts, int64_t hidden,
                  uint64_t seed) {
  SCOPED_TRACE("tokens " + std::to_string(tokens) + " topK " +
               std::to_string(topK) + " hidden " + std::to_string(hidden));
  int64_t slots = tokens * topK;
  std::vector<int64_t> counts(experts);
  Offsets offsets(experts + 1);
  Ids rowToSlot(slots);
  cpu::permuteByExpert(indices.data(), tokens, topK, experts, counts.data(),
                       offsets.data(), rowToSlot.data());
  Floats expertOut = randomFloats(slots * hidden, seed);
  Floats weights = randomFloats(slots, seed + 1, 0.0f, 1.0f);
  Floats dout = randomFloats(tokens * hidden, seed + 2);

  Floats out(tokens * hidden), dx(tokens * hidden);
  cpu::unpermuteCombine(expertOut.data(), rowToSlot.data(), weights.data(),
                        tokens, topK, hidden, out.data());
  cpu::permuteGrad(expertOut.data(), rowToSlot.data(), tokens, topK, hidden,
                   dx.data());
  Floats dexpertOut(slots * hidden), dweights(slots);
  cpu::unpermuteCombineGrad(dout.data(), expertOut.data(), rowToSlot.data(),
                            weights.data(), tokens, topK, hidden,
                            dexpertOut.data(), dweights.data());

  DeviceBuffer<float> dExpertOut(expertOut), dWeights(weights), dDout(dout);
  DeviceBuffer<int32_t> dRowToSlot(rowToSlot);
  DeviceBuffer<float> gOut(Floats(tokens * hidden, kGarbage));
  DeviceBuffer<float> gDx(Floats(tokens * hidden, kGarbage));
  DeviceBuffer<float> gDexpertOut(Floats(slots * hidden, kGarbage));
  DeviceBuffer<float> gDweights(Floats(slots, kGarbage));
  cuda::unpermuteCombine<float>(dev, dExpertOut, dRowToSlot, dWeights, tokens,
                                topK, hidden, gOut);
  cuda::permuteGrad<float>(dev, dExpertOut, dRowToSlot, tokens, topK, hidden,
                           gDx);
  cuda::unpermuteCombineGrad<float>(dev, dDout, dExpertOut, dRowToSlot,
                                    dWeights, tokens, topK, hidden, gDexpertOut,
                                    gDweights);
  expectClose(gOut.download(), out, kElementTol, "unpermuteCombine");
  expectClose(gDx.download(), dx, kElementTol, "permuteGrad");
  expectClose(gDexpertOut.download(), dexpertOut, kElementTol,
              "unpermuteCombineGrad dexpertOut");
  expectClose(gDweights.download(), dweights, kDotTol,
              "unpermuteCombineGrad dweights");
}

TEST_F(CudaMoEKernels, CombineAndGradients) {
  checkCombine(*dev, distinctRouting(700, 30, 2, {0, 1, 2, 3, 4, 5}), 30, 2, 6,
               7, 701);
  checkCombine(*dev, distinctRouting(702, 33, 4, {0, 2, 3, 5, 6, 7}), 33, 4, 8,
               130, 703);
  checkCombine(*dev, randomInts(64, 704, 0, 3), 64, 1, 4, 1, 705);
  // With dropped slots.
  Ids routed = distinctRouting(706, 40, 3, {0, 1, 2, 3, 4, 5});
  Ids kept(routed.size());
  cpu::dropOverCapacity(routed.data(), 40, 3, 6, 12, kept.data());
  ASSERT_NE(std::count(kept.begin(), kept.end(), cpu::kDroppedSlot), 0);
  checkCombine(*dev, kept, 40, 3, 6, 33, 707);
  // No tokens, and hidden 0 (dweights all 0).
  checkCombine(*dev, Ids{}, 0, 2, 4, 5, 708);
  checkCombine(*dev, randomInts(10, 709, 0, 3), 5, 2, 4, 0, 710);
}

//===----------------------------------------------------------------------===//
// Grouped SwiGLU over segments
//===----------------------------------------------------------------------===//

struct GroupedCase {
  int64_t rows, experts, hidden, inter;
  std::vector<int64_t> sizes; // rows per segment
};

void checkGroupedSwiGLU(cuda::Device &dev, const GroupedCase &c,
                        uint64_t seed) {
  Offsets offsets = offsetsOf(c.sizes);
  int64_t segments = int64_t(c.sizes.size());
  SCOPED_TRACE("rows " + std::to_string(c.rows) + " end " +
               std::to_string(offsets[segments]) + " segments " +
               std::to_string(segments) + " experts " +
               std::to_string(c.experts) + " hidden " +
               std::to_string(c.hidden) + " inter " + std::to_string(c.inter));
  ASSERT_LE(offsets[segments], c.rows);
  int64_t weightSize = c.experts * c.inter * c.hidden;
  Floats permuted = randomFloats(c.rows * c.hidden, seed);
  Floats gate = scaled(randomFloats(weightSize, seed + 1),
                       1.0f / std::sqrt(float(std::max<int64_t>(c.hidden, 1))));
  Floats up = scaled(randomFloats(weightSize, seed + 2),
                     1.0f / std::sqrt(float(std::max<int64_t>(c.hidden, 1))));
  Floats down = scaled(randomFloats(weightSize, seed + 3),
                       1.0f / std::sqrt(float(std::max<int64_t>(c.inter, 1))));
  Floats dout = randomFloats(c.rows * c.hidden, seed + 4);

  // The CPU leaves the rows past the last offset alone; the CUDA kernel
  // zeroes them, so the reference starts at zero.
  Floats out(c.rows * c.hidden, 0.0f);
  cpu::groupedSwiGLUSegments(permuted.data(), c.rows, offsets.data(), segments,
                             c.experts, c.hidden, c.inter, gate.data(),
                             up.data(), down.data(), out.data());
  Floats dpermuted(c.rows * c.hidden), dgate(weightSize), dup(weightSize),
      ddown(weightSize);
  cpu::groupedSwiGLUSegmentsGrad(
      dout.data(), permuted.data(), c.rows, offsets.data(), segments, c.experts,
      c.hidden, c.inter, gate.data(), up.data(), down.data(), dpermuted.data(),
      dgate.data(), dup.data(), ddown.data());

  DeviceBuffer<float> dPermuted(permuted), dGate(gate), dUp(up), dDown(down),
      dDout(dout);
  DeviceBuffer<int64_t> dOffsets(offsets);
  DeviceBuffer<float> gOut(Floats(c.rows * c.hidden, kGarbage));
  cuda::groupedSwiGLUSegments<float>(dev, dPermuted, c.rows, dOffsets, segments,
                                     c.experts, c.hidden, c.inter, dGate, dUp,
                                     dDown, gOut);
  expectClose(gOut.download(), out, kGemmTol, "groupedSwiGLUSegments");

  DeviceBuffer<float> gDpermuted(Floats(c.rows * c.hidden, kGarbage));
  DeviceBuffer<float> gDgate(Floats(weightSize, kGarbage));
  DeviceBuffer<float> gDup(Floats(weightSize, kGarbage));
  DeviceBuffer<float> gDdown(Floats(weightSize, kGarbage));
  cuda::groupedSwiGLUSegmentsGrad<float>(
      dev, dDout, dPermuted, c.rows, dOffsets, segments, c.experts, c.hidden,
      c.inter, dGate, dUp, dDown, gDpermuted, gDgate, gDup, gDdown);
  expectClose(gDpermuted.download(), dpermuted, kGemmTol, "dpermuted");
  expectClose(gDgate.download(), dgate, kGemmTol, "dgate");
  expectClose(gDup.download(), dup, kGemmTol, "dup");
  expectClose(gDdown.download(), ddown, kGemmTol, "ddown");
}

TEST_F(CudaMoEKernels, GroupedSwiGLUSegmentsOddSizes) {
  // segments = 2 * experts (two source ranks), padding rows, an empty
  // segment, hidden 3 and inter 5.
  checkGroupedSwiGLU(*dev, {13, 2, 3, 5, {3, 0, 4, 3}}, 800);
  // Expert 1 has no rows at all (its weight gradients are 0).
  checkGroupedSwiGLU(*dev, {23, 3, 16, 8, {5, 0, 7, 2, 0, 9}}, 801);
  // One row.
  checkGroupedSwiGLU(*dev, {1, 1, 4, 3, {1}}, 802);
}

TEST_F(CudaMoEKernels, GroupedSwiGLUSegmentsLarger) {
  // Segments of 0, 1, exactly one tile (64) and one tile plus a row (65).
  checkGroupedSwiGLU(*dev, {300, 4, 128, 96, {0, 70, 1, 64, 0, 65, 40, 50}},
                     810);
  // Dropless layout (segments = experts), no padding.
  checkGroupedSwiGLU(*dev, {200, 4, 72, 40, {50, 80, 0, 70}}, 811);
}

TEST_F(CudaMoEKernels, GroupedSwiGLUSegmentsEdgeSizes) {
  checkGroupedSwiGLU(*dev, {4, 2, 6, 5, {}}, 820);     // no segment
  checkGroupedSwiGLU(*dev, {0, 2, 6, 5, {0, 0}}, 821); // no rows
  checkGroupedSwiGLU(*dev, {5, 2, 6, 5, {0, 0}}, 822); // all padding
  checkGroupedSwiGLU(*dev, {7, 2, 4, 0, {3, 4}}, 823); // inter 0
  checkGroupedSwiGLU(*dev, {7, 2, 0, 3, {3, 4}}, 824); // hidden 0
}

//===----------------------------------------------------------------------===//
// The grouped GEMM alone
//===----------------------------------------------------------------------===//

TEST_F(CudaMoEKernels, GroupedGemmAgainstNaiveLoops) {
  // Segment g uses weights g % experts; experts = 7 > segments leaves
  // experts 6 without rows.
  const std::vector<int64_t> sizes = {5, 0, 70, 1, 64, 0};
  const int64_t segments = 6, rows = 150, n = 70, k = 33;
  Offsets offsets = offsetsOf(sizes);
  const int64_t end = offsets[segments];
  for (int64_t experts : {int64_t(3), int64_t(7)}) {
    SCOPED_TRACE("experts " + std::to_string(experts));
    Floats x = randomFloats(rows * k, 900);
    Floats w = randomFloats(experts * n * k, 901);
    Floats dy = randomFloats(rows * n, 902);
    Floats base = randomFloats(rows * k, 903);
    Floats w2 = randomFloats(experts * n * k, 904); // the SwiGLU's up weights

    DeviceBuffer<int64_t> dOffsets(offsets), dTiles(Offsets(segments + 1, 99));
    cuda::grouped::buildTileMap(*dev, dOffsets, segments, rows, dTiles);
    Offsets tiles(segments + 1, 0);
    for (int64_t g = 0; g < segments; ++g)
      tiles[g + 1] = tiles[g] + (sizes[g] + cuda::grouped::kTileRows - 1) /
                                    cuda::grouped::kTileRows;
    EXPECT_EQ(dTiles.download(), tiles);
    cuda::grouped::Segments s{dOffsets, segments, experts, rows, dTiles};

    // Naive references in double; rows outside the segments keep what was
    // there.
    Floats y(rows * n, kGarbage), dx(base), dxOverwrite(rows * k, kGarbage);
    Floats act(rows * n, kGarbage), dw(experts * n * k, 0.0f);
    for (int64_t g = 0; g < segments; ++g) {
      const float *we = w.data() + (g % experts) * n * k;
      const float *we2 = w2.data() + (g % experts) * n * k;
      for (int64_t r = offsets[g]; r < offsets[g + 1]; ++r) {
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0, up = 0;
          for (int64_t i = 0; i < k; ++i) {
            acc += double(x[r * k + i]) * we[j * k + i];
            up += double(x[r * k + i]) * we2[j * k + i];
          }
          y[r * n + j] = float(acc);
          act[r * n + j] = float(acc / (1.0 + std::exp(-acc)) * up);
        }
        for (int64_t i = 0; i < k; ++i) {
          double acc = 0;
          for (int64_t j = 0; j < n; ++j)
            acc += double(dy[r * n + j]) * we[j * k + i];
          dxOverwrite[r * k + i] = float(acc);
          dx[r * k + i] = float(double(base[r * k + i]) + acc);
        }
      }
    }
    for (int64_t e = 0; e < experts; ++e)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < k; ++i) {
          double acc = 0;
          for (int64_t g = e; g < segments; g += experts)
            for (int64_t r = offsets[g]; r < offsets[g + 1]; ++r)
              acc += double(dy[r * n + j]) * x[r * k + i];
          dw[(e * n + j) * k + i] = float(acc);
        }

    DeviceBuffer<float> dX(x), dW(w), dW2(w2), dDy(dy);
    DeviceBuffer<float> gY(Floats(rows * n, kGarbage));
    DeviceBuffer<float> gAct(Floats(rows * n, kGarbage));
    DeviceBuffer<float> gDx(base), gDxOverwrite(Floats(rows * k, kGarbage));
    DeviceBuffer<float> gDw(Floats(experts * n * k, kGarbage));
    cuda::grouped::gemmXWt<float, float, float>(*dev, "test", s, dX, k, dW, n,
                                                gY);
    cuda::grouped::gemmDyW<float, float, float>(*dev, "test", s, dDy, n, dW, k,
                                                /*accumulate=*/true, gDx);
    cuda::grouped::gemmDyW<float, float, float>(*dev, "test", s, dDy, n, dW, k,
                                                /*accumulate=*/false,
                                                gDxOverwrite);
    cuda::grouped::gemmDw<float, float, float>(*dev, "test", s, dDy, n, dX, k,
                                               gDw);
    cuda::grouped::gemmXWtSwiGLU<float, float>(*dev, "test", s, dX, k, dW, dW2,
                                               n, gAct);
    // fp32 accumulation of at most 140 products against double: 1e-5.
    expectClose(gY.download(), y, 1e-5, "gemmXWt");
    expectClose(gAct.download(), act, 1e-5, "gemmXWtSwiGLU");
    expectClose(gDx.download(), dx, 1e-5, "gemmDyW accumulate");
    expectClose(gDxOverwrite.download(), dxOverwrite, 1e-5, "gemmDyW");
    expectClose(gDw.download(), dw, 1e-5, "gemmDw");
    // The rows past the segments are untouched (exactly).
    Floats yOut = gY.download(), actOut = gAct.download();
    for (int64_t i = end * n; i < rows * n; ++i) {
      ASSERT_EQ(yOut[i], kGarbage) << "element " << i;
      ASSERT_EQ(actOut[i], kGarbage) << "element " << i;
    }
  }

  // No rows: nothing to do, and dW is zeroed.
  Offsets none = {0, 0};
  DeviceBuffer<int64_t> dNone(none), dTiles(Offsets(2, 0));
  cuda::grouped::buildTileMap(*dev, dNone, 1, 0, dTiles);
  cuda::grouped::Segments s{dNone, 1, 2, 0, dTiles};
  DeviceBuffer<float> gDw(Floats(2 * 3 * 4, kGarbage)), empty(1);
  cuda::grouped::gemmXWt<float, float, float>(*dev, "test", s, empty, 4, empty,
                                              3, empty);
  cuda::grouped::gemmDw<float, float, float>(*dev, "test", s, empty, 3, empty,
                                             4, gDw);
  EXPECT_EQ(gDw.download(), Floats(2 * 3 * 4, 0.0f));
}

} // namespace
