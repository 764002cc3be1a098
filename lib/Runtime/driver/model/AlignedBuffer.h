//===- AlignedBuffer.h - Zeroed, 64-byte aligned host buffers ---*- C++ -*-===//
//
// The weights blob, the arena and the logits handed to a compiled entry point
// are all MOE_BUFFER_ALIGNMENT-aligned: the compiler's memory plan assumes it
// for every offset it places a tensor at.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_ALIGNEDBUFFER_H
#define MOE_LIB_RUNTIME_DRIVER_ALIGNEDBUFFER_H

#include "moe/Runtime/ModelABI.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

namespace moe::driver {

/// `bytes` rounded up to a multiple of MOE_BUFFER_ALIGNMENT: the room a
/// buffer takes in a blob of aligned buffers.
inline uint64_t alignedSize(uint64_t bytes) {
  return (bytes + MOE_BUFFER_ALIGNMENT - 1) / MOE_BUFFER_ALIGNMENT *
         MOE_BUFFER_ALIGNMENT;
}

/// `bytes` zeroed bytes at a MOE_BUFFER_ALIGNMENT-aligned address; never
/// null, even for zero bytes, so that entry points always get a valid pointer.
/// A failed allocation throws std::runtime_error naming the size.
class AlignedBuffer {
public:
  AlignedBuffer() : AlignedBuffer(0) {}
  explicit AlignedBuffer(uint64_t bytes) : bytes_(bytes) {
    // aligned_alloc wants a size that is a multiple of the alignment.
    uint64_t rounded = alignedSize(bytes);
    if (rounded == 0)
      rounded = MOE_BUFFER_ALIGNMENT;
    void *p = rounded < bytes
                  ? nullptr
                  : std::aligned_alloc(MOE_BUFFER_ALIGNMENT, rounded);
    if (!p)
      throw std::runtime_error("out of memory: cannot allocate " +
                               std::to_string(bytes) + " bytes");
    std::memset(p, 0, rounded);
    data_.reset(static_cast<uint8_t *>(p));
  }

  uint8_t *data() { return data_.get(); }
  const uint8_t *data() const { return data_.get(); }
  uint64_t size() const { return bytes_; }

  float *f32(uint64_t offset = 0) {
    return reinterpret_cast<float *>(data() + offset);
  }
  const float *f32(uint64_t offset = 0) const {
    return reinterpret_cast<const float *>(data() + offset);
  }

private:
  struct Free {
    void operator()(uint8_t *p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  uint64_t bytes_;
};

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_ALIGNEDBUFFER_H
