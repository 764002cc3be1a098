// Tests of the arena planner: validity on random lifetimes (an independent
// pairwise check), reuse, and bounds.

#include "moe/Support/MemoryPlan.h"

#include <gtest/gtest.h>

#include <random>

using moe::BufferLifetime;
using moe::MemoryPlan;

namespace {

/// No two buffers live at the same step share a byte, offsets are aligned
/// and every buffer ends inside the arena.
void expectValid(const std::vector<BufferLifetime> &buffers,
                 const MemoryPlan &plan, int64_t alignment) {
  ASSERT_EQ(plan.offsets.size(), buffers.size());
  auto size = [&](size_t i) {
    return (buffers[i].bytes + alignment - 1) / alignment * alignment;
  };
  for (size_t i = 0; i < buffers.size(); ++i) {
    EXPECT_EQ(plan.offsets[i] % alignment, 0) << "buffer " << i;
    EXPECT_LE(plan.offsets[i] + size(i), plan.arenaBytes) << "buffer " << i;
    for (size_t j = i + 1; j < buffers.size(); ++j) {
      bool together = buffers[i].first <= buffers[j].last &&
                      buffers[j].first <= buffers[i].last;
      bool apart = plan.offsets[i] + size(i) <= plan.offsets[j] ||
                   plan.offsets[j] + size(j) <= plan.offsets[i];
      EXPECT_TRUE(!together || apart) << "buffers " << i << " and " << j;
    }
  }
}

TEST(MemoryPlan, ReusesTheBufferOfADeadValue) {
  // a -> b -> c: a is dead when c is written, so c takes a's place.
  std::vector<BufferLifetime> chain = {{100, 0, 1}, {100, 1, 2}, {100, 2, 3}};
  MemoryPlan plan = moe::planMemory(chain, 64);
  expectValid(chain, plan, 64);
  EXPECT_EQ(plan.unplannedBytes, 3 * 128);
  EXPECT_EQ(plan.arenaBytes, 2 * 128);
  EXPECT_EQ(plan.offsets[0], plan.offsets[2]);
}

TEST(MemoryPlan, EmptyAndZeroSized) {
  MemoryPlan empty = moe::planMemory({}, 64);
  EXPECT_EQ(empty.arenaBytes, 0);
  std::vector<BufferLifetime> zero = {{0, 0, 5}, {64, 0, 5}};
  MemoryPlan plan = moe::planMemory(zero, 64);
  expectValid(zero, plan, 64);
  EXPECT_EQ(plan.arenaBytes, 64);
}

TEST(MemoryPlan, RandomLifetimesAreValidAndWithinBounds) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    int n = 1 + rng() % 40;
    std::vector<BufferLifetime> buffers;
    for (int i = 0; i < n; ++i) {
      int64_t first = rng() % 50;
      buffers.push_back({int64_t(rng() % 5000), first,
                         first + int64_t(rng() % 10)});
    }
    MemoryPlan plan = moe::planMemory(buffers, 64);
    expectValid(buffers, plan, 64);
    EXPECT_GE(plan.arenaBytes, moe::peakLiveBytes(buffers, 64));
    EXPECT_LE(plan.arenaBytes, plan.unplannedBytes);
  }
}

TEST(MemoryPlan, PeakLiveBytesCountsOnlyOverlaps) {
  std::vector<BufferLifetime> buffers = {{64, 0, 2}, {128, 1, 1}, {64, 3, 4}};
  EXPECT_EQ(moe::peakLiveBytes(buffers, 64), 192);
}

} // namespace
