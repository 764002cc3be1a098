//===- MpiCommunicator.cpp - The communicator over MPI --------------------===//
//
// One rank per process. Sums are computed here, not by MPI_SUM, unless the
// caller opts out (CommOptions::deterministicSums): MPI libraries choose their
// reduction order by message size and process count, so MPI_Allreduce may
// differ in the last bit between ranks' runs, job sizes and library versions,
// and from the local backend. An all-to-all of chunks, a sum in rank order
// (detail::sumInRankOrder, shared with the local backend) and an all-gather
// give the same bits everywhere, for the same traffic as a ring all-reduce.
//
// MPI counts and displacements are int: larger values throw rather than
// wrap. Our communicators use MPI_ERRORS_RETURN, so that every MPI error
// becomes an exception naming the call and the rank.
//
//===----------------------------------------------------------------------===//

#include "CommDetail.h"

#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace moe::rt {
namespace {

using detail::fail;

constexpr const char *kBackend = "mpi";

MPI_Datatype mpiType(CommDType dtype) {
  switch (dtype) {
  case CommDType::F32:
    return MPI_FLOAT;
  case CommDType::I32:
    return MPI_INT32_T;
  case CommDType::I64:
    return MPI_INT64_T;
  case CommDType::BF16: // moved as bits; summed by sumInRankOrder
    return MPI_UINT16_T;
  }
  return MPI_DATATYPE_NULL;
}

std::string mpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return "MPI error " + std::to_string(code);
  return std::string(text, length);
}

/// Throws when an MPI call did not succeed.
void check(int code, const char *op, const char *call, int rank) {
  if (code == MPI_SUCCESS)
    return;
  std::string where = rank >= 0 ? " on rank " + std::to_string(rank) : "";
  fail(kBackend, op,
       std::string(call) + " failed" + where + ": " + mpiErrorText(code));
}

/// "" when `value` fits an MPI count (int), else a message naming it.
std::string checkFitsInt(int64_t value, const std::string &what, int rank) {
  if (value <= INT_MAX)
    return "";
  return "rank " + std::to_string(rank) + " passes " + what + " " +
         std::to_string(value) + ", more than MPI's int limit " +
         std::to_string(INT_MAX);
}

void throwIf(const std::string &error, const char *op) {
  if (!error.empty())
    fail(kBackend, op, error);
}

