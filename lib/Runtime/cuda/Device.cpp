//===- Device.cpp - Stream, cuBLAS handle and scratch of a context --------===//

#include "Device.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace moe::cuda {

void throwCudaError(cudaError_t error, const char *what) {
  throw std::runtime_error(std::string("cuda: ") + what + ": " +
                           cudaGetErrorString(error));
}

void throwCublasError(cublasStatus_t status, const char *what) {
  throw std::runtime_error(std::string("cublas: ") + what + ": " +
                           cublasGetStatusString(status));
}

void fail(const char *kernel, const std::string &message) {
  throw std::invalid_argument(std::string("moe::cuda::") + kernel + ": " +
                              message);
}

void checkSize(const char *kernel, const char *name, int64_t value,
               bool positive) {
  if (value < (positive ? 1 : 0))
    fail(kernel, std::string(name) + " must be " +
                     (positive ? "positive" : "non-negative") + ", got " +
                     std::to_string(value));
}

int deviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError(); // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

Device::Device(int ordinal) : ordinal_(ordinal) {
  int count = deviceCount();
  if (count == 0)
    throw std::runtime_error("cuda: no GPU is visible (cudaGetDeviceCount "
                             "found none or the driver is missing)");
  if (ordinal < 0 || ordinal >= count)
    throw std::runtime_error("cuda: device " + std::to_string(ordinal) +
                             " does not exist (" + std::to_string(count) +
                             " visible)");
  makeCurrent();
  check(cudaDeviceGetAttribute(&smCount_, cudaDevAttrMultiProcessorCount,
                               ordinal),
        "cudaDeviceGetAttribute");
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
        "cudaStreamCreateWithFlags");
  check(cublasCreate(&cublas_), "cublasCreate");
  check(cublasSetStream(cublas_, stream_), "cublasSetStream");
  // bf16 GEMMs run on the tensor cores, and any split-K reduction sums in
  // fp32 (not in the bf16 output type), so a bf16 result is rounded once.
  // fp32 GEMMs name the pedantic compute type themselves (DenseGemm.cu), so
  // they stay true fp32.
  check(cublasSetMathMode(
            cublas_,
            cublasMath_t(CUBLAS_DEFAULT_MATH |
                         CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
        "cublasSetMathMode");
}

Device::~Device() {
  // Destructors must not throw: errors here are ignored.
  if (scratch_)
    cudaFreeAsync(scratch_, stream_);
  if (stream_)
    cudaStreamSynchronize(stream_);
  if (pinned_)
    cudaFreeHost(pinned_);
  if (cublas_)
    cublasDestroy(cublas_);
  if (stream_)
    cudaStreamDestroy(stream_);
}

void Device::makeCurrent() const {
  check(cudaSetDevice(ordinal_), "cudaSetDevice");
}

void *Device::scratch(size_t bytes) {
  if (bytes <= scratchBytes_)
    return scratch_;
  if (scratch_)
    check(cudaFreeAsync(scratch_, stream_), "cudaFreeAsync (scratch)");
  scratch_ = nullptr;
  scratchBytes_ = 0;
  size_t grown = alignUp(bytes, size_t(1) << 20);
  check(cudaMallocAsync(&scratch_, grown, stream_),
        "cudaMallocAsync (scratch)");
  scratchBytes_ = grown;
  return scratch_;
}

void Device::synchronize() {
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

const int64_t *Device::readToHost(const int64_t *src, int64_t n) {
  if (n > pinnedCount_) {
    if (pinned_)
      check(cudaFreeHost(pinned_), "cudaFreeHost");
    pinned_ = nullptr;
    pinnedCount_ = 0;
    int64_t grown = std::max<int64_t>(n, 1024);
    check(cudaMallocHost(&pinned_, size_t(grown) * sizeof(int64_t)),
          "cudaMallocHost");
    pinnedCount_ = grown;
  }
  check(cudaMemcpyAsync(pinned_, src, size_t(n) * sizeof(int64_t),
                        cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync (to host)");
  synchronize();
  return pinned_;
}

} // namespace moe::cuda
