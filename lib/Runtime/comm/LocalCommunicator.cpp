//===- LocalCommunicator.cpp - N ranks as threads of one process ----------===//
//
// The ranks of a group share one Group object. A collective is: every rank
// publishes its arguments (pointers and counts) in its slot, waits for all
// (a mutex + condition variable generation barrier), checks every rank's
// arguments (the same check on every rank, so all ranks agree on an error),
// copies what it needs straight from the peers' buffers, and waits again so
// that no buffer is reused while a peer still reads it.
//
// Groups descend from one Universe (the ranks of one makeLocalCommunicators
// call). runLocal tells it when a rank fails or returns, and every rank that
// waits for that rank then throws instead of hanging.
//
//===----------------------------------------------------------------------===//

#include "CommDetail.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace moe::rt {
namespace {

using detail::fail;

constexpr const char *kBackend = "local";

enum class Op {
  AllReduceSum,
  AllGather,
  ReduceScatterSum,
  AllToAll,
  AllToAllV,
  Broadcast,
  Barrier,
  Split
};

const char *opName(Op op) {
  switch (op) {
  case Op::AllReduceSum:
    return "allReduceSum";
  case Op::AllGather:
    return "allGather";
  case Op::ReduceScatterSum:
    return "reduceScatterSum";
  case Op::AllToAll:
    return "allToAll";
  case Op::AllToAllV:
    return "allToAllV";
  case Op::Broadcast:
    return "broadcast";
  case Op::Barrier:
    return "barrier";
  case Op::Split:
    return "split";
  }
  return "unknown";
}

/// What one rank brings to a collective; the peers read it between the
/// collective's two barriers. `buf` is the in-place buffer of allReduceSum
/// and broadcast.
struct Contribution {
  Op op = Op::Barrier;
  CommDType dtype = CommDType::F32;
  const void *send = nullptr;
  void *recv = nullptr;
  int64_t count = 0;
  int root = 0;
  const int64_t *sendCounts = nullptr, *sendOffsets = nullptr;
  const int64_t *recvCounts = nullptr, *recvOffsets = nullptr;
  int colour = 0, key = 0;
};

/// The fields every buffer collective fills.
Contribution bufferContribution(Op op, CommDType dtype, const void *send,
                                void *recv, int64_t count) {
  Contribution c;
  c.op = op;
  c.dtype = dtype;
  c.send = send;
  c.recv = recv;
  c.count = count;
  return c;
}

class Group;

/// State shared by every group split from one set of local ranks: whether a
/// rank failed or returned, so that waiting ranks can stop.
class Universe {
public:
  explicit Universe(int n) : exited_(new std::atomic<bool>[n]) {
    for (int r = 0; r < n; ++r)
      exited_[r] = false;
  }

  void add(const std::shared_ptr<Group> &group) {
    std::lock_guard<std::mutex> lock(mutex_);
    groups_.erase(std::remove_if(groups_.begin(), groups_.end(),
                                 [](const auto &g) { return g.expired(); }),
                  groups_.end());
    groups_.push_back(group);
  }

  bool failed() const { return failed_; }
  bool exited(int worldRank) const { return exited_[worldRank]; }

  /// A rank threw: every rank waiting now or later gives up.
  void markFailed() {
    failed_ = true;
    wakeAll();
  }
  /// A rank's body returned (or threw): ranks waiting for it give up.
  void markExited(int worldRank) {
    exited_[worldRank] = true;
    wakeAll();
  }

private:
  void wakeAll();

  std::mutex mutex_;
  std::vector<std::weak_ptr<Group>> groups_;
  std::atomic<bool> failed_{false};
  std::unique_ptr<std::atomic<bool>[]> exited_;
};

class Group {
public:
  Group(std::shared_ptr<Universe> universe, std::vector<int> worldRanks)
      : universe_(std::move(universe)), worldRanks_(std::move(worldRanks)) {
    slots.resize(worldRanks_.size());
    scratch.resize(worldRanks_.size());
    newGroups.resize(worldRanks_.size());
  }

  int size() const { return static_cast<int>(worldRanks_.size()); }
  const std::shared_ptr<Universe> &universe() const { return universe_; }
  int worldRank(int rank) const { return worldRanks_[rank]; }

  /// The generation barrier: returns once every rank of the group has
  /// arrived; throws if instead the universe failed or a member left.
  void arriveAndWait(int rank, Op op) {
    std::unique_lock<std::mutex> lock(mutex_);
    uint64_t generation = generation_;
    if (++arrived_ == size()) {
      arrived_ = 0;
      ++generation_;
      wake_.notify_all();
      return;
    }
    std::string reason;
    wake_.wait(lock, [&] {
      if (generation_ != generation)
        return true;
      reason = whyAbandoned(rank);
      return !reason.empty();
    });
    if (generation_ == generation)
      fail(kBackend, opName(op), reason);
  }

