//===- CudaBackendImpl.h - The CUDA backend's class -------------*- C++ -*-===//
//
// Private to lib/Runtime/cuda. The Backend of a context that runs on CUDA:
// each runtime call's method (declared below from CApiCalls.def) is defined
// beside its moe::cuda kernel in the family's file, and forwards to it on
// the context's Device (one stream, one cuBLAS handle), so calls queue up
// and run in order without host synchronisation. Memory is cudaMalloc'ed
// device memory. Tensor calls run the kernels' instantiation for the storage
// type (onStorage: fp32 or bf16); losses, sums of squares and AdamW are fp32
// whatever the storage.
//
// Routing statistics need no synchronisation either: permute queues a copy
// of its offsets (and a capacity drop one of its count) into pinned host
// memory; takeExpertCounts() waits for the stream once and reads them all.
// Timing marks (Backend::mark) are events recorded on the stream, read the
// same way: resolveMarks() waits once and places them on the host clock.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_CUDABACKENDIMPL_H
#define MOE_LIB_RUNTIME_CUDA_CUDABACKENDIMPL_H

#include "CudaKernels.h"
#include "moe/Runtime/Backend.h"
#include "moe/Runtime/Trace.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace moe::cuda {

class CudaBackend final : public rt::Backend {
public:
  explicit CudaBackend(int device) : dev_(device) {}

  ~CudaBackend() override {
    // Errors are ignored: destructors must not throw.
    cudaStreamSynchronize(dev_.stream());
    if (pinned_)
      cudaFreeHost(pinned_);
    if (dropDevice_)
      cudaFree(dropDevice_);
    for (cudaEvent_t event : events_)
      cudaEventDestroy(event);
    if (now_)
      cudaEventDestroy(now_);
  }

  const char *name() const override { return "cuda"; }
  bool deviceMemory() const override { return true; }

  void *allocate(size_t bytes) override {
    dev_.makeCurrent();
    void *ptr = nullptr;
    size_t rounded = bytes ? (bytes + 255) / 256 * 256 : 256;
    check(cudaMalloc(&ptr, rounded), "cudaMalloc");
    check(cudaMemsetAsync(ptr, 0, rounded, dev_.stream()), "cudaMemsetAsync");
    return ptr;
  }
  void release(void *ptr) override {
    if (!ptr)
      return;
    dev_.makeCurrent();
    dev_.synchronize();
    check(cudaFree(ptr), "cudaFree");
  }
  void upload(void *dst, const void *src, size_t bytes) override {
    if (!bytes)
      return;
    dev_.makeCurrent();
    // From pageable memory the copy returns once the source is staged, so
    // the caller may reuse it at once.
    check(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, dev_.stream()),
        "cudaMemcpyAsync (to device)");
  }
  void download(void *dst, const void *src, size_t bytes) override {
    if (!bytes)
      return;
    dev_.makeCurrent();
    check(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, dev_.stream()),
        "cudaMemcpyAsync (to host)");
    dev_.synchronize();
  }
  void copy(void *dst, const void *src, size_t bytes) override {
    if (!bytes || dst == src)
      return;
    dev_.makeCurrent();
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                          dev_.stream()),
          "cudaMemcpyAsync (device to device)");
  }
  void copy2D(void *dst, size_t dstPitch, const void *src, size_t srcPitch,
              size_t width, size_t rows) override {
    if (!width || !rows)
      return;
    dev_.makeCurrent();
    check(cudaMemcpy2DAsync(dst, dstPitch, src, srcPitch, width, rows,
                            cudaMemcpyDeviceToDevice, dev_.stream()),
          "cudaMemcpy2DAsync (device to device)");
  }
  void zero(void *ptr, size_t bytes) override {
    if (!bytes)
      return;
    dev_.makeCurrent();
    check(cudaMemsetAsync(ptr, 0, bytes, dev_.stream()), "cudaMemsetAsync");
  }
  void synchronize() override {
    dev_.makeCurrent();
    dev_.synchronize();
  }

  void setStorage(rt::StorageType type) override { storage_ = type; }
  void convert(void *dst, rt::StorageType dstType, const void *src,
               rt::StorageType srcType, int64_t n) override {
    cuda::convertStorage(current(), dst, dstType == rt::StorageType::BF16, src,
                         srcType == rt::StorageType::BF16, n);
  }

  std::vector<std::vector<int64_t>> takeExpertCounts() override {
    harvest();
    return std::exchange(expertCounts_, {});
  }
  std::vector<int64_t> takeDroppedSlots() override {
    harvest();
    return std::exchange(droppedSlots_, {});
  }

  // The runtime calls, one method each (CApiCalls.def), defined beside
  // their kernels in the family files (DenseKernels.cu, ...).
