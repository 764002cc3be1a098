//===- NcclCommunicatorTest.cpp - The NCCL communicator on device buffers -===//
//
// Every collective of the NCCL communicator on device buffers, against
// expected values every rank computes on the host from (rank, index, salt):
// sums in rank order compared bit for bit (deterministicSums, the default),
// NCCL's own sums against a bound on reordering, gathers and all-to-alls by
// index arithmetic; split by colour and key; errors (allToAllV counts that
// disagree throw on every rank, bad arguments, a bad GPU at creation).
//
// Ranks:
//   - by default one rank per visible GPU of this process (at most 8, or
//     MOE_NCCL_TEST_GPUS), each driven by its own thread and bootstrapped
//     over local communicators: one GPU gives a 1-rank world (bootstrap
//     makeLocalCommunicators(1)), which still runs every code path, the
//     deterministic sums' chunk exchange and host sum included;
//   - built with MOE_NCCL_TEST_MPI, one rank per MPI process, bootstrapped
//     over mpiWorld(), on GPU (world rank % visible GPUs):
//       mpirun -np 4 NcclCommunicatorMpiTest
//     Only rank 0 prints GoogleTest's output; the exit status is the worst
//     of all ranks'.
// Without a GPU every test skips with "skipped: no GPU".
//
// Every rank calls the same collectives in the same order even after a
// mismatch (checks keep the first error and go on), so none hangs.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/NcclCommunicator.h"

#include "CudaTestUtil.h"
#include "cuda/Device.h"

#include <gtest/gtest.h>

#ifdef MOE_NCCL_TEST_MPI
#include <mpi.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace moe::rt;
using moe::cuda::test::DeviceBuffer;

namespace {

//===----------------------------------------------------------------------===//
// Data every rank can regenerate (as CommunicatorChecks.cpp)
//===----------------------------------------------------------------------===//

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t hashOf(uint64_t salt, int64_t a, int64_t b = 0) {
  return splitmix64(splitmix64(splitmix64(salt) ^ static_cast<uint64_t>(a)) ^
                    static_cast<uint64_t>(b));
}

template <typename T> CommDType dtypeOf();
template <> CommDType dtypeOf<float>() { return CommDType::F32; }
template <> CommDType dtypeOf<int32_t>() { return CommDType::I32; }
template <> CommDType dtypeOf<int64_t>() { return CommDType::I64; }

/// Element i of rank r's data. Floats span magnitudes 2^-8..2^8 so that the
/// order of a sum changes its rounding; integers stay far from overflow.
template <typename T> T valueAt(int rank, int64_t i, uint64_t salt) {
  uint64_t h = hashOf(salt, rank, i);
  if constexpr (std::is_same_v<T, float>) {
    float unit = static_cast<float>(h >> 40) / static_cast<float>(1 << 24);
    int exponent = static_cast<int>((h >> 8) % 17) - 8;
    return (2.0f * unit - 1.0f) * std::ldexp(1.0f, exponent);
  } else if constexpr (std::is_same_v<T, int32_t>) {
    return static_cast<int32_t>(h % 2000001) - 1000000;
  } else {
    return static_cast<int64_t>(h % (1ull << 51)) - (1ll << 50);
  }
}

template <typename T>
std::vector<T> valuesOf(int rank, int64_t count, uint64_t salt,
                        int64_t first = 0) {
  std::vector<T> values(count);
  for (int64_t i = 0; i < count; ++i)
    values[i] = valueAt<T>(rank, first + i, salt);
  return values;
}

template <typename T> std::string show(T value) {
  std::ostringstream os;
  os.precision(9);
  os << value;
  return os.str();
}

/// "" when got and want are bitwise equal, else the first difference.
template <typename T>
std::string compare(const std::vector<T> &got, const std::vector<T> &want,
                    const std::string &what) {
  if (got.size() != want.size())
    return what + ": " + std::to_string(got.size()) + " elements, expected " +
           std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0)
      return what + ": element " + std::to_string(i) + " is " + show(got[i]) +
             ", expected " + show(want[i]);
  return "";
}