  void wake() {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_.notify_all();
  }

  /// Written by their own rank before a collective's first barrier, read by
  /// all after it.
  std::vector<Contribution> slots;
  /// Per-rank partial results of allReduceSum.
  std::vector<std::vector<unsigned char>> scratch;
  /// split: the new group, published by its first member.
  std::vector<std::shared_ptr<Group>> newGroups;

private:
  std::string whyAbandoned(int rank) const {
    if (universe_->failed())
      return "rank " + std::to_string(rank) +
             " stops waiting because another rank failed";
    for (int r = 0; r < size(); ++r)
      if (universe_->exited(worldRanks_[r]))
        return "rank " + std::to_string(rank) + " waits for rank " +
               std::to_string(r) +
               ", which has returned without calling this collective";
    return "";
  }

  std::shared_ptr<Universe> universe_;
  std::vector<int> worldRanks_;
  std::mutex mutex_;
  std::condition_variable wake_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

void Universe::wakeAll() {
  std::vector<std::shared_ptr<Group>> live;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto &g : groups_)
      if (auto group = g.lock())
        live.push_back(std::move(group));
  }
  for (const auto &group : live)
    group->wake();
}

std::shared_ptr<Group> newGroup(std::shared_ptr<Universe> universe,
                                std::vector<int> worldRanks) {
  auto group = std::make_shared<Group>(universe, std::move(worldRanks));
  universe->add(group);
  return group;
}

/// How many elements the send and the receive buffer of one rank hold.
std::pair<int64_t, int64_t> bufferElements(Op op, int64_t count, int n) {
  switch (op) {
  case Op::AllReduceSum:
  case Op::Broadcast:
    return {0, count}; // in place: `recv` is the buffer
  case Op::AllGather:
    return {count, count * n};
  case Op::ReduceScatterSum:
    return {count * n, count};
  default:
    return {count * n, count * n};
  }
}

/// The error of a collective given every rank's contribution, or "". Every
/// rank computes it from the same slots, so all ranks agree.
std::string checkContributions(const std::vector<Contribution> &slots) {
  const Contribution &first = slots[0];
  const int n = static_cast<int>(slots.size());
  for (int r = 0; r < n; ++r) {
    const Contribution &c = slots[r];
    if (c.op != first.op)
      return "rank " + std::to_string(r) + " calls " + opName(c.op) +
             " while rank 0 calls " + opName(first.op);
    if (c.op == Op::Barrier || c.op == Op::Split)
      continue;
    if (c.dtype != first.dtype)
      return "rank " + std::to_string(r) + " passes " + commDTypeName(c.dtype) +
             " elements, but rank 0 passes " + commDTypeName(first.dtype);
    if (c.op == Op::AllToAllV) {
      std::string error = detail::checkCountsAndOffsets(r, "send", c.sendCounts,
                                                        c.sendOffsets, n);
      if (error.empty())
        error = detail::checkCountsAndOffsets(r, "receive", c.recvCounts,
                                              c.recvOffsets, n);
      if (!error.empty())
        return error;
      continue;
    }
    std::string error = detail::checkCount(r, "count", c.count);
    if (!error.empty())
      return error;
    if (c.count != first.count)
      return "rank " + std::to_string(r) + " passes count " +
             std::to_string(c.count) + ", but rank 0 passes " +
             std::to_string(first.count);
    auto [sendCount, recvCount] = bufferElements(c.op, c.count, n);
    error = detail::checkBuffer(r, "send", c.send, sendCount);
    if (error.empty())
      error = detail::checkBuffer(r, "receive", c.recv, recvCount);
    if (error.empty() && c.op == Op::Broadcast) {
      error = detail::checkRoot(r, c.root, n);
      if (error.empty() && c.root != first.root)
        error = "rank " + std::to_string(r) + " passes root " +
                std::to_string(c.root) + ", but rank 0 passes " +
                std::to_string(first.root);
    }
    if (!error.empty())
      return error;
  }
  if (first.op != Op::AllToAllV)
    return "";
  // Rank i's sendCounts[j] must be what rank j expects from i.
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      int64_t sent = slots[i].sendCounts[j], expected = slots[j].recvCounts[i];
      if (sent != expected)
        return "rank " + std::to_string(i) + " sends " + std::to_string(sent) +
               " elements to rank " + std::to_string(j) + ", but rank " +
               std::to_string(j) + " expects " + std::to_string(expected);
      if (sent > 0 && !slots[i].send)
        return "rank " + std::to_string(i) + " passes a null send buffer " +
               "but sends " + std::to_string(sent) + " elements";
      if (sent > 0 && !slots[j].recv)
        return "rank " + std::to_string(j) + " passes a null receive " +
               "buffer but receives " + std::to_string(sent) + " elements";
    }
  return "";
}

