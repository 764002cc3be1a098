//===- ExpertPlacement.h - Which EP rank holds which expert -----*- C++ -*-===//
//
// Load-aware expert placement. A model compiled for expert parallelism gives
// every rank of an EP group (n ranks) the same number of expert slots per
// MoE layer, S >= E/n (E experts; moec --replica-slots R makes S = E/n + R).
// An ExpertPlacement says which expert each slot holds: the static split
// (rank j holds experts [j*E/n, (j+1)*E/n), the extra slots empty), any
// other assignment (experts moved between ranks), or one where hot experts
// have replicas on several ranks. Every EP group of the mesh uses the same
// placement, so the expert-data-parallel copies of a slot stay the same.
//
// Two pluggable policies use it:
//
// * a PlacementPolicy chooses a layer's placement from the load measured
//   over the last window of steps (tokens routed to each expert, each EP
//   rank's expert compute time);
// * a DispatchPolicy decides, at every dispatch, how the token-slots routed
//   to an expert with replicas are split among them, from the counts every
//   source rank of the EP group routes to every expert in that call.
//
// Both must be deterministic functions of their inputs: every rank of the
// job calls them with the same inputs and must reach the same answer (the
// runtime checks this for policies it did not build in).
//
// A user-supplied policy is a shared library loaded with "plugin:PATH"; its
// C interface is include/moe/Runtime/PlacementPlugin.h.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_EXPERTPLACEMENT_H
#define MOE_RUNTIME_EXPERTPLACEMENT_H

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moe::rt {

/// The experts held by the slots of one MoE layer's EP group: global slot
/// g = rank * slots + slot holds expert slotExperts()[g], or nothing (-1).
/// Every expert has at least one slot (its replicas), at most one per rank.
class ExpertPlacement {
public:
  ExpertPlacement() = default;
  /// Validates and indexes `slotExperts` ([ranks * slots]); throws
  /// std::invalid_argument with one line naming the problem (a size that
  /// does not match, an expert id out of range, an expert without a slot, an
  /// expert twice on one rank).
  ExpertPlacement(int64_t experts, int64_t ranks, int64_t slots,
                  std::vector<int32_t> slotExperts);

  /// Rank j holds experts [j*E/n, (j+1)*E/n) in its first E/n slots, in
  /// order; the other slots are empty. Needs n to divide E and
  /// slots >= E/n (std::invalid_argument otherwise).
  static ExpertPlacement staticSplit(int64_t experts, int64_t ranks,
                                     int64_t slots);

  int64_t experts() const { return experts_; }
  int64_t ranks() const { return ranks_; }
  int64_t slots() const { return slots_; }
  /// [ranks * slots], -1 for an empty slot.
  const std::vector<int32_t> &slotExperts() const { return slotExperts_; }
  int32_t expertAt(int64_t rank, int64_t slot) const {
    return slotExperts_[rank * slots_ + slot];
  }
  /// The global slots holding expert e, ascending (the first is the
  /// expert's primary replica: the one checkpoints are written from).
  const int64_t *replicasBegin(int64_t e) const {
    return replicaSlots_.data() + replicaOffsets_[e];
  }
  int64_t numReplicas(int64_t e) const {
    return replicaOffsets_[e + 1] - replicaOffsets_[e];
  }
  /// Whether some expert has more than one replica.
  bool hasReplicas() const { return hasReplicas_; }

  bool operator==(const ExpertPlacement &other) const {
    return experts_ == other.experts_ && ranks_ == other.ranks_ &&
           slots_ == other.slots_ && slotExperts_ == other.slotExperts_;
  }
  bool operator!=(const ExpertPlacement &other) const {
    return !(*this == other);
  }

private:
  int64_t experts_ = 0, ranks_ = 0, slots_ = 0;
  std::vector<int32_t> slotExperts_;
  std::vector<int64_t> replicaOffsets_; ///< [experts + 1]
  std::vector<int64_t> replicaSlots_;   ///< global slots, grouped by expert
  bool hasReplicas_ = false;
};

/// What a placement policy sees of one MoE layer.
struct PlacementRequest {
  int64_t layer = 0;
  const ExpertPlacement *current = nullptr;
  /// [experts]: token-slots routed to each expert over the window, summed
  /// over the whole job.
  const int64_t *expertLoad = nullptr;
  /// [ranks]: seconds each EP rank spent in this layer's expert compute
  /// over the window (the mean over the EP groups of the mesh).
  const double *rankExpertSeconds = nullptr;
};

class PlacementPolicy {
public:
  virtual ~PlacementPolicy() = default;
  /// The spec it was made from ("static", "replicate-hot", "plugin:PATH").
  virtual std::string name() const = 0;
  /// The layer's next placement, with the current one's experts, ranks and
  /// slots. Throws std::runtime_error when it cannot place.
  virtual ExpertPlacement place(const PlacementRequest &request) = 0;
};

/// What a dispatch policy sees of one dispatch (or combine) call.
struct DispatchRequest {
  const ExpertPlacement *placement = nullptr;
  /// [ranks][experts]: the rows source rank s routes to expert e this call.
  const int64_t *counts = nullptr;
};

class DispatchPolicy {
public:
  virtual ~DispatchPolicy() = default;
  virtual std::string name() const = 0;
  /// Fills split [ranks][ranks * slots]: split[s][g] rows of source s go to
  /// global slot g. For every (s, e), the entries of e's replicas sum to
  /// counts[s][e]; every other entry is 0. A source sends an expert's rows
  /// to its replicas in ascending slot order, split[s][g] of them each.
  virtual void split(const DispatchRequest &request, int64_t *split) = 0;
  /// Whether the runtime should check that every rank computed the same
  /// split (policies from outside the project).
  virtual bool checkAgreement() const { return false; }
};

/// "static": keeps the static split. "replicate-hot": primaries stay where
/// the static split puts them; the spare slots take replicas of the most
/// loaded experts, each on the least loaded rank that has room, while an
/// expert's load per replica is above the mean load per expert.
/// "plugin:PATH": the shared library's moe_place_experts. Throws
/// std::invalid_argument naming the spec when it is unknown or the library
/// cannot be loaded.
std::unique_ptr<PlacementPolicy> makePlacementPolicy(const std::string &spec);

/// "first": every row to the expert's first replica. "least-loaded": the
/// rows of each expert with replicas are spread over them so as to level
/// the rows each rank receives in this call (water filling, hottest expert
/// first); each source's rows are cut in source order. "plugin:PATH": the
/// shared library's moe_split_tokens. Throws std::invalid_argument as above.
std::unique_ptr<DispatchPolicy> makeDispatchPolicy(const std::string &spec);

/// What the runtime measures of one expert-parallel MoE layer on a rank
/// (the performance collection placement policies are fed from).
struct LayerStats {
  double expert = 0.0;   ///< seconds in grouped expert GEMMs, fwd and bwd
  double allToAll = 0.0; ///< seconds in dispatch and combine
  /// Rows the layer's dispatches delivered to each rank of the EP group.
  std::vector<int64_t> rankRows;
};

/// Throws std::runtime_error when `split` (as DispatchPolicy::split fills
/// it) does not send every routed row exactly once to a replica of its
/// expert.
void checkSplit(const DispatchRequest &request, const int64_t *split,
                const std::string &policy);

} // namespace moe::rt

#endif // MOE_RUNTIME_EXPERTPLACEMENT_H
