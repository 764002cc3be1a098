//===- ExpertPlacementTest.cpp - placements and their policies ------------===//
//
// ExpertPlacement's validation and replica index, the built-in placement and
// dispatch policies against hand-computed answers and properties on random
// placements, checkSplit on corrupted splits, and plugin policies through
// the example plugin ($MOE_PLACEMENT_PLUGIN; those tests skip without it).
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/ExpertPlacement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace moe::rt;

namespace {

using Ids = std::vector<int32_t>;
using Rows = std::vector<int64_t>;

// Expects `fn` to throw E with a message containing `part`.
template <typename E, typename Fn>
void expectThrowWith(Fn fn, const std::string &part) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one containing '" << part << "'";
  } catch (const E &err) {
    EXPECT_NE(std::string(err.what()).find(part), std::string::npos)
        << "message: " << err.what() << "\nexpected to contain: " << part;
  }
}

void expectBadPlacement(int64_t experts, int64_t ranks, int64_t slots, Ids ids,
                        const std::string &part) {
  expectThrowWith<std::invalid_argument>(
      [&] { ExpertPlacement(experts, ranks, slots, ids); }, part);
}

std::vector<int64_t> replicasOf(const ExpertPlacement &p, int64_t e) {
  return std::vector<int64_t>(p.replicasBegin(e),
                              p.replicasBegin(e) + p.numReplicas(e));
}

Rows runSplit(DispatchPolicy &policy, const ExpertPlacement &p,
              const Rows &counts) {
  int64_t n = p.ranks();
  Rows split(n * n * p.slots(), -7); // the policy must write every entry
  policy.split({&p, counts.data()}, split.data());
  return split;
}

Rows splitWith(const std::string &spec, const ExpertPlacement &p,
               const Rows &counts) {
  return runSplit(*makeDispatchPolicy(spec), p, counts);
}

// Rows each rank receives under `split`.
Rows received(const ExpertPlacement &p, const Rows &split) {
  int64_t n = p.ranks(), total = n * p.slots();
  Rows recv(n, 0);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t g = 0; g < total; ++g)
      recv[g / p.slots()] += split[s * total + g];
  return recv;
}

int64_t maxOf(const Rows &v) { return *std::max_element(v.begin(), v.end()); }

// Every (source, expert) sends its rows exactly to the expert's slots.
void expectRowsConserved(const ExpertPlacement &p, const Rows &counts,
                         const Rows &split) {
  int64_t n = p.ranks(), experts = p.experts(), total = n * p.slots();
  for (int64_t s = 0; s < n; ++s) {
    Rows sent(experts, 0);
    for (int64_t g = 0; g < total; ++g) {
      int64_t rows = split[s * total + g];
      ASSERT_GE(rows, 0) << "source " << s << " slot " << g;
      int32_t e = p.slotExperts()[g];
      if (e < 0) {
        ASSERT_EQ(rows, 0) << "source " << s << " empty slot " << g;
        continue;
      }
      sent[e] += rows;
    }
    for (int64_t e = 0; e < experts; ++e)
      EXPECT_EQ(sent[e], counts[s * experts + e])
          << "source " << s << " expert " << e;
  }
}

// Expert e's rows, sources in order, are cut over its replicas in slot
// order: once a source sends to a later replica, no later source sends to
// an earlier one.
void expectSourceOrderCut(const ExpertPlacement &p, const Rows &split) {
  int64_t n = p.ranks(), total = n * p.slots();
  for (int64_t e = 0; e < p.experts(); ++e) {
    int64_t lastSource = -1, lastReplica = -1;
    for (int64_t s = 0; s < n; ++s)
      for (int64_t k = 0; k < p.numReplicas(e); ++k) {
        if (split[s * total + p.replicasBegin(e)[k]] == 0)
          continue;
        EXPECT_TRUE(s > lastSource || k >= lastReplica)
            << "expert " << e << " source " << s << " replica " << k;
        EXPECT_GE(k, lastReplica) << "expert " << e << " source " << s;
        lastSource = s;
        lastReplica = k;
      }
  }
}

