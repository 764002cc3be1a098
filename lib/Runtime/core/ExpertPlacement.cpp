//===- ExpertPlacement.cpp - Which EP rank holds which expert -------------===//
//
// Placements, the built-in placement and dispatch policies, and the loader
// of plugin policies (include/moe/Runtime/PlacementPlugin.h).
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/ExpertPlacement.h"
#include "moe/Runtime/PlacementPlugin.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace moe::rt {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

[[noreturn]] void badPlacement(const std::string &message) {
  throw std::invalid_argument("expert placement: " + message);
}

constexpr const char *kPluginPrefix = "plugin:";

bool isPluginSpec(const std::string &spec) {
  return spec.compare(0, std::strlen(kPluginPrefix), kPluginPrefix) == 0;
}

} // namespace

//===----------------------------------------------------------------------===//
// ExpertPlacement
//===----------------------------------------------------------------------===//

ExpertPlacement::ExpertPlacement(int64_t experts, int64_t ranks, int64_t slots,
                                 std::vector<int32_t> slotExperts)
    : experts_(experts), ranks_(ranks), slots_(slots),
      slotExperts_(std::move(slotExperts)) {
  if (ranks < 1)
    badPlacement("needs at least one rank, got " + str(ranks));
  if (slots < 1)
    badPlacement("needs at least one slot per rank, got " + str(slots));
  if (experts < 1 || experts > std::numeric_limits<int32_t>::max())
    badPlacement("the number of experts must be in [1, 2^31), got " +
                 str(experts));
  int64_t total = 0;
  if (__builtin_mul_overflow(ranks, slots, &total) ||
      total != static_cast<int64_t>(slotExperts_.size()))
    badPlacement(str(slotExperts_.size()) + " slot entries for " + str(ranks) +
                 " ranks of " + str(slots) + " slots");

  // One pass in slot order: ids in range, no expert twice on a rank (slots
  // are visited rank by rank, so the last rank seen per expert suffices),
  // and the replica count of every expert.
  std::vector<int64_t> lastRank(experts, -1);
  replicaOffsets_.assign(experts + 1, 0);
  for (int64_t g = 0; g < total; ++g) {
    int32_t e = slotExperts_[g];
    if (e == -1)
      continue;
    if (e < -1)
      badPlacement("slot " + str(g) + " holds expert " + str(e) +
                   " (an empty slot is -1)");
    if (e >= experts)
      badPlacement("slot " + str(g) + " holds expert " + str(e) +
                   ", but there are " + str(experts) + " experts");
    int64_t r = g / slots;
    if (lastRank[e] == r)
      badPlacement("rank " + str(r) + " holds expert " + str(e) + " twice");
    lastRank[e] = r;
    ++replicaOffsets_[e + 1];
  }
  for (int64_t e = 0; e < experts; ++e) {
    if (replicaOffsets_[e + 1] == 0)
      badPlacement("expert " + str(e) + " has no slot");
    hasReplicas_ |= replicaOffsets_[e + 1] > 1;
    replicaOffsets_[e + 1] += replicaOffsets_[e];
  }

  // CSR index: filling in slot order keeps each expert's slots ascending.
  replicaSlots_.resize(replicaOffsets_[experts]);
  std::vector<int64_t> next(replicaOffsets_.begin(), replicaOffsets_.end() - 1);
  for (int64_t g = 0; g < total; ++g)
    if (slotExperts_[g] >= 0)
      replicaSlots_[next[slotExperts_[g]]++] = g;
}

ExpertPlacement ExpertPlacement::staticSplit(int64_t experts, int64_t ranks,
                                             int64_t slots) {
  if (ranks < 1 || experts < 1 || experts % ranks != 0)
    badPlacement("the static split needs the ranks to divide the experts, "
                 "got " +
                 str(experts) + " experts on " + str(ranks) + " ranks");
  int64_t perRank = experts / ranks;
  if (slots < perRank)
    badPlacement("the static split needs " + str(perRank) +
                 " slots per rank, got " + str(slots));
  if (slots > std::numeric_limits<int64_t>::max() / ranks)
    badPlacement(str(ranks) + " ranks of " + str(slots) + " slots overflow");
  std::vector<int32_t> ids(ranks * slots, -1);
  for (int64_t r = 0; r < ranks; ++r)
    for (int64_t i = 0; i < perRank; ++i)
      ids[r * slots + i] = static_cast<int32_t>(r * perRank + i);
  return ExpertPlacement(experts, ranks, slots, std::move(ids));
}

