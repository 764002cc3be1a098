//===- CpuBackend.h - The CPU backend's class -------------------*- C++ -*-===//
//
// Private to lib/Runtime/cpu. The CPU backend's memory, storage and routing
// statistics are defined here and in CpuBackend.cpp; its method for each
// runtime call (declared below from CApiCalls.def) is defined next to the
// call's fp32 kernel, in the kernel family's file (DenseKernels.cpp,
// AttentionKernels.cpp, FfnKernels.cpp, RouterKernels.cpp,
// ExpertKernels.cpp, LossKernels.cpp, Optimizer.cpp). Under bf16 storage a
// method widens its inputs, runs the fp32 kernel and rounds its outputs
// once (Widened), which makes it the reference for the GPU's bf16 kernels.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CPU_CPUBACKEND_H
#define MOE_LIB_RUNTIME_CPU_CPUBACKEND_H

#include "moe/Runtime/BFloat16.h"
#include "moe/Runtime/Backend.h"

#include <cstdlib>
#include <cstring>
#include <deque>
#include <new>
#include <utility>
#include <vector>

namespace moe::rt {

/// Under bf16 storage the fp32 kernels run on widened copies: in() widens an
/// input, out() an output's current contents (so that what a kernel leaves
/// alone round-trips exactly), and store() rounds the outputs back once the
/// kernel succeeded. Under fp32 storage every pointer passes through.
class Widened {
public:
  explicit Widened(StorageType storage) : bf16_(storage == StorageType::BF16) {}

  const float *in(const float *p, int64_t n) {
    return bf16_ && p ? widen(p, n) : p;
  }
  float *out(float *p, int64_t n) {
    if (!bf16_ || !p)
      return p;
    float *copy = widen(p, n);
    outputs_.push_back({p, copy, n});
    return copy;
  }
  void store() {
    for (const Output &o : outputs_)
      narrowToBf16(o.copy, reinterpret_cast<uint16_t *>(o.target), o.n);
  }

private:
  float *widen(const float *p, int64_t n) {
    copies_.emplace_back(n > 0 ? n : 0);
    widenBf16(reinterpret_cast<const uint16_t *>(p), copies_.back().data(), n);
    return copies_.back().data();
  }
  struct Output {
    float *target;
    float *copy;
    int64_t n;
  };
  bool bf16_;
  std::deque<std::vector<float>> copies_;
  std::vector<Output> outputs_;
};

class CpuBackend final : public Backend {
public:
  const char *name() const override { return "cpu"; }
  bool deviceMemory() const override { return false; }

  void *allocate(size_t bytes) override {
    size_t rounded = (bytes + 63) / 64 * 64;
    void *ptr = std::aligned_alloc(64, rounded ? rounded : 64);
    if (!ptr)
      throw std::bad_alloc();
    std::memset(ptr, 0, rounded ? rounded : 64);
    return ptr;
  }
  void release(void *ptr) override { std::free(ptr); }
  void upload(void *dst, const void *src, size_t bytes) override {
    if (bytes)
      std::memmove(dst, src, bytes);
  }
  void download(void *dst, const void *src, size_t bytes) override {
    upload(dst, src, bytes);
  }
  void copy(void *dst, const void *src, size_t bytes) override {
    upload(dst, src, bytes);
  }
  void zero(void *ptr, size_t bytes) override {
    if (bytes)
      std::memset(ptr, 0, bytes);
  }
  void synchronize() override {}

  std::vector<std::vector<int64_t>> takeExpertCounts() override {
    return std::exchange(expertCounts_, {});
  }
  std::vector<int64_t> takeDroppedSlots() override {
    return std::exchange(droppedSlots_, {});
  }

  void setStorage(StorageType type) override { storage_ = type; }
  void convert(void *dst, StorageType dstType, const void *src,
               StorageType srcType, int64_t n) override {
    if (n <= 0)
      return;
    if (dstType == srcType)
      std::memmove(dst, src, n * storageBytes(dstType));
    else if (dstType == StorageType::F32)
      widenBf16(static_cast<const uint16_t *>(src), static_cast<float *>(dst),
                n);
    else
      narrowToBf16(static_cast<const float *>(src),
                   static_cast<uint16_t *>(dst), n);
  }

#define MOERT_AS_CXX_PARAMETERS
#define MOERT_CALL(cname, ...)
#define MOERT_KERNEL(cname, method, ...) void method(__VA_ARGS__) override;
#include "moe/Runtime/CApiCalls.def"

private:
  std::vector<std::vector<int64_t>> expertCounts_;
  std::vector<int64_t> droppedSlots_;
};

} // namespace moe::rt

#endif // MOE_LIB_RUNTIME_CPU_CPUBACKEND_H
