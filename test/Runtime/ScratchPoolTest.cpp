//===- ScratchPoolTest.cpp - The collectives' scratch pool ----------------===//
//
// The pool over a counting allocator: blocks are reused within their size
// class instead of allocated per request, a class keeps at most
// kKeptPerClass blocks, trim and destruction free everything, and every
// block is freed exactly once.
//
//===----------------------------------------------------------------------===//

#include "core/ScratchPool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <stdexcept>

using moe::rt::ScratchPool;

namespace {

/// malloc/free that remembers what is outstanding.
struct CountingMemory {
  std::set<void *> outstanding;
  int frees = 0;
  ScratchPool pool() {
    return ScratchPool(
        [this](size_t bytes) {
          void *p = std::malloc(bytes);
          outstanding.insert(p);
          return p;
        },
        [this](void *p) {
          EXPECT_EQ(outstanding.erase(p), 1u) << "freed twice or never made";
          ++frees;
          std::free(p);
        });
  }
};

} // namespace

TEST(ScratchPool, ClassesRoundUpByAtMostAQuarter) {
  EXPECT_EQ(ScratchPool::classBytes(1), 256u);
  EXPECT_EQ(ScratchPool::classBytes(256), 256u);
  EXPECT_EQ(ScratchPool::classBytes(257), 512u);
  EXPECT_EQ(ScratchPool::classBytes(4096), 4096u);
  EXPECT_EQ(ScratchPool::classBytes(4097), 5120u); // 4096 + 4096 / 4
  for (size_t bytes :
       {4097ul, 10000ul, 1ul << 20, (1ul << 20) + 1, 3ul << 30, 123456789ul}) {
    size_t c = ScratchPool::classBytes(bytes);
    EXPECT_GE(c, bytes);
    EXPECT_LE(double(c), double(bytes) * 1.25 + 256) << bytes;
    EXPECT_EQ(ScratchPool::classBytes(c), c) << "a class is its own class";
  }
}

TEST(ScratchPool, ReusesReleasedBlocksOfTheSameClass) {
  CountingMemory memory;
  {
    ScratchPool pool = memory.pool();
    bool fresh = false;
    void *a = pool.acquire(1000, &fresh);
    EXPECT_TRUE(fresh);
    pool.release(a);
    // Many collectives of similar sizes: one allocation in all.
    for (int i = 0; i < 100; ++i) {
      void *b = pool.acquire(900 + i, &fresh);
      EXPECT_EQ(b, a);
      EXPECT_FALSE(fresh);
      pool.release(b);
    }
    EXPECT_EQ(pool.allocations(), 1);
    // Two at once (send and receive staging): a second block.
    void *b = pool.acquire(1000), *c = pool.acquire(1000);
    EXPECT_NE(b, c);
    EXPECT_EQ(pool.allocations(), 2);
    EXPECT_EQ(pool.liveBytes(), 2 * ScratchPool::classBytes(1000));
    pool.release(b);
    pool.release(c);
    EXPECT_EQ(pool.liveBytes(), 0u);
    EXPECT_EQ(pool.cachedBytes(), 2 * ScratchPool::classBytes(1000));
    // Another class does not take them.
    void *big = pool.acquire(1 << 20, &fresh);
    EXPECT_TRUE(fresh);
    pool.release(big);
    EXPECT_EQ(memory.frees, 0);
  }
  EXPECT_TRUE(memory.outstanding.empty()) << "destruction frees the cache";
}

TEST(ScratchPool, KeepsABoundedNumberPerClass) {
  CountingMemory memory;
  ScratchPool pool = memory.pool();
  std::vector<void *> blocks;
  for (int i = 0; i < 5; ++i)
    blocks.push_back(pool.acquire(300));
  for (void *b : blocks)
    pool.release(b);
  EXPECT_EQ(memory.frees, int(5 - ScratchPool::kKeptPerClass));
  EXPECT_EQ(pool.cachedBytes(),
            ScratchPool::kKeptPerClass * ScratchPool::classBytes(300));
  pool.trim();
  EXPECT_EQ(pool.cachedBytes(), 0u);
  EXPECT_TRUE(memory.outstanding.empty());
}

TEST(ScratchPool, FreesBlocksStillHandedOutAtDestruction) {
  CountingMemory memory;
  {
    ScratchPool pool = memory.pool();
    pool.acquire(100);
    pool.acquire(100000);
  }
  EXPECT_TRUE(memory.outstanding.empty());
}

TEST(ScratchPool, RefusesAForeignPointer) {
  CountingMemory memory;
  ScratchPool pool = memory.pool();
  int local = 0;
  EXPECT_THROW(pool.release(&local), std::logic_error);
  void *a = pool.acquire(10);
  pool.release(a);
  EXPECT_THROW(pool.release(a), std::logic_error) << "released twice";
}
