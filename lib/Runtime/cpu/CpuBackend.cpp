//===- CpuBackend.cpp - The CPU backend -----------------------------------===//
//
// The CPU backend (CpuBackend.h): 64-byte aligned host memory and the fp32
// kernels of CpuKernels.h, each call's method defined beside its kernel in
// the family's file.
//
//===----------------------------------------------------------------------===//

#include "CpuBackend.h"

#include <memory>

namespace moe::rt {

std::unique_ptr<Backend> makeCpuBackend() {
  return std::make_unique<CpuBackend>();
}

} // namespace moe::rt
