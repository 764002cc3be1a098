//===- Backend.h - Where a context's runtime calls run ----------*- C++ -*-===//
//
// Every moert_* call of CApi.h forwards to the Backend of its context: the
// CPU backend (built into MoERuntime, fp32 kernels of CpuKernels.h) or the
// CUDA backend (library MoERuntimeCUDA, kernels on one GPU). The methods take
// the C API's arguments in the C API's order, without the context: they are
// declared from the table of calls, CApiCalls.def. Every pointer points into
// the backend's memory: host memory for the CPU, device memory for CUDA.
// Scalar results (losses, sums of squares) are written through a pointer
// into that memory.
//
// Storage. Floating-point tensors are stored as fp32 or, after
// setStorage(StorageType::BF16), as bf16: the `float *` parameters then point
// at 2-byte elements, and kernels widen to fp32, compute and accumulate in
// fp32, and round once when they store. Scalar results (losses, sums of
// squares) and the optimizer's operands (master weights, fp32 gradients,
// moments) are fp32 whatever the storage.
//
// A backend also owns its memory (the driver's weights, gradients, arena and
// inputs live there) and the routing statistics the driver reads after a
// call: tokens per expert of every permute and slots dropped by every
// capacity drop, in program order.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_BACKEND_H
#define MOE_RUNTIME_BACKEND_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moe::rt {

class Communicator;
struct CommOptions;

enum class StorageType { F32, BF16 };

/// 4 or 2.
inline size_t storageBytes(StorageType type) {
  return type == StorageType::BF16 ? 2 : 4;
}

class Backend {
public:
  virtual ~Backend();

  /// "cpu" or "cuda".
  virtual const char *name() const = 0;
  /// True when pointers are device memory the host cannot dereference.
  virtual bool deviceMemory() const = 0;

  // --- Memory ---------------------------------------------------------------
  /// `bytes` (64-byte aligned, zero-filled) of backend memory; never null
  /// (throws on failure). Freed by release().
  virtual void *allocate(size_t bytes) = 0;
  virtual void release(void *ptr) = 0;
  /// Host -> backend, backend -> host, backend -> backend.
  virtual void upload(void *dst, const void *src, size_t bytes) = 0;
  virtual void download(void *dst, const void *src, size_t bytes) = 0;
  virtual void copy(void *dst, const void *src, size_t bytes) = 0;
  /// Backend -> backend, `rows` rows of `width` bytes between pitched
  /// buffers (row r from src + r * srcPitch to dst + r * dstPitch). The
  /// default copies row by row.
  virtual void copy2D(void *dst, size_t dstPitch, const void *src,
                      size_t srcPitch, size_t width, size_t rows);
  virtual void zero(void *ptr, size_t bytes) = 0;
  /// Waits for queued work; throws on a fault of any of it.
  virtual void synchronize() = 0;

  // --- Storage
  // ----------------------------------------------------------------
  /// The storage type of floating-point tensors from the next call on;
  /// throws if this backend cannot store `type`.
  virtual void setStorage(StorageType type) = 0;
  StorageType storage() const { return storage_; }
  /// add() on fp32 buffers whatever the storage (restored however it ends):
  /// loss terms, summed gradients.
  void addF32(const float *a, const float *b, float *out, int64_t n);
  /// dst[0, n) = src[0, n) converted between storage types, in backend
  /// memory (bf16 -> fp32 exact, fp32 -> bf16 rounded to nearest even).
  virtual void convert(void *dst, StorageType dstType, const void *src,
                       StorageType srcType, int64_t n) = 0;

  // --- Routing statistics
  // -----------------------------------------------------
  /// Tokens per expert of every permute since the last take (one entry per
  /// call, indexed by the local expert of the permute).
  virtual std::vector<std::vector<int64_t>> takeExpertCounts() = 0;
  /// Slots dropped by every capacity drop since the last take.
  virtual std::vector<int64_t> takeDroppedSlots() = 0;

  // --- The runtime calls ---------------------------------------------------
  /// One method per MOERT_KERNEL entry of CApiCalls.def, named there, with
  /// the call's operands in the call's order (a flag as a bool; an optional
  /// buffer null when absent). The entry points have checked the operands'
  /// kinds (no null required buffer, no negative size) before a method runs.
#define MOERT_AS_CXX_PARAMETERS
#define MOERT_CALL(cname, ...)
#define MOERT_KERNEL(cname, method, ...) virtual void method(__VA_ARGS__) = 0;
#include "moe/Runtime/CApiCalls.def"

  // --- Timing ---------------------------------------------------------------
  /// Records a point in the order of the work queued so far; returns its
  /// index among the marks since the last resolveMarks(). The default reads
  /// the host clock; a GPU records an event on its stream, so that two marks
  /// time the device's work between them, not its queuing.
  virtual uint32_t mark();
  /// The time of every mark since the last call, in order, in seconds of
  /// steadySeconds() (moe/Runtime/Trace.h; on a GPU, when the stream reached
  /// the mark), and forgets them. Waits for the queued work.
  virtual std::vector<double> resolveMarks();

protected:
  StorageType storage_ = StorageType::F32;

private:
  std::vector<double> hostMarks_;
};

/// The fp32 CPU backend (OpenBLAS GEMMs).
std::unique_ptr<Backend> makeCpuBackend();

/// The backend named `name` ("cpu", or "cuda" where MoERuntimeCUDA is linked
/// in); throws std::runtime_error naming what is missing otherwise.
/// `device` picks the GPU for "cuda".
std::unique_ptr<Backend> makeBackend(const std::string &name, int device = 0);

/// Set by MoERuntimeCUDA (a static registration in the library), so that
/// MoERuntime itself never names a CUDA symbol.
using BackendFactory = std::unique_ptr<Backend> (*)(int device);
void registerCudaBackend(BackendFactory factory);

/// A communicator over the ranks of `bootstrap` (in its order) that works on
/// the memory of GPU `device` of this rank: NCCL, registered by the driver's
/// main() in builds that have it (MOE_HAVE_NCCL), so that MoERuntime never
/// names an NCCL symbol. Collective over bootstrap.
using DeviceCommFactory = std::unique_ptr<Communicator> (*)(
    Communicator &bootstrap, int device, const CommOptions &options);
void registerDeviceCommunicator(DeviceCommFactory factory);
/// The registered factory, or null.
DeviceCommFactory deviceCommunicatorFactory();

} // namespace moe::rt

#endif // MOE_RUNTIME_BACKEND_H
