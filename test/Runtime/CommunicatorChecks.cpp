//===- CommunicatorChecks.cpp - Collective checks for any backend ---------===//
//
// The checks CommunicatorTest (local ranks) and CommunicatorMpiTest (MPI
// processes) both run, so the two backends are held to the same results.
// Every rank generates any rank's data from (rank, index, salt), so each can
// compute the expected result of a collective on its own, naively: sums in
// rank order in the element type (the documented order, compared bit for
// bit), gathers and all-to-alls by index arithmetic. The mesh groups are
// compared with member lists written out by hand.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Communicator.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

using moe::MeshShape;
using namespace moe::rt;

// The interface of this file, declared again in the tests that use it.
std::vector<std::string> communicatorCheckNames(int worldSize);
std::string runCommunicatorCheck(const std::string &name, Communicator &comm);

namespace {

//===----------------------------------------------------------------------===//
// Data every rank can regenerate
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

/// The documented sum: ((x_0 + x_1) + x_2) + ... in the element type.
template <typename T>
T sumInRankOrder(int n, const std::function<T(int)> &valueOfRank) {
  T acc = valueOfRank(0);
  for (int r = 1; r < n; ++r)
    acc = acc + valueOfRank(r);
  return acc;
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

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

template <typename T>
std::string checkAllReduceSum(Communicator &comm, int64_t count) {
  const int n = comm.size();
  std::vector<T> buf = valuesOf<T>(comm.rank(), count, 1);
  comm.allReduceSum(buf.data(), count, dtypeOf<T>());
  std::vector<T> want(count);
  for (int64_t i = 0; i < count; ++i)
    want[i] = sumInRankOrder<T>(n, [&](int r) { return valueAt<T>(r, i, 1); });
  return compare(buf, want, "sum");
}

template <typename T>
std::string checkAllGather(Communicator &comm, int64_t count) {
  const int n = comm.size();
  std::vector<T> send = valuesOf<T>(comm.rank(), count, 2);
  std::vector<T> recv(count * n);
  comm.allGather(send.data(), recv.data(), count, dtypeOf<T>());
  std::vector<T> want;
  for (int r = 0; r < n; ++r) {
    std::vector<T> part = valuesOf<T>(r, count, 2);
    want.insert(want.end(), part.begin(), part.end());
  }
  return compare(recv, want, "gathered");
}

template <typename T>
std::string checkReduceScatterSum(Communicator &comm, int64_t count) {
  const int n = comm.size(), me = comm.rank();
  std::vector<T> send = valuesOf<T>(me, count * n, 3);
  std::vector<T> recv(count);
  comm.reduceScatterSum(send.data(), recv.data(), count, dtypeOf<T>());
  std::vector<T> want(count);
  for (int64_t i = 0; i < count; ++i)
    want[i] = sumInRankOrder<T>(
        n, [&](int r) { return valueAt<T>(r, me * count + i, 3); });
  return compare(recv, want, "scattered sum");
}

template <typename T>
std::string checkAllToAll(Communicator &comm, int64_t count) {
  const int n = comm.size(), me = comm.rank();
  std::vector<T> send = valuesOf<T>(me, count * n, 4);
  std::vector<T> recv(count * n);
  comm.allToAll(send.data(), recv.data(), count, dtypeOf<T>());
  std::vector<T> want;
  for (int r = 0; r < n; ++r) {
    std::vector<T> part = valuesOf<T>(r, count, 4, me * count);
    want.insert(want.end(), part.begin(), part.end());
  }
  return compare(recv, want, "exchanged");
}

/// The counts matrix of an allToAllV case: counts[i][j] elements go from
/// rank i to rank j. Pattern "random" has about one zero in four; "empty"
/// also has rank 0 send nothing and the last rank receive nothing.
std::vector<std::vector<int64_t>> transferCounts(int n, int pattern) {
  std::vector<std::vector<int64_t>> counts(n, std::vector<int64_t>(n));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      uint64_t h = hashOf(77 + pattern, i, j);
      counts[i][j] = h % 4 == 0 ? 0 : static_cast<int64_t>(h % 9);
      if (pattern == 1 && (i == 0 || j == n - 1))
        counts[i][j] = 0;
    }
  return counts;
}

/// Send blocks in reverse peer order with a one-element gap after each;
/// receive blocks in peer order with a two-element gap (offsets need not be
/// increasing, and the gaps must be left alone).
struct Layout {
  std::vector<int64_t> counts, offsets;
  int64_t total = 0;
};

Layout sendLayout(const std::vector<std::vector<int64_t>> &counts, int me) {
  const int n = static_cast<int>(counts.size());
  Layout layout{std::vector<int64_t>(n), std::vector<int64_t>(n), 0};
  for (int j = n - 1; j >= 0; --j) {
    layout.counts[j] = counts[me][j];
    layout.offsets[j] = layout.total;
    layout.total += counts[me][j] + 1;
  }
  return layout;
}

Layout recvLayout(const std::vector<std::vector<int64_t>> &counts, int me) {
  const int n = static_cast<int>(counts.size());
  Layout layout{std::vector<int64_t>(n), std::vector<int64_t>(n), 0};
  for (int j = 0; j < n; ++j) {
    layout.counts[j] = counts[j][me];
    layout.offsets[j] = layout.total;
    layout.total += counts[j][me] + 2;
  }
  return layout;
}

template <typename T>
std::string checkAllToAllV(Communicator &comm, int pattern) {
  const int n = comm.size(), me = comm.rank();
  auto counts = transferCounts(n, pattern);
  Layout out = sendLayout(counts, me), in = recvLayout(counts, me);
  std::vector<T> send = valuesOf<T>(me, out.total, 5);
  const T sentinel = static_cast<T>(-12345);
  std::vector<T> recv(in.total, sentinel);
  bool sendsNothing = true, receivesNothing = true;
  for (int j = 0; j < n; ++j) {
    sendsNothing &= out.counts[j] == 0;
    receivesNothing &= in.counts[j] == 0;
  }
  // A rank with nothing to move passes null buffers.
  comm.allToAllV(sendsNothing ? nullptr : send.data(), out.counts.data(),
                 out.offsets.data(), receivesNothing ? nullptr : recv.data(),
                 in.counts.data(), in.offsets.data(), dtypeOf<T>());
  std::vector<T> want(in.total, sentinel);
  for (int j = 0; j < n; ++j) {
    int64_t from = sendLayout(counts, j).offsets[me];
    for (int64_t k = 0; k < in.counts[j]; ++k)
      want[in.offsets[j] + k] = valueAt<T>(j, from + k, 5);
  }
  return compare(recv, want, "received");
}

/// Keeps the first error: a check goes on with its collectives after a
/// mismatch, so that every rank calls the same sequence and none hangs.
void keepFirst(std::string &first, const std::string &error) {
  if (first.empty())
    first = error;
}

template <typename T> std::string checkBroadcast(Communicator &comm) {
  const int64_t count = 9;
  std::string error;
  for (int root = 0; root < comm.size(); ++root) {
    std::vector<T> buf = valuesOf<T>(comm.rank(), count, 6 + root);
    comm.broadcast(buf.data(), count, dtypeOf<T>(), root);
    keepFirst(error, compare(buf, valuesOf<T>(root, count, 6 + root),
                             "from root " + std::to_string(root)));
  }
  return error;
}

std::string checkBarrier(Communicator &comm) {
  for (int i = 0; i < 3; ++i)
    comm.barrier();
  return "";
}

//===----------------------------------------------------------------------===//
// split
//===----------------------------------------------------------------------===//

/// The world ranks of a group's members, in group-rank order.
std::vector<int32_t> membersOf(Communicator &group, int worldRank) {
  std::vector<int32_t> members(group.size());
  group.allGather(&worldRank, members.data(), 1, CommDType::I32);
  return members;
}

/// Colour by parity, key -rank: each group lists its ranks in reverse.
std::string checkSplitByParity(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  auto group = comm.split(me % 2, -me);
  if (!group)
    return "split returned no group";
  std::vector<int32_t> want;
  for (int r = n - 1; r >= 0; --r)
    if (r % 2 == me % 2)
      want.push_back(r);
  std::string error = compare(membersOf(*group, me), want, "members");
  // The group works on its own: a sum over its members only.
  int64_t value = me + 1, expected = 0;
  for (int32_t r : want)
    expected += r + 1;
  group->allReduceSum(&value, 1, CommDType::I64);
  if (value != expected)
    keepFirst(error, "group sum is " + std::to_string(value) + ", expected " +
                         std::to_string(expected));
  // Splitting a split group.
  auto again = group->split(0, group->rank());
  keepFirst(error, compare(membersOf(*again, me), want,
                           "members after a second split"));
  return error;
}

/// Equal keys keep the old order; odd ranks pass a negative colour.
std::string checkSplitTiesAndNoGroup(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  auto group = comm.split(me % 2 == 0 ? 5 : -1, 0);
  if (me % 2 != 0)
    return group ? "a negative colour got a group" : "";
  if (!group)
    return "split returned no group";
  std::vector<int32_t> want;
  for (int r = 0; r < n; r += 2)
    want.push_back(r);
  return compare(membersOf(*group, me), want, "members");
}

//===----------------------------------------------------------------------===//
// Errors every backend reports on every rank
//===----------------------------------------------------------------------===//

/// Runs `call`, which must throw std::runtime_error containing `expected`.
std::string expectError(const std::function<void()> &call,
                        const std::string &expected) {
  try {
    call();
  } catch (const std::runtime_error &e) {
    if (std::string(e.what()).find(expected) == std::string::npos)
      return "error '" + std::string(e.what()) + "' does not mention '" +
             expected + "'";
    return "";
  }
  return "no error, expected one mentioning '" + expected + "'";
}

/// Rank 1 expects one element more from rank 0 than rank 0 sends.
std::string checkAllToAllVCountsDisagree(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  std::vector<int64_t> sendCounts(n, 1), recvCounts(n, 1), offsets(n);
  for (int j = 0; j < n; ++j)
    offsets[j] = 2 * j;
  if (me == 1)
    recvCounts[0] = 2;
  std::vector<float> send(2 * n, 1.0f), recv(2 * n, 0.0f);
  std::string error = expectError(
      [&] {
        comm.allToAllV(send.data(), sendCounts.data(), offsets.data(),
                       recv.data(), recvCounts.data(), offsets.data(),
                       CommDType::F32);
      },
      "allToAllV");
  if (!error.empty())
    return error;
  // The communicator is still usable.
  return checkAllReduceSum<int64_t>(comm, 3);
}

/// Only the last rank passes a negative count.
std::string checkAllToAllVNegativeOnOneRank(Communicator &comm) {
  const int n = comm.size(), me = comm.rank();
  std::vector<int64_t> counts(n, 0), offsets(n, 0);
  if (me == n - 1)
    counts[0] = -1;
  return expectError(
      [&] {
        comm.allToAllV(nullptr, counts.data(), offsets.data(), nullptr,
                       counts.data(), offsets.data(), CommDType::F32);
      },
      "allToAllV");
}

std::string checkNegativeCount(Communicator &comm) {
  float x = 0;
  return expectError([&] { comm.allReduceSum(&x, -3, CommDType::F32); },
                     "negative");
}

std::string checkBadRoot(Communicator &comm) {
  float x = 0;
  return expectError(
      [&] { comm.broadcast(&x, 1, CommDType::F32, comm.size()); }, "root");
}

//===----------------------------------------------------------------------===//
// Mesh groups
//===----------------------------------------------------------------------===//

using Groups = std::vector<std::vector<int32_t>>;

struct MeshCase {
  const char *mesh;
  int world;
  Groups dp, cp, tp, ep, edp, dpCp;
};

Groups singles(int n) {
  Groups groups;
  for (int r = 0; r < n; ++r)
    groups.push_back({r});
  return groups;
}

Groups all(int n) {
  Groups groups(1);
  for (int r = 0; r < n; ++r)
    groups[0].push_back(r);
  return groups;
}

/// Member lists worked out by hand from rank = ((d * cp) + c) * tp + t.
const std::vector<MeshCase> &meshCases() {
  static const std::vector<MeshCase> cases = {
      {"", 1, all(1), all(1), all(1), all(1), all(1), all(1)},
      {"dp=2,ep=2", 2, all(2), singles(2), singles(2), all(2), singles(2),
       all(2)},
      {"tp=2", 2, singles(2), singles(2), all(2), singles(2), singles(2),
       singles(2)},
      {"dp=3,ep=3", 3, all(3), singles(3), singles(3), all(3), singles(3),
       all(3)},
      {"cp=3", 3, singles(3), all(3), singles(3), singles(3), all(3), all(3)},
      {"dp=2,tp=2,ep=2",
       4,
       {{0, 2}, {1, 3}},
       singles(4),
       {{0, 1}, {2, 3}},
       {{0, 2}, {1, 3}},
       singles(4),
       {{0, 2}, {1, 3}}},
      {"dp=2,cp=2,ep=4",
       4,
       {{0, 2}, {1, 3}},
       {{0, 1}, {2, 3}},
       singles(4),
       all(4),
       singles(4),
       all(4)},
      {"dp=2,cp=2,ep=2",
       4,
       {{0, 2}, {1, 3}},
       {{0, 1}, {2, 3}},
       singles(4),
       {{0, 1}, {2, 3}},
       {{0, 2}, {1, 3}},
       all(4)},
      {"cp=2,tp=2",
       4,
       singles(4),
       {{0, 2}, {1, 3}},
       {{0, 1}, {2, 3}},
       singles(4),
       {{0, 2}, {1, 3}},
       {{0, 2}, {1, 3}}},
      {"dp=4,ep=2",
       4,
       all(4),
       singles(4),
       singles(4),
       {{0, 1}, {2, 3}},
       {{0, 2}, {1, 3}},
       all(4)},
      {"dp=2,cp=2,tp=2,ep=2",
       8,
       {{0, 4}, {1, 5}, {2, 6}, {3, 7}},
       {{0, 2}, {1, 3}, {4, 6}, {5, 7}},
       {{0, 1}, {2, 3}, {4, 5}, {6, 7}},
       {{0, 2}, {1, 3}, {4, 6}, {5, 7}},
       {{0, 4}, {1, 5}, {2, 6}, {3, 7}},
       {{0, 2, 4, 6}, {1, 3, 5, 7}}},
      {"dp=4,tp=2,ep=4",
       8,
       {{0, 2, 4, 6}, {1, 3, 5, 7}},
       singles(8),
       {{0, 1}, {2, 3}, {4, 5}, {6, 7}},
       {{0, 2, 4, 6}, {1, 3, 5, 7}},
       singles(8),
       {{0, 2, 4, 6}, {1, 3, 5, 7}}},
      {"dp=8,ep=4",
       8,
       all(8),
       singles(8),
       singles(8),
       {{0, 1, 2, 3}, {4, 5, 6, 7}},
       {{0, 4}, {1, 5}, {2, 6}, {3, 7}},
       all(8)},
  };
  return cases;
}

MeshShape parseMesh(const std::string &text) {
  std::string error;
  auto mesh = MeshShape::parse(text, error);
  if (!mesh)
    throw std::runtime_error("bad mesh in test: " + error);
  return *mesh;
}

/// The group of `groups` holding `rank`, and the rank's index in it.
std::pair<const std::vector<int32_t> *, int> findRank(const Groups &groups,
                                                      int rank) {
  for (const auto &group : groups)
    for (size_t i = 0; i < group.size(); ++i)
      if (group[i] == rank)
        return {&group, static_cast<int>(i)};
  return {nullptr, -1};
}

/// meshCoordinates against the lists: rank in group, same colour exactly
/// for the members.
std::string checkCoordinates(const MeshShape &mesh, const Groups &groups,
                             MeshGroupId MeshCoordinates::*axis, int me) {
  auto [group, index] = findRank(groups, me);
  if (!group)
    return "rank missing from the expected lists";
  MeshGroupId mine = meshCoordinates(mesh, me).*axis;
  if (mine.rank != index)
    return "coordinate rank " + std::to_string(mine.rank) + ", expected " +
           std::to_string(index);
  for (int r = 0; r < mesh.worldSize(); ++r) {
    bool together = findRank(groups, r).first == group;
    bool sameColour = (meshCoordinates(mesh, r).*axis).colour == mine.colour;
    if (together != sameColour)
      return "rank " + std::to_string(r) +
             (together ? " should" : " should not") + " share colour " +
             std::to_string(mine.colour);
  }
  return "";
}

std::string checkMeshCase(const MeshCase &c, Communicator &world) {
  MeshShape mesh = parseMesh(c.mesh);
  const int me = world.rank();
  MeshGroups groups = makeMeshGroups(world, mesh);
  struct Axis {
    const char *name;
    const Groups &expected;
    Communicator *group;
    MeshGroupId MeshCoordinates::*coordinate;
  };
  const Axis axes[] = {
      {"dp", c.dp, groups.dp.get(), &MeshCoordinates::dp},
      {"cp", c.cp, groups.cp.get(), &MeshCoordinates::cp},
      {"tp", c.tp, groups.tp.get(), &MeshCoordinates::tp},
      {"ep", c.ep, groups.ep.get(), &MeshCoordinates::ep},
      {"edp", c.edp, groups.edp.get(), &MeshCoordinates::edp},
      {"dpCp", c.dpCp, groups.dpCp.get(), &MeshCoordinates::dpCp},
  };
  std::string error;
  for (const Axis &axis : axes) {
    std::vector<int32_t> members = membersOf(*axis.group, me);
    std::string axisError =
        checkCoordinates(mesh, axis.expected, axis.coordinate, me);
    auto [want, index] = findRank(axis.expected, me);
    if (axisError.empty())
      axisError = compare(members, *want, "members");
    if (axisError.empty() && axis.group->rank() != index)
      axisError = "group rank " + std::to_string(axis.group->rank()) +
                  ", expected " + std::to_string(index);
    if (!axisError.empty())
      keepFirst(error, std::string(axis.name) + " group: " + axisError);
  }
  return error;
}

/// A mesh that does not span the world, and an invalid one: every rank
/// throws before any communication, and the world still works after.
std::string checkMeshMismatch(Communicator &world) {
  MeshShape tooBig;
  tooBig.dp = world.size() + 1;
  std::string error =
      expectError([&] { makeMeshGroups(world, tooBig); },
                  "but the world has " + std::to_string(world.size()));
  MeshShape bad;
  bad.tp = world.size();
  bad.ep = 2;
  keepFirst(error,
            expectError([&] { makeMeshGroups(world, bad); }, "must divide"));
  keepFirst(error, checkAllReduceSum<int32_t>(world, 5));
  return error;
}

//===----------------------------------------------------------------------===//
// The table
//===----------------------------------------------------------------------===//

using Check = std::function<std::string(Communicator &)>;

std::vector<std::pair<std::string, Check>> checksFor(int worldSize) {
  std::vector<std::pair<std::string, Check>> checks;
  auto add = [&](const std::string &name, Check check) {
    checks.emplace_back(name, std::move(check));
  };
  auto typed = [&](const std::string &what, auto run) {
    add(what + "/f32", [=](Communicator &c) { return run(c, float()); });
    add(what + "/i32", [=](Communicator &c) { return run(c, int32_t()); });
    add(what + "/i64", [=](Communicator &c) { return run(c, int64_t()); });
  };
  for (int64_t count : {0, 1, 7, 1000, 65537})
    typed("allReduceSum/count=" + std::to_string(count), [=](auto &c, auto t) {
      return checkAllReduceSum<decltype(t)>(c, count);
    });
  for (int64_t count : {0, 5})
    typed("allGather/count=" + std::to_string(count), [=](auto &c, auto t) {
      return checkAllGather<decltype(t)>(c, count);
    });
  for (int64_t count : {0, 3, 64})
    typed("reduceScatterSum/count=" + std::to_string(count),
          [=](auto &c, auto t) {
            return checkReduceScatterSum<decltype(t)>(c, count);
          });
  for (int64_t count : {0, 4})
    typed("allToAll/count=" + std::to_string(count), [=](auto &c, auto t) {
      return checkAllToAll<decltype(t)>(c, count);
    });
  for (int pattern : {0, 1})
    typed(std::string("allToAllV/") + (pattern ? "empty" : "random"),
          [=](auto &c, auto t) {
            return checkAllToAllV<decltype(t)>(c, pattern);
          });
  typed("broadcast",
        [](auto &c, auto t) { return checkBroadcast<decltype(t)>(c); });
  add("barrier", checkBarrier);
  add("split/parity", checkSplitByParity);
  add("split/tiesAndNoGroup", checkSplitTiesAndNoGroup);
  if (worldSize >= 2)
    add("error/allToAllVCountsDisagree", checkAllToAllVCountsDisagree);
  add("error/allToAllVNegativeOnOneRank", checkAllToAllVNegativeOnOneRank);
  add("error/negativeCount", checkNegativeCount);
  add("error/badRoot", checkBadRoot);
  add("error/meshMismatch", checkMeshMismatch);
  for (const MeshCase &c : meshCases())
    if (c.world == worldSize)
      add(std::string("meshGroups/") + (*c.mesh ? c.mesh : "single"),
          [&c](Communicator &comm) { return checkMeshCase(c, comm); });
  return checks;
}

} // namespace

std::vector<std::string> communicatorCheckNames(int worldSize) {
  std::vector<std::string> names;
  for (const auto &check : checksFor(worldSize))
    names.push_back(check.first);
  return names;
}

std::string runCommunicatorCheck(const std::string &name, Communicator &comm) {
  for (const auto &check : checksFor(comm.size()))
    if (check.first == name)
      return check.second(comm);
  return "no check named '" + name + "'";
}
