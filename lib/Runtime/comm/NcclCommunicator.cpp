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
#include "NcclCommunicatorImpl.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace moe::rt {
namespace nccl {

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int device,
                                   const CommOptions &options)

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

void NcclCommunicator::allReduceSum(void *buf, int64_t count, CommDType dtype) {
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

void NcclCommunicator::allGather(const void *send, void *recv,
                                 int64_t countPerRank, CommDType dtype) {
  const char *op = "allGather";
  begin(op);
  checkedCount(op, countPerRank, size_, dtype);
  throwIf(checkDeviceBuffer("send", send, countPerRank), op);
  throwIf(checkDeviceBuffer("receive", recv, countPerRank * size_), op);
  if (countPerRank == 0)
    return;
  check(
      ncclAllGather(send, recv, countPerRank, ncclType(dtype), comm_, stream_),
      op, "ncclAllGather");
  wait(op);
}

void NcclCommunicator::reduceScatterSum(const void *send, void *recv,
                                        int64_t countPerRank, CommDType dtype) {
  const char *op = "reduceScatterSum";
  begin(op);
  checkedCount(op, countPerRank, size_, dtype);
  throwIf(checkDeviceBuffer("send", send, countPerRank * size_), op);
  throwIf(checkDeviceBuffer("receive", recv, countPerRank), op);
  if (countPerRank == 0)
    return;
  if (!sumsInRankOrder(dtype)) {
    check(ncclReduceScatter(send, recv, countPerRank, ncclType(dtype), ncclSum,
                            comm_, stream_),
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

void NcclCommunicator::allToAll(const void *send, void *recv,
                                int64_t countPerRank, CommDType dtype) {
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
    transfers.push_back({false, bytes(recv) + j * blockBytes, countPerRank, j});
  }
  exchange(op, transfers, dtype);
  wait(op);
}

void NcclCommunicator::allToAllV(const void *send, const int64_t *sendCounts,
                                 const int64_t *sendOffsets, void *recv,
                                 const int64_t *recvCounts,
                                 const int64_t *recvOffsets, CommDType dtype) {
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
        {true, const_cast<unsigned char *>(bytes(send)) + sendOffsets[j] * elem,
         sendCounts[j], j});
    transfers.push_back(
        {false, bytes(recv) + recvOffsets[j] * elem, recvCounts[j], j});
  }
  exchange(op, transfers, dtype);
  wait(op);
}

void NcclCommunicator::broadcast(void *buf, int64_t count, CommDType dtype,
                                 int root) {
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

void NcclCommunicator::barrier() {
  const char *op = "barrier";
  begin(op);
  // A one-element all-reduce that every rank must join; its value is unused.
  check(
      ncclAllReduce(control_, control_, 1, ncclInt32, ncclSum, comm_, stream_),
      op, "ncclAllReduce");
  wait(op);
}

std::unique_ptr<Communicator> NcclCommunicator::split(int colour, int key) {
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

} // namespace nccl

using nccl::cudaErrorText;
using nccl::kBackend;
using nccl::NcclCommunicator;
using nccl::ncclErrorText;
using nccl::throwIf;
using detail::fail;

namespace {

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
