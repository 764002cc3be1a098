//===- CudaBackend.cpp - The CUDA backend's factory -----------------------===//
//
// The class is CudaBackendImpl.h; its methods for the runtime calls are in
// the kernel family files.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CudaBackend.h"
#include "CudaBackendImpl.h"

#include <memory>

namespace moe::cuda {

std::unique_ptr<rt::Backend> makeCudaBackend(int device) {
  return std::make_unique<CudaBackend>(device);
}

} // namespace moe::cuda