const unsigned char *bytes(const void *p) {
  return static_cast<const unsigned char *>(p);
}
unsigned char *bytes(void *p) { return static_cast<unsigned char *>(p); }

void copyElements(void *dst, const void *src, int64_t count, size_t elem) {
  if (count > 0)
    std::memcpy(dst, src, static_cast<size_t>(count) * elem);
}

class LocalCommunicator final : public Communicator {
public:
  LocalCommunicator(std::shared_ptr<Group> group, int rank)
      : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  const char *backend() const override { return kBackend; }
  const std::shared_ptr<Universe> &universe() const {
    return group_->universe();
  }

  void allReduceSum(void *buf, int64_t count, CommDType dtype) override {
    Contribution c =
        bufferContribution(Op::AllReduceSum, dtype, nullptr, buf, count);
    collective(c, [&](Group &g) { reduceInPlace(g, buf, count, dtype); });
  }

  void allGather(const void *send, void *recv, int64_t countPerRank,
                 CommDType dtype) override {
    Contribution c =
        bufferContribution(Op::AllGather, dtype, send, recv, countPerRank);
    collective(c, [&](Group &g) {
      size_t elem = commDTypeSize(dtype);
      for (int j = 0; j < size(); ++j)
        copyElements(bytes(recv) + j * countPerRank * elem, g.slots[j].send,
                     countPerRank, elem);
    });
  }

  void reduceScatterSum(const void *send, void *recv, int64_t countPerRank,
                        CommDType dtype) override {
    Contribution c =
        bufferContribution(Op::ReduceScatterSum, dtype, send, recv, countPerRank);
    collective(c, [&](Group &g) {
      size_t elem = commDTypeSize(dtype);
      std::vector<const void *> sources(size());
      for (int j = 0; j < size(); ++j)
        sources[j] = bytes(g.slots[j].send) + rank_ * countPerRank * elem;
      if (countPerRank > 0)
        detail::sumInRankOrder(sources.data(), size(), recv, countPerRank,
                               dtype);
    });
  }

  void allToAll(const void *send, void *recv, int64_t countPerRank,
                CommDType dtype) override {
    Contribution c =
        bufferContribution(Op::AllToAll, dtype, send, recv, countPerRank);
    collective(c, [&](Group &g) {
      size_t elem = commDTypeSize(dtype);
      for (int j = 0; j < size(); ++j)
        copyElements(bytes(recv) + j * countPerRank * elem,
                     bytes(g.slots[j].send) + rank_ * countPerRank * elem,
                     countPerRank, elem);
    });
  }

  void allToAllV(const void *send, const int64_t *sendCounts,
                 const int64_t *sendOffsets, void *recv,
                 const int64_t *recvCounts, const int64_t *recvOffsets,
                 CommDType dtype) override {
    Contribution c = bufferContribution(Op::AllToAllV, dtype, send, recv, 0);
    c.sendCounts = sendCounts;
    c.sendOffsets = sendOffsets;
    c.recvCounts = recvCounts;
    c.recvOffsets = recvOffsets;
    collective(c, [&](Group &g) {
      size_t elem = commDTypeSize(dtype);
      for (int j = 0; j < size(); ++j) {
        const Contribution &peer = g.slots[j];
        copyElements(bytes(recv) + recvOffsets[j] * elem,
                     bytes(peer.send) + peer.sendOffsets[rank_] * elem,
                     recvCounts[j], elem);
      }
    });
  }

  void broadcast(void *buf, int64_t count, CommDType dtype, int root) override {
    Contribution c =
        bufferContribution(Op::Broadcast, dtype, nullptr, buf, count);
    c.root = root;
    collective(c, [&](Group &g) {
      if (rank_ != root)
        copyElements(buf, g.slots[root].recv, count, commDTypeSize(dtype));
    });
  }

  void barrier() override {
    Contribution c;
    c.op = Op::Barrier;
    collective(c, [](Group &) {});
  }

  std::unique_ptr<Communicator> split(int colour, int key) override {
    Contribution c;
    c.op = Op::Split;
    c.colour = colour;
    c.key = key;
    std::unique_ptr<Communicator> result;
    collective(c, [&](Group &g) { result = joinSplit(g, colour); });
    // Every member has its group now; the leader drops its reference.
    group_->newGroups[rank_].reset();
    return result;
  }

private:
  /// Publish, wait, check, run `body` (which may wait again), wait.
  template <typename Body>
  void collective(const Contribution &mine, Body body) {
    Group &g = *group_;
    g.slots[rank_] = mine;
    g.arriveAndWait(rank_, mine.op);
    std::string error = checkContributions(g.slots);
    // Named after rank 0's call, so that every rank reports the same line.
    const char *op = opName(g.slots[0].op);
    if (error.empty())
      body(g);
    g.arriveAndWait(rank_, mine.op);
    if (!error.empty())
      fail(kBackend, op, error);
  }