/// NCCL's own summation order: |got - want| <= bound[i], where bound is
/// 2 n eps sum_r |x_r[i]| (any order of n - 1 additions errs by at most
/// (n - 1) eps sum |x_r| to first order; 2n leaves room) plus the smallest
/// normal float for sums that cancel to zero.
std::string compareClose(const std::vector<float> &got,
                         const std::vector<float> &want,
                         const std::vector<double> &absSum, int n,
                         const std::string &what) {
  if (got.size() != want.size())
    return what + ": " + std::to_string(got.size()) + " elements, expected " +
           std::to_string(want.size());
  const double eps = std::ldexp(1.0, -24);
  for (size_t i = 0; i < got.size(); ++i) {
    double bound = 2.0 * n * eps * absSum[i] + 1.2e-38;
    if (!(std::fabs(double(got[i]) - double(want[i])) <= bound))
      return what + ": element " + std::to_string(i) + " is " + show(got[i]) +
             ", expected " + show(want[i]) + " within " + show(bound);
  }
  return "";
}

/// Keeps the first error: a check goes on with its collectives after a
/// mismatch, so that every rank calls the same sequence and none hangs.
void keepFirst(std::string &first, const std::string &error) {
  if (first.empty())
    first = error;
}

/// "" when `call` throws std::runtime_error whose message contains every
/// one of `parts`.
std::string expectThrows(const std::function<void()> &call,
                         const std::vector<std::string> &parts,
                         const std::string &what) {
  try {
    call();
  } catch (const std::runtime_error &e) {
    std::string message = e.what();
    for (const std::string &part : parts)
      if (message.find(part) == std::string::npos)
        return what + ": the error '" + message + "' lacks '" + part + "'";
    return "";
  }
  return what + ": did not throw";
}

//===----------------------------------------------------------------------===//
// The ranks of this process
//===----------------------------------------------------------------------===//

struct Rank {
  int device = 0;
  std::unique_ptr<Communicator> deterministic; ///< default options
  std::unique_ptr<Communicator> native;        ///< deterministicSums = false
};

CommOptions nativeOptions() {
  CommOptions options;
  options.deterministicSums = false;
  return options;
}

#ifdef MOE_NCCL_TEST_MPI
std::unique_ptr<Communicator> mpiBootstrap; // set by main
#endif

/// How many GPUs (thread ranks) the threaded mode uses.
int threadRanks() {
  int n = std::min(moe::cuda::deviceCount(), 8);
  if (const char *limit = std::getenv("MOE_NCCL_TEST_GPUS"))
    n = std::max(1, std::min(n, std::atoi(limit)));
  return n;
}

/// Runs body(rank index, bootstrap) on every rank of this process: this
/// thread under MPI, else one thread per GPU over local communicators.
void onBootstraps(int n, const std::function<void(int, Communicator &)> &body) {
#ifdef MOE_NCCL_TEST_MPI
  (void)n;
  body(0, *mpiBootstrap);
#else
  if (n == 1) {
    auto local = makeLocalCommunicators(1);
    body(0, *local[0]);
    return;
  }
  runLocal(n, [&](Communicator &c) { body(c.rank(), c); });
#endif
}

int deviceOf(Communicator &bootstrap) {
#ifdef MOE_NCCL_TEST_MPI
  return bootstrap.rank() % moe::cuda::deviceCount();
#else
  return bootstrap.rank();
#endif
}

class Ranks {
public:
  /// The ranks, created on first use (collectively, on every rank).
  static Ranks &get() {
    static Ranks ranks;
    return ranks;
  }

  /// "" once the communicators exist, else why they could not be made.
  const std::string &create() {
    if (created_)
      return error_;
    created_ = true;
#ifdef MOE_NCCL_TEST_MPI
    const int n = 1;
#else
    const int n = threadRanks();
#endif
    ranks_.resize(n);
    std::vector<std::string> errors(n);
    try {
      onBootstraps(n, [&](int r, Communicator &bootstrap) {
        try {
          ranks_[r].device = deviceOf(bootstrap);
          ranks_[r].deterministic = ncclWorld(bootstrap, ranks_[r].device);
          ranks_[r].native =
              ncclWorld(bootstrap, ranks_[r].device, nativeOptions());
        } catch (const std::exception &e) {
          errors[r] = e.what();
          throw;
        }
      });
    } catch (const std::exception &e) {
      error_ = e.what();
    }
    for (const std::string &e : errors)
      keepFirst(error_, e);
    if (!error_.empty())
      ranks_.clear();
    return error_;
  }

