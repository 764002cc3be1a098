//===- Metrics.h - Training metrics as JSON lines or CSV --------*- C++ -*-===//
//
// `train --metrics FILE` writes one record per logged step and one per
// evaluation, flushed line by line so that a crashed run keeps what it had:
//   .jsonl  {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s",
//            "expert_counts": [[per expert] per MoE layer]} and
//           {"step", "val_loss"}
//   .csv    step,loss,lr,grad_norm,tokens_per_s,elapsed_s,val_loss (empty
//           where a record has no such value; no expert counts)
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_METRICS_H
#define MOE_LIB_RUNTIME_DRIVER_METRICS_H

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace moe::driver {

struct StepMetrics {
  int64_t step = 0;
  double loss = 0, lr = 0, gradNorm = 0, tokensPerSecond = 0, elapsed = 0;
  std::vector<std::vector<int64_t>> expertCounts;
};

class MetricsWriter {
public:
  /// True for the names MetricsWriter takes (ending in .jsonl or .csv).
  static bool knownFormat(const std::string &path);

  /// Opens `path` (truncated, or appended to when `append`); throws
  /// std::runtime_error naming it when it cannot.
  MetricsWriter(const std::string &path, bool append);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter &) = delete;
  MetricsWriter &operator=(const MetricsWriter &) = delete;

  void logStep(const StepMetrics &metrics);
  void logEval(int64_t step, double valLoss);

private:
  void writeLine(const std::string &line);

  std::string path_;
  bool csv_ = false;
  std::FILE *file_ = nullptr;
};

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_METRICS_H
