//===- BackendBuffer.h - Memory of a runtime backend ------------*- C++ -*-===//

#ifndef MOE_LIB_RUNTIME_DRIVER_BACKENDBUFFER_H
#define MOE_LIB_RUNTIME_DRIVER_BACKENDBUFFER_H

#include "moe/Runtime/Backend.h"

#include <cstdint>

namespace moe::driver {

/// `bytes` of a backend's memory (device memory for CUDA), zero-filled,
/// released with the buffer.
class BackendBuffer {
public:
  BackendBuffer() = default;
  BackendBuffer(rt::Backend &backend, uint64_t bytes);
  ~BackendBuffer();
  BackendBuffer(BackendBuffer &&other) noexcept;
  BackendBuffer &operator=(BackendBuffer &&other) noexcept;
  BackendBuffer(const BackendBuffer &) = delete;
  BackendBuffer &operator=(const BackendBuffer &) = delete;

  uint8_t *data() const { return static_cast<uint8_t *>(ptr_); }
  uint64_t size() const { return bytes_; }

private:
  rt::Backend *backend_ = nullptr;
  void *ptr_ = nullptr;
  uint64_t bytes_ = 0;
};

/// A rank's gradients in the backend's memory: the fp32 blob (laid out like
/// the weights, ParamInfo::offset), or under bf16 storage the training
/// step's bf16 blob (laid out like the stored weights,
/// ParamInfo::storageOffset), which readers widen a range at a time.
struct GradBlob {
  const uint8_t *data = nullptr;
  bool bf16 = false;
};

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_BACKENDBUFFER_H
