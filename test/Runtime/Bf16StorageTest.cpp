//===- Bf16StorageTest.cpp - bf16 storage on the host ---------------------===//
//
// The pieces of `moec --storage bf16` that run on the CPU, each against a
// naive reference: the rounding itself (hand-worked bit patterns), the CPU
// backend's bf16 calls (a double-precision reference on the rounded inputs,
// rounded once), bf16 sums over local ranks (fp32 in rank order, rounded
// once) and the expert dispatch and combine of bf16 rows (bits preserved).
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/BFloat16.h"
#include "moe/Runtime/Backend.h"
#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/ExpertPlacement.h"
#include "moe/Runtime/TensorCollectives.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

using namespace moe::rt;

namespace {

uint32_t bitsOf(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

float fromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(f32ToBf16(1.0f), 0x3F80);
  EXPECT_EQ(f32ToBf16(-2.0f), 0xC000);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even 1.
  EXPECT_EQ(f32ToBf16(1.0f + 0x1p-8f), 0x3F80);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  EXPECT_EQ(f32ToBf16(1.0f + 3 * 0x1p-8f), 0x3F82);
  // Just above the halfway point rounds up.
  EXPECT_EQ(f32ToBf16(fromBits(0x3F808001u)), 0x3F81);
  EXPECT_EQ(f32ToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  // The largest float is past bf16's largest finite value: infinity.
  EXPECT_EQ(f32ToBf16(std::numeric_limits<float>::max()), 0x7F80);
  // A NaN whose payload is all in the low half stays a NaN.
  uint16_t nan = f32ToBf16(fromBits(0x7F800001u));
  EXPECT_EQ(nan & 0x7F80, 0x7F80);
  EXPECT_NE(nan & 0x007F, 0);
  EXPECT_TRUE(std::isnan(bf16ToF32(nan)));
  // Widening is exact: every bf16 value survives the round trip.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = bf16ToF32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(f32ToBf16(f), h);
      ASSERT_EQ(bitsOf(f), h << 16);
    }
  }
}

std::vector<uint16_t> randomBf16(size_t n, std::mt19937 &rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<uint16_t> v(n);
  for (uint16_t &x : v)
    x = f32ToBf16(dist(rng));
  return v;
}

TEST(CpuBackendBf16, LinearRoundsTheExactResultOnce) {
  std::mt19937 rng(11);
  const int64_t rows = 5, in = 37, out = 6;
  std::vector<uint16_t> x = randomBf16(rows * in, rng, 1.0f);
  std::vector<uint16_t> w = randomBf16(out * in, rng, 0.2f);
  std::vector<uint16_t> bias = randomBf16(out, rng, 0.5f);
  std::vector<uint16_t> y(rows * out, 0);
  std::unique_ptr<Backend> backend = makeCpuBackend();
  backend->setStorage(StorageType::BF16);
  ASSERT_EQ(backend->storage(), StorageType::BF16);
  backend->linear(reinterpret_cast<const float *>(x.data()),
                  reinterpret_cast<const float *>(w.data()),
                  reinterpret_cast<const float *>(bias.data()),
                  reinterpret_cast<float *>(y.data()), rows, in, out);
  int ulpOff = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double sum = bf16ToF32(bias[o]);
      for (int64_t i = 0; i < in; ++i)
        sum += double(bf16ToF32(x[r * in + i])) * bf16ToF32(w[o * in + i]);
      uint16_t want = f32ToBf16(static_cast<float>(sum));
      int diff = std::abs(int(y[r * out + o]) - int(want));
      // The kernel sums in fp32: at most one ulp from the exact sum's
      // rounding, and mostly equal.
      EXPECT_LE(diff, 1) << "row " << r << " output " << o;
      ulpOff += diff;
    }
  EXPECT_LE(ulpOff, rows * out / 4);
}

TEST(CpuBackendBf16, ScalarLossStaysFp32) {
  // Cross-entropy reads bf16 logits and writes an fp32 scalar.
  std::unique_ptr<Backend> backend = makeCpuBackend();
  backend->setStorage(StorageType::BF16);
  const int64_t n = 2, vocab = 3;
  std::vector<uint16_t> logits = {f32ToBf16(1.0f), f32ToBf16(2.0f),
                                  f32ToBf16(0.5f), f32ToBf16(-1.0f),
                                  f32ToBf16(0.0f), f32ToBf16(3.0f)};
  std::vector<int32_t> labels = {1, 2};
  float loss = 0.0f;
  backend->crossEntropy(reinterpret_cast<const float *>(logits.data()),
                        labels.data(), /*count=*/nullptr, &loss, n, vocab,
                        -100);
  double l0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(0.5)) - 2.0;
  double l1 = std::log(std::exp(-1.0) + std::exp(0.0) + std::exp(3.0)) - 3.0;
  EXPECT_NEAR(loss, (l0 + l1) / 2, 1e-6);
}