  /// Runs check(rank's communicator) on every rank of this process at once
  /// and returns each rank's outcome ("" or the error).
  std::vector<std::string>
  run(bool native, const std::function<std::string(Communicator &)> &check) {
    std::vector<std::string> outcomes(ranks_.size());
    onEveryRank([&](size_t r) {
      try {
        moe::cuda::check(cudaSetDevice(ranks_[r].device), "cudaSetDevice");
        Communicator &comm =
            native ? *ranks_[r].native : *ranks_[r].deterministic;
        outcomes[r] = check(comm);
      } catch (const std::exception &e) {
        outcomes[r] = std::string("threw: ") + e.what();
      }
    });
    return outcomes;
  }

  /// Destroys the communicators (before MPI or CUDA go away), every rank's
  /// at once: ncclCommDestroy is collective over the ranks of a node, so
  /// destroying them one after another on one thread could hang.
  void reset() {
    onEveryRank([&](size_t r) {
      cudaSetDevice(ranks_[r].device);
      ranks_[r].native.reset();
      ranks_[r].deterministic.reset();
    });
    ranks_.clear();
  }

private:
  /// body(r) for every rank of this process, each on its own thread (on
  /// this one when there is a single rank).
  void onEveryRank(const std::function<void(size_t)> &body) {
    if (ranks_.size() == 1) {
      body(0);
      return;
    }
    std::vector<std::thread> threads;
    for (size_t r = 0; r < ranks_.size(); ++r)
      threads.emplace_back(body, r);
    for (auto &thread : threads)
      thread.join();
  }

  bool created_ = false;
  std::string error_;
  std::vector<Rank> ranks_;
};

/// Frees the communicators after the last test, while CUDA (and MPI) are
/// still up.
class NcclEnvironment : public ::testing::Environment {
public:
  void TearDown() override { Ranks::get().reset(); }
};
[[maybe_unused]] ::testing::Environment *const ncclEnvironment =
    ::testing::AddGlobalTestEnvironment(new NcclEnvironment);

class NcclCommunicatorTest : public ::testing::Test {
protected:
  void SetUp() override {
    if (moe::cuda::deviceCount() == 0)
      GTEST_SKIP() << "skipped: no GPU";
    const std::string &error = Ranks::get().create();
    ASSERT_EQ(error, "") << "cannot create the NCCL communicators";
  }

  /// Runs `check` on every rank and expects "" from each.
  void
  expectOnEveryRank(const std::function<std::string(Communicator &)> &check,
                    bool native = false) {
    std::vector<std::string> outcomes = Ranks::get().run(native, check);
    for (size_t r = 0; r < outcomes.size(); ++r)
      EXPECT_EQ(outcomes[r], "") << "rank (thread) " << r;
  }
};

//===----------------------------------------------------------------------===//
// Checks, one per collective and element type
//===----------------------------------------------------------------------===//

/// The documented sum of element i: ((x_0 + x_1) + x_2) + ... in T.
template <typename T>
T rankOrderSum(int n, const std::function<T(int)> &valueOfRank) {
  T acc = valueOfRank(0);
  for (int r = 1; r < n; ++r)
    acc = acc + valueOfRank(r);
  return acc;
}

const std::vector<int64_t> kCounts = {0, 1, 7, 1000, 4099};

template <typename T> std::string checkAllReduceSum(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  std::string error;
  for (int64_t count : kCounts) {
    DeviceBuffer<T> buf(valuesOf<T>(me, count, 1 + count));
    comm.allReduceSum(buf, count, dtypeOf<T>());
    std::vector<T> want(count);
    for (int64_t i = 0; i < count; ++i)
      want[i] = rankOrderSum<T>(
          n, [&](int r) { return valueAt<T>(r, i, 1 + count); });
    keepFirst(error,
              compare(buf.download(), want, "sum of " + std::to_string(count)));
  }
  return error;
}

