//===- CommunicatorMpiTest.cpp - The MPI communicator under mpirun --------===//
//
// Runs every check of CommunicatorChecks.cpp (the ones CommunicatorTest runs
// on local ranks, so both backends must give the same bits) over MPI, then
// the non-deterministic fast path against a tolerance. Rank 0 prints one line
// per check; a failing rank prints why on stderr. After each check all ranks
// agree on the outcome with a raw MPI_Allreduce (not the code under test),
// so every rank exits 1 on any mismatch anywhere, and none waits forever.
//
//   mpirun -np 4 CommunicatorMpiTest
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Communicator.h"

#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

using namespace moe::rt;

// Defined in CommunicatorChecks.cpp.
std::vector<std::string> communicatorCheckNames(int worldSize);
std::string runCommunicatorCheck(const std::string &name, Communicator &comm);

namespace {

/// Runs one check on every rank and reports it; returns whether it passed
/// on all ranks.
bool report(const std::string &name, Communicator &world,
            const std::function<std::string()> &check) {
  std::string error;
  try {
    error = check();
  } catch (const std::exception &e) {
    error = std::string("threw: ") + e.what();
  }
  if (!error.empty())
    std::fprintf(stderr, "rank %d: %s: %s\n", world.rank(), name.c_str(),
                 error.c_str());
  int failedRanks = error.empty() ? 0 : 1;
  MPI_Allreduce(MPI_IN_PLACE, &failedRanks, 1, MPI_INT, MPI_SUM,
                MPI_COMM_WORLD);
  if (world.rank() == 0) {
    if (failedRanks)
      std::printf("FAIL %s (np=%d, %d ranks failed)\n", name.c_str(),
                  world.size(), failedRanks);
    else
      std::printf("ok   %s (np=%d)\n", name.c_str(), world.size());
    std::fflush(stdout);
  }
  return failedRanks == 0;
}

/// MPI_SUM's order is the library's: compare with the rank-order sum at a
/// relative tolerance instead of bitwise.
std::string checkNativeSums(Communicator &native) {
  const int n = native.size(), me = native.rank(), count = 1000;
  auto value = [](int rank, int i) {
    return std::sin(0.37f * static_cast<float>(i) + static_cast<float>(rank));
  };
  std::vector<float> sum(count), scattered(count), send(count * n);
  for (int i = 0; i < count; ++i)
    sum[i] = value(me, i);
  for (int i = 0; i < count * n; ++i)
    send[i] = value(me, i);
  native.allReduceSum(sum.data(), count, CommDType::F32);
  native.reduceScatterSum(send.data(), scattered.data(), count, CommDType::F32);
  for (int i = 0; i < count; ++i) {
    double wantSum = 0, wantScattered = 0;
    for (int r = 0; r < n; ++r) {
      wantSum += value(r, i);
      wantScattered += value(r, me * count + i);
    }
    if (std::abs(sum[i] - wantSum) > 1e-5 * (1 + std::abs(wantSum)))
      return "allReduceSum element " + std::to_string(i) + " is " +
             std::to_string(sum[i]) + ", expected " + std::to_string(wantSum);
    if (std::abs(scattered[i] - wantScattered) >
        1e-5 * (1 + std::abs(wantScattered)))
      return "reduceScatterSum element " + std::to_string(i) + " is " +
             std::to_string(scattered[i]) + ", expected " +
             std::to_string(wantScattered);
  }
  return "";
}

int runAll() {
  auto world = mpiWorld();
  int failed = 0;
  for (const std::string &name : communicatorCheckNames(world->size()))
    failed += !report(name, *world,
                      [&] { return runCommunicatorCheck(name, *world); });

  CommOptions fast;
  fast.deterministicSums = false;
  fast.checkAllToAllVCounts = false;
  auto native = mpiWorld(fast);
  failed +=
      !report("nativeSums", *world, [&] { return checkNativeSums(*native); });
  failed += !report("backendName", *world, [&] {
    return std::string(world->backend()) == "mpi" ? "" : world->backend();
  });

  if (world->rank() == 0)
    std::printf("%d of %zu checks failed\n", failed,
                communicatorCheckNames(world->size()).size() + 2);
  return failed ? 1 : 0;
}

} // namespace

int main(int argc, char **argv) {
  try {
    MpiSession session(&argc, &argv);
    return runAll(); // the communicators are gone before MPI_Finalize
  } catch (const std::exception &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    mpiAbort(1);
  }
}