class MpiCommunicator final : public Communicator {
public:
  /// Takes ownership of `comm` (freed on destruction).
  MpiCommunicator(MPI_Comm comm, const CommOptions &options)
      : comm_(comm), options_(options) {
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "create",
          "MPI_Comm_set_errhandler", -1);
    check(MPI_Comm_rank(comm_, &rank_), "create", "MPI_Comm_rank", -1);
    check(MPI_Comm_size(comm_, &size_), "create", "MPI_Comm_size", rank_);
  }

  ~MpiCommunicator() override {
    // A communicator that outlives MPI_Finalize cannot be freed any more.
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized)
      MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char *backend() const override { return kBackend; }

  void allReduceSum(void *buf, int64_t count, CommDType dtype) override {
    const char *op = "allReduceSum";
    int n = checkedCount(op, count, 1);
    throwIf(detail::checkBuffer(rank_, "in-place", buf, count), op);
    if (!options_.deterministicSums && dtype != CommDType::BF16) {
      check(MPI_Allreduce(MPI_IN_PLACE, buf, n, mpiType(dtype), MPI_SUM, comm_),
            op, "MPI_Allreduce", rank_);
      return;
    }
    if (count == 0 || size_ == 1)
      return;
    // Chunk r of the padded buffer is summed by rank r, then gathered.
    const size_t elem = commDTypeSize(dtype);
    const int64_t chunk = (count + size_ - 1) / size_;
    int chunkCount = static_cast<int>(chunk); // <= count, checked above
    std::vector<unsigned char> padded(chunk * size_ * elem, 0);
    std::memcpy(padded.data(), buf, count * elem);
    std::vector<unsigned char> chunks(padded.size());
    check(MPI_Alltoall(padded.data(), chunkCount, mpiType(dtype), chunks.data(),
                       chunkCount, mpiType(dtype), comm_),
          op, "MPI_Alltoall", rank_);
    std::vector<unsigned char> mine(chunk * elem);
    sumChunks(chunks.data(), chunk, mine.data(), dtype);
    check(MPI_Allgather(mine.data(), chunkCount, mpiType(dtype), padded.data(),
                        chunkCount, mpiType(dtype), comm_),
          op, "MPI_Allgather", rank_);
    std::memcpy(buf, padded.data(), count * elem);
  }

  void allGather(const void *send, void *recv, int64_t countPerRank,
                 CommDType dtype) override {
    const char *op = "allGather";
    int n = checkedCount(op, countPerRank, size_);
    checkBuffers(op, send, countPerRank, recv, countPerRank * size_);
    check(
        MPI_Allgather(send, n, mpiType(dtype), recv, n, mpiType(dtype), comm_),
        op, "MPI_Allgather", rank_);
  }

  void reduceScatterSum(const void *send, void *recv, int64_t countPerRank,
                        CommDType dtype) override {
    const char *op = "reduceScatterSum";
    int n = checkedCount(op, countPerRank, size_);
    checkBuffers(op, send, countPerRank * size_, recv, countPerRank);
    if (!options_.deterministicSums && dtype != CommDType::BF16) {
      check(MPI_Reduce_scatter_block(send, recv, n, mpiType(dtype), MPI_SUM,
                                     comm_),
            op, "MPI_Reduce_scatter_block", rank_);
      return;
    }
    // Block r of every rank comes here, then is summed in rank order.
    std::vector<unsigned char> blocks(countPerRank * size_ *
                                      commDTypeSize(dtype));
    check(MPI_Alltoall(send, n, mpiType(dtype), blocks.data(), n,
                       mpiType(dtype), comm_),
          op, "MPI_Alltoall", rank_);
    if (countPerRank > 0)
      sumChunks(blocks.data(), countPerRank, recv, dtype);
  }

  void allToAll(const void *send, void *recv, int64_t countPerRank,
                CommDType dtype) override {
    const char *op = "allToAll";
    int n = checkedCount(op, countPerRank, size_);
    checkBuffers(op, send, countPerRank * size_, recv, countPerRank * size_);
    check(MPI_Alltoall(send, n, mpiType(dtype), recv, n, mpiType(dtype), comm_),
          op, "MPI_Alltoall", rank_);
  }

  void allToAllV(const void *send, const int64_t *sendCounts,
                 const int64_t *sendOffsets, void *recv,
                 const int64_t *recvCounts, const int64_t *recvOffsets,
                 CommDType dtype) override {
    const char *op = "allToAllV";
    std::string error = detail::checkCountsAndOffsets(rank_, "send", sendCounts,
                                                      sendOffsets, size_);
    if (error.empty())
      error = detail::checkCountsAndOffsets(rank_, "receive", recvCounts,
                                            recvOffsets, size_);
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    if (error.empty())
      error = toMpiCounts(sendCounts, sendOffsets, "send", sc, sd);
    if (error.empty())
      error = toMpiCounts(recvCounts, recvOffsets, "receive", rc, rd);
    int64_t sendTotal = 0, recvTotal = 0;
    for (int j = 0; j < size_ && error.empty(); ++j) {
      sendTotal += sendCounts[j];
      recvTotal += recvCounts[j];
    }
    if (error.empty())
      error = detail::checkBuffer(rank_, "send", send, sendTotal);
    if (error.empty())
      error = detail::checkBuffer(rank_, "receive", recv, recvTotal);
    if (options_.checkAllToAllVCounts)
      agreeOnCounts(op, sendCounts, recvCounts, error);
    throwIf(error, op);
    check(MPI_Alltoallv(send, sc.data(), sd.data(), mpiType(dtype), recv,
                        rc.data(), rd.data(), mpiType(dtype), comm_),
          op, "MPI_Alltoallv", rank_);
  }

  void broadcast(void *buf, int64_t count, CommDType dtype, int root) override {
    const char *op = "broadcast";
    throwIf(detail::checkRoot(rank_, root, size_), op);
    int n = checkedCount(op, count, 1);
    throwIf(detail::checkBuffer(rank_, "in-place", buf, count), op);
    check(MPI_Bcast(buf, n, mpiType(dtype), root, comm_), op, "MPI_Bcast",
          rank_);
  }

  void barrier() override {
    check(MPI_Barrier(comm_), "barrier", "MPI_Barrier", rank_);
  }

  std::unique_ptr<Communicator> split(int colour, int key) override {
    MPI_Comm part = MPI_COMM_NULL;
    check(
        MPI_Comm_split(comm_, colour < 0 ? MPI_UNDEFINED : colour, key, &part),
        "split", "MPI_Comm_split", rank_);
    if (part == MPI_COMM_NULL)
      return nullptr;
    return std::make_unique<MpiCommunicator>(part, options_);
  }

