//===- TensorCollectivesTest.cpp - axis collectives and EP dispatch -------===//
//
// Each collective on n local ranks against a naive reference built from the
// whole tensors: gathers and all-to-alls as index arithmetic, dispatch and
// combine as "which rank holds expert e" on random, skewed and empty routing.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/TensorCollectives.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <random>
#include <vector>

using namespace moe::rt;

namespace {

// Host memory that counts what goes through it, standing in for a device
// backend's buffer operations: every scratch buffer must be released, and
// the copies the collectives need must come through copy2D.
class TrackingOps final : public BufferOps {
public:
  void *allocate(size_t bytes) override {
    ++live;
    ++allocations;
    // New memory is zeroed asynchronously until fence(), as a device
    // backend's cudaMemsetAsync on its stream.
    unfenced = true;
    return hostBufferOps().allocate(bytes);
  }
  void release(void *ptr) override {
    --live;
    hostBufferOps().release(ptr);
  }
  void copy2D(void *dst, size_t dstPitch, const void *src, size_t srcPitch,
              size_t width, size_t rows) override {
    ++copies;
    unfenced = true;
    hostBufferOps().copy2D(dst, dstPitch, src, srcPitch, width, rows);
  }
  void fence() override { unfenced = false; }

  int live = 0, allocations = 0, copies = 0;
  bool unfenced = false;
};

// A rank's communicator that checks, at every call that moves data, that the
// rank's TrackingOps has nothing pending: on a device backend the copies and
// the zeroing of new scratch run on the backend's stream, the communicator
// (NCCL) on its own, so a collective must not start before a fence.
class FenceCheckedComm final : public Communicator {
public:
  FenceCheckedComm(Communicator &inner, const TrackingOps &ops)
      : inner_(inner), ops_(ops) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const char *backend() const override { return inner_.backend(); }
  void allReduceSum(void *buf, int64_t count, CommDType dtype) override {
    check("allReduceSum");
    inner_.allReduceSum(buf, count, dtype);
  }
  void allGather(const void *send, void *recv, int64_t countPerRank,
                 CommDType dtype) override {
    check("allGather");
    inner_.allGather(send, recv, countPerRank, dtype);
  }
  void reduceScatterSum(const void *send, void *recv, int64_t countPerRank,
                        CommDType dtype) override {
    check("reduceScatterSum");
    inner_.reduceScatterSum(send, recv, countPerRank, dtype);
  }
  void allToAll(const void *send, void *recv, int64_t countPerRank,
                CommDType dtype) override {
    check("allToAll");
    inner_.allToAll(send, recv, countPerRank, dtype);
  }
  void allToAllV(const void *send, const int64_t *sendCounts,
                 const int64_t *sendOffsets, void *recv,
                 const int64_t *recvCounts, const int64_t *recvOffsets,
                 CommDType dtype) override {
    check("allToAllV");
    inner_.allToAllV(send, sendCounts, sendOffsets, recv, recvCounts,
                     recvOffsets, dtype);
  }
  void broadcast(void *buf, int64_t count, CommDType dtype,
                 int root) override {
    check("broadcast");
    inner_.broadcast(buf, count, dtype, root);
  }
  void barrier() override { inner_.barrier(); }
  std::unique_ptr<Communicator> split(int colour, int key) override {
    return inner_.split(colour, key);
  }

private:
  void check(const char *op) const {
    EXPECT_FALSE(ops_.unfenced)
        << op << " started with buffer work still pending (no fence)";
  }
  Communicator &inner_;
  const TrackingOps &ops_;
};

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

// Each rank ends with its slice of the sum of every rank's whole tensor,
// along the outermost axis (no packing) and an inner one.
TEST(TensorCollectives, ReduceScatterIsTheSlicedSum) {
  for (int n : {1, 2, 3}) {
    for (int64_t outer : {1, 3}) {
      int64_t mid = 2, inner = 5;
      int64_t count = outer * n * mid * inner;
      auto wholeOf = [&](int r) {
        std::vector<float> whole(count);
        for (int64_t i = 0; i < count; ++i)
          whole[i] = static_cast<float>((r + 1) * 1000 + i);
        return whole;
      };
      std::vector<float> sum(count, 0.0f);
      for (int r = 0; r < n; ++r) {
        std::vector<float> whole = wholeOf(r);
        for (int64_t i = 0; i < count; ++i)
          sum[i] += whole[i];
      }
      runLocal(n, [&](Communicator &comm) {
        int r = comm.rank();
        std::vector<float> whole = wholeOf(r);
        std::vector<float> piece(count / n);
        reduceScatterAxis(comm, whole.data(), piece.data(),
                          {outer, n * mid, inner}, CommDType::F32);
        EXPECT_EQ(piece, slice(sum, outer, mid, inner, n, r))
            << "n " << n << " outer " << outer << " rank " << r;
      });
    }
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

// A source rank's rows grouped by expert (`offsets` from `counts`); row
// value = rank * rankScale + expert * expertScale + index within the expert,
// plus 0.25 * column.
std::vector<float> sourceRows(int rank, const std::vector<int64_t> &counts,
                              int64_t hidden, int64_t rankScale,
                              int64_t expertScale,
                              std::vector<int64_t> &offsets) {
  int64_t experts = static_cast<int64_t>(counts.size());
  offsets.assign(experts + 1, 0);
  for (int64_t e = 0; e < experts; ++e)
    offsets[e + 1] = offsets[e] + counts[e];
  std::vector<float> rows(offsets[experts] * hidden);
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t k = 0; k < counts[e]; ++k)
      for (int64_t c = 0; c < hidden; ++c)
        rows[(offsets[e] + k) * hidden + c] =
            static_cast<float>(rank * rankScale + e * expertScale + k) +
            0.25f * c;
  return rows;
}

// Rows sent to each expert rank arrive grouped by (source, local expert), and
// combine puts every row back where it came from.
void checkDispatch(int n, int64_t experts, const std::vector<std::vector<int64_t>>
                                               &countsPerRank) {
  const int64_t hidden = 3, local = experts / n;
  runLocal(n, [&](Communicator &ep) {
    int r = ep.rank();
    // Row value encodes (source rank, expert, index within the expert).
    std::vector<int64_t> offsets;
    std::vector<float> rows =
        sourceRows(r, countsPerRank[r], hidden, 10000, 100, offsets);
    // The same capacity on every rank (as compiled): the fullest rank's.
    int64_t capacity = 0;
    for (int j = 0; j < n; ++j) {
      int64_t receives = 0;
      for (int s = 0; s < n; ++s)
        for (int64_t e = j * local; e < (j + 1) * local; ++e)
          receives += countsPerRank[s][e];
      capacity = std::max(capacity, receives);
    }
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
    EXPECT_EQ(recv[at * hidden], -1.0f) << "a row past the end moved";
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

// With a placement: every row reaches exactly one slot holding its expert,
// in segment (source, slot) order, a source's rows for a slot contiguous and
// in order; combine returns each to where it came from.
// With `ops` (one per rank), the collectives' buffers go through them.
void checkPlacedDispatch(const ExpertPlacement &placement,
                         const std::vector<std::vector<int64_t>> &countsPerRank,
                         const char *policySpec,
                         std::vector<TrackingOps> *ops = nullptr) {
  const int n = static_cast<int>(placement.ranks());
  const int64_t slots = placement.slots();
  const int64_t hidden = 2;
  std::mutex mutex;
  std::set<int64_t> seen; // s * 1e6 + e * 1e3 + k
  int64_t totalRows = 0;
  for (const auto &counts : countsPerRank)
    for (int64_t c : counts)
      totalRows += c;
  runLocal(n, [&](Communicator &ep) {
    int r = ep.rank();
    std::vector<int64_t> offsets;
    std::vector<float> rows =
        sourceRows(r, countsPerRank[r], hidden, 1000000, 1000, offsets);
    const int64_t capacity = totalRows + 1;
    std::vector<float> recv(capacity * hidden, -1.0f);
    std::vector<int64_t> recvOffsets(n * slots + 1);
    // Each dispatch gets its own policy object on each rank, as in a run.
    std::unique_ptr<DispatchPolicy> mine = makeDispatchPolicy(policySpec);
    BufferOps &memory = ops ? (*ops)[r] : hostBufferOps();
    std::optional<FenceCheckedComm> checked;
    if (ops)
      checked.emplace(ep, (*ops)[r]);
    Communicator &comm = ops ? *checked : ep;
    dispatchTokens(comm, rows.data(), offsets.data(), hidden, recv.data(),
                   capacity, recvOffsets.data(), placement, mine.get(),
                   nullptr, memory);
    for (int s = 0; s < n; ++s)
      for (int64_t l = 0; l < slots; ++l) {
        int64_t begin = recvOffsets[s * slots + l];
        int64_t end = recvOffsets[s * slots + l + 1];
        int32_t e = placement.expertAt(r, l);
        if (e < 0) {
          EXPECT_EQ(begin, end) << "rows for an empty slot";
          continue;
        }
        for (int64_t i = begin; i < end; ++i) {
          auto code = static_cast<int64_t>(recv[i * hidden]);
          EXPECT_EQ(code / 1000000, s);
          EXPECT_EQ(code / 1000 % 1000, e) << "a row for another expert";
          if (i > begin) {
            EXPECT_EQ(code, static_cast<int64_t>(recv[(i - 1) * hidden]) + 1);
          }
          std::lock_guard<std::mutex> lock(mutex);
          EXPECT_TRUE(seen.insert(code).second) << "row " << code << " twice";
        }
      }
    for (float &v : recv)
      v *= 2.0f;
    std::vector<float> out(rows.size(), 0.0f);
    combineTokens(comm, recv.data(), recvOffsets.data(), offsets.data(),
                  hidden, out.data(), placement, mine.get(), memory);
    for (size_t i = 0; i < rows.size(); ++i)
      EXPECT_EQ(out[i], 2.0f * rows[i]) << "rank " << r << " element " << i;
  });
  EXPECT_EQ(static_cast<int64_t>(seen.size()), totalRows);
}

TEST(TensorCollectives, DispatchAndCombineOverPlacements) {
  std::mt19937 rng(11);
  const int n = 4;
  const int64_t experts = 8;
  std::vector<std::vector<int64_t>> counts(n);
  for (auto &c : counts)
    for (int64_t e = 0; e < experts; ++e)
      c.push_back(e == 3 ? 40 + rng() % 9 : rng() % 6); // expert 3 is hot
  // Moved experts (no replicas): reversed and interleaved.
  checkPlacedDispatch(ExpertPlacement(experts, n, 2,
                                      {7, 6, 5, 4, 3, 2, 1, 0}),
                      counts, "first");
  checkPlacedDispatch(ExpertPlacement(experts, n, 2,
                                      {0, 4, 1, 5, 2, 6, 3, 7}),
                      counts, "least-loaded");
  // Spare slots: empty, and replicas of the hot expert (and of expert 0).
  ExpertPlacement spare = ExpertPlacement::staticSplit(experts, n, 3);
  checkPlacedDispatch(spare, counts, "least-loaded");
  ExpertPlacement replicated(experts, n, 3,
                             {0, 1, 3, 2, 3, -1, 4, 5, 3, 6, 7, 0});
  ASSERT_TRUE(replicated.hasReplicas());
  for (const char *policy : {"first", "least-loaded"})
    checkPlacedDispatch(replicated, counts, policy);
}

// The collectives' scratch buffers and reordering copies go through the
// given BufferOps (a device backend's memory), fenced before use, and every
// scratch buffer is released.
TEST(TensorCollectives, BuffersGoThroughBufferOps) {
  const int n = 4;
  // Gather and slice, all-to-all along axes.
  int64_t outer = 3, mid = 2, inner = 5;
  std::vector<float> whole(outer * n * mid * inner);
  for (size_t i = 0; i < whole.size(); ++i)
    whole[i] = static_cast<float>(i);
  std::vector<TrackingOps> ops(n);
  runLocal(n, [&](Communicator &local) {
    int r = local.rank();
    TrackingOps &mine = ops[r];
    FenceCheckedComm comm(local, mine);
    std::vector<float> part = slice(whole, outer, mid, inner, n, r);
    std::vector<float> gathered(whole.size());
    allGatherAxis(comm, part.data(), gathered.data(), {outer, mid, inner},
                  CommDType::F32, mine);
    EXPECT_EQ(gathered, whole);
    EXPECT_FALSE(mine.unfenced);
    std::vector<float> back(part.size());
    allSliceAxis(comm, whole.data(), back.data(), {outer, n * mid, inner},
                 CommDType::F32, mine);
    EXPECT_EQ(back, part);
    // Every rank brings the same whole tensor: its piece is n times its
    // slice.
    std::vector<float> summed(part.size());
    reduceScatterAxis(comm, whole.data(), summed.data(),
                      {outer, n * mid, inner}, CommDType::F32, mine);
    std::vector<float> times(part);
    for (float &x : times)
      x *= n;
    EXPECT_EQ(summed, times);
    EXPECT_FALSE(mine.unfenced);
    // Ulysses as in AllToAllTradesSequenceForHeads: [b, s/n, h, d] to
    // [b, s, h/n, d].
    int64_t b = 2, seq = 4 * n, h = 2 * n, d = 3;
    std::vector<float> full(b * seq * h * d);
    for (size_t i = 0; i < full.size(); ++i)
      full[i] = static_cast<float>(i) * 0.5f;
    std::vector<float> bySeq = slice(full, b, seq / n, h * d, n, r);
    std::vector<float> byHeads(bySeq.size());
    allToAllAxes(comm, bySeq.data(), byHeads.data(), {b * (seq / n), h, d},
                 {b, seq, (h / n) * d}, CommDType::F32, mine);
    EXPECT_EQ(byHeads, slice(full, b * seq, h / n, d, n, r));
    EXPECT_FALSE(mine.unfenced);
  });
  for (const TrackingOps &o : ops) {
    EXPECT_EQ(o.live, 0) << "a scratch buffer was not released";
    EXPECT_GT(o.allocations, 0);
    EXPECT_GT(o.copies, 0);
  }

  // A placed dispatch that packs its rows on every rank: each rank's slots
  // hold experts in descending order, the rows are sent ascending.
  std::mt19937 rng(5);
  const int64_t experts = 8;
  std::vector<std::vector<int64_t>> counts(n);
  for (auto &c : counts)
    for (int64_t e = 0; e < experts; ++e)
      c.push_back(1 + rng() % 5);
  std::vector<TrackingOps> placedOps(n);
  checkPlacedDispatch(ExpertPlacement(experts, n, 2,
                                      {7, 6, 5, 4, 3, 2, 1, 0}),
                      counts, "first", &placedOps);
  for (const TrackingOps &o : placedOps) {
    EXPECT_EQ(o.live, 0) << "a staging buffer was not released";
    EXPECT_GT(o.copies, 0) << "packing bypassed the BufferOps";
    EXPECT_FALSE(o.unfenced);
  }
}

TEST(TensorCollectives, PlacedDispatchLevelsTheHotExpert) {
  // Expert 0 takes every row; with replicas on all 4 ranks, least-loaded
  // gives each rank a quarter of them.
  const int n = 4;
  ExpertPlacement p(4, n, 2, {0, 1, 2, 0, 3, 0, 0, -1});
  std::vector<std::vector<int64_t>> counts(n, {10, 0, 0, 0});
  std::vector<int64_t> received(n);
  runLocal(n, [&](Communicator &ep) {
    std::vector<int64_t> offsets = {0, 10, 10, 10, 10};
    std::vector<float> rows(10, 1.0f), recv(40);
    std::vector<int64_t> recvOffsets(n * 2 + 1);
    auto policy = makeDispatchPolicy("least-loaded");
    dispatchTokens(ep, rows.data(), offsets.data(), 1, recv.data(), 40,
                   recvOffsets.data(), p, policy.get());
    received[ep.rank()] = recvOffsets[n * 2];
  });
  EXPECT_EQ(received, (std::vector<int64_t>{10, 10, 10, 10}));
}

TEST(TensorCollectives, PlacedDispatchNeedsAPolicyForReplicas) {
  ExpertPlacement p(2, 2, 2, {0, 1, 0, -1});
  runLocal(2, [&](Communicator &ep) {
    std::vector<int64_t> offsets = {0, 1, 1};
    std::vector<float> rows(1), recv(4);
    std::vector<int64_t> recvOffsets(5);
    try {
      dispatchTokens(ep, rows.data(), offsets.data(), 1, recv.data(), 4,
                     recvOffsets.data(), p, nullptr);
      ADD_FAILURE() << "dispatched over replicas without a policy";
    } catch (const std::runtime_error &e) {
      EXPECT_NE(std::string(e.what()).find("no dispatch policy"),
                std::string::npos)
          << e.what();
    }
  });
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
