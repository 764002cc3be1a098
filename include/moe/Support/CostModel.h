//===- CostModel.h - Predicted step time of one rank's program --*- C++ -*-===//
//
// Plain C++ (no LLVM/MLIR), like MemoryReport.h. The compiler counts the
// work of a partitioned training step (mlir::moe::countStepWork); this
// header turns that work into seconds on a hardware description, and
// `moec --mesh auto` ranks candidate layouts by it.
//
// The model, term by term:
// - every runtime op takes the longer of its arithmetic at the device's
//   matrix rate and its operand and result bytes at the memory bandwidth (a
//   roofline), plus a fixed cost per op;
// - every collective moves its ring (or pairwise, for all-to-all) bytes over
//   the links its group spans, within a node or across nodes, plus a latency
//   per step;
// - the optimizer streams each rank's fp32 state once (AdamW).
// The runtime runs communication and compute one after the other, so the
// terms add up; there is no overlap to model yet.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_SUPPORT_COSTMODEL_H
#define MOE_SUPPORT_COSTMODEL_H

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moe {

/// What one device (one rank) of a machine can do. Rates are sustained
/// rates (what a large GEMM or copy reaches), not datasheet peaks.
struct HardwareProfile {
  std::string name;
  /// FLOP/s of large matrix products, with f32 and with bf16 storage.
  double matmulFlopsF32 = 0;
  double matmulFlopsBF16 = 0;
  /// Bytes/s read plus written by a memory-bound kernel.
  double memoryBandwidth = 0;
  /// Seconds every runtime op costs beyond its work (launch, dispatch).
  double opLatency = 0;
  /// Ranks that share a node; collectives within it use the node's links.
  int64_t devicesPerNode = 1;
  /// Bytes/s one rank sends to the others of its node, and the latency of
  /// one step of a collective there.
  double intraNodeBandwidth = 0;
  double intraNodeLatency = 0;
  /// The same across nodes (one rank's share of the network).
  double interNodeBandwidth = 0;
  double interNodeLatency = 0;
  /// Memory of one device, the default for --device-memory.
  uint64_t memoryBytes = 0;
};

/// The profiles moec knows by name: "h100", "h200" and "cpu" (this
/// project's 2-core CI machine, one rank a core).
const std::vector<HardwareProfile> &builtinHardwareProfiles();

/// The built-in profile named `name`, or nullptr.
const HardwareProfile *findHardwareProfile(std::string_view name);

/// "" when every rate of `profile` is positive and finite, else one
/// sentence naming the first field that is not.
std::string validate(const HardwareProfile &profile);

/// One runtime op of the step: its arithmetic and the bytes of its operands
/// and results.
struct OpWork {
  double flops = 0;
  double bytes = 0;
  bool bf16 = false;
};

enum class CollectiveKind { AllReduce, AllGather, ReduceScatter, AllToAll };

/// "all_reduce", "all_gather", "reduce_scatter", "all_to_all".
const char *collectiveName(CollectiveKind kind);

/// One axis of a collective's group: its size and the distance, in world
/// ranks, between neighbours along it (tp is the fastest axis of the rank
/// layout, see meshCoordinates).
struct GroupAxis {
  int64_t size = 1;
  int64_t stride = 1;
};

/// One collective of the step on one rank.
struct CollectiveWork {
  CollectiveKind kind = CollectiveKind::AllReduce;
  /// The mesh axes of the group, e.g. "tp" or "dp,cp" (for explanations).
  std::string axes;
  std::vector<GroupAxis> group;
  /// The whole tensor: all-reduce's operand, all-gather's result,
  /// reduce-scatter's operand; for all-to-all, everything this rank sends
  /// (its own share included).
  double bytes = 0;
};

/// The work of one training step on one rank.
struct StepWork {
  std::vector<OpWork> ops;
  std::vector<CollectiveWork> collectives;
  /// Parameter elements this rank holds, and those whose AdamW update it
  /// runs (fewer under ZeRO stage 1).
  double parameterElements = 0;
  double optimizerElements = 0;
  /// Weights are stored as bf16 (the update also reads the bf16 gradient
  /// and writes the bf16 weight).
  bool bf16 = false;
};

/// Ranks of the group that contains rank 0 which sit on rank 0's node.
int64_t groupRanksOnNode(const std::vector<GroupAxis> &group,
                         int64_t devicesPerNode);

/// Seconds one collective takes on `hardware`.
double collectiveSeconds(const CollectiveWork &collective,
                         const HardwareProfile &hardware);

/// A named part of the predicted step time.
struct TimeTerm {
  std::string name;
  double seconds = 0;
};

struct StepTime {
  /// Ops whose arithmetic outlasts their memory traffic.
  double compute = 0;
  /// Ops bound by memory traffic, plus every op's fixed cost.
  double memory = 0;
  /// All collectives.
  double communication = 0;
  /// The optimizer update.
  double optimizer = 0;
  double total = 0;
  /// Communication by collective and axes ("all_to_all ep"), largest first.
  std::vector<TimeTerm> collectives;
  /// The largest single term: "compute", "memory", "optimizer" or one of
  /// `collectives`' names.
  TimeTerm dominant;
};

StepTime predictStepTime(const StepWork &work, const HardwareProfile &hardware);

/// "1.25 s", "310 ms", "42.0 us": three significant digits.
std::string formatSeconds(double seconds);

} // namespace moe

#endif // MOE_SUPPORT_COSTMODEL_H
