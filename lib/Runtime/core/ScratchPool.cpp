//===- ScratchPool.cpp - Reused scratch memory of one context -------------===//

#include "ScratchPool.h"

#include <stdexcept>

namespace moe::rt {

size_t ScratchPool::classBytes(size_t bytes) {
  constexpr size_t kSmallStep = 256, kSmallLimit = 4096;
  if (bytes <= kSmallLimit)
    return bytes == 0 ? kSmallStep
                      : (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  // The largest power of two below `bytes`, in four steps to the next.
  size_t power = kSmallLimit;
  while (power * 2 < bytes)
    power *= 2;
  size_t step = power / 4;
  return (bytes + step - 1) / step * step;
}

void *ScratchPool::acquire(size_t bytes, bool *fresh) {
  size_t size = classBytes(bytes);
  void *ptr = nullptr;
  auto cached = cached_.find(size);
  if (cached != cached_.end() && !cached->second.empty()) {
    ptr = cached->second.back();
    cached->second.pop_back();
    cachedBytes_ -= size;
    if (fresh)
      *fresh = false;
  } else {
    ptr = allocate_(size);
    ++allocations_;
    if (fresh)
      *fresh = true;
  }
  live_.emplace(ptr, size);
  liveBytes_ += size;
  return ptr;
}

void ScratchPool::release(void *ptr) {
  auto it = live_.find(ptr);
  if (it == live_.end())
    throw std::logic_error("scratch pool: release of a block it did not "
                           "hand out");
  size_t size = it->second;
  live_.erase(it);
  liveBytes_ -= size;
  std::vector<void *> &kept = cached_[size];
  if (kept.size() < kKeptPerClass) {
    kept.push_back(ptr);
    cachedBytes_ += size;
  } else {
    release_(ptr);
  }
}

void ScratchPool::trim() {
  for (auto &[size, blocks] : cached_)
    for (void *ptr : blocks)
      release_(ptr);
  cached_.clear();
  cachedBytes_ = 0;
}

ScratchPool::~ScratchPool() {
  // A destructor must not throw: a failed free (a device already in error)
  // leaves the rest to the process's end.
  try {
    trim();
    for (auto &[ptr, size] : live_)
      release_(ptr);
  } catch (...) {
  }
}

} // namespace moe::rt
