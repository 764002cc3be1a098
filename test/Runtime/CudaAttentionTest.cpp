//===- CudaAttentionTest.cpp - Tiled CUDA attention vs the CPU kernels ----===//
//
// moe::cuda::attention and attentionGrad against moe::cpu::attention and
// attentionGrad on the same random inputs: causal and not, MHA and GQA,
// sequence lengths around the tile sizes (1, 17, 64, 130), head dimensions
// of every bucket including ones that are not a multiple of 16 or 32 (8, 24,
// 64, 128, plus 40 and 256), batch 1 and 3, and value heads narrower or
// wider than the query/key heads (vDim 16 with headDim 24, 128 with 192 as
// in DeepSeek's MLA, 40 with 16; and either dimension 0). Outputs start as
// garbage, so a kernel that accumulates instead of overwriting fails.
//
// Tolerance: relative 1e-4 of the largest reference magnitude (expectClose).
// Both sides compute in fp32 (the CPU with a materialised softmax and BLAS,
// the GPU with an online softmax in a different summation order; the GPU
// backward recomputes the softmax from a logsumexp and uses
// D = rowsum(dout * out) where the CPU uses rowsum(P * dP)); the differences
// are rounding of order 1e-6 relative. Where the reference is exactly zero
// everywhere (dq and dk for seq 1, where the softmax is 1 and dS is 0) a
// relative check is meaningless, so the GPU result must be below 1e-6 in
// absolute value instead.
//
//===----------------------------------------------------------------------===//

#include "cuda/CudaKernels.h"

#include "CudaTestUtil.h"
#include "moe/Runtime/CpuKernels.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::cuda::test {
namespace {

constexpr double kRelTol = 1e-4;
constexpr double kZeroTol = 1e-6;
constexpr float kGarbage = 123.0f;

void expectMatches(const std::vector<float> &actual,
                   const std::vector<float> &expected,
                   const std::string &what) {
  double largest = 0;
  for (float x : expected)
    largest = std::max(largest, std::fabs(double(x)));
  if (largest > 0) {
    expectClose(actual, expected, kRelTol, what);
    return;
  }
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i)
    ASSERT_LE(std::fabs(actual[i]), kZeroTol)
        << what << ": element " << i << " of an all-zero reference";
}

struct Case {
  int batch, seq, heads, kvHeads, headDim;
  bool causal;
  float range = 2.0f; // q and k uniform in [-range, range]
  float scale = 0;    // 0: 1 / sqrt(headDim)
  int vDim = -1;      // the width of v and out; -1: headDim

  int valueDim() const { return vDim < 0 ? headDim : vDim; }
  std::string name() const {
    return "batch=" + std::to_string(batch) + " seq=" + std::to_string(seq) +
           " heads=" + std::to_string(heads) +
           " kvHeads=" + std::to_string(kvHeads) +
           " headDim=" + std::to_string(headDim) +
           " vDim=" + std::to_string(valueDim()) +
           " causal=" + std::to_string(causal) +
           " range=" + std::to_string(range);
  }
};

void runCase(Device &dev, const Case &c, uint64_t seed) {
  SCOPED_TRACE(c.name());
  const int vDim = c.valueDim();
  const size_t tokens = size_t(c.batch) * c.seq;
  const size_t qSize = tokens * c.heads * c.headDim;
  const size_t kSize = tokens * c.kvHeads * c.headDim;
  const size_t vSize = tokens * c.kvHeads * vDim;
  const size_t outSize = tokens * c.heads * vDim;
  const float scale =
      c.scale != 0 ? c.scale : 1.0f / std::sqrt(float(c.headDim));
  std::vector<float> q = randomFloats(qSize, seed, -c.range, c.range);
  std::vector<float> k = randomFloats(kSize, seed + 1, -c.range, c.range);
  std::vector<float> v = randomFloats(vSize, seed + 2);
  std::vector<float> dout = randomFloats(outSize, seed + 3);

  // CPU reference.
  std::vector<float> out(outSize), dq(qSize), dk(kSize), dv(vSize);
  cpu::attention(q.data(), k.data(), v.data(), c.batch, c.seq, c.heads,
                 c.kvHeads, c.headDim, vDim, c.causal, scale, out.data());
  cpu::attentionGrad(dout.data(), q.data(), k.data(), v.data(), c.batch, c.seq,
                     c.heads, c.kvHeads, c.headDim, vDim, c.causal, scale,
                     dq.data(), dk.data(), dv.data());

  DeviceBuffer<float> dQ(q), dK(k), dV(v), dDout(dout);
  DeviceBuffer<float> dOut(std::vector<float>(outSize, kGarbage));
  DeviceBuffer<float> dDq(std::vector<float>(qSize, kGarbage));
  DeviceBuffer<float> dDk(std::vector<float>(kSize, kGarbage));
  DeviceBuffer<float> dDv(std::vector<float>(vSize, kGarbage));
  // The uploads ran on the legacy default stream, the kernels run on the
  // Device's non-blocking stream, which does not wait for it: finish them.
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");

  attention<float>(dev, dQ, dK, dV, c.batch, c.seq, c.heads, c.kvHeads,
                   c.headDim, vDim, c.causal, scale, dOut);
  attentionGrad<float>(dev, dDout, dQ, dK, dV, c.batch, c.seq, c.heads,
                       c.kvHeads, c.headDim, vDim, c.causal, scale, dDq, dDk,
                       dDv);
  dev.synchronize();

  expectMatches(dOut.download(), out, "attention out");
  expectMatches(dDq.download(), dq, "attentionGrad dq");
  expectMatches(dDk.download(), dk, "attentionGrad dk");
  expectMatches(dDv.download(), dv, "attentionGrad dv");
}

