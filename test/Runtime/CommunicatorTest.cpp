//===- CommunicatorTest.cpp - The local communicator and mesh groups ------===//
//
// Every check of CommunicatorChecks.cpp (each collective and dtype against a
// naive expected result, split, the mesh groups against hand-written member
// lists, errors every backend must report) on 1, 2, 3, 4 and 8 local ranks;
// then what only the local backend promises: arguments checked across ranks
// with the same error everywhere, no hang when a rank fails or returns early,
// bit-identical sums from run to run.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Communicator.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using moe::MeshShape;
using namespace moe::rt;

// Defined in CommunicatorChecks.cpp.
std::vector<std::string> communicatorCheckNames(int worldSize);
std::string runCommunicatorCheck(const std::string &name, Communicator &comm);

namespace {

//===----------------------------------------------------------------------===//
// The shared checks on local ranks
//===----------------------------------------------------------------------===//

struct CheckCase {
  int ranks;
  std::string name;
};

std::vector<CheckCase> allCheckCases() {
  std::vector<CheckCase> cases;
  for (int n : {1, 2, 3, 4, 8})
    for (const std::string &name : communicatorCheckNames(n))
      cases.push_back({n, name});
  return cases;
}

std::string caseName(const testing::TestParamInfo<CheckCase> &info) {
  std::string name = std::to_string(info.param.ranks) + "ranks_";
  for (char ch : info.param.name)
    name += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return name;
}

class LocalChecks : public testing::TestWithParam<CheckCase> {};

TEST_P(LocalChecks, PassesOnEveryRank) {
  const CheckCase &c = GetParam();
  std::mutex mutex;
  std::vector<std::string> failures;
  runLocal(c.ranks, [&](Communicator &comm) {
    std::string error = runCommunicatorCheck(c.name, comm);
    if (!error.empty()) {
      std::lock_guard<std::mutex> lock(mutex);
      failures.push_back("rank " + std::to_string(comm.rank()) + ": " + error);
    }
  });
  for (const std::string &failure : failures)
    ADD_FAILURE() << failure;
}

INSTANTIATE_TEST_SUITE_P(Communicator, LocalChecks,
                         testing::ValuesIn(allCheckCases()), caseName);

//===----------------------------------------------------------------------===//
// Errors checked across ranks: every rank throws the same message
//===----------------------------------------------------------------------===//

/// Runs body on n ranks; each must throw std::runtime_error. Returns the
/// messages by rank ("" for a rank that did not throw).
std::vector<std::string>
errorsOnEveryRank(int n, const std::function<void(Communicator &)> &body) {
  std::vector<std::string> messages(n);
  runLocal(n, [&](Communicator &comm) {
    try {
      body(comm);
    } catch (const std::runtime_error &e) {
      messages[comm.rank()] = e.what();
    }
  });
  return messages;
}

void expectSameError(const std::vector<std::string> &messages,
                     const std::string &expected) {
  for (size_t r = 0; r < messages.size(); ++r)
    EXPECT_EQ(messages[r], expected) << "rank " << r;
}

TEST(LocalCommunicator, CountsThatDisagreeFailOnEveryRank) {
  expectSameError(errorsOnEveryRank(3,
                                    [](Communicator &comm) {
                                      std::vector<float> buf(3);
                                      comm.allReduceSum(buf.data(),
                                                        1 + comm.rank() % 2,
                                                        CommDType::F32);
                                    }),
                  "local communicator: allReduceSum: rank 1 passes count 2, "
                  "but rank 0 passes 1");
}

TEST(LocalCommunicator, DifferentCollectivesFailOnEveryRank) {
  expectSameError(
      errorsOnEveryRank(2,
                        [](Communicator &comm) {
                          float x[2] = {0, 0};
                          if (comm.rank() == 0)
                            comm.allReduceSum(x, 1, CommDType::F32);
                          else
                            comm.allGather(x, x, 1, CommDType::F32);
                        }),
      "local communicator: allReduceSum: rank 1 calls allGather while rank "
      "0 calls allReduceSum");
}

TEST(LocalCommunicator, DtypesThatDisagreeFailOnEveryRank) {
  expectSameError(
      errorsOnEveryRank(2,
                        [](Communicator &comm) {
                          int64_t x = 0;
                          comm.allReduceSum(&x, 1,
                                            comm.rank() ? CommDType::I64
                                                        : CommDType::I32);
                        }),
      "local communicator: allReduceSum: rank 1 passes i64 elements, but "
      "rank 0 passes i32");
}

TEST(LocalCommunicator, RootsThatDisagreeFailOnEveryRank) {
  expectSameError(errorsOnEveryRank(3,
                                    [](Communicator &comm) {
                                      float x = 0;
                                      comm.broadcast(&x, 1, CommDType::F32,
                                                     comm.rank() == 2);
                                    }),
                  "local communicator: broadcast: rank 2 passes root 1, but "
                  "rank 0 passes 0");
}

TEST(LocalCommunicator, NullBufferFailsOnEveryRank) {
  expectSameError(errorsOnEveryRank(2,
                                    [](Communicator &comm) {
                                      float x[2] = {0, 0};
                                      comm.allGather(comm.rank() ? nullptr : x,
                                                     x, 1, CommDType::F32);
                                    }),
                  "local communicator: allGather: rank 1 passes a null send "
                  "buffer for 1 elements");
}

TEST(LocalCommunicator, AllToAllVCountsThatDisagreeFailOnEveryRank) {
  expectSameError(
      errorsOnEveryRank(2,
                        [](Communicator &comm) {
                          int64_t send[2] = {1, 1}, recv[2] = {1, 1};
                          int64_t offsets[2] = {0, 1};
                          if (comm.rank() == 1)
                            recv[0] = 0;
                          float in[2] = {0, 0}, out[2] = {0, 0};
                          comm.allToAllV(in, send, offsets, out, recv, offsets,
                                         CommDType::F32);
                        }),
      "local communicator: allToAllV: rank 0 sends 1 elements to rank 1, but "
      "rank 1 expects 0");
}

TEST(LocalCommunicator, UsableAfterAnError) {
  runLocal(3, [](Communicator &comm) {
    float x = 1;
    EXPECT_THROW(comm.allReduceSum(&x, -1, CommDType::F32), std::runtime_error);
    comm.allReduceSum(&x, 1, CommDType::F32);
    EXPECT_EQ(x, 3.0f);
  });
}

//===----------------------------------------------------------------------===//
// Failures and early returns do not hang
//===----------------------------------------------------------------------===//

TEST(LocalCommunicator, RankFailureIsRethrownAndOthersStop) {
  std::vector<std::string> others(4);
  try {
    runLocal(4, [&](Communicator &comm) {
      if (comm.rank() == 2)
        throw std::logic_error("rank 2 broke");
      try {
        float x = 0;
        comm.allReduceSum(&x, 1, CommDType::F32);
      } catch (const std::runtime_error &e) {
        others[comm.rank()] = e.what();
        throw;
      }
    });
    FAIL() << "runLocal returned normally";
  } catch (const std::logic_error &e) {
    EXPECT_STREQ(e.what(), "rank 2 broke");
  }
  for (int r : {0, 1, 3})
    EXPECT_NE(others[r].find("another rank failed"), std::string::npos)
        << others[r];
}

TEST(LocalCommunicator, EarlyReturnOfARankIsAnError) {
  try {
    runLocal(3, [](Communicator &comm) {
      if (comm.rank() == 0)
        return;
      comm.barrier();
    });
    FAIL() << "runLocal returned normally";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("waits for rank 0, which has "
                                         "returned"),
              std::string::npos)
        << e.what();
  }
}