void checkSplit(const DispatchRequest &request, const int64_t *split,
                const std::string &policy) {
  auto fail = [&](const std::string &message) {
    throw std::runtime_error("dispatch policy " + policy + ": " + message);
  };
  if (!request.placement || !request.counts || !split)
    fail("no placement, counts or split to check");
  const ExpertPlacement &p = *request.placement;
  int64_t n = p.ranks(), experts = p.experts(), total = n * p.slots();
  for (int64_t s = 0; s < n; ++s) {
    const int64_t *row = split + s * total;
    const int64_t *counts = request.counts + s * experts;
    // Each entry on its own first, so the sums below cannot overflow.
    for (int64_t g = 0; g < total; ++g) {
      int64_t rows = row[g];
      int32_t e = p.slotExperts()[g];
      if (rows < 0)
        fail("source " + str(s) + " sends " + str(rows) + " rows to slot " +
             str(g));
      if (e < 0 && rows != 0)
        fail("source " + str(s) + " sends " + str(rows) +
             " rows to the empty slot " + str(g));
      if (e >= 0 && rows > counts[e])
        fail("source " + str(s) + " sends " + str(rows) + " rows to slot " +
             str(g) + ", but routes only " + str(counts[e]) + " to expert " +
             str(e));
    }
    for (int64_t e = 0; e < experts; ++e) {
      int64_t sent = 0;
      const int64_t *reps = p.replicasBegin(e);
      for (int64_t k = 0, end = p.numReplicas(e); k < end; ++k)
        sent += row[reps[k]];
      if (sent != counts[e])
        fail("source " + str(s) + " sends " + str(sent) +
             " rows to the replicas of expert " + str(e) + ", but routes " +
             str(counts[e]) + " to it");
    }
  }
}

namespace {

//===----------------------------------------------------------------------===//
// Plugins
//===----------------------------------------------------------------------===//

/// A shared library opened for one policy and one of its symbols; closed
/// with the policy. `what` ("placement policy plugin:PATH") prefixes every
/// error.
class Plugin {
public:
  Plugin(std::string what, const std::string &path, const char *symbol)
      : what_(std::move(what)) {
    // dlopen("") would return the main program.
    if (path.empty())
      throw std::invalid_argument(what_ + ": no library path");
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_)
      throw std::invalid_argument(what_ + ": " + dlerrorText());
    dlerror();
    symbol_ = dlsym(handle_, symbol);
    if (!symbol_) {
      std::string message = dlerrorText();
      dlclose(handle_);
      throw std::invalid_argument(what_ + ": " + message);
    }
  }
  ~Plugin() { dlclose(handle_); }
  Plugin(const Plugin &) = delete;
  Plugin &operator=(const Plugin &) = delete;

  void *symbol() const { return symbol_; }

  /// Throws the plugin's message when its function returned nonzero.
  void check(int status, char *error, size_t size) const {
    if (status == 0)
      return;
    error[size - 1] = '\0';
    std::string message =
        error[0] ? std::string(error) : "failed with status " + str(status);
    throw std::runtime_error(what_ + ": " + message);
  }

private:
  static std::string dlerrorText() {
    const char *text = dlerror();
    return text ? text : "symbol not found";
  }

  std::string what_;
  void *handle_ = nullptr;
  void *symbol_ = nullptr;
};

constexpr size_t kErrorSize = 512;

//===----------------------------------------------------------------------===//
// Placement policies
//===----------------------------------------------------------------------===//

[[noreturn]] void placementFailed(const std::string &policy,
                                  const std::string &message) {
  throw std::runtime_error("placement policy " + policy + ": " + message);
}

const ExpertPlacement &currentOf(const PlacementRequest &request,
                                 const std::string &policy) {
  if (!request.current)
    placementFailed(policy, "no current placement");
  return *request.current;
}

/// The static split of `current`'s shape; a shape without one cannot be
/// placed.
ExpertPlacement staticFor(const ExpertPlacement &current,
                          const std::string &policy) {
  try {
    return ExpertPlacement::staticSplit(current.experts(), current.ranks(),
                                        current.slots());
  } catch (const std::invalid_argument &err) {
    placementFailed(policy, err.what());
  }
}