class CudaAttention : public CudaTest {};

TEST_F(CudaAttention, MatchesCpuOverShapes) {
  uint64_t seed = 100;
  for (bool causal : {false, true})
    for (int gqa : {0, 1})
      for (int seq : {1, 17, 64, 130})
        for (int headDim : {8, 24, 64, 128})
          for (int batch : {1, 3}) {
            // MHA: 4 heads of their own; GQA: 8 heads over 2 kv heads.
            Case c{batch, seq, gqa ? 8 : 4, gqa ? 2 : 4, headDim, causal};
            runCase(*dev, c, seed += 10);
          }
}

TEST_F(CudaAttention, OtherHeadDimsAndGroups) {
  // Buckets 64 (40, not a multiple of 32) and 256, and one kv head for all.
  for (bool causal : {false, true}) {
    runCase(*dev, Case{2, 77, 4, 2, 40, causal}, 7);
    runCase(*dev, Case{1, 70, 2, 1, 256, causal}, 8);
    runCase(*dev, Case{2, 33, 6, 1, 16, causal}, 9);
    runCase(*dev, Case{1, 5, 3, 3, 1, causal}, 10);
  }
}

TEST_F(CudaAttention, ValueHeadsOfAnotherWidth) {
  // v and out narrower than q and k (24 and 16: bucket 32; 192 and 128, the
  // MLA shape: bucket 256) and wider (16 and 40: bucket 64); GQA and MHA,
  // sequence lengths around the tile sizes.
  uint64_t seed = 2000;
  for (bool causal : {false, true})
    for (int seq : {1, 17, 130}) {
      Case narrow{2, seq, 8, 2, 24, causal};
      narrow.vDim = 16;
      runCase(*dev, narrow, seed += 10);
      Case mla{1, seq, 4, 4, 192, causal};
      mla.vDim = 128;
      runCase(*dev, mla, seed += 10);
      Case wide{2, seq, 6, 3, 16, causal};
      wide.vDim = 40;
      runCase(*dev, wide, seed += 10);
    }
}

TEST_F(CudaAttention, OneDimensionZero) {
  // vDim 0: out, dout and dv are empty, dq and dk are zeros. headDim 0: every
  // score is 0 even with the scale 1 / sqrt(0) = inf, so out averages the
  // visible v.
  for (bool causal : {false, true}) {
    Case noValues{2, 17, 4, 2, 24, causal};
    noValues.vDim = 0;
    runCase(*dev, noValues, 3000);
    Case noKeys{2, 17, 4, 2, 0, causal};
    noKeys.vDim = 16;
    runCase(*dev, noKeys, 3010);
  }
}

TEST_F(CudaAttention, LargeScoresNeedTheRunningMax) {
  // Scores up to 64 with scale 1: exp overflows fp32 without the max
  // subtraction, and the maximum moves between key tiles.
  for (bool causal : {false, true})
    runCase(*dev,
            Case{2, 200, 4, 2, 16, causal, /*range=*/2.0f,
                 /*scale=*/1.0f},
            11);
}

