//===- Device.h - The CUDA state kernels run with ---------------*- C++ -*-===//
//
// Private to lib/Runtime/cuda (and the CUDA tests). One Device per runtime
// context: the GPU it runs on, a non-blocking stream every kernel, copy and
// cuBLAS call of that context is queued on, a cuBLAS handle bound to the
// stream, and stream-ordered scratch memory.
//
// Every CUDA and cuBLAS return code goes through check(): a failure throws
// std::runtime_error naming the call, so the C API records it in the context
// like any other runtime error. Kernels are asynchronous: a function returns
// once its work is queued; Device::synchronize() waits for it and reports a
// fault of any kernel queued before.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_DEVICE_H
#define MOE_LIB_RUNTIME_CUDA_DEVICE_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace moe::cuda {

/// The bf16 storage element. The library is built with
/// __CUDA_NO_BFLOAT16_CONVERSIONS__ and __CUDA_NO_BFLOAT16_OPERATORS__, so
/// that arithmetic on a stored value cannot silently happen in bf16: device
/// code converts explicitly (toF32 and fromF32 in DeviceMath.cuh).
using bf16 = __nv_bfloat16;

/// Throws std::runtime_error("cuda: <what>: <CUDA's error string>").
[[noreturn]] void throwCudaError(cudaError_t error, const char *what);
[[noreturn]] void throwCublasError(cublasStatus_t status, const char *what);

inline void check(cudaError_t error, const char *what) {
  if (error != cudaSuccess)
    throwCudaError(error, what);
}
inline void check(cublasStatus_t status, const char *what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throwCublasError(status, what);
}
/// After a kernel launch: reports a bad launch configuration at once.
inline void checkLaunch(const char *kernel) {
  check(cudaGetLastError(), kernel);
}

/// Throws std::invalid_argument("moe::cuda::<kernel>: <message>"): the
/// argument checks every kernel function makes on the host before queuing.
[[noreturn]] void fail(const char *kernel, const std::string &message);
/// Throws unless value >= 0 (a size), or value >= 1 when `positive`.
void checkSize(const char *kernel, const char *name, int64_t value,
               bool positive = false);

/// The number of GPUs CUDA can use here; 0 when there is no GPU or no
/// usable driver (never throws).
int deviceCount();

class Device {
public:
  /// Makes `ordinal` current on this thread, creates the stream and the
  /// cuBLAS handle.
  explicit Device(int ordinal = 0);
  ~Device();
  Device(const Device &) = delete;
  Device &operator=(const Device &) = delete;

  int ordinal() const { return ordinal_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  int smCount() const { return smCount_; }

  /// Makes this device current on the calling thread (cheap; every entry
  /// point calls it, because local ranks are threads).
  void makeCurrent() const;

  /// Device memory of at least `bytes`, ordered on the stream: valid for the
  /// work queued until the next scratch() call, which may replace it. One
  /// kernel function that needs several temporaries carves them out of one
  /// scratch() block (alignUp below).
  void *scratch(size_t bytes);

  /// Waits for all queued work; throws on a fault of any of it.
  void synchronize();

  /// The `n` int64 values at device pointer `src`, once the work queued
  /// before has written them: copied into pinned host memory, which stays
  /// valid until the next call (a host synchronisation; the cuBLAS expert
  /// GEMMs need their row counts on the host).
  const int64_t *readToHost(const int64_t *src, int64_t n);

private:
  int ordinal_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  int smCount_ = 0;
  void *scratch_ = nullptr;
  size_t scratchBytes_ = 0;
  int64_t *pinned_ = nullptr;
  int64_t pinnedCount_ = 0;
};

inline size_t alignUp(size_t bytes, size_t alignment = 256) {
  return (bytes + alignment - 1) / alignment * alignment;
}

/// Carves consecutive aligned pieces out of one Device::scratch() block;
/// bytes<T>(count) is what take<T>(count) uses.
class ScratchCarver {
public:
  explicit ScratchCarver(void *base) : base_(static_cast<char *>(base)) {}
  template <typename T> T *take(int64_t count) {
    T *p = reinterpret_cast<T *>(base_ + used_);
    used_ += bytes<T>(count);
    return p;
  }
  template <typename T> static size_t bytes(int64_t count) {
    return alignUp(size_t(count > 1 ? count : 1) * sizeof(T));
  }

private:
  char *base_;
  size_t used_ = 0;
};

/// Blocks of `threads` covering n items (at least one block).
inline unsigned gridFor(int64_t n, unsigned threads) {
  int64_t blocks = (n + threads - 1) / threads;
  return blocks < 1 ? 1u : static_cast<unsigned>(blocks);
}

} // namespace moe::cuda

#endif // MOE_LIB_RUNTIME_CUDA_DEVICE_H
