//===- Backend.cpp - What every backend shares, and the registry ----------===//
//
// The Backend base class's defaults (host-clock timing marks, row-by-row 2-D
// copies) and the registry of backends and device communicators: the CPU
// backend is always there; MoERuntimeCUDA registers the CUDA backend and the
// driver the device communicator (NCCL), so that MoERuntime itself never
// names a CUDA or NCCL symbol.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Backend.h"
#include "moe/Runtime/Trace.h"

#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

namespace moe::rt {

Backend::~Backend() = default;

void Backend::addF32(const float *a, const float *b, float *out, int64_t n) {
  struct Restore {
    Backend &backend;
    StorageType saved = backend.storage();
    ~Restore() { backend.setStorage(saved); }
  } restore{*this};
  setStorage(StorageType::F32);
  add(a, b, out, n);
}

uint32_t Backend::mark() {
  hostMarks_.push_back(steadySeconds());
  return static_cast<uint32_t>(hostMarks_.size() - 1);
}

std::vector<double> Backend::resolveMarks() {
  return std::exchange(hostMarks_, {});
}

void Backend::copy2D(void *dst, size_t dstPitch, const void *src,
                     size_t srcPitch, size_t width, size_t rows) {
  for (size_t r = 0; r < rows; ++r)
    copy(static_cast<char *>(dst) + r * dstPitch,
         static_cast<const char *>(src) + r * srcPitch, width);
}

namespace {

std::mutex &factoryMutex() {
  static std::mutex mutex;
  return mutex;
}
BackendFactory &cudaFactory() {
  static BackendFactory factory = nullptr;
  return factory;
}
DeviceCommFactory &deviceCommFactory() {
  static DeviceCommFactory factory = nullptr;
  return factory;
}

} // namespace

void registerCudaBackend(BackendFactory factory) {
  std::lock_guard<std::mutex> lock(factoryMutex());
  cudaFactory() = factory;
}

void registerDeviceCommunicator(DeviceCommFactory factory) {
  std::lock_guard<std::mutex> lock(factoryMutex());
  deviceCommFactory() = factory;
}

DeviceCommFactory deviceCommunicatorFactory() {
  std::lock_guard<std::mutex> lock(factoryMutex());
  return deviceCommFactory();
}

std::unique_ptr<Backend> makeBackend(const std::string &name, int device) {
  if (name == "cpu")
    return makeCpuBackend();
  if (name == "cuda") {
    BackendFactory factory;
    {
      std::lock_guard<std::mutex> lock(factoryMutex());
      factory = cudaFactory();
    }
    if (!factory)
      throw std::runtime_error(
          "backend 'cuda' is not in this executable (it was built without "
          "the CUDA toolkit; see docs/cuda.md)");
    return factory(device);
  }
  throw std::runtime_error("unknown backend '" + name +
                           "' (expected cpu or cuda)");
}

} // namespace moe::rt