TEST(CpuBackendBf16, ConvertBothWays) {
  std::unique_ptr<Backend> backend = makeCpuBackend();
  std::vector<float> f = {1.0f, 1.0f + 0x1p-8f, -3.14159f, 1e-3f};
  std::vector<uint16_t> h(f.size());
  backend->convert(h.data(), StorageType::BF16, f.data(), StorageType::F32,
                   static_cast<int64_t>(f.size()));
  for (size_t i = 0; i < f.size(); ++i)
    EXPECT_EQ(h[i], f32ToBf16(f[i]));
  std::vector<float> back(f.size());
  backend->convert(back.data(), StorageType::F32, h.data(), StorageType::BF16,
                   static_cast<int64_t>(f.size()));
  for (size_t i = 0; i < f.size(); ++i)
    EXPECT_EQ(back[i], bf16ToF32(h[i]));
}

TEST(CommunicatorBf16, AllReduceSumsInFp32AndRoundsOnce) {
  const int n = 3;
  const int64_t count = 257;
  std::vector<std::vector<uint16_t>> inputs(n);
  std::mt19937 rng(5);
  for (auto &v : inputs)
    v = randomBf16(count, rng, 1.0f);
  std::vector<uint16_t> want(count);
  for (int64_t i = 0; i < count; ++i) {
    float sum = 0.0f;
    for (int r = 0; r < n; ++r)
      sum += bf16ToF32(inputs[r][i]);
    want[i] = f32ToBf16(sum);
  }
  runLocal(n, [&](Communicator &comm) {
    std::vector<uint16_t> buf = inputs[comm.rank()];
    comm.allReduceSum(buf.data(), count, CommDType::BF16);
    EXPECT_EQ(buf, want) << "rank " << comm.rank();
  });
  EXPECT_EQ(commDTypeSize(CommDType::BF16), 2u);
}

TEST(TensorCollectivesBf16, DispatchAndCombineMoveBf16Rows) {
  // 2 ranks, 4 experts (2 per rank); each row's 3 elements carry the bits
  // (rank, expert, index, column), so a row moved with the wrong width or
  // to the wrong slot shows.
  const int n = 2;
  const int64_t experts = 4, hidden = 3;
  ExpertPlacement placement = ExpertPlacement::staticSplit(experts, n, 2);
  const std::vector<std::vector<int64_t>> counts = {{2, 0, 3, 1}, {1, 4, 0, 2}};
  runLocal(n, [&](Communicator &ep) {
    int r = ep.rank();
    std::vector<int64_t> offsets(experts + 1, 0);
    for (int64_t e = 0; e < experts; ++e)
      offsets[e + 1] = offsets[e] + counts[r][e];
    std::vector<uint16_t> rows;
    for (int64_t e = 0; e < experts; ++e)
      for (int64_t k = 0; k < counts[r][e]; ++k)
        for (int64_t c = 0; c < hidden; ++c)
          rows.push_back(static_cast<uint16_t>(r << 12 | e << 8 | k << 4 | c));
    const int64_t capacity = 16;
    std::vector<uint16_t> recv(capacity * hidden, 0xFFFF);
    std::vector<int64_t> recvOffsets(n * 2 + 1);
    dispatchTokens(ep, rows.data(), offsets.data(), hidden, recv.data(),
                   capacity, recvOffsets.data(), placement, nullptr, nullptr,
                   hostBufferOps(), CommDType::BF16);
    for (int s = 0; s < n; ++s)
      for (int64_t l = 0; l < 2; ++l) {
        int64_t e = placement.expertAt(r, l);
        int64_t begin = recvOffsets[s * 2 + l],
                end = recvOffsets[s * 2 + l + 1];
        ASSERT_EQ(end - begin, counts[s][e]) << "rank " << r << " slot " << l;
        for (int64_t k = 0; k < end - begin; ++k)
          for (int64_t c = 0; c < hidden; ++c)
            EXPECT_EQ(recv[(begin + k) * hidden + c],
                      s << 12 | e << 8 | k << 4 | c);
      }
    // Past the rows that arrived, recv is untouched.
    for (size_t i = recvOffsets[n * 2] * hidden; i < recv.size(); ++i)
      EXPECT_EQ(recv[i], 0xFFFF);
    std::vector<uint16_t> out(rows.size(), 0);
    combineTokens(ep, recv.data(), recvOffsets.data(), offsets.data(), hidden,
                  out.data(), placement, nullptr, hostBufferOps(),
                  CommDType::BF16);
    EXPECT_EQ(out, rows) << "rank " << r;
  });
}

} // namespace