std::string checkNativeAllReduceSum(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  std::string error;
  for (int64_t count : kCounts) {
    DeviceBuffer<float> buf(valuesOf<float>(me, count, 2 + count));
    comm.allReduceSum(buf, count, CommDType::F32);
    std::vector<float> want(count);
    std::vector<double> absSum(count, 0.0);
    for (int64_t i = 0; i < count; ++i) {
      want[i] = rankOrderSum<float>(
          n, [&](int r) { return valueAt<float>(r, i, 2 + count); });
      for (int r = 0; r < n; ++r)
        absSum[i] += std::fabs(valueAt<float>(r, i, 2 + count));
    }
    keepFirst(error, compareClose(buf.download(), want, absSum, n,
                                  "native sum of " + std::to_string(count)));
  }
  return error;
}

template <typename T> std::string checkAllGather(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  std::string error;
  for (int64_t count : {int64_t(0), int64_t(1), int64_t(333)}) {
    DeviceBuffer<T> send(valuesOf<T>(me, count, 3));
    DeviceBuffer<T> recv(static_cast<size_t>(count * n));
    comm.allGather(send, recv, count, dtypeOf<T>());
    std::vector<T> want;
    for (int r = 0; r < n; ++r) {
      std::vector<T> part = valuesOf<T>(r, count, 3);
      want.insert(want.end(), part.begin(), part.end());
    }
    keepFirst(error, compare(recv.download(), want,
                             "gathered " + std::to_string(count)));
  }
  return error;
}

/// Rank-order sums (bitwise) when `native` is false, else NCCL's within the
/// reordering bound (floats only; integers are exact either way).
template <typename T>
std::string checkReduceScatterSum(Communicator &comm, bool native) {
  const int n = comm.size(), me = comm.rank();
  std::string error;
  for (int64_t count : {int64_t(0), int64_t(1), int64_t(257), int64_t(1000)}) {
    DeviceBuffer<T> send(valuesOf<T>(me, count * n, 4 + count));
    DeviceBuffer<T> recv(static_cast<size_t>(count));
    comm.reduceScatterSum(send, recv, count, dtypeOf<T>());
    std::vector<T> want(count);
    std::vector<double> absSum(count, 0.0);
    for (int64_t i = 0; i < count; ++i) {
      auto value = [&](int r) {
        return valueAt<T>(r, me * count + i, 4 + count);
      };
      want[i] = rankOrderSum<T>(n, value);
      for (int r = 0; r < n; ++r)
        absSum[i] += std::fabs(static_cast<double>(value(r)));
    }
    std::string what = "reduce-scattered " + std::to_string(count);
    if constexpr (std::is_same_v<T, float>) {
      if (native) {
        keepFirst(error, compareClose(recv.download(), want, absSum, n, what));
        continue;
      }
    }
    keepFirst(error, compare(recv.download(), want, what));
  }
  return error;
}

template <typename T> std::string checkAllToAll(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  std::string error;
  for (int64_t count : {int64_t(0), int64_t(1), int64_t(129)}) {
    // Block j of rank r's send buffer is valueAt(r, j * count + k).
    DeviceBuffer<T> send(valuesOf<T>(me, count * n, 5));
    DeviceBuffer<T> recv(static_cast<size_t>(count * n));
    comm.allToAll(send, recv, count, dtypeOf<T>());
    std::vector<T> want;
    for (int r = 0; r < n; ++r) {
      std::vector<T> part = valuesOf<T>(r, count, 5, me * count);
      want.insert(want.end(), part.begin(), part.end());
    }
    keepFirst(error, compare(recv.download(), want,
                             "all-to-all " + std::to_string(count)));
  }
  return error;
}

/// Elements rank i sends to rank j: 0 to 4 by hash, some zero, and none at
/// all in pattern 1 (null buffers).
int64_t transferCount(int i, int j, int pattern) {
  if (pattern == 1)
    return 0;
  return static_cast<int64_t>(hashOf(7 + pattern, i, j) % 5);
}

/// Per-peer counts and offsets of one side, peers packed in reverse order
/// with a gap of 2 elements after each (offsets decrease; gaps stay
/// untouched).
struct Layout {
  std::vector<int64_t> counts, offsets;
  int64_t total = 0;
};

Layout layoutOf(int n, const std::function<int64_t(int)> &countOf) {
  Layout layout{std::vector<int64_t>(n), std::vector<int64_t>(n), 0};
  for (int j = n - 1; j >= 0; --j) {
    layout.counts[j] = countOf(j);
    layout.offsets[j] = layout.total;
    layout.total += layout.counts[j] + 2;
  }
  return layout;
}

