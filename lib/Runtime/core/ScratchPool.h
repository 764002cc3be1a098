//===- ScratchPool.h - Reused scratch memory of one context -----*- C++ -*-===//
//
// Private to lib/Runtime. The collectives' scratch (staging of dispatch and
// combine, all-gather buffers) used to be a fresh backend allocation per
// call and a release after it: on a GPU a cudaMalloc and a cudaFree, which
// synchronises the whole device, several times per MoE layer. A context now
// keeps the blocks it released and hands them out again.
//
// Blocks come in size classes: up to 4 KiB in steps of 256 bytes, above that
// four classes per doubling (so a block is at most 25% larger than asked
// for). A request takes a cached block of its class, else a new one from the
// allocator; a released block goes back to its class, which keeps at most
// kKeptPerClass of them (the rest are freed), so what the pool holds is
// bounded by the scratch a few concurrent collectives need.
//
// A reused block is NOT cleared: its contents are whatever its last user
// left. Callers that need zeroes must write them. A block must be released
// only once no queued work uses it (the collectives wait for their streams
// before they return). Not thread-safe: one pool per context, and a context
// runs on one thread.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CORE_SCRATCHPOOL_H
#define MOE_LIB_RUNTIME_CORE_SCRATCHPOOL_H

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <unordered_map>
#include <vector>

namespace moe::rt {

class ScratchPool {
public:
  using Allocate = std::function<void *(size_t bytes)>;
  using Release = std::function<void(void *ptr)>;
  /// Cached blocks kept per size class.
  static constexpr size_t kKeptPerClass = 2;

  ScratchPool(Allocate allocate, Release release)
      : allocate_(std::move(allocate)), release_(std::move(release)) {}
  /// Frees every block, cached or still handed out.
  ~ScratchPool();
  ScratchPool(const ScratchPool &) = delete;
  ScratchPool &operator=(const ScratchPool &) = delete;

  /// A block of at least `bytes` (> 0). `fresh` says whether it is new from
  /// the allocator (whose initialisation may still be pending) rather than
  /// reused.
  void *acquire(size_t bytes, bool *fresh = nullptr);
  /// Gives back a block acquire() returned (throws std::logic_error for any
  /// other pointer).
  void release(void *ptr);
  /// Frees the cached blocks (not those handed out).
  void trim();

  /// The size class of a request: the bytes a block for it has.
  static size_t classBytes(size_t bytes);

  size_t cachedBytes() const { return cachedBytes_; }
  size_t liveBytes() const { return liveBytes_; }
  /// Blocks taken from the allocator so far.
  int64_t allocations() const { return allocations_; }

private:
  Allocate allocate_;
  Release release_;
  std::map<size_t, std::vector<void *>> cached_; // by class bytes
  std::unordered_map<void *, size_t> live_;      // block -> class bytes
  size_t cachedBytes_ = 0;
  size_t liveBytes_ = 0;
  int64_t allocations_ = 0;
};

} // namespace moe::rt

#endif // MOE_LIB_RUNTIME_CORE_SCRATCHPOOL_H
