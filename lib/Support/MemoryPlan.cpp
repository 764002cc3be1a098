//===- MemoryPlan.cpp - Greedy-by-size arena placement --------------------===//

#include "moe/Support/MemoryPlan.h"

#include <algorithm>
#include <map>
#include <numeric>

namespace moe {

namespace {

int64_t alignUp(int64_t bytes, int64_t alignment) {
  return (bytes + alignment - 1) & ~(alignment - 1);
}

bool overlapInTime(const BufferLifetime &a, const BufferLifetime &b) {
  return a.first <= b.last && b.first <= a.last;
}

} // namespace

MemoryPlan planMemory(const std::vector<BufferLifetime> &buffers,
                      int64_t alignment) {
  MemoryPlan plan;
  plan.offsets.assign(buffers.size(), 0);
  std::vector<int64_t> sizes(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    sizes[i] = alignUp(buffers[i].bytes, alignment);
    plan.unplannedBytes += sizes[i];
  }

  // Large buffers first: they are the hardest to fit into gaps later.
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (sizes[a] != sizes[b])
      return sizes[a] > sizes[b];
    return buffers[a].first < buffers[b].first;
  });

  // The placed buffers, by offset: the ones live at the same time as the
  // next buffer come out in offset order without a sort per buffer.
  std::vector<size_t> byOffset;
  for (size_t i : order) {
    // First gap from the bottom, between buffers live at the same time as
    // i, that holds i.
    int64_t offset = 0;
    for (size_t j : byOffset) {
      if (!overlapInTime(buffers[i], buffers[j]))
        continue;
      if (offset + sizes[i] <= plan.offsets[j])
        break;
      offset = std::max(offset, plan.offsets[j] + sizes[j]);
    }
    plan.offsets[i] = offset;
    plan.arenaBytes = std::max(plan.arenaBytes, offset + sizes[i]);
    byOffset.insert(std::upper_bound(byOffset.begin(), byOffset.end(), offset,
                                     [&](int64_t value, size_t j) {
                                       return value < plan.offsets[j];
                                     }),
                    i);
  }
  return plan;
}

int64_t peakLiveBytes(const std::vector<BufferLifetime> &buffers,
                      int64_t alignment) {
  // Sweep: +size at first, -size after last.
  std::map<int64_t, int64_t> delta;
  for (const BufferLifetime &b : buffers) {
    delta[b.first] += alignUp(b.bytes, alignment);
    delta[b.last + 1] -= alignUp(b.bytes, alignment);
  }
  int64_t live = 0, peak = 0;
  for (const auto &[step, change] : delta) {
    live += change;
    peak = std::max(peak, live);
  }
  return peak;
}

} // namespace moe