class StaticPlacement final : public PlacementPolicy {
public:
  std::string name() const override { return "static"; }
  ExpertPlacement place(const PlacementRequest &request) override {
    return staticFor(currentOf(request, name()), name());
  }
};

/// Static primaries; spare slots take replicas of the expert with the most
/// load per replica while that is above the mean load per expert, each on
/// the least loaded rank with room.
class ReplicateHotPlacement final : public PlacementPolicy {
public:
  std::string name() const override { return "replicate-hot"; }
  ExpertPlacement place(const PlacementRequest &request) override;
};

ExpertPlacement ReplicateHotPlacement::place(const PlacementRequest &request) {
  const ExpertPlacement &current = currentOf(request, name());
  ExpertPlacement base = staticFor(current, name());
  int64_t experts = base.experts(), n = base.ranks(), slots = base.slots();
  int64_t perRank = experts / n;
  if (perRank == slots)
    return base; // no spare slot
  const int64_t *load = request.expertLoad;
  if (!load)
    placementFailed(name(), "no expert load");
  __int128 totalLoad = 0;
  for (int64_t e = 0; e < experts; ++e) {
    if (load[e] < 0)
      placementFailed(name(), "expert " + str(e) + " has a negative load");
    totalLoad += load[e];
  }

  std::vector<int32_t> ids = base.slotExperts();
  std::vector<int64_t> replicas(experts, 1);
  std::vector<int64_t> used(n, perRank); // filled slots per rank
  std::vector<char> holds(n * experts, 0);
  for (int64_t e = 0; e < experts; ++e)
    holds[(e / perRank) * experts + e] = 1;
  auto canTake = [&](int64_t r, int64_t e) {
    return used[r] < slots && !holds[r * experts + e];
  };
  // Estimated rank loads in doubles: the same operations in the same order
  // on every rank, so every rank agrees.
  std::vector<double> rankLoad(n);

  for (;;) {
    // The expert with the most load per replica that some rank can take;
    // fractions compared exactly, ties to the lower id.
    int64_t best = -1;
    for (int64_t e = 0; e < experts; ++e) {
      if (replicas[e] >= n)
        continue;
      bool room = false;
      for (int64_t r = 0; r < n && !room; ++r)
        room = canTake(r, e);
      if (!room)
        continue;
      if (best < 0 || static_cast<__int128>(load[e]) * replicas[best] >
                          static_cast<__int128>(load[best]) * replicas[e])
        best = e;
    }
    if (best < 0 || static_cast<__int128>(load[best]) * experts <=
                        totalLoad * replicas[best])
      break;

    for (int64_t r = 0; r < n; ++r) {
      double sum = 0;
      for (int64_t i = 0; i < used[r]; ++i) {
        int32_t e = ids[r * slots + i];
        sum += static_cast<double>(load[e]) / static_cast<double>(replicas[e]);
      }
      rankLoad[r] = sum;
    }
    auto heldNow = [&](int64_t r) {
      for (int64_t i = 0; i < slots; ++i)
        if (current.expertAt(r, i) == best)
          return true;
      return false;
    };
    // Least loaded; ties to a rank that holds the expert now (no weights to
    // move), then to the lowest rank.
    int64_t target = -1;
    for (int64_t r = 0; r < n; ++r) {
      if (!canTake(r, best))
        continue;
      if (target < 0 || rankLoad[r] < rankLoad[target] ||
          (rankLoad[r] == rankLoad[target] && heldNow(r) && !heldNow(target)))
        target = r;
    }
    ids[target * slots + used[target]++] = static_cast<int32_t>(best);
    holds[target * experts + best] = 1;
    ++replicas[best];
  }
  return ExpertPlacement(experts, n, slots, std::move(ids));
}

class PluginPlacement final : public PlacementPolicy {
public:
  PluginPlacement(const std::string &spec, const std::string &path)
      : spec_(spec),
        plugin_("placement policy " + spec, path, "moe_place_experts") {}
  std::string name() const override { return spec_; }
  ExpertPlacement place(const PlacementRequest &request) override;

private:
  std::string spec_;
  Plugin plugin_;
};

