//===- NcclCommunicator.cpp - The communicator over NCCL ------------------===//
//
// One GPU per rank; see include/moe/Runtime/NcclCommunicator.h for the
// contract (device buffers, one stream per communicator, every collective
// waits for it before returning, deterministic sums).
//
// Plain C++ against the CUDA runtime and NCCL: no kernels. Point-to-point
// patterns (allToAll, allToAllV, the chunk exchanges of the deterministic
// sums) are ncclSend/ncclRecv pairs fused in one ncclGroupStart/ncclGroupEnd,
// which NCCL runs concurrently (a rank may send to itself). Zero-element
// transfers are left out on both sides, which agree because the counts do
// (checked for allToAllV, computed identically everywhere otherwise).
//
// Every NCCL and CUDA return code is checked. An error that may leave the
// NCCL communicator inconsistent (anything but a rejected argument) aborts
// it, and later calls throw instead of waiting on peers that will never
// answer.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/NcclCommunicator.h"

#include "CommDetail.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace moe::rt {
namespace {

using detail::fail;

constexpr const char *kBackend = "nccl";

ncclDataType_t ncclType(CommDType dtype) {
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

std::string onRank(int rank) { return " on rank " + std::to_string(rank); }

/// "<call> failed on rank <r>: <NCCL's text> (<NCCL's last error>)".
std::string ncclErrorText(const char *call, ncclResult_t result, int rank,
                          ncclComm_t comm) {
  std::string message = std::string(call) + " failed" + onRank(rank) + ": " +
                        ncclGetErrorString(result);
  const char *last = ncclGetLastError(comm);
  if (last && *last)
    message += " (" + std::string(last) + ")";
  return message;
}

std::string cudaErrorText(const char *call, cudaError_t error, int rank) {
  return std::string(call) + " failed" + onRank(rank) + ": " +
         cudaGetErrorString(error);
}

void throwIf(const std::string &error, const char *op) {
  if (!error.empty())
    fail(kBackend, op, error);
}

/// Errors after which the NCCL communicator may be inconsistent (a peer may
/// have entered the collective): abort it rather than use it again.
bool needsAbort(ncclResult_t result) {
  return result != ncclSuccess && result != ncclInvalidArgument &&
         result != ncclInvalidUsage;
}

const unsigned char *bytes(const void *p) {
  return static_cast<const unsigned char *>(p);
}
unsigned char *bytes(void *p) { return static_cast<unsigned char *>(p); }

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

constexpr size_t kScratchGranule = size_t(1) << 20;

size_t roundUp(size_t bytes, size_t granule) {
  return (bytes + granule - 1) / granule * granule;
}

class NcclCommunicator final : public Communicator {
public:
  /// Takes ownership of `comm` (aborted if this constructor throws).
  NcclCommunicator(ncclComm_t comm, int device, const CommOptions &options)
      : comm_(comm), device_(device), options_(options) {
    const char *op = "create";
    try {
      checkCuda(cudaSetDevice(device_), op, "cudaSetDevice");
      check(ncclCommUserRank(comm_, &rank_), op, "ncclCommUserRank");
      check(ncclCommCount(comm_, &size_), op, "ncclCommCount");
      checkCuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), op,
                "cudaStreamCreateWithFlags");
      // allToAllV's count exchange: size_ outgoing and size_ incoming int64,
      // then one int32 (the lowest rank with an error); barrier's int32.
      controlBytes_ = (2 * static_cast<size_t>(size_) + 1) * sizeof(int64_t);
      checkCuda(cudaMalloc(&control_, controlBytes_), op, "cudaMalloc");
      checkCuda(cudaMemset(control_, 0, controlBytes_), op, "cudaMemset");
      checkCuda(cudaMallocHost(&hostControl_, controlBytes_), op,
                "cudaMallocHost");
    } catch (...) {
      broken_ = true;
      release();
      throw;
    }
  }

