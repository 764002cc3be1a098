//===- Metrics.cpp - Training metrics as JSON lines or CSV ----------------===//

#include "driver/Metrics.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace moe::driver {

namespace {

bool endsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string number(double value) {
  char text[64];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}

} // namespace

bool MetricsWriter::knownFormat(const std::string &path) {
  return endsWith(path, ".jsonl") || endsWith(path, ".csv");
}

MetricsWriter::MetricsWriter(const std::string &path, bool append)
    : path_(path), csv_(endsWith(path, ".csv")) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!file_)
    throw std::runtime_error(path + ": cannot open the metrics file (" +
                             std::strerror(errno) + ")");
  std::fseek(file_, 0, SEEK_END);
  if (csv_ && std::ftell(file_) == 0)
    writeLine("step,loss,lr,grad_norm,tokens_per_s,elapsed_s,val_loss");
}

MetricsWriter::~MetricsWriter() {
  if (file_)
    std::fclose(file_);
}

void MetricsWriter::writeLine(const std::string &line) {
  if (std::fputs((line + "\n").c_str(), file_) < 0 || std::fflush(file_) != 0)
    throw std::runtime_error(path_ + ": cannot write the metrics file (" +
                             std::strerror(errno) + ")");
}

void MetricsWriter::logStep(const StepMetrics &s) {
  if (csv_) {
    writeLine(std::to_string(s.step) + "," + number(s.loss) + "," +
              number(s.lr) + "," + number(s.gradNorm) + "," +
              number(s.tokensPerSecond) + "," + number(s.elapsed) + ",");
    return;
  }
  nlohmann::ordered_json record = {{"step", s.step},
                                   {"loss", s.loss},
                                   {"lr", s.lr},
                                   {"grad_norm", s.gradNorm},
                                   {"tokens_per_s", s.tokensPerSecond},
                                   {"elapsed_s", s.elapsed},
                                   {"expert_counts", s.expertCounts}};
  writeLine(record.dump());
}

void MetricsWriter::logEval(int64_t step, double valLoss) {
  if (csv_) {
    writeLine(std::to_string(step) + ",,,,,," + number(valLoss));
    return;
  }
  writeLine(
      nlohmann::ordered_json{{"step", step}, {"val_loss", valLoss}}.dump());
}

} // namespace moe::driver