ExpertPlacement PluginPlacement::place(const PlacementRequest &request) {
  const ExpertPlacement &current = currentOf(request, name());
  moe_placement_request req;
  req.layer = request.layer;
  req.experts = current.experts();
  req.ranks = current.ranks();
  req.slots = current.slots();
  req.current = current.slotExperts().data();
  req.expert_load = request.expertLoad;
  req.rank_expert_seconds = request.rankExpertSeconds;
  std::vector<int32_t> ids(current.slotExperts().size(), -1);
  char error[kErrorSize] = {};
  auto fn = reinterpret_cast<decltype(&moe_place_experts)>(plugin_.symbol());
  plugin_.check(fn(&req, ids.data(), error, kErrorSize), error, kErrorSize);
  try {
    return ExpertPlacement(current.experts(), current.ranks(), current.slots(),
                           std::move(ids));
  } catch (const std::invalid_argument &err) {
    placementFailed(name(), err.what());
  }
}

//===----------------------------------------------------------------------===//
// Dispatch policies
//===----------------------------------------------------------------------===//

/// The request's placement, after checking that the counts are usable.
const ExpertPlacement &checkedPlacement(const DispatchRequest &request,
                                        const std::string &policy) {
  auto fail = [&](const std::string &message) {
    throw std::runtime_error("dispatch policy " + policy + ": " + message);
  };
  if (!request.placement || !request.counts)
    fail("no placement or counts");
  const ExpertPlacement &p = *request.placement;
  int64_t n = p.ranks(), experts = p.experts();
  for (int64_t s = 0; s < n; ++s)
    for (int64_t e = 0; e < experts; ++e)
      if (request.counts[s * experts + e] < 0)
        fail("source " + str(s) + " routes " +
             str(request.counts[s * experts + e]) + " rows to expert " +
             str(e));
  return p;
}

class FirstDispatch final : public DispatchPolicy {
public:
  std::string name() const override { return "first"; }
  void split(const DispatchRequest &request, int64_t *split) override {
    const ExpertPlacement &p = checkedPlacement(request, name());
    int64_t n = p.ranks(), experts = p.experts(), total = n * p.slots();
    std::fill(split, split + n * total, 0);
    for (int64_t s = 0; s < n; ++s)
      for (int64_t e = 0; e < experts; ++e)
        split[s * total + p.replicasBegin(e)[0]] =
            request.counts[s * experts + e];
  }
};

/// Water filling over the ranks' received rows, hottest expert first; then
/// every expert's rows, concatenated in source order, are cut into its
/// replicas' shares in slot order. Scratch vectors are kept between calls.
class LeastLoadedDispatch final : public DispatchPolicy {
public:
  std::string name() const override { return "least-loaded"; }
  void split(const DispatchRequest &request, int64_t *split) override;

private:
  void waterFill(const ExpertPlacement &p, int64_t e);

  std::vector<int64_t> total_;  ///< [experts]: rows routed to each expert
  std::vector<int64_t> recv_;   ///< [ranks]: rows each rank receives so far
  std::vector<int64_t> first_;  ///< [ranks]: the same, all to primaries
  std::vector<int64_t> amount_; ///< [ranks * slots]: rows for each slot
  std::vector<int64_t> order_;  ///< experts with replicas, hottest first
  std::vector<std::pair<int64_t, int64_t>> fill_; ///< (rank load, slot)
};

void LeastLoadedDispatch::split(const DispatchRequest &request,
                                int64_t *split) {
  const ExpertPlacement &p = checkedPlacement(request, name());
  int64_t n = p.ranks(), experts = p.experts(), slots = p.slots();
  int64_t total = n * slots;
  const int64_t *counts = request.counts;

  total_.assign(experts, 0);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t e = 0; e < experts; ++e)
      total_[e] += counts[s * experts + e];
  recv_.assign(n, 0);
  amount_.assign(total, 0);
  order_.clear();
  for (int64_t e = 0; e < experts; ++e) {
    if (p.numReplicas(e) > 1) {
      order_.push_back(e);
      continue;
    }
    int64_t g = p.replicasBegin(e)[0];
    amount_[g] = total_[e];
    recv_[g / slots] += total_[e];
  }
  std::sort(order_.begin(), order_.end(), [&](int64_t a, int64_t b) {
    return total_[a] != total_[b] ? total_[a] > total_[b] : a < b;
  });
  for (int64_t e : order_)
    waterFill(p, e);
  // Filling the hottest expert first can crowd a rank that a later expert
  // needed; never do worse than sending every row to its primary.
  first_.assign(n, 0);
  for (int64_t e = 0; e < experts; ++e)
    first_[p.replicasBegin(e)[0] / slots] += total_[e];
  if (*std::max_element(first_.begin(), first_.end()) <
      *std::max_element(recv_.begin(), recv_.end())) {
    std::fill(amount_.begin(), amount_.end(), 0);
    for (int64_t e = 0; e < experts; ++e)
      amount_[p.replicasBegin(e)[0]] = total_[e];
  }

  // Replica k of e takes rows [B_k, B_k + amount) of e's rows concatenated
  // over the sources; a two-pointer walk over sources and replicas.
  std::fill(split, split + n * total, 0);
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t *reps = p.replicasBegin(e);
    int64_t k = 0, room = amount_[reps[0]];
    for (int64_t s = 0; s < n; ++s) {
      int64_t left = counts[s * experts + e];
      while (left > 0) {
        while (room == 0)
          room = amount_[reps[++k]];
        int64_t take = std::min(left, room);
        split[s * total + reps[k]] += take;
        left -= take;
        room -= take;
      }
    }
  }
}