#define MOERT_AS_CXX_PARAMETERS
#define MOERT_CALL(cname, ...)
#define MOERT_KERNEL(cname, method, ...) void method(__VA_ARGS__) override;
#include "moe/Runtime/CApiCalls.def"

  uint32_t mark() override {
    dev_.makeCurrent();
    if (marksUsed_ == events_.size()) {
      cudaEvent_t event = nullptr;
      check(cudaEventCreate(&event), "cudaEventCreate (timing mark)");
      events_.push_back(event);
    }
    check(cudaEventRecord(events_[marksUsed_], dev_.stream()),
          "cudaEventRecord (timing mark)");
    return static_cast<uint32_t>(marksUsed_++);
  }
  std::vector<double> resolveMarks() override {
    std::vector<double> times(marksUsed_);
    if (marksUsed_ == 0)
      return times;
    dev_.makeCurrent();
    dev_.synchronize();
    // The stream is idle now: an event recorded on it completes at once, at
    // (just before) the host time read after waiting for it. Every mark is
    // placed on the host clock by its distance to that event.
    if (!now_)
      check(cudaEventCreate(&now_), "cudaEventCreate (timing mark)");
    check(cudaEventRecord(now_, dev_.stream()), "cudaEventRecord");
    check(cudaEventSynchronize(now_), "cudaEventSynchronize");
    double host = rt::steadySeconds();
    for (size_t i = 0; i < marksUsed_; ++i) {
      float ms = 0.0f;
      check(cudaEventElapsedTime(&ms, events_[i], now_),
            "cudaEventElapsedTime");
      times[i] = host - double(ms) * 1e-3;
    }
    marksUsed_ = 0;
    return times;
  }

private:
  /// Local ranks are threads sharing one GPU: every call makes the device
  /// current on the calling thread first.
  Device &current() {
    dev_.makeCurrent();
    return dev_;
  }

  /// The Backend's `float *` tensors as pointers to the storage element T.
  template <typename T> struct Stored {
    const T *operator()(const float *p) const {
      return reinterpret_cast<const T *>(p);
    }
    T *operator()(float *p) const { return reinterpret_cast<T *>(p); }
  };

  /// Runs f(device, stored) with `stored` the view of this call's storage
  /// type, so that f picks the kernels' fp32 or bf16 instantiation.
  template <typename F> void onStorage(F &&f) {
    Device &d = current();
    if (storage_ == rt::StorageType::BF16)
      f(d, Stored<bf16>{});
    else
      f(d, Stored<float>{});
  }

  enum class Stat { Counts, Dropped };
  struct PendingStat {
    Stat kind;
    size_t at;       // first int64 in pinned_
    int64_t experts; // Counts: the offsets have experts + 1 entries
  };

  /// Queues the copy of `n` device int64 values at `src` into pinned host
  /// memory, to be read by harvest().
  void queueStat(Stat kind, const int64_t *src, int64_t n, int64_t experts) {
    if (n <= 0)
      return;
    if (pinnedUsed_ + size_t(n) > pinnedCapacity_) {
      harvest(); // reads every queued value, then the slab is free again
      if (size_t(n) > pinnedCapacity_) {
        if (pinned_)
          check(cudaFreeHost(pinned_), "cudaFreeHost");
        pinned_ = nullptr;
        pinnedCapacity_ = 0;
        size_t capacity = std::max<size_t>(4096, size_t(n));
        check(cudaMallocHost(reinterpret_cast<void **>(&pinned_),
                             capacity * sizeof(int64_t)),
              "cudaMallocHost");
        pinnedCapacity_ = capacity;
      }
    }
    check(cudaMemcpyAsync(pinned_ + pinnedUsed_, src, n * sizeof(int64_t),
                          cudaMemcpyDeviceToHost, dev_.stream()),
          "cudaMemcpyAsync (routing statistics)");
    pending_.push_back({kind, pinnedUsed_, experts});
    pinnedUsed_ += size_t(n);
  }

  /// A device int64 for one capacity drop's count, valid until harvest().
  int64_t *dropCounter() {
    constexpr size_t kSlots = 1024;
    if (!dropDevice_)
      check(cudaMalloc(reinterpret_cast<void **>(&dropDevice_),
                       kSlots * sizeof(int64_t)),
            "cudaMalloc (drop counters)");
    if (dropUsed_ == kSlots)
      harvest();
    return dropDevice_ + dropUsed_++;
  }

  /// Waits for the stream and moves every queued statistic to the host
  /// lists, in program order.
  void harvest() {
    dev_.makeCurrent();
    dev_.synchronize();
    for (const PendingStat &p : pending_) {
      const int64_t *v = pinned_ + p.at;
      if (p.kind == Stat::Dropped) {
        droppedSlots_.push_back(v[0]);
        continue;
      }
      std::vector<int64_t> counts(p.experts);
      for (int64_t e = 0; e < p.experts; ++e)
        counts[e] = v[e + 1] - v[e];
      expertCounts_.push_back(std::move(counts));
    }
    pending_.clear();
    pinnedUsed_ = 0;
    dropUsed_ = 0;
  }

  Device dev_;
  int64_t *pinned_ = nullptr;
  size_t pinnedCapacity_ = 0, pinnedUsed_ = 0;
  int64_t *dropDevice_ = nullptr;
  size_t dropUsed_ = 0;
  std::vector<PendingStat> pending_;
  std::vector<std::vector<int64_t>> expertCounts_;
  std::vector<int64_t> droppedSlots_;
  // Timing marks: events_[0, marksUsed_) are recorded and not yet resolved;
  // the events are reused after each resolveMarks().
  std::vector<cudaEvent_t> events_;
  size_t marksUsed_ = 0;
  cudaEvent_t now_ = nullptr;
};

} // namespace moe::cuda

#endif // MOE_LIB_RUNTIME_CUDA_CUDABACKENDIMPL_H