TEST(LocalCommunicator, EarlyReturnOutsideASubgroupIsFine) {
  // Rank 0 leaves; ranks 1 and 2 go on in a group without it.
  runLocal(3, [](Communicator &comm) {
    auto group = comm.split(comm.rank() == 0 ? 0 : 1, 0);
    if (comm.rank() == 0)
      return;
    for (int i = 0; i < 20; ++i) {
      int32_t x = 1;
      group->allReduceSum(&x, 1, CommDType::I32);
      EXPECT_EQ(x, 2);
    }
  });
}

TEST(LocalCommunicator, RankCountMustBePositive) {
  EXPECT_THROW(runLocal(0, [](Communicator &) {}), std::runtime_error);
  EXPECT_THROW(makeLocalCommunicators(-1), std::runtime_error);
}

TEST(LocalCommunicator, CommunicatorsWithoutRunLocal) {
  auto ranks = makeLocalCommunicators(2);
  std::vector<int64_t> got(2);
  std::thread other([&] {
    int64_t x = 20;
    ranks[1]->allReduceSum(&x, 1, CommDType::I64);
    got[1] = x;
  });
  int64_t x = 22;
  ranks[0]->allReduceSum(&x, 1, CommDType::I64);
  got[0] = x;
  other.join();
  EXPECT_EQ(got, (std::vector<int64_t>{42, 42}));
  EXPECT_EQ(ranks[1]->rank(), 1);
  EXPECT_EQ(ranks[1]->size(), 2);
  EXPECT_STREQ(ranks[0]->backend(), "local");
}