/// Spreads total_[e] over e's replicas so as to raise the least loaded of
/// their ranks to a common level; the units that do not divide evenly go
/// one each to the replicas first in (rank load, slot) order.
void LeastLoadedDispatch::waterFill(const ExpertPlacement &p, int64_t e) {
  int64_t slots = p.slots(), k = p.numReplicas(e);
  const int64_t *reps = p.replicasBegin(e);
  fill_.clear();
  for (int64_t i = 0; i < k; ++i)
    fill_.emplace_back(recv_[reps[i] / slots], reps[i]);
  std::sort(fill_.begin(), fill_.end());

  // The m least loaded ranks rise to `level` while the rows last.
  int64_t m = 1, level = fill_[0].first, left = total_[e];
  while (m < k && (fill_[m].first - level) * m <= left) {
    left -= (fill_[m].first - level) * m;
    level = fill_[m].first;
    ++m;
  }
  int64_t each = left / m, extra = left % m;
  for (int64_t i = 0; i < m; ++i) {
    int64_t rows = level + each + (i < extra ? 1 : 0) - fill_[i].first;
    amount_[fill_[i].second] = rows;
    recv_[fill_[i].second / slots] += rows;
  }
}

class PluginDispatch final : public DispatchPolicy {
public:
  PluginDispatch(const std::string &spec, const std::string &path)
      : spec_(spec),
        plugin_("dispatch policy " + spec, path, "moe_split_tokens") {}
  std::string name() const override { return spec_; }
  bool checkAgreement() const override { return true; }
  void split(const DispatchRequest &request, int64_t *split) override {
    const ExpertPlacement &p = checkedPlacement(request, name());
    moe_dispatch_request req;
    req.experts = p.experts();
    req.ranks = p.ranks();
    req.slots = p.slots();
    req.slot_experts = p.slotExperts().data();
    req.counts = request.counts;
    int64_t n = p.ranks();
    std::fill(split, split + n * n * p.slots(), 0);
    char error[kErrorSize] = {};
    auto fn = reinterpret_cast<decltype(&moe_split_tokens)>(plugin_.symbol());
    plugin_.check(fn(&req, split, error, kErrorSize), error, kErrorSize);
    checkSplit(request, split, name());
  }

private:
  std::string spec_;
  Plugin plugin_;
};

} // namespace

std::unique_ptr<PlacementPolicy> makePlacementPolicy(const std::string &spec) {
  if (spec == "static")
    return std::make_unique<StaticPlacement>();
  if (spec == "replicate-hot")
    return std::make_unique<ReplicateHotPlacement>();
  if (isPluginSpec(spec))
    return std::make_unique<PluginPlacement>(
        spec, spec.substr(std::strlen(kPluginPrefix)));
  throw std::invalid_argument("unknown placement policy '" + spec +
                              "' (expected static, replicate-hot or "
                              "plugin:PATH)");
}

std::unique_ptr<DispatchPolicy> makeDispatchPolicy(const std::string &spec) {
  if (spec == "first")
    return std::make_unique<FirstDispatch>();
  if (spec == "least-loaded")
    return std::make_unique<LeastLoadedDispatch>();
  if (isPluginSpec(spec))
    return std::make_unique<PluginDispatch>(
        spec, spec.substr(std::strlen(kPluginPrefix)));
  throw std::invalid_argument("unknown dispatch policy '" + spec +
                              "' (expected first, least-loaded or "
                              "plugin:PATH)");
}

} // namespace moe::rt
