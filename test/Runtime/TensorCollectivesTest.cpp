//===- TensorCollectivesTest.cpp - axis collectives and EP dispatch -------===//
//
// Each collective on n local ranks against a naive reference built from the
// whole tensors: gathers and all-to-alls as index arithmetic, dispatch and
// combine as "which rank holds expert e" on random, skewed and empty routing.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/TensorCollectives.h"

#include <gtest/gtest.h>

#include <mutex>
#include <random>
#include <vector>

using namespace moe::rt;

namespace {

// Rank r's slice of a [outer, n * mid, inner] tensor along axis 1.
std::vector<float> slice(const std::vector<float> &whole, int64_t outer,
                         int64_t mid, int64_t inner, int n, int r) {
  std::vector<float> part;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t m = 0; m < mid; ++m)
      for (int64_t i = 0; i < inner; ++i)
        part.push_back(whole[(o * n * mid + r * mid + m) * inner + i]);
  return part;
}

TEST(TensorCollectives, GatherAndSliceAlongAxis) {
  for (int n : {1, 2, 3}) {
    int64_t outer = 3, mid = 2, inner = 5;
    std::vector<float> whole(outer * n * mid * inner);
    for (size_t i = 0; i < whole.size(); ++i)
      whole[i] = static_cast<float>(i);
    runLocal(n, [&](Communicator &comm) {
      int r = comm.rank();
      std::vector<float> mine = slice(whole, outer, mid, inner, n, r);
      std::vector<float> gathered(whole.size());
      allGatherAxis(comm, mine.data(), gathered.data(), {outer, mid, inner},
                    CommDType::F32);
      EXPECT_EQ(gathered, whole) << "n " << n << " rank " << r;
      std::vector<float> back(mine.size());
      allSliceAxis(comm, whole.data(), back.data(), {outer, n * mid, inner},
                   CommDType::F32);
      EXPECT_EQ(back, mine);
    });
  }
}

// Ulysses: [b, s/n, h, d] -> [b, s, h/n, d] equals slicing the whole [b, s,
// h, d] by heads.
TEST(TensorCollectives, AllToAllTradesSequenceForHeads) {
  for (int n : {1, 2, 4}) {
    int64_t b = 2, s = 4 * n, h = 2 * n, d = 3;
    std::vector<float> whole(b * s * h * d);
    for (size_t i = 0; i < whole.size(); ++i)
      whole[i] = static_cast<float>(i) * 0.5f;
    runLocal(n, [&](Communicator &comm) {
      int r = comm.rank();
      std::vector<float> bySeq = slice(whole, b, s / n, h * d, n, r);
      std::vector<float> byHeads = slice(whole, b * s, h / n, d, n, r);
      std::vector<float> got(byHeads.size());
      allToAllAxes(comm, bySeq.data(), got.data(), {b * (s / n), h, d},
                   {b, s, (h / n) * d}, CommDType::F32);
      EXPECT_EQ(got, byHeads) << "n " << n << " rank " << r;
      std::vector<float> back(bySeq.size());
      allToAllAxes(comm, got.data(), back.data(), {b, s, (h / n) * d},
                   {b * (s / n), h, d}, CommDType::F32);
      EXPECT_EQ(back, bySeq);
    });
  }
}

// Rows sent to each expert rank arrive grouped by (source, local expert), and
// combine puts every row back where it came from.
void checkDispatch(int n, int64_t experts, const std::vector<std::vector<int64_t>>
                                               &countsPerRank) {
  const int64_t hidden = 3, local = experts / n;
  runLocal(n, [&](Communicator &ep) {
    int r = ep.rank();
    const std::vector<int64_t> &counts = countsPerRank[r];
    std::vector<int64_t> offsets(experts + 1, 0);
    for (int64_t e = 0; e < experts; ++e)
      offsets[e + 1] = offsets[e] + counts[e];
    // Row value encodes (source rank, expert, index within the expert).
    std::vector<float> rows(offsets[experts] * hidden);
    for (int64_t e = 0; e < experts; ++e)
      for (int64_t k = 0; k < counts[e]; ++k)
        for (int64_t c = 0; c < hidden; ++c)
          rows[(offsets[e] + k) * hidden + c] =
              static_cast<float>(r * 10000 + e * 100 + k) + 0.25f * c;
    int64_t capacity = 0;
    for (int s = 0; s < n; ++s)
      for (int64_t e = r * local; e < (r + 1) * local; ++e)
        capacity += countsPerRank[s][e];
    std::vector<float> recv((capacity + 1) * hidden, -1.0f);
    std::vector<int64_t> recvOffsets(experts + 1);
    dispatchTokens(ep, rows.data(), offsets.data(), experts, hidden,
                   recv.data(), capacity + 1, recvOffsets.data());
    int64_t at = 0;
    for (int s = 0; s < n; ++s)
      for (int64_t l = 0; l < local; ++l) {
        int64_t e = r * local + l;
        ASSERT_EQ(recvOffsets[s * local + l], at);
        for (int64_t k = 0; k < countsPerRank[s][e]; ++k, ++at)
          EXPECT_EQ(recv[at * hidden],
                    static_cast<float>(s * 10000 + e * 100 + k));
      }
    EXPECT_EQ(recvOffsets[experts], at);
    EXPECT_EQ(recv[capacity * hidden], -1.0f) << "a row past the end moved";
    // The expert "computes" 2x; combine returns rows to their places.
    for (float &v : recv)
      v *= 2.0f;
    std::vector<float> out(rows.size());
    combineTokens(ep, recv.data(), recvOffsets.data(), offsets.data(),
                  experts, hidden, out.data());
    for (size_t i = 0; i < rows.size(); ++i)
      EXPECT_EQ(out[i], 2.0f * rows[i]);
  });
}

TEST(TensorCollectives, DispatchAndCombine) {
  std::mt19937 rng(3);
  for (int n : {1, 2, 4}) {
    int64_t experts = 8;
    std::vector<std::vector<int64_t>> random(n), oneExpert(n), none(n);
    for (int r = 0; r < n; ++r) {
      for (int64_t e = 0; e < experts; ++e)
        random[r].push_back(static_cast<int64_t>(rng() % 5));
      oneExpert[r].assign(experts, 0);
      oneExpert[r][0] = 7; // every row to expert 0: other ranks get nothing
      none[r].assign(experts, 0);
    }
    checkDispatch(n, experts, random);
    checkDispatch(n, experts, oneExpert);
    checkDispatch(n, experts, none);
  }
}

TEST(TensorCollectives, DispatchRefusesOverflowOnEveryRank) {
  std::mutex mutex;
  int failures = 0;
  runLocal(2, [&](Communicator &ep) {
    std::vector<int64_t> offsets = {0, 4, 4}; // 4 rows for expert 0
    std::vector<float> rows(4), recv(8);
    std::vector<int64_t> recvOffsets(3);
    try {
      dispatchTokens(ep, rows.data(), offsets.data(), 2, 1, recv.data(), 5,
                     recvOffsets.data());
    } catch (const std::runtime_error &e) {
      std::lock_guard<std::mutex> lock(mutex);
      ++failures;
      EXPECT_NE(std::string(e.what()).find("expert dispatch"),
                std::string::npos);
    }
  });
  EXPECT_EQ(failures, 2); // rank 0 receives 8 rows with room for 5
}

} // namespace