// A random valid placement: every expert in one random slot, then the
// other slots randomly empty or another expert the rank does not hold.
ExpertPlacement randomPlacement(std::mt19937 &rng, int64_t experts,
                                int64_t ranks, int64_t slots) {
  int64_t total = ranks * slots;
  std::vector<int64_t> order(total);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  Ids ids(total, -1);
  for (int64_t e = 0; e < experts; ++e)
    ids[order[e]] = static_cast<int32_t>(e);
  for (int64_t i = experts; i < total; ++i) {
    int64_t g = order[i], r = g / slots;
    int32_t e = static_cast<int32_t>(rng() % (experts + 1)) - 1;
    bool held = false;
    for (int64_t j = 0; j < slots; ++j)
      held |= ids[r * slots + j] == e;
    if (!held)
      ids[g] = e;
  }
  return ExpertPlacement(experts, ranks, slots, ids);
}

Rows randomCounts(std::mt19937 &rng, int64_t ranks, int64_t experts) {
  Rows counts(ranks * experts);
  for (int64_t &c : counts)
    c = rng() % 3 == 0 ? 0 : static_cast<int64_t>(rng() % 40);
  return counts;
}

//===----------------------------------------------------------------------===//
// ExpertPlacement
//===----------------------------------------------------------------------===//

TEST(ExpertPlacement, RejectsNoRanks) {
  expectBadPlacement(2, 0, 2, {}, "expert placement: needs at least one rank");
}

TEST(ExpertPlacement, RejectsNoSlots) {
  expectBadPlacement(2, 2, 0, {}, "at least one slot per rank");
}

TEST(ExpertPlacement, RejectsNoExperts) {
  expectBadPlacement(0, 1, 1, {-1}, "number of experts");
}

TEST(ExpertPlacement, RejectsSizeMismatch) {
  expectBadPlacement(2, 2, 2, {0, 1, -1},
                     "3 slot entries for 2 ranks of 2 slots");
}

TEST(ExpertPlacement, RejectsExpertOutOfRange) {
  expectBadPlacement(8, 4, 2, {0, 1, 2, 3, 4, 9, 6, 7},
                     "expert placement: slot 5 holds expert 9, but there are "
                     "8 experts");
}

TEST(ExpertPlacement, RejectsNegativeExpert) {
  expectBadPlacement(2, 1, 3, {0, -2, 1}, "slot 1 holds expert -2");
}

TEST(ExpertPlacement, RejectsExpertWithoutSlot) {
  expectBadPlacement(4, 2, 2, {0, 1, 2, -1},
                     "expert placement: expert 3 has no slot");
}

TEST(ExpertPlacement, RejectsExpertTwiceOnRank) {
  expectBadPlacement(3, 2, 2, {0, 1, 2, 2},
                     "expert placement: rank 1 holds expert 2 twice");
}

TEST(ExpertPlacement, MessagesAreOneLine) {
  try {
    ExpertPlacement(4, 2, 2, {0, 1, 2, -1});
    FAIL();
  } catch (const std::invalid_argument &err) {
    EXPECT_EQ(std::string(err.what()).find('\n'), std::string::npos);
  }
}

