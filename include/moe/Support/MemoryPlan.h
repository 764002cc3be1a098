//===- MemoryPlan.h - Place buffers with known lifetimes in one arena -*- C++ -*-===//
//
// Plain C++ (no LLVM/MLIR): the memory-planning pass uses it on the buffers
// of a lowered function, and unit tests check it on random lifetimes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_SUPPORT_MEMORYPLAN_H
#define MOE_SUPPORT_MEMORYPLAN_H

#include <cstdint>
#include <vector>

namespace moe {

/// A buffer of `bytes` that is live from step `first` to step `last`
/// inclusive (program positions; first <= last).
struct BufferLifetime {
  int64_t bytes = 0;
  int64_t first = 0;
  int64_t last = 0;
};

struct MemoryPlan {
  /// Byte offset of each buffer, in the order given; multiples of alignment.
  std::vector<int64_t> offsets;
  /// Arena size: the end of the highest placed buffer (a multiple of
  /// alignment).
  int64_t arenaBytes = 0;
  /// The arena size without reuse: the sum of the aligned buffer sizes.
  int64_t unplannedBytes = 0;
};

/// Places the buffers so that any two whose lifetimes overlap occupy
/// disjoint byte ranges, greedily by decreasing size (ties: earlier first),
/// each at the lowest aligned offset that fits between the buffers already
/// placed that are live at the same time. `alignment` must be a power of two.
MemoryPlan planMemory(const std::vector<BufferLifetime> &buffers,
                      int64_t alignment);

/// The largest total of aligned sizes live at any one step: no valid plan
/// can use a smaller arena.
int64_t peakLiveBytes(const std::vector<BufferLifetime> &buffers,
                      int64_t alignment);

} // namespace moe

#endif // MOE_SUPPORT_MEMORYPLAN_H