private:
  /// `count` as an MPI count, checking that it and count * scale (the
  /// largest total the call handles) are non-negative and fit an int.
  int checkedCount(const char *op, int64_t count, int scale) const {
    throwIf(detail::checkCount(rank_, "count", count), op);
    std::string total = "count " + std::to_string(count) + " times " +
                        std::to_string(scale) + " =";
    throwIf(checkFitsInt(count * scale, total, rank_), op);
    return static_cast<int>(count);
  }

  void checkBuffers(const char *op, const void *send, int64_t sendElements,
                    const void *recv, int64_t recvElements) const {
    throwIf(detail::checkBuffer(rank_, "send", send, sendElements), op);
    throwIf(detail::checkBuffer(rank_, "receive", recv, recvElements), op);
  }

  /// Converts allToAllV's counts and offsets to MPI's ints, or returns why
  /// it cannot.
  std::string toMpiCounts(const int64_t *counts, const int64_t *offsets,
                          const char *side, std::vector<int> &intCounts,
                          std::vector<int> &intOffsets) const {
    for (int j = 0; j < size_; ++j) {
      std::string peer = " for rank " + std::to_string(j);
      std::string error =
          checkFitsInt(counts[j], side + (" count" + peer), rank_);
      if (error.empty())
        error = checkFitsInt(offsets[j], side + (" offset" + peer), rank_);
      if (!error.empty())
        return error;
      intCounts[j] = static_cast<int>(counts[j]);
      intOffsets[j] = static_cast<int>(offsets[j]);
    }
    return "";
  }

  /// dst = sum in rank order of the size_ consecutive blocks of `count`
  /// elements in `blocks`.
  void sumChunks(const unsigned char *blocks, int64_t count, void *dst,
                 CommDType dtype) const {
    std::vector<const void *> sources(size_);
    for (int r = 0; r < size_; ++r)
      sources[r] = blocks + r * count * commDTypeSize(dtype);
    detail::sumInRankOrder(sources.data(), size_, dst, count, dtype);
  }

  /// Every rank learns what its peers send it and compares with what it
  /// expects; then all ranks agree on the lowest rank with an error, so
  /// that all of them throw (a mismatch would otherwise truncate or hang).
  void agreeOnCounts(const char *op, const int64_t *sendCounts,
                     const int64_t *recvCounts, std::string &error) {
    std::vector<int64_t> outgoing(size_, -1), incoming(size_);
    if (error.empty())
      outgoing.assign(sendCounts, sendCounts + size_);
    check(MPI_Alltoall(outgoing.data(), 1, MPI_INT64_T, incoming.data(), 1,
                       MPI_INT64_T, comm_),
          op, "MPI_Alltoall", rank_);
    for (int j = 0; j < size_ && error.empty(); ++j)
      if (incoming[j] >= 0 && incoming[j] != recvCounts[j])
        error = "rank " + std::to_string(j) + " sends " +
                std::to_string(incoming[j]) + " elements to rank " +
                std::to_string(rank_) + ", but rank " + std::to_string(rank_) +
                " expects " + std::to_string(recvCounts[j]);
    int firstBad = error.empty() ? INT_MAX : rank_;
    check(MPI_Allreduce(MPI_IN_PLACE, &firstBad, 1, MPI_INT, MPI_MIN, comm_),
          op, "MPI_Allreduce", rank_);
    if (error.empty() && firstBad != INT_MAX)
      error = "rank " + std::to_string(firstBad) +
              " found send and receive counts that disagree";
  }

  MPI_Comm comm_;
  CommOptions options_;
  int rank_ = -1, size_ = 0;
};

} // namespace

MpiSession::MpiSession(int *argc, char ***argv) {
  int initialised = 0;
  check(MPI_Initialized(&initialised), "init", "MPI_Initialized", -1);
  if (initialised)
    return;
  // FUNNELED: the runtime may run other threads (BLAS, local ranks), but
  // only the main thread calls MPI.
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init",
        "MPI_Init_thread", -1);
  initialisedHere_ = true;
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (initialisedHere_ && !finalized)
    MPI_Finalize();
}

std::unique_ptr<Communicator> mpiWorld(const CommOptions &options) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised)
    fail(kBackend, "world",
         "MPI is not initialised; create an MpiSession "
         "first");
  // A duplicate, so that our traffic never matches a caller's messages.
  MPI_Comm world = MPI_COMM_NULL;
  check(MPI_Comm_dup(MPI_COMM_WORLD, &world), "world", "MPI_Comm_dup", -1);
  return std::make_unique<MpiCommunicator>(world, options);
}

void mpiAbort(int exitCode) {
  MPI_Abort(MPI_COMM_WORLD, exitCode);
  std::abort(); // MPI_Abort does not return; satisfy [[noreturn]]
}

} // namespace moe::rt