Layout sendLayout(int n, int me, int pattern) {
  return layoutOf(n, [&](int j) { return transferCount(me, j, pattern); });
}
Layout recvLayout(int n, int me, int pattern) {
  return layoutOf(n, [&](int j) { return transferCount(j, me, pattern); });
}

template <typename T> std::string checkAllToAllV(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  std::string error;
  for (int pattern : {0, 1, 2}) {
    Layout out = sendLayout(n, me, pattern), in = recvLayout(n, me, pattern);
    const T sentinel = static_cast<T>(-12345);
    DeviceBuffer<T> send(valuesOf<T>(me, out.total, 6));
    DeviceBuffer<T> recv(std::vector<T>(in.total, sentinel));
    bool sendsNothing = true, receivesNothing = true;
    for (int j = 0; j < n; ++j) {
      sendsNothing &= out.counts[j] == 0;
      receivesNothing &= in.counts[j] == 0;
    }
    // A rank with nothing to move passes null buffers.
    comm.allToAllV(sendsNothing ? nullptr : send.get(), out.counts.data(),
                   out.offsets.data(), receivesNothing ? nullptr : recv.get(),
                   in.counts.data(), in.offsets.data(), dtypeOf<T>());
    std::vector<T> want(in.total, sentinel);
    for (int j = 0; j < n; ++j) {
      int64_t from = sendLayout(n, j, pattern).offsets[me];
      for (int64_t k = 0; k < in.counts[j]; ++k)
        want[in.offsets[j] + k] = valueAt<T>(j, from + k, 6);
    }
    keepFirst(error, compare(recv.download(), want,
                             "pattern " + std::to_string(pattern)));
  }
  return error;
}

template <typename T> std::string checkBroadcast(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  std::string error;
  for (int64_t count : {int64_t(0), int64_t(9), int64_t(1000)})
    for (int root : {0, n - 1}) {
      DeviceBuffer<T> buf(valuesOf<T>(me, count, 8 + root));
      comm.broadcast(buf, count, dtypeOf<T>(), root);
      keepFirst(error,
                compare(buf.download(), valuesOf<T>(root, count, 8 + root),
                        "from root " + std::to_string(root)));
    }
  return error;
}

/// The group's members, as world ranks in group-rank order, by an
/// all-gather on device.
std::vector<int32_t> membersOf(Communicator &group, int worldRank) {
  DeviceBuffer<int32_t> mine(std::vector<int32_t>{worldRank});
  DeviceBuffer<int32_t> all(static_cast<size_t>(group.size()));
  group.allGather(mine, all, 1, CommDType::I32);
  return all.download();
}

/// Splits by parity with keys reversing the order, leaves rank 0 out of a
/// second split (ties by rank), splits a split; checks members and a
/// rank-order sum in each group.
std::string checkSplit(Communicator &world) {
  const int n = world.size(), me = world.rank();
  std::string error;

  std::unique_ptr<Communicator> parity = world.split(me % 2, -me);
  std::vector<int32_t> want;
  for (int r = n - 1; r >= 0; --r)
    if (r % 2 == me % 2)
      want.push_back(r);
  if (!parity)
    return "parity split: got no group";
  keepFirst(error, compare(membersOf(*parity, me), want, "parity members"));
  if (parity->rank() !=
      static_cast<int>(std::find(want.begin(), want.end(), me) - want.begin()))
    keepFirst(error, "parity split: rank " + std::to_string(parity->rank()));
  {
    const int64_t count = 333;
    DeviceBuffer<float> buf(valuesOf<float>(me, count, 9));
    parity->allReduceSum(buf, count, CommDType::F32);
    std::vector<float> sum(count);
    for (int64_t i = 0; i < count; ++i)
      sum[i] = rankOrderSum<float>(static_cast<int>(want.size()), [&](int r) {
        return valueAt<float>(want[r], i, 9);
      });
    keepFirst(error, compare(buf.download(), sum, "sum in the parity group"));
  }

  std::unique_ptr<Communicator> rest = world.split(me == 0 ? -1 : 7, 0);
  if (me == 0) {
    if (rest)
      keepFirst(error, "rank 0 passed colour -1 but got a group");
  } else if (!rest) {
    keepFirst(error, "split without rank 0: got no group");
  } else {
    std::vector<int32_t> others;
    for (int r = 1; r < n; ++r)
      others.push_back(r);
    keepFirst(error,
              compare(membersOf(*rest, me), others, "members without 0"));
    if (rest->rank() != me - 1 || rest->size() != n - 1)
      keepFirst(error, "split without rank 0: rank " +
                           std::to_string(rest->rank()) + " of " +
                           std::to_string(rest->size()));
  }

  // A split of a split: the parity group again, keys back in rank order.
  std::unique_ptr<Communicator> again = parity->split(0, me);
  if (!again)
    return error.empty() ? "split of a split: got no group" : error;
  std::reverse(want.begin(), want.end());
  keepFirst(error, compare(membersOf(*again, me), want, "split of a split"));
  again->barrier();
  return error;
}