//===----------------------------------------------------------------------===//
// Determinism
//===----------------------------------------------------------------------===//

/// Sums of values whose order matters, on 8 ranks: each rank's bits.
std::vector<std::vector<uint32_t>> sumBitsOnEveryRank() {
  const int n = 8, count = 513;
  std::vector<std::vector<uint32_t>> bits(n);
  runLocal(n, [&](Communicator &comm) {
    std::vector<float> buf(count);
    for (int i = 0; i < count; ++i)
      buf[i] = (comm.rank() % 2 ? 1e7f : 1e-3f) * (i + 1) / (comm.rank() + 1);
    comm.allReduceSum(buf.data(), count, CommDType::F32);
    bits[comm.rank()].resize(count);
    std::memcpy(bits[comm.rank()].data(), buf.data(), count * sizeof(float));
  });
  return bits;
}

TEST(LocalCommunicator, SumsAreBitIdenticalAcrossRanksAndRuns) {
  auto first = sumBitsOnEveryRank();
  for (const auto &rank : first)
    EXPECT_EQ(rank, first[0]);
  EXPECT_EQ(sumBitsOnEveryRank(), first);
}

//===----------------------------------------------------------------------===//
// Mesh coordinates
//===----------------------------------------------------------------------===//

MeshShape mesh(int64_t dp, int64_t cp, int64_t tp, int64_t ep) {
  MeshShape shape;
  shape.dp = dp;
  shape.cp = cp;
  shape.tp = tp;
  shape.ep = ep;
  return shape;
}

TEST(MeshCoordinates, RankLayout) {
  // dp=2, cp=3, tp=2, ep=3: rank 9 = ((1 * 3) + 1) * 2 + 1, plane 4.
  MeshCoordinates at = meshCoordinates(mesh(2, 3, 2, 3), 9);
  EXPECT_EQ(at.d, 1);
  EXPECT_EQ(at.c, 1);
  EXPECT_EQ(at.t, 1);
  EXPECT_EQ(at.plane, 4);
  EXPECT_EQ(at.tp.rank, 1);
  EXPECT_EQ(at.dp.rank, 1);
  EXPECT_EQ(at.cp.rank, 1);
  EXPECT_EQ(at.ep.rank, 1);   // 4 % 3
  EXPECT_EQ(at.edp.rank, 1);  // 4 / 3
  EXPECT_EQ(at.dpCp.rank, 4); // the plane index
}

TEST(MeshCoordinates, Errors) {
  EXPECT_THROW(meshCoordinates(mesh(2, 1, 1, 1), 2), std::runtime_error);
  EXPECT_THROW(meshCoordinates(mesh(2, 1, 1, 1), -1), std::runtime_error);
  try {
    meshCoordinates(mesh(1, 1, 2, 2), 0);
    FAIL() << "no error";
  } catch (const std::runtime_error &e) {
    EXPECT_STREQ(e.what(), "mesh ep=2 must divide dp*cp=1 (expert "
                           "parallelism borrows its ranks from dp and cp)");
  }
}

TEST(MeshGroups, WorldSizeMismatchFailsOnEveryRankBeforeCommunicating) {
  expectSameError(errorsOnEveryRank(4,
                                    [](Communicator &comm) {
                                      makeMeshGroups(comm, mesh(2, 1, 1, 2));
                                    }),
                  "mesh dp=2,cp=1,tp=1,ep=2 spans dp*cp*tp=2 ranks, but the "
                  "world has 4");
}

} // namespace
