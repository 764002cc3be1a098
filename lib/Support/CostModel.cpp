//===- CostModel.cpp - Predicted step time of one rank's program ----------===//

#include "moe/Support/CostModel.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

namespace moe {

namespace {

// The figures behind the built-in profiles, and where they come from:
// - H100 SXM and H200: the bf16 matrix rate and copy bandwidth measured on
//   the lent machines (an 8192^3 bf16 product at about 798 and 788 TFLOP/s,
//   device copies at about 3.0 and 4.3 TB/s); fp32 at three quarters of the
//   67 TFLOP/s datasheet figure; NVLink 4 at 450 GB/s a direction (the
//   datasheet's 900 GB/s both ways) of which 80% is reached, eight to a node;
//   one 400 Gb/s InfiniBand NDR port a GPU across nodes (DGX H100), 90%
//   reached; a step of a small collective at about 2 us over NVLink and 5
//   us over the network (estimates, until measured); the memory sizes the
//   datasheets give (80 and 141 GB).
// - cpu: one rank a core of this project's 2-core CI machine: the runtime's
//   GEMMs at about 65 GFLOP/s (bench/cpu, 65% of the core's sgemm rate),
//   bf16 storage widened to fp32 at about 50, and MPI over shared memory
//   (every rank on the one host).
//   Estimates until measured by a calibration run.
HardwareProfile h100() {
  HardwareProfile p;
  p.name = "h100";
  p.matmulFlopsF32 = 50e12;
  p.matmulFlopsBF16 = 798e12;
  p.memoryBandwidth = 3.0e12;
  p.opLatency = 8e-6;
  p.devicesPerNode = 8;
  p.intraNodeBandwidth = 360e9;
  p.intraNodeLatency = 2e-6;
  p.interNodeBandwidth = 45e9;
  p.interNodeLatency = 5e-6;
  p.memoryBytes = 80'000'000'000ULL;
  return p;
}

HardwareProfile h200() {
  HardwareProfile p = h100();
  p.name = "h200";
  p.matmulFlopsBF16 = 788e12;
  p.memoryBandwidth = 4.3e12;
  p.memoryBytes = 141'000'000'000ULL;
  return p;
}

HardwareProfile cpu() {
  HardwareProfile p;
  p.name = "cpu";
  p.matmulFlopsF32 = 65e9;
  p.matmulFlopsBF16 = 50e9;
  p.memoryBandwidth = 8e9;
  p.opLatency = 2e-6;
  p.devicesPerNode = 64; // every rank on one host
  p.intraNodeBandwidth = 3e9;
  p.intraNodeLatency = 5e-6;
  p.interNodeBandwidth = 1e9;
  p.interNodeLatency = 50e-6;
  p.memoryBytes = 24ULL << 30;
  return p;
}

bool positive(double x) { return std::isfinite(x) && x > 0; }

} // namespace

const std::vector<HardwareProfile> &builtinHardwareProfiles() {
  static const std::vector<HardwareProfile> profiles = {h100(), h200(), cpu()};
  return profiles;
}

const HardwareProfile *findHardwareProfile(std::string_view name) {
  for (const HardwareProfile &p : builtinHardwareProfiles())
    if (p.name == name)
      return &p;
  return nullptr;
}

std::string validate(const HardwareProfile &p) {
  const std::pair<const char *, double> rates[] = {
      {"matmul_flops_f32", p.matmulFlopsF32},
      {"matmul_flops_bf16", p.matmulFlopsBF16},
      {"memory_bandwidth", p.memoryBandwidth},
      {"intra_node_bandwidth", p.intraNodeBandwidth},
      {"inter_node_bandwidth", p.interNodeBandwidth},
  };
  for (const auto &[field, value] : rates)
    if (!positive(value))
      return std::string(field) + " must be a positive number";
  const std::pair<const char *, double> latencies[] = {
      {"op_latency", p.opLatency},
      {"intra_node_latency", p.intraNodeLatency},
      {"inter_node_latency", p.interNodeLatency},
  };
  for (const auto &[field, value] : latencies)
    if (!std::isfinite(value) || value < 0)
      return std::string(field) + " must be a number of seconds, 0 or more";
  if (p.devicesPerNode < 1)
    return "devices_per_node must be 1 or more";
  if (p.memoryBytes == 0)
    return "memory_bytes must be positive";
  return "";
}

const char *collectiveName(CollectiveKind kind) {
  switch (kind) {
  case CollectiveKind::AllReduce:
    return "all_reduce";
  case CollectiveKind::AllGather:
    return "all_gather";
  case CollectiveKind::ReduceScatter:
    return "reduce_scatter";
  case CollectiveKind::AllToAll:
    return "all_to_all";
  }
  return "collective";
}

int64_t groupRanksOnNode(const std::vector<GroupAxis> &group,
                         int64_t devicesPerNode) {
  // The offsets of the group's ranks from rank 0, axis by axis.
  std::vector<int64_t> offsets = {0};
  for (const GroupAxis &axis : group) {
    std::vector<int64_t> next;
    next.reserve(offsets.size() * axis.size);
    for (int64_t i = 0; i < axis.size; ++i)
      for (int64_t offset : offsets)
        next.push_back(offset + i * axis.stride);
    offsets = std::move(next);
  }
  return std::count_if(offsets.begin(), offsets.end(),
                       [&](int64_t offset) { return offset < devicesPerNode; });
}

double collectiveSeconds(const CollectiveWork &c, const HardwareProfile &hw) {
  int64_t n = 1;
  for (const GroupAxis &axis : c.group)
    n *= axis.size;
  if (n <= 1)
    return 0;
  int64_t onNode = groupRanksOnNode(c.group, hw.devicesPerNode);
  bool crossesNodes = onNode < n;
  double share = static_cast<double>(n - 1) / static_cast<double>(n);
  if (c.kind == CollectiveKind::AllToAll) {
    // Every pair exchanges at once: the share for peers on the node goes
    // over the node's links, the rest over the network, side by side.
    double perPeer = c.bytes / static_cast<double>(n);
    double intra =
        perPeer * static_cast<double>(onNode - 1) / hw.intraNodeBandwidth;
    double inter =
        perPeer * static_cast<double>(n - onNode) / hw.interNodeBandwidth;
    return std::max(intra, inter) +
           (crossesNodes ? hw.interNodeLatency : hw.intraNodeLatency);
  }
  // Rings: the slowest link of the ring sets the pace.
  double bandwidth =
      crossesNodes ? hw.interNodeBandwidth : hw.intraNodeBandwidth;
  double latency = crossesNodes ? hw.interNodeLatency : hw.intraNodeLatency;
  double steps = static_cast<double>(n - 1);
  if (c.kind == CollectiveKind::AllReduce)
    return 2 * share * c.bytes / bandwidth + 2 * steps * latency;
  return share * c.bytes / bandwidth + steps * latency;
}

StepTime predictStepTime(const StepWork &work, const HardwareProfile &hw) {
  StepTime t;
  for (const OpWork &op : work.ops) {
    double arithmetic =
        op.flops / (op.bf16 ? hw.matmulFlopsBF16 : hw.matmulFlopsF32);
    double traffic = op.bytes / hw.memoryBandwidth;
    if (arithmetic > traffic)
      t.compute += arithmetic;
    else
      t.memory += traffic;
    t.memory += hw.opLatency;
  }
  std::map<std::string, double> byName;
  for (const CollectiveWork &c : work.collectives) {
    double seconds = collectiveSeconds(c, hw);
    t.communication += seconds;
    if (seconds > 0)
      byName[std::string(collectiveName(c.kind)) + " " + c.axes] += seconds;
  }
  for (const auto &[name, seconds] : byName)
    t.collectives.push_back({name, seconds});
  std::stable_sort(t.collectives.begin(), t.collectives.end(),
                   [](const TimeTerm &a, const TimeTerm &b) {
                     return a.seconds > b.seconds;
                   });
  // AdamW reads the weight, gradient and both moments and writes the
  // weight and moments, in fp32; under bf16 storage it also reads the bf16
  // gradient and writes the bf16 weight.
  double bytesPerElement = 7 * 4 + (work.bf16 ? 2 * 2 : 0);
  t.optimizer = work.optimizerElements * bytesPerElement / hw.memoryBandwidth;
  t.total = t.compute + t.memory + t.communication + t.optimizer;

  t.dominant = {"compute", t.compute};
  for (const TimeTerm &term :
       {TimeTerm{"memory", t.memory}, TimeTerm{"optimizer", t.optimizer}})
    if (term.seconds > t.dominant.seconds)
      t.dominant = term;
  if (!t.collectives.empty() &&
      t.collectives.front().seconds > t.dominant.seconds)
    t.dominant = t.collectives.front();
  return t;
}

std::string formatSeconds(double seconds) {
  const char *unit = "s";
  double value = seconds;
  if (seconds < 1e-3) {
    unit = "us";
    value = seconds * 1e6;
  } else if (seconds < 1) {
    unit = "ms";
    value = seconds * 1e3;
  }
  char text[32];
  int decimals = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  std::snprintf(text, sizeof text, "%.*f %s", decimals, value, unit);
  return text;
}

} // namespace moe
