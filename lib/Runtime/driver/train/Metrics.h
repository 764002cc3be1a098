//===- Metrics.h - Training metrics as JSON lines or CSV --------*- C++ -*-===//
//
// `train --metrics FILE` writes one record per logged step and one per
// evaluation, flushed line by line so that a crashed run keeps what it had:
//   .jsonl  {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s",
//            "expert_counts": [[per expert] per MoE layer],
//            "dropped_slots": [per capacity-factor layer] (if any)} and
//           {"step", "val_loss"}
//   .csv    step,loss,lr,grad_norm,tokens_per_s,elapsed_s,val_loss (empty
//           where a record has no such value; no expert counts)
//
// A resumed run keeps the records up to its checkpoint's step and drops the
// rest (steps the crashed run logged after its last checkpoint, which the
// resumed run logs again), so every step appears once.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_METRICS_H
#define MOE_LIB_RUNTIME_DRIVER_METRICS_H

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moe::driver {

/// One expert-parallel MoE layer in a step, per rank of (rank 0's) EP group.
struct ExpertLayerMetrics {
  std::vector<double> expertSeconds, allToAllSeconds;
  std::vector<int64_t> rankRows; ///< rows the layer's dispatches delivered
};

struct StepMetrics {
  int64_t step = 0;
  double loss = 0, lr = 0, gradNorm = 0, tokensPerSecond = 0, elapsed = 0;
  std::vector<std::vector<int64_t>> expertCounts;
  /// Per capacity-factor layer; empty (and not written) when dropless.
  std::vector<int64_t> droppedSlots;
  /// Expert-parallel models only (not written otherwise).
  std::vector<ExpertLayerMetrics> expertLayers;
};

/// (step, loss) points of the records kept from an earlier run.
struct MetricsHistory {
  std::vector<std::pair<double, double>> train, validation;
};

class MetricsWriter {
public:
  /// True for the names MetricsWriter takes (ending in .jsonl or .csv).
  static bool knownFormat(const std::string &path);

  /// Opens `path`: a new file, or with `resumeAt`, the file of the run being
  /// resumed, keeping its records of steps up to `*resumeAt` (a line cut
  /// short by a crash is dropped) and rewriting it atomically. Throws
  /// std::runtime_error naming the file when it cannot.
  MetricsWriter(const std::string &path, std::optional<int64_t> resumeAt);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter &) = delete;
  MetricsWriter &operator=(const MetricsWriter &) = delete;

  void logStep(const StepMetrics &metrics);
  void logEval(int64_t step, double valLoss);
  /// JSON lines only: the expert placement installed after `step`, per
  /// layer the expert of every slot (rank-major).
  void logPlacement(int64_t step,
                    const std::vector<std::vector<int32_t>> &slotExperts);

  /// The losses of the kept records, to draw the whole run's curves.
  const MetricsHistory &history() const { return history_; }

private:
  void writeLine(const std::string &line);
  /// The kept lines of the file at `path_`, filling history_.
  std::string keptRecords(int64_t resumeAt);

  std::string path_;
  MetricsHistory history_;
  bool csv_ = false;
  std::FILE *file_ = nullptr;
};

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_METRICS_H