/// Every rank expects one element more than its next peer sends: every rank
/// throws; then only rank 0 expects too many: the others throw too. The
/// communicator works afterwards.
std::string checkAllToAllVMismatch(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  std::string error;
  for (bool everyRank : {true, false}) {
    Layout out = sendLayout(n, me, 0), in = recvLayout(n, me, 0);
    const int wrongPeer = (me + 1) % n;
    if (everyRank || me == 0)
      ++in.counts[wrongPeer];
    DeviceBuffer<float> send(static_cast<size_t>(out.total));
    DeviceBuffer<float> recv(static_cast<size_t>(in.total + 1));
    std::vector<std::string> parts = {"nccl communicator: allToAllV"};
    if (everyRank || me == 0)
      parts.push_back("expects " + std::to_string(in.counts[wrongPeer]));
    else
      parts.push_back("rank 0 found send and receive counts that disagree");
    keepFirst(error, expectThrows(
                         [&] {
                           comm.allToAllV(send, out.counts.data(),
                                          out.offsets.data(), recv,
                                          in.counts.data(), in.offsets.data(),
                                          CommDType::F32);
                         },
                         parts, everyRank ? "every rank" : "rank 0 only"));
  }
  comm.barrier();
  keepFirst(error, checkAllReduceSum<float>(comm));
  return error;
}

/// Bad arguments, the same on every rank: each throws before any
/// communication, and the communicator works afterwards.
std::string checkArgumentErrors(Communicator &comm) {
  const int n = comm.size();
  std::string error;
  std::vector<float> host(16, 1.0f);
  DeviceBuffer<float> device(16);
  keepFirst(
      error,
      expectThrows([&] { comm.allReduceSum(host.data(), 16, CommDType::F32); },
                   {"nccl communicator: allReduceSum", "host in-place buffer",
                    "device memory"},
                   "host buffer"));
  keepFirst(
      error,
      expectThrows([&] { comm.allGather(device, nullptr, 1, CommDType::F32); },
                   {"nccl communicator: allGather", "null receive buffer"},
                   "null buffer"));
  keepFirst(error,
            expectThrows(
                [&] { comm.allToAll(device, device, -1, CommDType::I32); },
                {"nccl communicator: allToAll", "negative"}, "negative count"));
  keepFirst(error,
            expectThrows([&] { comm.broadcast(device, 4, CommDType::F32, n); },
                         {"nccl communicator: broadcast", "root"}, "bad root"));
  comm.barrier();
  keepFirst(error, checkBroadcast<float>(comm));
  return error;
}

//===----------------------------------------------------------------------===//
// Tests
//===----------------------------------------------------------------------===//

TEST_F(NcclCommunicatorTest, Identity) {
  expectOnEveryRank([](Communicator &comm) -> std::string {
    if (std::string(comm.backend()) != "nccl")
      return std::string("backend ") + comm.backend();
    if (comm.size() < 1 || comm.rank() < 0 || comm.rank() >= comm.size())
      return "rank " + std::to_string(comm.rank()) + " of " +
             std::to_string(comm.size());
    return "";
  });
  std::printf("NCCL %s\n", ncclLibraryVersion());
}