  /// Each rank sums one chunk of the buffer over all ranks into its scratch
  /// (so the work is split n ways), then every rank gathers the chunks.
  void reduceInPlace(Group &g, void *buf, int64_t count, CommDType dtype) {
    const int n = size();
    const size_t elem = commDTypeSize(dtype);
    const int64_t chunk = (count + n - 1) / n;
    auto range = [&](int r) {
      int64_t begin = std::min(count, r * chunk);
      return std::make_pair(begin, std::min(count, begin + chunk));
    };
    auto [begin, end] = range(rank_);
    g.scratch[rank_].resize(static_cast<size_t>(end - begin) * elem);
    std::vector<const void *> sources(n);
    for (int j = 0; j < n; ++j)
      sources[j] = bytes(g.slots[j].recv) + begin * elem;
    if (end > begin)
      detail::sumInRankOrder(sources.data(), n, g.scratch[rank_].data(),
                             end - begin, dtype);
    g.arriveAndWait(rank_, Op::AllReduceSum);
    for (int j = 0; j < n; ++j) {
      auto [from, to] = range(j);
      copyElements(bytes(buf) + from * elem, g.scratch[j].data(), to - from,
                   elem);
    }
  }

  /// The ranks with this colour, ordered by (key, rank); the first creates
  /// the group, the others pick it up after a barrier.
  std::unique_ptr<Communicator> joinSplit(Group &g, int colour) {
    std::vector<std::pair<int, int>> members; // (key, old rank)
    for (int r = 0; r < size(); ++r)
      if (colour >= 0 && g.slots[r].colour == colour)
        members.emplace_back(g.slots[r].key, r);
    std::sort(members.begin(), members.end());
    int leader = members.empty() ? -1 : members.front().second;
    if (leader == rank_) {
      std::vector<int> worldRanks;
      for (const auto &member : members)
        worldRanks.push_back(g.worldRank(member.second));
      g.newGroups[rank_] = newGroup(g.universe(), std::move(worldRanks));
    }
    g.arriveAndWait(rank_, Op::Split);
    if (colour < 0)
      return nullptr;
    int newRank =
        static_cast<int>(std::find(members.begin(), members.end(),
                                   std::make_pair(g.slots[rank_].key, rank_)) -
                         members.begin());
    return std::make_unique<LocalCommunicator>(g.newGroups[leader], newRank);
  }

  std::shared_ptr<Group> group_;
  int rank_;
};

/// n ranks of a new universe, and the universe, for runLocal.
std::vector<std::unique_ptr<Communicator>>
makeRanks(int n, std::shared_ptr<Universe> &universe) {
  if (n < 1)
    fail(kBackend, "create",
         "needs at least 1 rank, but got " + std::to_string(n));
  universe = std::make_shared<Universe>(n);
  std::vector<int> worldRanks(n);
  for (int r = 0; r < n; ++r)
    worldRanks[r] = r;
  auto group = newGroup(universe, std::move(worldRanks));
  std::vector<std::unique_ptr<Communicator>> ranks;
  for (int r = 0; r < n; ++r)
    ranks.push_back(std::make_unique<LocalCommunicator>(group, r));
  return ranks;
}

} // namespace

std::vector<std::unique_ptr<Communicator>> makeLocalCommunicators(int n) {
  std::shared_ptr<Universe> universe;
  return makeRanks(n, universe);
}

void runLocal(int n, const std::function<void(Communicator &)> &body) {
  std::shared_ptr<Universe> universe;
  auto ranks = makeRanks(n, universe);
  std::mutex firstMutex;
  std::exception_ptr first;
  auto runRank = [&](int r) {
    try {
      body(*ranks[r]);
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(firstMutex);
        if (!first)
          first = std::current_exception();
      }
      universe->markFailed();
    }
    universe->markExited(r);
  };
  std::vector<std::thread> threads;
  try {
    for (int r = 0; r < n; ++r)
      threads.emplace_back(runRank, r);
  } catch (...) {
    // Ranks that never started count as failed, so the started ones return.
    {
      std::lock_guard<std::mutex> lock(firstMutex);
      if (!first)
        first = std::current_exception();
    }
    universe->markFailed();
  }
  for (auto &thread : threads)
    thread.join();
  if (first)
    std::rethrow_exception(first);
}

} // namespace moe::rt