TEST(ExpertPlacement, IndexesReplicas) {
  // Rank 0: {2, 0}, rank 1: {1, 2}, rank 2: {0, empty}.
  ExpertPlacement p(3, 3, 2, {2, 0, 1, 2, 0, -1});
  EXPECT_EQ(p.experts(), 3);
  EXPECT_EQ(p.ranks(), 3);
  EXPECT_EQ(p.slots(), 2);
  EXPECT_EQ(replicasOf(p, 0), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(replicasOf(p, 1), (std::vector<int64_t>{2}));
  EXPECT_EQ(replicasOf(p, 2), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(p.expertAt(1, 1), 2);
  EXPECT_EQ(p.expertAt(2, 1), -1);
  EXPECT_TRUE(p.hasReplicas());

  ExpertPlacement moved(3, 3, 2, {2, -1, -1, 0, 1, -1});
  EXPECT_FALSE(moved.hasReplicas());
  EXPECT_EQ(replicasOf(moved, 0), (std::vector<int64_t>{3}));
  EXPECT_EQ(replicasOf(moved, 2), (std::vector<int64_t>{0}));
  EXPECT_NE(p, moved);
  EXPECT_EQ(p, ExpertPlacement(3, 3, 2, {2, 0, 1, 2, 0, -1}));
}

TEST(ExpertPlacement, StaticSplit) {
  ExpertPlacement full = ExpertPlacement::staticSplit(8, 4, 2);
  EXPECT_EQ(full.slotExperts(), (Ids{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_FALSE(full.hasReplicas());
  EXPECT_EQ(replicasOf(full, 5), (std::vector<int64_t>{5}));

  ExpertPlacement spare = ExpertPlacement::staticSplit(8, 4, 3);
  EXPECT_EQ(spare.slotExperts(), (Ids{0, 1, -1, 2, 3, -1, 4, 5, -1, 6, 7, -1}));
  EXPECT_EQ(replicasOf(spare, 5), (std::vector<int64_t>{7}));
}

TEST(ExpertPlacement, StaticSplitNeedsDivisibleExperts) {
  expectThrowWith<std::invalid_argument>(
      [] { ExpertPlacement::staticSplit(6, 4, 2); }, "6 experts on 4 ranks");
  expectThrowWith<std::invalid_argument>(
      [] { ExpertPlacement::staticSplit(8, 4, 1); }, "needs 2 slots");
}

//===----------------------------------------------------------------------===//
// Placement policies
//===----------------------------------------------------------------------===//

ExpertPlacement placeWith(const std::string &spec,
                          const ExpertPlacement &current, const Rows &load,
                          int64_t layer = 0) {
  std::vector<double> seconds(current.ranks(), 1.0);
  PlacementRequest request;
  request.layer = layer;
  request.current = &current;
  request.expertLoad = load.data();
  request.rankExpertSeconds = seconds.data();
  return makePlacementPolicy(spec)->place(request);
}

TEST(PlacementPolicy, StaticRestoresStaticSplit) {
  ExpertPlacement current(8, 4, 3, {7, 0, 1, 2, 3, 0, 4, 5, 6, 6, 7, -1});
  Rows load(8, 5);
  EXPECT_EQ(placeWith("static", current, load).slotExperts(),
            (Ids{0, 1, -1, 2, 3, -1, 4, 5, -1, 6, 7, -1}));
  EXPECT_EQ(makePlacementPolicy("static")->name(), "static");

  ExpertPlacement odd(6, 4, 2, {0, 1, 2, 3, 4, 5, -1, -1});
  expectThrowWith<std::runtime_error>(
      [&] { placeWith("static", odd, Rows(6, 1)); }, "placement policy static");
}

TEST(PlacementPolicy, ReplicateHotSpreadsOneHotExpert) {
  // Mean load 12.5; expert 0 gets a replica on every other rank (each then
  // the least loaded), stopping at 4 replicas on 4 ranks.
  ExpertPlacement current = ExpertPlacement::staticSplit(8, 4, 3);
  Rows load = {100, 0, 0, 0, 0, 0, 0, 0};
  ExpertPlacement next = placeWith("replicate-hot", current, load);
  EXPECT_EQ(next.slotExperts(), (Ids{0, 1, -1, 2, 3, 0, 4, 5, 0, 6, 7, 0}));
  EXPECT_EQ(replicasOf(next, 0), (std::vector<int64_t>{0, 5, 8, 11}));
}

TEST(PlacementPolicy, ReplicateHotLeastLoadedRankAndMeanStop) {
  // Mean 25. Expert 0 (40) -> rank 3 (load 10). Then expert 1 (30): ranks
  // 0 and 2 both have 20 and room; rank 0, the lower. Then expert 0 is at
  // 20 per replica, under the mean: stop.
  ExpertPlacement current = ExpertPlacement::staticSplit(4, 4, 2);
  Rows load = {40, 30, 20, 10};
  EXPECT_EQ(placeWith("replicate-hot", current, load).slotExperts(),
            (Ids{0, 1, 1, -1, 2, -1, 3, 0}));

  // The same tie goes to a rank that holds expert 1 now.
  ExpertPlacement holding(4, 4, 2, {0, -1, 1, -1, 2, 1, 3, -1});
  EXPECT_EQ(placeWith("replicate-hot", holding, load).slotExperts(),
            (Ids{0, -1, 1, -1, 2, 1, 3, 0}));

  // Load per replica equal to the mean does not replicate: 50 -> rank 2,
  // 50 -> rank 3, then 25 per replica = mean.
  EXPECT_EQ(placeWith("replicate-hot", current, {50, 50, 0, 0}).slotExperts(),
            (Ids{0, -1, 1, -1, 2, 0, 3, 1}));
}

TEST(PlacementPolicy, ReplicateHotUniformLoadKeepsStatic) {
  ExpertPlacement current(8, 4, 3, {7, 0, 1, 2, 3, 0, 4, 5, 6, 6, 7, -1});
  EXPECT_EQ(placeWith("replicate-hot", current, Rows(8, 10)),
            ExpertPlacement::staticSplit(8, 4, 3));
  EXPECT_EQ(placeWith("replicate-hot", current, Rows(8, 0)),
            ExpertPlacement::staticSplit(8, 4, 3));
}

TEST(PlacementPolicy, ReplicateHotWithoutSpareSlotsIsStatic) {
  ExpertPlacement current(8, 4, 2, {1, 0, 2, 3, 4, 5, 6, 7});
  Rows load = {1000, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(placeWith("replicate-hot", current, load),
            ExpertPlacement::staticSplit(8, 4, 2));
}

TEST(PlacementPolicy, ReplicateHotOnlyFillsRoomOnOtherRanks) {
  // Rank 1 has the only free slot expert 0 can use; expert 1 would need
  // one on rank 1 too (rank 0 holds it), so it gets none.
  ExpertPlacement current = ExpertPlacement::staticSplit(4, 2, 3);
  EXPECT_EQ(placeWith("replicate-hot", current, {60, 30, 10, 0}).slotExperts(),
            (Ids{0, 1, -1, 2, 3, 0}));
}

// Random loads: primaries stay put, slots and ranks are respected, every
// replica was earned (above the mean when it was added) and no candidate
// above the mean was left out.
TEST(PlacementPolicy, ReplicateHotProperties) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    int64_t n = 1 + rng() % 5, perRank = 1 + rng() % 4;
    int64_t experts = n * perRank, slots = perRank + rng() % 4;
    Rows load(experts);
    for (int64_t &l : load)
      l = rng() % 4 == 0 ? 0 : static_cast<int64_t>(rng() % 1000);
    ExpertPlacement next = placeWith(
        "replicate-hot", ExpertPlacement::staticSplit(experts, n, slots), load);
    SCOPED_TRACE("trial " + std::to_string(trial));
    ASSERT_EQ(next.experts(), experts);
    ASSERT_EQ(next.ranks(), n);
    ASSERT_EQ(next.slots(), slots);
    int64_t sum = std::accumulate(load.begin(), load.end(), int64_t(0));
    Rows used(n, 0);
    for (int64_t g = 0; g < n * slots; ++g)
      used[g / slots] += next.slotExperts()[g] >= 0;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < perRank; ++i)
        EXPECT_EQ(next.expertAt(r, i), r * perRank + i);
    for (int64_t e = 0; e < experts; ++e) {
      int64_t k = next.numReplicas(e);
      EXPECT_LE(k, n);
      // Fractions compared exactly: load/(k-1) > sum/E.
      if (k > 1) {
        EXPECT_GT(load[e] * experts, sum * (k - 1)) << "expert " << e;
      }
      bool room = false;
      for (int64_t r = 0; r < n; ++r) {
        bool held = false;
        for (int64_t i = 0; i < slots; ++i)
          held |= next.expertAt(r, i) == e;
        room |= !held && used[r] < slots;
      }
      if (room) {
        EXPECT_LE(load[e] * experts, sum * k) << "expert " << e;
      }
    }
  }
}

// Zipf-like load: the most loaded rank's estimate (load per replica summed
// over its slots) goes down.
TEST(PlacementPolicy, ReplicateHotLowersMaxRankLoad) {
  int64_t experts = 16, n = 4, slots = 6;
  Rows load(experts);
  for (int64_t e = 0; e < experts; ++e)
    load[e] = 12000 / (e + 1);
  auto maxRankLoad = [&](const ExpertPlacement &p) {
    double most = 0;
    for (int64_t r = 0; r < n; ++r) {
      double sum = 0;
      for (int64_t i = 0; i < slots; ++i)
        if (int32_t e = p.expertAt(r, i); e >= 0)
          sum += double(load[e]) / double(p.numReplicas(e));
      most = std::max(most, sum);
    }
    return most;
  };
  ExpertPlacement before = ExpertPlacement::staticSplit(experts, n, slots);
  ExpertPlacement after = placeWith("replicate-hot", before, load);
  EXPECT_TRUE(after.hasReplicas());
  // Static: rank 0 holds 12000 + 6000 + 4000 + 3000.
  EXPECT_DOUBLE_EQ(maxRankLoad(before), 25000);
  EXPECT_LT(maxRankLoad(after), 0.75 * maxRankLoad(before));
}

//===----------------------------------------------------------------------===//
// Dispatch policies
//===----------------------------------------------------------------------===//

TEST(DispatchPolicy, Names) {
  EXPECT_EQ(makeDispatchPolicy("first")->name(), "first");
  EXPECT_EQ(makeDispatchPolicy("least-loaded")->name(), "least-loaded");
  EXPECT_FALSE(makeDispatchPolicy("first")->checkAgreement());
  EXPECT_FALSE(makeDispatchPolicy("least-loaded")->checkAgreement());
}

// Two ranks; expert 0 in slots 0 (rank 0) and 3 (rank 1).
TEST(DispatchPolicy, TwoRanksOneReplicatedExpert) {
  ExpertPlacement p(3, 2, 2, {0, 1, 2, 0});
  Rows counts = {6, 1, 2, //
                 4, 3, 0};
  EXPECT_EQ(splitWith("first", p, counts), (Rows{6, 1, 2, 0, //
                                                 4, 3, 0, 0}));
  // Singles: rank 0 gets 4, rank 1 gets 2; expert 0's 10 rows level them
  // at 8: slot 0 takes 4, slot 3 takes 6. Rows in source order: slot 0
  // gets source 0's first 4, slot 3 source 0's other 2 and source 1's 4.
  Rows split = splitWith("least-loaded", p, counts);
  EXPECT_EQ(split, (Rows{4, 1, 2, 2, //
                         0, 3, 0, 4}));
  EXPECT_EQ(received(p, split), (Rows{8, 8}));
}

// Three replicas, uneven remainder.
TEST(DispatchPolicy, WaterFillRemainder) {
  // Expert 0 in slots 0, 2, 4 (ranks 0, 1, 2); slot 5 empty.
  ExpertPlacement p(3, 3, 2, {0, 1, 0, 2, 0, -1});
  Rows counts = {3, 2, 1, //
                 2, 0, 0, //
                 2, 0, 0};
  EXPECT_EQ(splitWith("first", p, counts), (Rows{3, 2, 0, 1, 0, 0, //
                                                 2, 0, 0, 0, 0, 0, //
                                                 2, 0, 0, 0, 0, 0}));
  // Singles: ranks 2, 1, 0. Expert 0's 7 rows: ranks to 2, 2, 2 (3 rows),
  // 4 left: 1 each, the extra one to rank 2 (least loaded before). Slot
  // shares 1, 2, 4 over rows [0,3) of source 0, [3,5) of 1, [5,7) of 2.
  Rows split = splitWith("least-loaded", p, counts);
  EXPECT_EQ(split, (Rows{1, 2, 2, 1, 0, 0, //
                         0, 0, 0, 0, 2, 0, //
                         0, 0, 0, 0, 2, 0}));
  EXPECT_EQ(received(p, split), (Rows{3, 3, 4}));
}

// Hottest expert first: expert 0 (6 rows) is levelled before expert 1.
TEST(DispatchPolicy, HottestExpertFirst) {
  // Expert 0 in slots 0 and 3, expert 1 in slots 1 and 2.
  ExpertPlacement p(2, 2, 2, {0, 1, 1, 0});
  Rows counts = {5, 3, //
                 1, 0};
  // Expert 0: 3 and 3. Expert 1 (3 rows) on ranks at 3 and 3: 1 each, the
  // extra one to slot 1 (lower slot). Expert 1 first would give 2, 1 then
  // expert 0 2, 4.
  Rows split = splitWith("least-loaded", p, counts);
  EXPECT_EQ(split, (Rows{3, 2, 1, 2, //
                         0, 0, 0, 1}));
  EXPECT_EQ(received(p, split), (Rows{5, 4}));
}

// Least-loaded is greedy: here "first" happens to be balanced (10 rows per
// rank) and least-loaded is not. Kept as a record of the algorithm.
TEST(DispatchPolicy, LeastLoadedIsGreedy) {
  // Expert 0 in slots 0, 3 (ranks 0, 1); expert 1 in slots 2, 5 (ranks 1,
  // 2); expert 2 only in slot 4 (rank 2).
  ExpertPlacement p(3, 3, 2, {0, -1, 1, 0, 2, 1});
  Rows counts = {10, 10, 10, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(received(p, splitWith("first", p, counts)), (Rows{10, 10, 10}));
  // Singles: rank 2 gets 10. Expert 0: 5 and 5. Expert 1 over ranks 1 (5)
  // and 2 (10): 5 to reach 10, then 3 and 2, so ranks would receive
  // {5, 13, 12}: worse than the primaries' {10, 10, 10}, which it keeps.
  Rows split = splitWith("least-loaded", p, counts);
  EXPECT_EQ(split, splitWith("first", p, counts));
  EXPECT_EQ(received(p, split), (Rows{10, 10, 10}));
}

TEST(DispatchPolicy, NoRows) {
  ExpertPlacement p(3, 3, 2, {0, 1, 0, 2, 0, -1});
  Rows counts(9, 0);
  EXPECT_EQ(splitWith("least-loaded", p, counts), Rows(18, 0));
  EXPECT_EQ(splitWith("first", p, counts), Rows(18, 0));
}

TEST(DispatchPolicy, RejectsNegativeCounts) {
  ExpertPlacement p(2, 1, 2, {0, 1});
  for (const char *spec : {"first", "least-loaded"})
    expectThrowWith<std::runtime_error>(
        [&] {
          splitWith(spec, p, {3, -1});
        },
        std::string("dispatch policy ") + spec + ": source 0 routes -1");
}

TEST(DispatchPolicy, RandomPlacements) {
  std::mt19937 rng(12345);
  auto first = makeDispatchPolicy("first");
  auto leastLoaded = makeDispatchPolicy("least-loaded"); // reused: scratch
  for (int trial = 0; trial < 500; ++trial) {
    int64_t n = 1 + rng() % 5, slots = 1 + rng() % 4;
    int64_t experts = 1 + rng() % (n * slots);
    ExpertPlacement p = randomPlacement(rng, experts, n, slots);
    Rows counts = randomCounts(rng, n, experts);
    SCOPED_TRACE("trial " + std::to_string(trial));

    Rows a = runSplit(*first, p, counts);
    EXPECT_NO_THROW(checkSplit({&p, counts.data()}, a.data(), "first"));
    expectRowsConserved(p, counts, a);
    for (int64_t s = 0; s < n; ++s)
      for (int64_t e = 0; e < experts; ++e)
        EXPECT_EQ(a[s * n * slots + p.replicasBegin(e)[0]],
                  counts[s * experts + e]);

    Rows b = runSplit(*leastLoaded, p, counts);
    EXPECT_NO_THROW(checkSplit({&p, counts.data()}, b.data(), "ll"));
    expectRowsConserved(p, counts, b);
    expectSourceOrderCut(p, b);
    if (!p.hasReplicas()) {
      EXPECT_EQ(a, b);
    }
    Rows ra = received(p, a), rb = received(p, b);
    EXPECT_LE(*std::max_element(rb.begin(), rb.end()),
              *std::max_element(ra.begin(), ra.end()));
  }
}

// With one replicated expert, levelling never makes the busiest rank busier
// than sending everything to the primary.
TEST(DispatchPolicy, LeastLoadedNoWorseWithOneHotExpert) {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 300; ++trial) {
    int64_t n = 2 + rng() % 4, perRank = 1 + rng() % 3;
    int64_t experts = n * perRank, slots = perRank + 1;
    Ids ids = ExpertPlacement::staticSplit(experts, n, slots).slotExperts();
    int32_t hot = static_cast<int32_t>(rng() % experts);
    for (int64_t r = 0; r < n; ++r)
      if (r != hot / perRank && rng() % 2)
        ids[r * slots + perRank] = hot;
    ExpertPlacement p(experts, n, slots, ids);
    Rows counts = randomCounts(rng, n, experts);
    for (int64_t s = 0; s < n; ++s)
      counts[s * experts + hot] *= 1 + rng() % 5;
    SCOPED_TRACE("trial " + std::to_string(trial));
    EXPECT_LE(maxOf(received(p, splitWith("least-loaded", p, counts))),
              maxOf(received(p, splitWith("first", p, counts))));
  }
}

TEST(CheckSplit, CatchesCorruptedSplits) {
  ExpertPlacement p(3, 3, 2, {0, 1, 0, 2, 0, -1});
  Rows counts = {3, 2, 1, 2, 0, 0, 2, 0, 0};
  Rows good = {1, 2, 2, 1, 0, 0, //
               0, 0, 0, 0, 2, 0, //
               0, 0, 0, 0, 2, 0};
  DispatchRequest request{&p, counts.data()};
  EXPECT_NO_THROW(checkSplit(request, good.data(), "x"));

  Rows missing = good;
  missing[2] = 1; // source 0 sends 2 of its 3 expert-0 rows
  expectThrowWith<std::runtime_error>(
      [&] { checkSplit(request, missing.data(), "mine"); },
      "dispatch policy mine: source 0 sends 2 rows to the replicas of "
      "expert 0, but routes 3");

  Rows wrongSlot = good;
  --wrongSlot[1]; // an expert-1 row of source 0 goes to expert 2's slot
  ++wrongSlot[3];
  expectThrowWith<std::runtime_error>(
      [&] { checkSplit(request, wrongSlot.data(), "mine"); },
      "source 0 sends 2 rows to slot 3, but routes only 1 to expert 2");

  Rows moved = good; // source 1's rows of expert 0 to a slot of expert 1
  moved[6 + 4] = 0;
  moved[6 + 1] = 2;
  expectThrowWith<std::runtime_error>(
      [&] { checkSplit(request, moved.data(), "mine"); },
      "source 1 sends 2 rows to slot 1, but routes only 0 to expert 1");

  Rows negative = good;
  negative[0] = -1;
  negative[2] = 4;
  expectThrowWith<std::runtime_error>(
      [&] { checkSplit(request, negative.data(), "mine"); },
      "source 0 sends -1 rows to slot 0");

  Rows empty = good;
  empty[12 + 5] = 1;
  expectThrowWith<std::runtime_error>(
      [&] { checkSplit(request, empty.data(), "mine"); },
      "source 2 sends 1 rows to the empty slot 5");

  Rows duplicated = good; // one row sent twice
  ++duplicated[12 + 0];
  expectThrowWith<std::runtime_error>(
      [&] { checkSplit(request, duplicated.data(), "mine"); },
      "source 2 sends 3 rows to the replicas of expert 0, but routes 2");
}

//===----------------------------------------------------------------------===//
// Spec names and plugins
//===----------------------------------------------------------------------===//

TEST(PolicySpecs, UnknownNames) {
  expectThrowWith<std::invalid_argument>(
      [] { makePlacementPolicy("hot"); },
      "unknown placement policy 'hot' (expected static, replicate-hot or "
      "plugin:PATH)");
  expectThrowWith<std::invalid_argument>(
      [] { makeDispatchPolicy("round-robin"); },
      "unknown dispatch policy 'round-robin' (expected first, least-loaded "
      "or plugin:PATH)");
  expectThrowWith<std::invalid_argument>([] { makeDispatchPolicy(""); },
                                         "unknown dispatch policy ''");
}

TEST(PolicySpecs, PluginThatCannotLoad) {
  expectThrowWith<std::invalid_argument>(
      [] { makePlacementPolicy("plugin:/nonexistent/libpolicy.so"); },
      "placement policy plugin:/nonexistent/libpolicy.so: ");
  expectThrowWith<std::invalid_argument>(
      [] { makeDispatchPolicy("plugin:/nonexistent/libpolicy.so"); },
      "dispatch policy plugin:/nonexistent/libpolicy.so: ");
  expectThrowWith<std::invalid_argument>([] { makePlacementPolicy("plugin:"); },
                                         "no library path");
  // A library without the symbol.
  expectThrowWith<std::invalid_argument>(
      [] { makePlacementPolicy("plugin:libm.so.6"); }, "moe_place_experts");
  expectThrowWith<std::invalid_argument>(
      [] { makeDispatchPolicy("plugin:libm.so.6"); }, "moe_split_tokens");
}

// Sets an environment variable for one scope.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    setenv(name, value, 1);
  }
  ~ScopedEnv() { unsetenv(name_); }

private:
  const char *name_;
};

class PluginTest : public ::testing::Test {
protected:
  void SetUp() override {
    const char *path = std::getenv("MOE_PLACEMENT_PLUGIN");
    if (!path || !*path)
      GTEST_SKIP() << "MOE_PLACEMENT_PLUGIN is not set";
    spec = std::string("plugin:") + path;
  }
  std::string spec;
};

TEST_F(PluginTest, Places) {
  auto policy = makePlacementPolicy(spec);
  EXPECT_EQ(policy->name(), spec);
  ExpertPlacement current = ExpertPlacement::staticSplit(8, 4, 3);
  Rows load(8, 1);
  std::vector<double> seconds(4, 0.5);
  PlacementRequest request{3, &current, load.data(), seconds.data()};
  EXPECT_EQ(policy->place(request).slotExperts(),
            (Ids{6, 7, -1, 4, 5, -1, 2, 3, -1, 0, 1, -1}));
}

TEST_F(PluginTest, PlaceErrors) {
  ExpertPlacement current = ExpertPlacement::staticSplit(8, 4, 2);
  Rows load(8, 1);
  expectThrowWith<std::runtime_error>(
      [&] { placeWith(spec, current, load, 99); },
      "placement policy " + spec + ": example plugin refuses layer 99");
  {
    ScopedEnv fail("MOE_PLUGIN_FAIL", "1");
    expectThrowWith<std::runtime_error>(
        [&] { placeWith(spec, current, load, 2); },
        "example plugin refuses layer 2");
  }
  {
    // An invalid placement from the plugin, named after the policy.
    ScopedEnv fail("MOE_PLUGIN_FAIL", "bad");
    expectThrowWith<std::runtime_error>(
        [&] { placeWith(spec, current, load); },
        "placement policy " + spec +
            ": expert placement: expert 0 has no slot");
  }
  EXPECT_NO_THROW(placeWith(spec, current, load));
}

TEST_F(PluginTest, Splits) {
  auto policy = makeDispatchPolicy(spec);
  EXPECT_EQ(policy->name(), spec);
  EXPECT_TRUE(policy->checkAgreement());
  ExpertPlacement p(3, 2, 2, {0, 1, 2, 0});
  Rows counts = {6, 1, 2, //
                 4, 3, 0};
  // Every row of expert 0 to its highest slot, 3.
  EXPECT_EQ(runSplit(*policy, p, counts), (Rows{0, 1, 2, 6, //
                                                0, 3, 0, 4}));
}

TEST_F(PluginTest, SplitErrors) {
  auto policy = makeDispatchPolicy(spec);
  ExpertPlacement p(3, 2, 2, {0, 1, 2, 0});
  Rows counts = {6, 1, 2, 4, 3, 0};
  {
    ScopedEnv fail("MOE_PLUGIN_FAIL", "1");
    expectThrowWith<std::runtime_error>(
        [&] { runSplit(*policy, p, counts); },
        "dispatch policy " + spec + ": example plugin refuses to split");
  }
  {
    // The plugin sends no row; checkSplit names the policy.
    ScopedEnv fail("MOE_PLUGIN_FAIL", "bad");
    expectThrowWith<std::runtime_error>(
        [&] { runSplit(*policy, p, counts); },
        "dispatch policy " + spec +
            ": source 0 sends 0 rows to the replicas of expert 0, but "
            "routes 6");
  }
}

} // namespace
