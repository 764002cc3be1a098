//===- NcclSupport.cpp - What the NCCL collectives share ------------------===//
//
// The private members of NcclCommunicator (NcclCommunicatorImpl.h): entry
// checks, error handling that aborts a communicator NCCL may have left
// inconsistent, grouped point-to-point exchanges, the host sums in rank
// order, waiting by polling (so that an asynchronous NCCL error throws
// instead of hanging), scratch memory, abort and release.
//
//===----------------------------------------------------------------------===//

#include "NcclCommunicatorImpl.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace moe::rt::nccl {

void NcclCommunicator::begin(const char *op) {
  if (broken_)
    fail(kBackend, op,
         "rank " + std::to_string(rank_) +
             " cannot communicate: its NCCL communicator was aborted after "
             "an earlier error");
  checkCuda(cudaSetDevice(device_), op, "cudaSetDevice");
}

bool NcclCommunicator::sumsInRankOrder(CommDType dtype) const {
  // Integer addition modulo 2^bits is associative and commutative: NCCL's
  // order gives the rank-order bits already.
  return options_.deterministicSums &&
         (dtype == CommDType::F32 || dtype == CommDType::BF16);
}

void NcclCommunicator::checkedCount(const char *op, int64_t count, int scale,
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

std::string NcclCommunicator::checkDeviceBuffer(const char *what,
                                                const void *buf,
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

void NcclCommunicator::check(ncclResult_t result, const char *op,
                             const char *call) {
  if (result == ncclSuccess)
    return;
  std::string message = ncclErrorText(call, result, rank_, comm_);
  if (needsAbort(result))
    abort();
  fail(kBackend, op, message);
}

void NcclCommunicator::checkCuda(cudaError_t error, const char *op,
                                 const char *call) const {
  if (error != cudaSuccess)
    fail(kBackend, op, cudaErrorText(call, error, rank_));
}

void NcclCommunicator::exchange(const char *op,
                                const std::vector<Transfer> &transfers,
                                CommDType dtype) {
  check(ncclGroupStart(), op, "ncclGroupStart");
  ncclResult_t failed = ncclSuccess;
  const char *failedCall = "";
  for (const Transfer &t : transfers) {
    if (t.count == 0)
      continue;
    ncclResult_t result =
        t.isSend
            ? ncclSend(t.buf, t.count, ncclType(dtype), t.peer, comm_, stream_)
            : ncclRecv(t.buf, t.count, ncclType(dtype), t.peer, comm_, stream_);
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

void NcclCommunicator::sumBlocks(const char *op, const void *blocks,
                                 int64_t count, void *dst, CommDType dtype) {
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

void NcclCommunicator::agreeOnCounts(const char *op, const int64_t *sendCounts,
                                     const int64_t *recvCounts,
                                     std::string &error) {
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

void NcclCommunicator::wait(const char *op) {
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

void *NcclCommunicator::deviceScratch(size_t bytes, const char *op) {
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

void *NcclCommunicator::hostScratch(size_t bytes, const char *op) {
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

void NcclCommunicator::abort() {
  broken_ = true;
  if (comm_) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
}

void NcclCommunicator::release() noexcept {
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

} // namespace moe::rt::nccl