  ~NcclCommunicator() override { release(); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char *backend() const override { return kBackend; }

  void allReduceSum(void *buf, int64_t count, CommDType dtype) override {
    const char *op = "allReduceSum";
    begin(op);
    checkedCount(op, count, 1, dtype);
    throwIf(checkDeviceBuffer("in-place", buf, count), op);
    if (count == 0)
      return;
    if (!sumsInRankOrder(dtype)) {
      check(ncclAllReduce(buf, buf, count, ncclType(dtype), ncclSum, comm_,
                          stream_),
            op, "ncclAllReduce");
      wait(op);
      return;
    }
    // NCCL's ncclSum adds in its own (ring / tree) order, not in rank order:
    // as the MPI backend, rank r sums chunk r of every rank's buffer in rank
    // order, then every rank gathers the chunks.
    const size_t elem = commDTypeSize(dtype);
    const int n = size_;
    const int64_t chunk = (count + n - 1) / n;
    auto first = [&](int r) { return std::min(count, r * chunk); };
    auto length = [&](int r) {
      return std::min(count, first(r) + chunk) - first(r);
    };
    const int64_t mine = length(rank_);
    unsigned char *blocks =
        bytes(deviceScratch(static_cast<size_t>(n * mine) * elem, op));
    std::vector<Transfer> transfers;
    for (int j = 0; j < n; ++j) {
      transfers.push_back({true, bytes(buf) + first(j) * elem, length(j), j});
      transfers.push_back({false, blocks + j * mine * elem, mine, j});
    }
    exchange(op, transfers, dtype);
    sumBlocks(op, blocks, mine, blocks, dtype);
    transfers.clear();
    for (int j = 0; j < n; ++j) {
      transfers.push_back({true, blocks, mine, j});
      transfers.push_back({false, bytes(buf) + first(j) * elem, length(j), j});
    }
    exchange(op, transfers, dtype);
    wait(op);
  }

  void allGather(const void *send, void *recv, int64_t countPerRank,
                 CommDType dtype) override {
    const char *op = "allGather";
    begin(op);
    checkedCount(op, countPerRank, size_, dtype);
    throwIf(checkDeviceBuffer("send", send, countPerRank), op);
    throwIf(checkDeviceBuffer("receive", recv, countPerRank * size_), op);
    if (countPerRank == 0)
      return;
    check(ncclAllGather(send, recv, countPerRank, ncclType(dtype), comm_,
                        stream_),
          op, "ncclAllGather");
    wait(op);
  }

  void reduceScatterSum(const void *send, void *recv, int64_t countPerRank,
                        CommDType dtype) override {
    const char *op = "reduceScatterSum";
    begin(op);
    checkedCount(op, countPerRank, size_, dtype);
    throwIf(checkDeviceBuffer("send", send, countPerRank * size_), op);
    throwIf(checkDeviceBuffer("receive", recv, countPerRank), op);
    if (countPerRank == 0)
      return;
    if (!sumsInRankOrder(dtype)) {
      check(ncclReduceScatter(send, recv, countPerRank, ncclType(dtype),
                              ncclSum, comm_, stream_),
            op, "ncclReduceScatter");
      wait(op);
      return;
    }
    // Block rank_ of every rank comes here, then is summed in rank order.
    const size_t elem = commDTypeSize(dtype);
    const int64_t blockBytes = countPerRank * static_cast<int64_t>(elem);
    unsigned char *blocks =
        bytes(deviceScratch(static_cast<size_t>(blockBytes * size_), op));
    std::vector<Transfer> transfers;
    for (int j = 0; j < size_; ++j) {
      transfers.push_back(
          {true, const_cast<unsigned char *>(bytes(send)) + j * blockBytes,
           countPerRank, j});
      transfers.push_back({false, blocks + j * blockBytes, countPerRank, j});
    }
    exchange(op, transfers, dtype);
    sumBlocks(op, blocks, countPerRank, recv, dtype);
    wait(op);
  }

  void allToAll(const void *send, void *recv, int64_t countPerRank,
                CommDType dtype) override {
    const char *op = "allToAll";
    begin(op);
    checkedCount(op, countPerRank, size_, dtype);
    throwIf(checkDeviceBuffer("send", send, countPerRank * size_), op);
    throwIf(checkDeviceBuffer("receive", recv, countPerRank * size_), op);
    if (countPerRank == 0)
      return;
    const int64_t blockBytes =
        countPerRank * static_cast<int64_t>(commDTypeSize(dtype));
    std::vector<Transfer> transfers;
    for (int j = 0; j < size_; ++j) {
      transfers.push_back(
          {true, const_cast<unsigned char *>(bytes(send)) + j * blockBytes,
           countPerRank, j});
      transfers.push_back(
          {false, bytes(recv) + j * blockBytes, countPerRank, j});
    }
    exchange(op, transfers, dtype);
    wait(op);
  }

  void allToAllV(const void *send, const int64_t *sendCounts,
                 const int64_t *sendOffsets, void *recv,
                 const int64_t *recvCounts, const int64_t *recvOffsets,
                 CommDType dtype) override {
    const char *op = "allToAllV";
    begin(op);
    const size_t elem = commDTypeSize(dtype);
    std::string error = detail::checkCountsAndOffsets(rank_, "send", sendCounts,
                                                      sendOffsets, size_);
    if (error.empty())
      error = detail::checkCountsAndOffsets(rank_, "receive", recvCounts,
                                            recvOffsets, size_);
    // Byte offsets of the furthest element must not overflow.
    const int64_t limit = INT64_MAX / 2 / static_cast<int64_t>(elem);
    int64_t sendTotal = 0, recvTotal = 0;
    for (int j = 0; j < size_ && error.empty(); ++j) {
      if (sendCounts[j] > limit || sendOffsets[j] > limit ||
          recvCounts[j] > limit || recvOffsets[j] > limit) {
        error = "rank " + std::to_string(rank_) +
                " passes a count or offset above " + std::to_string(limit) +
                " for peer " + std::to_string(j);
        break;
      }
      // Only compared with zero (null buffers): saturate, never overflow.
      sendTotal = std::min(limit, sendTotal + sendCounts[j]);
      recvTotal = std::min(limit, recvTotal + recvCounts[j]);
    }
    if (error.empty())
      error = checkDeviceBuffer("send", send, sendTotal);
    if (error.empty())
      error = checkDeviceBuffer("receive", recv, recvTotal);
    if (options_.checkAllToAllVCounts)
      agreeOnCounts(op, sendCounts, recvCounts, error);
    throwIf(error, op);
    std::vector<Transfer> transfers;
    for (int j = 0; j < size_; ++j) {
      transfers.push_back(
          {true,
           const_cast<unsigned char *>(bytes(send)) + sendOffsets[j] * elem,
           sendCounts[j], j});
      transfers.push_back(
          {false, bytes(recv) + recvOffsets[j] * elem, recvCounts[j], j});
    }
    exchange(op, transfers, dtype);
    wait(op);
  }

  void broadcast(void *buf, int64_t count, CommDType dtype, int root) override {
    const char *op = "broadcast";
    begin(op);
    throwIf(detail::checkRoot(rank_, root, size_), op);
    checkedCount(op, count, 1, dtype);
    throwIf(checkDeviceBuffer("in-place", buf, count), op);
    if (count == 0)
      return;
    check(ncclBroadcast(buf, buf, count, ncclType(dtype), root, comm_, stream_),
          op, "ncclBroadcast");
    wait(op);
  }

  void barrier() override {
    const char *op = "barrier";
    begin(op);
    // A one-element all-reduce that every rank must join; its value is unused.
    check(ncclAllReduce(control_, control_, 1, ncclInt32, ncclSum, comm_,
                        stream_),
          op, "ncclAllReduce");
    wait(op);
  }

  std::unique_ptr<Communicator> split(int colour, int key) override {
    const char *op = "split";
    begin(op);
    // Ranks of a colour are ordered by key, ties by rank in this group (as
    // MPI_Comm_split); a null config inherits this communicator's.
    ncclComm_t part = nullptr;
    check(ncclCommSplit(comm_, colour < 0 ? NCCL_SPLIT_NOCOLOR : colour, key,
                        &part, nullptr),
          op, "ncclCommSplit");
    if (!part)
      return nullptr;
    return std::make_unique<NcclCommunicator>(part, device_, options_);
  }

private:
  /// Every entry point: the device current on this thread (local ranks are
  /// threads), and a communicator that has not been aborted.
  void begin(const char *op) {
    if (broken_)
      fail(kBackend, op,
           "rank " + std::to_string(rank_) +
               " cannot communicate: its NCCL communicator was aborted after "
               "an earlier error");
    checkCuda(cudaSetDevice(device_), op, "cudaSetDevice");
  }

  bool sumsInRankOrder(CommDType dtype) const {
    // Integer addition modulo 2^bits is associative and commutative: NCCL's
    // order gives the rank-order bits already.
    return options_.deterministicSums &&
           (dtype == CommDType::F32 || dtype == CommDType::BF16);
  }

  /// Throws unless 0 <= count and count * scale elements fit in bytes.
  void checkedCount(const char *op, int64_t count, int scale,
                    CommDType dtype) const {
    throwIf(detail::checkCount(rank_, "count", count), op);
    const int64_t limit =
        INT64_MAX / 2 / static_cast<int64_t>(commDTypeSize(dtype)) / scale;
    if (count > limit)
      fail(kBackend, op,
           "rank " + std::to_string(rank_) + " passes count " +
               std::to_string(count) + ", more than " + std::to_string(limit) +
               " (the largest whose " + std::to_string(scale) +
               " blocks fit in int64 bytes)");
  }

  /// "" when `buf` is usable for `count` elements: non-null unless empty, and
  /// device (or managed) memory of this communicator's GPU.
  std::string checkDeviceBuffer(const char *what, const void *buf,
                                int64_t count) const {
    std::string error = detail::checkBuffer(rank_, what, buf, count);
    if (!error.empty() || !buf || count <= 0)
      return error;
    cudaPointerAttributes attributes{};
    cudaError_t status = cudaPointerGetAttributes(&attributes, buf);
    if (status != cudaSuccess) {
      cudaGetLastError(); // not sticky, but do not leave it for others
      return cudaErrorText("cudaPointerGetAttributes", status, rank_) +
             " (for the " + what + " buffer)";
    }
    if (attributes.type == cudaMemoryTypeManaged)
      return "";
    if (attributes.type != cudaMemoryTypeDevice)
      return "rank " + std::to_string(rank_) + " passes a host " + what +
             " buffer, but the nccl communicator needs device memory";
    if (attributes.device != device_)
      return "rank " + std::to_string(rank_) + " passes a " + what +
             " buffer on GPU " + std::to_string(attributes.device) +
             ", but its communicator runs on GPU " + std::to_string(device_);
    return "";
  }

  /// Throws when an NCCL call did not succeed; aborts the communicator first
  /// when the error may have left it inconsistent.
  void check(ncclResult_t result, const char *op, const char *call) {
    if (result == ncclSuccess)
      return;
    std::string message = ncclErrorText(call, result, rank_, comm_);
    if (needsAbort(result))
      abort();
    fail(kBackend, op, message);
  }

  void checkCuda(cudaError_t error, const char *op, const char *call) const {
    if (error != cudaSuccess)
      fail(kBackend, op, cudaErrorText(call, error, rank_));
  }

  /// Queues `transfers` as one NCCL group. A failed ncclSend/ncclRecv still
  /// closes the group (NCCL requires it) before throwing.
  void exchange(const char *op, const std::vector<Transfer> &transfers,
                CommDType dtype) {
    check(ncclGroupStart(), op, "ncclGroupStart");
    ncclResult_t failed = ncclSuccess;
    const char *failedCall = "";
    for (const Transfer &t : transfers) {
      if (t.count == 0)
        continue;
      ncclResult_t result = t.isSend ? ncclSend(t.buf, t.count, ncclType(dtype),
                                                t.peer, comm_, stream_)
                                     : ncclRecv(t.buf, t.count, ncclType(dtype),
                                                t.peer, comm_, stream_);
      if (result != ncclSuccess) {
        failed = result;
        failedCall = t.isSend ? "ncclSend" : "ncclRecv";
        break;
      }
    }
    ncclResult_t ended = ncclGroupEnd();
    check(failed, op, failedCall);
    check(ended, op, "ncclGroupEnd");
  }

  /// dst[0, count) = rank-order sum of the size_ consecutive blocks of
  /// `count` elements at device address `blocks`, summed on the host by the
  /// loop every backend shares; dst is device memory and may be `blocks`.
  /// Waits for the stream (the host needs the blocks); the copy to dst is
  /// queued, not waited for.
  void sumBlocks(const char *op, const void *blocks, int64_t count, void *dst,
                 CommDType dtype) {
    if (count == 0) {
      wait(op);
      return;
    }
    const size_t blockBytes = static_cast<size_t>(count) * commDTypeSize(dtype);
    unsigned char *host = bytes(hostScratch(blockBytes * size_, op));
    checkCuda(cudaMemcpyAsync(host, blocks, blockBytes * size_,
                              cudaMemcpyDeviceToHost, stream_),
              op, "cudaMemcpyAsync (device to host)");
    wait(op);
    std::vector<const void *> sources(size_);
    for (int r = 0; r < size_; ++r)
      sources[r] = host + r * blockBytes;
    detail::sumInRankOrder(sources.data(), size_, host, count, dtype);
    checkCuda(
        cudaMemcpyAsync(dst, host, blockBytes, cudaMemcpyHostToDevice, stream_),
        op, "cudaMemcpyAsync (host to device)");
  }

  /// Every rank learns what its peers send it and compares with what it
  /// expects; then all ranks agree on the lowest rank with an error, so that
  /// all of them throw (a mismatch would otherwise truncate or hang). A rank
  /// whose own arguments are bad sends -1 counts and reports itself.
  void agreeOnCounts(const char *op, const int64_t *sendCounts,
                     const int64_t *recvCounts, std::string &error) {
    const int n = size_;
    int64_t *hostOut = static_cast<int64_t *>(hostControl_);
    int64_t *hostIn = hostOut + n;
    int64_t *deviceOut = static_cast<int64_t *>(control_);
    int64_t *deviceIn = deviceOut + n;
    for (int j = 0; j < n; ++j)
      hostOut[j] = error.empty() ? sendCounts[j] : -1;
    checkCuda(cudaMemcpyAsync(deviceOut, hostOut, n * sizeof(int64_t),
                              cudaMemcpyHostToDevice, stream_),
              op, "cudaMemcpyAsync (host to device)");
    std::vector<Transfer> transfers;
    for (int j = 0; j < n; ++j) {
      transfers.push_back({true, deviceOut + j, 1, j});
      transfers.push_back({false, deviceIn + j, 1, j});
    }
    exchange(op, transfers, CommDType::I64);
    checkCuda(cudaMemcpyAsync(hostIn, deviceIn, n * sizeof(int64_t),
                              cudaMemcpyDeviceToHost, stream_),
              op, "cudaMemcpyAsync (device to host)");
    wait(op);
    for (int j = 0; j < n && error.empty(); ++j)
      if (hostIn[j] >= 0 && hostIn[j] != recvCounts[j])
        error = "rank " + std::to_string(j) + " sends " +
                std::to_string(hostIn[j]) + " elements to rank " +
                std::to_string(rank_) + ", but rank " + std::to_string(rank_) +
                " expects " + std::to_string(recvCounts[j]);
    int32_t *hostBad = reinterpret_cast<int32_t *>(hostIn + n);
    int32_t *deviceBad = reinterpret_cast<int32_t *>(deviceIn + n);
    *hostBad = error.empty() ? INT_MAX : rank_;
    checkCuda(cudaMemcpyAsync(deviceBad, hostBad, sizeof(int32_t),
                              cudaMemcpyHostToDevice, stream_),
              op, "cudaMemcpyAsync (host to device)");
    check(ncclAllReduce(deviceBad, deviceBad, 1, ncclInt32, ncclMin, comm_,
                        stream_),
          op, "ncclAllReduce");
    checkCuda(cudaMemcpyAsync(hostBad, deviceBad, sizeof(int32_t),
                              cudaMemcpyDeviceToHost, stream_),
              op, "cudaMemcpyAsync (device to host)");
    wait(op);
    if (error.empty() && *hostBad != INT_MAX)
      error = "rank " + std::to_string(*hostBad) +
              " found send and receive counts that disagree";
  }

  /// Waits until the stream is idle. Polls rather than blocks, so that an
  /// asynchronous NCCL error (a peer or the network failed, where NCCL
  /// notices) aborts the communicator and throws instead of hanging.
  void wait(const char *op) {
    for (;;) {
      cudaError_t status = cudaStreamQuery(stream_);
      if (status == cudaSuccess)
        return;
      if (status != cudaErrorNotReady) {
        std::string message = cudaErrorText("cudaStreamQuery", status, rank_);
        abort();
        fail(kBackend, op, message);
      }
      ncclResult_t async = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &async), op, "ncclCommGetAsyncError");
      if (async != ncclSuccess && async != ncclInProgress) {
        std::string message =
            ncclErrorText("a queued NCCL operation", async, rank_, comm_);
        abort();
        fail(kBackend, op, message);
      }
      std::this_thread::yield();
    }
  }

  void *deviceScratch(size_t bytes, const char *op) {
    if (bytes > deviceScratch_.bytes) {
      if (deviceScratch_.ptr)
        checkCuda(cudaFree(deviceScratch_.ptr), op, "cudaFree");
      deviceScratch_ = {};
      size_t grown = roundUp(bytes, kScratchGranule);
      checkCuda(cudaMalloc(&deviceScratch_.ptr, grown), op, "cudaMalloc");
      deviceScratch_.bytes = grown;
    }
    return deviceScratch_.ptr;
  }

  void *hostScratch(size_t bytes, const char *op) {
    if (bytes > hostScratch_.bytes) {
      if (hostScratch_.ptr)
        checkCuda(cudaFreeHost(hostScratch_.ptr), op, "cudaFreeHost");
      hostScratch_ = {};
      size_t grown = roundUp(bytes, kScratchGranule);
      checkCuda(cudaMallocHost(&hostScratch_.ptr, grown), op, "cudaMallocHost");
      hostScratch_.bytes = grown;
    }
    return hostScratch_.ptr;
  }

  /// ncclCommAbort: frees the communicator without waiting for peers, and
  /// marks this object unusable. Never throws.
  void abort() {
    broken_ = true;
    if (comm_) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
  }

  /// Frees everything; never throws (errors are ignored: a destructor has
  /// no one to report them to).
  void release() noexcept {
    cudaSetDevice(device_);
    if (comm_) {
      if (broken_)
        ncclCommAbort(comm_);
      else
        ncclCommDestroy(comm_); // every collective has completed already
      comm_ = nullptr;
    }
    if (stream_) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
      stream_ = nullptr;
    }
    if (deviceScratch_.ptr)
      cudaFree(deviceScratch_.ptr);
    if (hostScratch_.ptr)
      cudaFreeHost(hostScratch_.ptr);
    if (control_)
      cudaFree(control_);
    if (hostControl_)
      cudaFreeHost(hostControl_);
    deviceScratch_ = hostScratch_ = {};
    control_ = hostControl_ = nullptr;
    cudaGetLastError(); // leave no error of ours for the caller's next check
  }

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

