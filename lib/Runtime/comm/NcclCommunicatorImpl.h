//===- NcclCommunicatorImpl.h - The NCCL communicator's class ---*- C++ -*-===//
//
// Private to lib/Runtime/comm. The communicator over NCCL: the collectives
// are defined in NcclCommunicator.cpp, the plumbing they share (argument
// checks, grouped point-to-point exchanges, the host sums in rank order,
// waiting without hanging, scratch, abort) in NcclSupport.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_COMM_NCCLCOMMUNICATORIMPL_H
#define MOE_LIB_RUNTIME_COMM_NCCLCOMMUNICATORIMPL_H

#include "CommDetail.h"
#include "moe/Runtime/NcclCommunicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace moe::rt::nccl {

using detail::fail;

inline constexpr const char *kBackend = "nccl";

inline ncclDataType_t ncclType(CommDType dtype) {
  switch (dtype) {
  case CommDType::F32:
    return ncclFloat32;
  case CommDType::I32:
    return ncclInt32;
  case CommDType::I64:
    return ncclInt64;
  case CommDType::BF16:
    return ncclBfloat16;
  }
  fail(kBackend, "dtype",
       "unknown element type " + std::to_string(static_cast<int>(dtype)));
}

inline std::string onRank(int rank) {
  return " on rank " + std::to_string(rank);
}

/// "<call> failed on rank <r>: <NCCL's text> (<NCCL's last error>)".
inline std::string ncclErrorText(const char *call, ncclResult_t result,
                                 int rank, ncclComm_t comm) {
  std::string message = std::string(call) + " failed" + onRank(rank) + ": " +
                        ncclGetErrorString(result);
  const char *last = ncclGetLastError(comm);
  if (last && *last)
    message += " (" + std::string(last) + ")";
  return message;
}

inline std::string cudaErrorText(const char *call, cudaError_t error,
                                 int rank) {
  return std::string(call) + " failed" + onRank(rank) + ": " +
         cudaGetErrorString(error);
}

inline void throwIf(const std::string &error, const char *op) {
  if (!error.empty())
    fail(kBackend, op, error);
}

/// Errors after which the NCCL communicator may be inconsistent (a peer may
/// have entered the collective): abort it rather than use it again.
inline bool needsAbort(ncclResult_t result) {
  return result != ncclSuccess && result != ncclInvalidArgument &&
         result != ncclInvalidUsage;
}

inline const unsigned char *bytes(const void *p) {
  return static_cast<const unsigned char *>(p);
}
inline unsigned char *bytes(void *p) { return static_cast<unsigned char *>(p); }

/// One half of a point-to-point transfer within an NCCL group.
struct Transfer {
  bool isSend;
  void *buf; ///< const for sends
  int64_t count;
  int peer;
};

/// Memory that grows on demand and is freed by the owner. Only resized
/// between collectives, when the stream is idle (every collective waits).
struct Scratch {
  void *ptr = nullptr;
  size_t bytes = 0;
};

inline constexpr size_t kScratchGranule = size_t(1) << 20;

inline size_t roundUp(size_t bytes, size_t granule) {
  return (bytes + granule - 1) / granule * granule;
}

class NcclCommunicator final : public Communicator {
public:
  /// Takes ownership of `comm` (aborted if this constructor throws).
  NcclCommunicator(ncclComm_t comm, int device, const CommOptions &options);

  ~NcclCommunicator() override { release(); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char *backend() const override { return kBackend; }

  void allReduceSum(void *buf, int64_t count, CommDType dtype) override;

  void allGather(const void *send, void *recv, int64_t countPerRank,
                 CommDType dtype) override;

  void reduceScatterSum(const void *send, void *recv, int64_t countPerRank,
                        CommDType dtype) override;

  void allToAll(const void *send, void *recv, int64_t countPerRank,
                CommDType dtype) override;

  void allToAllV(const void *send, const int64_t *sendCounts,
                 const int64_t *sendOffsets, void *recv,
                 const int64_t *recvCounts, const int64_t *recvOffsets,
                 CommDType dtype) override;

  void broadcast(void *buf, int64_t count, CommDType dtype, int root) override;

  void barrier() override;

  std::unique_ptr<Communicator> split(int colour, int key) override;

private:
  /// Every entry point: the device current on this thread (local ranks are
  /// threads), and a communicator that has not been aborted.
  void begin(const char *op);

  bool sumsInRankOrder(CommDType dtype) const;

  /// Throws unless 0 <= count and count * scale elements fit in bytes.
  void checkedCount(const char *op, int64_t count, int scale,
                    CommDType dtype) const;

  /// "" when `buf` is usable for `count` elements: non-null unless empty, and
  /// device (or managed) memory of this communicator's GPU.
  std::string checkDeviceBuffer(const char *what, const void *buf,
                                int64_t count) const;

  /// Throws when an NCCL call did not succeed; aborts the communicator first
  /// when the error may have left it inconsistent.
  void check(ncclResult_t result, const char *op, const char *call);

  void checkCuda(cudaError_t error, const char *op, const char *call) const;

  /// Queues `transfers` as one NCCL group. A failed ncclSend/ncclRecv still
  /// closes the group (NCCL requires it) before throwing.
  void exchange(const char *op, const std::vector<Transfer> &transfers,
                CommDType dtype);

  /// dst[0, count) = rank-order sum of the size_ consecutive blocks of
  /// `count` elements at device address `blocks`, summed on the host by the
  /// loop every backend shares; dst is device memory and may be `blocks`.
  /// Waits for the stream (the host needs the blocks); the copy to dst is
  /// queued, not waited for.
  void sumBlocks(const char *op, const void *blocks, int64_t count, void *dst,
                 CommDType dtype);

  /// Every rank learns what its peers send it and compares with what it
  /// expects; then all ranks agree on the lowest rank with an error, so that
  /// all of them throw (a mismatch would otherwise truncate or hang). A rank
  /// whose own arguments are bad sends -1 counts and reports itself.
  void agreeOnCounts(const char *op, const int64_t *sendCounts,
                     const int64_t *recvCounts, std::string &error);

  /// Waits until the stream is idle. Polls rather than blocks, so that an
  /// asynchronous NCCL error (a peer or the network failed, where NCCL
  /// notices) aborts the communicator and throws instead of hanging.
  void wait(const char *op);

  void *deviceScratch(size_t bytes, const char *op);

  void *hostScratch(size_t bytes, const char *op);

  /// ncclCommAbort: frees the communicator without waiting for peers, and
  /// marks this object unusable. Never throws.
  void abort();

  /// Frees everything; never throws (errors are ignored: a destructor has
  /// no one to report them to).
  void release() noexcept;

  ncclComm_t comm_ = nullptr;
  int device_ = 0;
  CommOptions options_;
  int rank_ = -1, size_ = 0;
  bool broken_ = false;
  cudaStream_t stream_ = nullptr;
  void *control_ = nullptr;     ///< device, controlBytes_
  void *hostControl_ = nullptr; ///< pinned host, controlBytes_
  size_t controlBytes_ = 0;
  Scratch deviceScratch_, hostScratch_;
};

} // namespace moe::rt::nccl

#endif // MOE_LIB_RUNTIME_COMM_NCCLCOMMUNICATORIMPL_H