TEST_F(CudaAttention, CachedAttentionMatchesCpu) {
  // A prefill of 5 tokens then 3 decode steps, two sequences at different
  // positions, GQA and MHA, value heads narrower than key heads and the MLA
  // shape; the caches start as the same garbage on both sides, and the
  // caches after the calls must match too.
  struct Shape {
    int heads, kvHeads, headDim, vDim;
  };
  uint64_t seed = 4000;
  for (Shape sh :
       {Shape{8, 2, 24, 16}, Shape{4, 4, 64, 64}, Shape{4, 4, 192, 128}}) {
    SCOPED_TRACE("heads=" + std::to_string(sh.heads) +
                 " headDim=" + std::to_string(sh.headDim));
    const int batch = 2, cacheLen = 12;
    const size_t kCacheSize =
        size_t(batch) * cacheLen * sh.kvHeads * sh.headDim;
    const size_t vCacheSize = size_t(batch) * cacheLen * sh.kvHeads * sh.vDim;
    std::vector<float> kCache(kCacheSize, kGarbage),
        vCache(vCacheSize, kGarbage);
    DeviceBuffer<float> dKCache(kCache), dVCache(vCache);
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    const float scale = 1.0f / std::sqrt(float(sh.headDim));
    for (int first : {0, 5, 6, 7}) {
      int n = first == 0 ? 5 : 1;
      size_t tokens = size_t(batch) * n;
      std::vector<float> q =
          randomFloats(tokens * sh.heads * sh.headDim, seed++, -2.f, 2.f);
      std::vector<float> k =
          randomFloats(tokens * sh.kvHeads * sh.headDim, seed++, -2.f, 2.f);
      std::vector<float> v =
          randomFloats(tokens * sh.kvHeads * sh.vDim, seed++);
      std::vector<int32_t> positions;
      for (int b = 0; b < batch; ++b)
        for (int t = 0; t < n; ++t)
          positions.push_back(first + t + b); // sequence 1 one position on
      std::vector<float> out(tokens * sh.heads * sh.vDim);
      cpu::cachedAttention(q.data(), k.data(), v.data(), positions.data(),
                           batch, n, cacheLen, sh.heads, sh.kvHeads, sh.headDim,
                           sh.vDim, scale, kCache.data(), vCache.data(),
                           out.data());
      DeviceBuffer<float> dQ(q), dK(k), dV(v);
      DeviceBuffer<int32_t> dPositions(positions);
      DeviceBuffer<float> dOut(std::vector<float>(out.size(), kGarbage));
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      cachedAttention<float>(*dev, dQ, dK, dV, dPositions, batch, n, cacheLen,
                             sh.heads, sh.kvHeads, sh.headDim, sh.vDim, scale,
                             dKCache, dVCache, dOut);
      dev->synchronize();
      expectMatches(dOut.download(), out, "cachedAttention out");
    }
    expectMatches(dKCache.download(), kCache, "cachedAttention kCache");
    expectMatches(dVCache.download(), vCache, "cachedAttention vCache");
  }
}

TEST_F(CudaAttention, EmptyShapesAndInvalidSizes) {
  // Nothing to compute: no launch, no throw.
  EXPECT_NO_THROW(attention<float>(*dev, nullptr, nullptr, nullptr, 1, 0, 4, 2,
                                   8, 8, true, 1.0f, nullptr));
  EXPECT_NO_THROW(attentionGrad<float>(*dev, nullptr, nullptr, nullptr, nullptr,
                                       0, 5, 4, 2, 8, 8, false, 1.0f, nullptr,
                                       nullptr, nullptr));
  EXPECT_NO_THROW(attention<float>(*dev, nullptr, nullptr, nullptr, 2, 3, 4, 2,
                                   0, 0, false, 1.0f, nullptr));
  EXPECT_NO_THROW(attention<float>(*dev, nullptr, nullptr, nullptr, 2, 3, 4, 2,
                                   8, 0, false, 1.0f, nullptr));
  EXPECT_NO_THROW(attentionGrad<float>(*dev, nullptr, nullptr, nullptr, nullptr,
                                       2, 3, 4, 2, 0, 0, false, 1.0f, nullptr,
                                       nullptr, nullptr));
  dev->synchronize();
  // heads not a multiple of kvHeads, headDim or vDim above 256, negative
  // sizes.
  EXPECT_THROW(attention<float>(*dev, nullptr, nullptr, nullptr, 1, 4, 4, 3, 8,
                                8, false, 1.0f, nullptr),
               std::invalid_argument);
  EXPECT_THROW(attentionGrad<float>(*dev, nullptr, nullptr, nullptr, nullptr, 1,
                                    4, 4, 3, 8, 8, false, 1.0f, nullptr,
                                    nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(attention<float>(*dev, nullptr, nullptr, nullptr, 1, 4, 4, 2,
                                257, 8, false, 1.0f, nullptr),
               std::invalid_argument);
  EXPECT_THROW(attention<float>(*dev, nullptr, nullptr, nullptr, 1, 4, 4, 2, 8,
                                257, false, 1.0f, nullptr),
               std::invalid_argument);
  EXPECT_THROW(attentionGrad<float>(*dev, nullptr, nullptr, nullptr, nullptr, 1,
                                    4, 4, 2, 8, 257, false, 1.0f, nullptr,
                                    nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(attention<float>(*dev, nullptr, nullptr, nullptr, 1, -1, 4, 2, 8,
                                8, false, 1.0f, nullptr),
               std::invalid_argument);
  EXPECT_THROW(attention<float>(*dev, nullptr, nullptr, nullptr, 1, 4, 4, 2, 8,
                                -1, false, 1.0f, nullptr),
               std::invalid_argument);
  EXPECT_THROW(attentionGrad<float>(*dev, nullptr, nullptr, nullptr, nullptr, 1,
                                    4, 0, 0, 8, 8, false, 1.0f, nullptr,
                                    nullptr, nullptr),
               std::invalid_argument);
}

} // namespace
} // namespace moe::cuda::test
