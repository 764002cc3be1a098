//===- CudaBackend.h - The CUDA backend's factory ---------------*- C++ -*-===//
//
// Defined in MoERuntimeCUDA (lib/Runtime/cuda); free of CUDA headers, so
// that the driver's main() can register the backend without them
// (moe::rt::registerCudaBackend).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_CUDABACKEND_H
#define MOE_RUNTIME_CUDABACKEND_H

#include "moe/Runtime/Backend.h"

#include <memory>

namespace moe::cuda {

/// The backend running every call on GPU `device` (fp32 or bf16 storage,
/// see docs/cuda.md); throws std::runtime_error when there is no such GPU.
std::unique_ptr<rt::Backend> makeCudaBackend(int device);

} // namespace moe::cuda

#endif // MOE_RUNTIME_CUDABACKEND_H