TEST_F(NcclCommunicatorTest, AllReduceSumInRankOrder) {
  expectOnEveryRank(checkAllReduceSum<float>);
  expectOnEveryRank(checkAllReduceSum<int32_t>);
  expectOnEveryRank(checkAllReduceSum<int64_t>);
}

TEST_F(NcclCommunicatorTest, AllReduceSumNative) {
  expectOnEveryRank(checkNativeAllReduceSum, /*native=*/true);
  expectOnEveryRank(checkAllReduceSum<int32_t>, /*native=*/true);
  expectOnEveryRank(checkAllReduceSum<int64_t>, /*native=*/true);
}

TEST_F(NcclCommunicatorTest, AllGather) {
  expectOnEveryRank(checkAllGather<float>);
  expectOnEveryRank(checkAllGather<int32_t>);
  expectOnEveryRank(checkAllGather<int64_t>);
}

TEST_F(NcclCommunicatorTest, ReduceScatterSumInRankOrder) {
  auto check = [](auto tag) {
    using T = decltype(tag);
    return [](Communicator &comm) {
      return checkReduceScatterSum<T>(comm, false);
    };
  };
  expectOnEveryRank(check(float()));
  expectOnEveryRank(check(int32_t()));
  expectOnEveryRank(check(int64_t()));
}

TEST_F(NcclCommunicatorTest, ReduceScatterSumNative) {
  expectOnEveryRank(
      [](Communicator &comm) {
        return checkReduceScatterSum<float>(comm, true);
      },
      /*native=*/true);
  expectOnEveryRank(
      [](Communicator &comm) {
        return checkReduceScatterSum<int64_t>(comm, true);
      },
      /*native=*/true);
}

TEST_F(NcclCommunicatorTest, AllToAll) {
  expectOnEveryRank(checkAllToAll<float>);
  expectOnEveryRank(checkAllToAll<int32_t>);
  expectOnEveryRank(checkAllToAll<int64_t>);
}

TEST_F(NcclCommunicatorTest, AllToAllV) {
  expectOnEveryRank(checkAllToAllV<float>);
  expectOnEveryRank(checkAllToAllV<int32_t>);
  expectOnEveryRank(checkAllToAllV<int64_t>);
}

TEST_F(NcclCommunicatorTest, Broadcast) {
  expectOnEveryRank(checkBroadcast<float>);
  expectOnEveryRank(checkBroadcast<int32_t>);
  expectOnEveryRank(checkBroadcast<int64_t>);
}

TEST_F(NcclCommunicatorTest, Barrier) {
  expectOnEveryRank([](Communicator &comm) {
    for (int i = 0; i < 3; ++i)
      comm.barrier();
    return std::string();
  });
}

TEST_F(NcclCommunicatorTest, Split) { expectOnEveryRank(checkSplit); }

TEST_F(NcclCommunicatorTest, AllToAllVCountMismatchThrowsOnEveryRank) {
  expectOnEveryRank(checkAllToAllVMismatch);
}

TEST_F(NcclCommunicatorTest, ArgumentErrors) {
  expectOnEveryRank(checkArgumentErrors);
}

/// A GPU that does not exist, asked for by every rank: every rank throws
/// before NCCL starts.
TEST_F(NcclCommunicatorTest, BadDeviceThrowsOnEveryRank) {
#ifdef MOE_NCCL_TEST_MPI
  const int n = 1;
#else
  const int n = threadRanks();
#endif
  std::vector<std::string> outcomes(n);
  try {
    onBootstraps(n, [&](int r, Communicator &bootstrap) {
      outcomes[r] = expectThrows(
          [&] { ncclWorld(bootstrap, moe::cuda::deviceCount()); },
          {"nccl communicator: world", "asks for GPU"}, "bad device");
    });
  } catch (const std::exception &e) {
    FAIL() << e.what();
  }
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(outcomes[r], "") << "rank (thread) " << r;
}

} // namespace

#ifdef MOE_NCCL_TEST_MPI
int main(int argc, char **argv) {
  MpiSession session(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  mpiBootstrap = mpiWorld();
  if (mpiBootstrap->rank() != 0) {
    auto &listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int status = RUN_ALL_TESTS();
  Ranks::get().reset();
  mpiBootstrap.reset();
  MPI_Allreduce(MPI_IN_PLACE, &status, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return status;
}
#endif