/// The lowest rank whose `flag` is non-zero, or -1; collective over
/// `bootstrap` (host memory, any host backend).
int firstFlagged(Communicator &bootstrap, bool flag) {
  std::vector<int32_t> flags(bootstrap.size());
  int32_t mine = flag ? 1 : 0;
  bootstrap.allGather(&mine, flags.data(), 1, CommDType::I32);
  for (int r = 0; r < bootstrap.size(); ++r)
    if (flags[r])
      return r;
  return -1;
}

} // namespace

std::unique_ptr<Communicator> ncclWorld(Communicator &bootstrap, int device,
                                        const CommOptions &options) {
  const char *op = "world";
  const int rank = bootstrap.rank(), n = bootstrap.size();

  // 1. This rank's GPU; every rank throws if any rank cannot use its GPU,
  //    before NCCL waits for it.
  std::string error;
  int visible = 0;
  cudaError_t status = cudaGetDeviceCount(&visible);
  if (status != cudaSuccess) {
    cudaGetLastError();
    error = cudaErrorText("cudaGetDeviceCount", status, rank);
  } else if (device < 0 || device >= visible) {
    error = "rank " + std::to_string(rank) + " asks for GPU " +
            std::to_string(device) + ", but " + std::to_string(visible) +
            " are visible";
  } else if ((status = cudaSetDevice(device)) != cudaSuccess) {
    error = cudaErrorText("cudaSetDevice", status, rank);
  }
  int bad = firstFlagged(bootstrap, !error.empty());
  throwIf(error, op);
  if (bad >= 0)
    fail(kBackend, op,
         "rank " + std::to_string(bad) + " cannot use its GPU (rank " +
             std::to_string(rank) + " stops too)");

  // 2. Rank 0's unique id, broadcast as 16 int64 after a status word, so
  //    that a failed ncclGetUniqueId stops every rank.
  static_assert(sizeof(ncclUniqueId) % sizeof(int64_t) == 0,
                "ncclUniqueId is broadcast as int64 words");
  constexpr int64_t idWords = sizeof(ncclUniqueId) / sizeof(int64_t);
  std::vector<int64_t> words(1 + idWords, 0);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  std::string idError;
  if (rank == 0) {
    ncclResult_t result = ncclGetUniqueId(&id);
    words[0] = static_cast<int64_t>(result);
    if (result == ncclSuccess)
      std::memcpy(words.data() + 1, &id, sizeof(id));
    else
      idError = ncclErrorText("ncclGetUniqueId", result, rank, nullptr);
  }
  bootstrap.broadcast(words.data(), 1 + idWords, CommDType::I64, 0);
  throwIf(idError, op);
  if (words[0] != ncclSuccess)
    fail(kBackend, op,
         "ncclGetUniqueId failed on rank 0: " +
             std::string(
                 ncclGetErrorString(static_cast<ncclResult_t>(words[0]))));
  std::memcpy(&id, words.data() + 1, sizeof(id));

  // 3. The communicator; ranks agree on the outcome, so that a rank whose
  //    init failed alone does not leave the others to hang later.
  ncclComm_t comm = nullptr;
  ncclResult_t result = ncclCommInitRank(&comm, n, id, rank);
  if (result != ncclSuccess) {
    error = ncclErrorText("ncclCommInitRank", result, rank, comm);
    if (comm)
      ncclCommAbort(comm);
    comm = nullptr;
  }
  bad = firstFlagged(bootstrap, !error.empty());
  if (bad >= 0 && comm)
    ncclCommAbort(comm);
  throwIf(error, op);
  if (bad >= 0)
    fail(kBackend, op,
         "ncclCommInitRank failed on rank " + std::to_string(bad) + " (rank " +
             std::to_string(rank) + " stops too)");
  return std::make_unique<NcclCommunicator>(comm, device, options);
}

const char *ncclLibraryVersion() {
  static const std::string text = [] {
    int code = 0;
    if (ncclGetVersion(&code) != ncclSuccess || code <= 0)
      return std::string("unknown");
    // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9.
    return std::to_string(code / 10000) + "." +
           std::to_string(code / 100 % 100) + "." + std::to_string(code % 100);
  }();
  return text.c_str();
}

} // namespace moe::rt
