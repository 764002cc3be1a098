//===- Metrics.cpp - Training metrics as JSON lines or CSV ----------------===//

#include "driver/train/Metrics.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
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

namespace {

const char kCsvHeader[] =
    "step,loss,lr,grad_norm,tokens_per_s,elapsed_s,val_loss";

/// A CSV record's fields (split on commas; no field holds one).
std::vector<std::string> csvFields(const std::string &line) {
  std::vector<std::string> fields(1);
  for (char c : line) {
    if (c == ',')
      fields.emplace_back();
    else
      fields.back() += c;
  }
  return fields;
}

/// `text` as a number, or nullopt when it is not one in full.
std::optional<double> numberIn(const std::string &text) {
  if (text.empty())
    return std::nullopt;
  char *end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (*end != '\0')
    return std::nullopt;
  return value;
}

} // namespace

std::string MetricsWriter::keptRecords(int64_t resumeAt) {
  std::ifstream in(path_);
  if (!in)
    return {};
  std::string kept, line;
  while (std::getline(in, line)) {
    if (in.eof() && !line.empty())
      break; // no newline: the write was cut short
    std::optional<double> step, loss, valLoss;
    if (csv_) {
      std::vector<std::string> fields = csvFields(line);
      if (fields.size() != 7)
        continue;
      step = numberIn(fields[0]);
      loss = numberIn(fields[1]);
      valLoss = numberIn(fields[6]);
    } else {
      nlohmann::json record =
          nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!record.is_object() || !record["step"].is_number())
        continue;
      step = record["step"].get<double>();
      if (record.contains("loss") && record["loss"].is_number())
        loss = record["loss"].get<double>();
      if (record.contains("val_loss") && record["val_loss"].is_number())
        valLoss = record["val_loss"].get<double>();
    }
    if (!step || *step > static_cast<double>(resumeAt))
      continue;
    kept += line + "\n";
    if (loss)
      history_.train.emplace_back(*step, *loss);
    if (valLoss)
      history_.validation.emplace_back(*step, *valLoss);
  }
  return kept;
}

MetricsWriter::MetricsWriter(const std::string &path,
                             std::optional<int64_t> resumeAt)
    : path_(path), csv_(endsWith(path, ".csv")) {
  std::string kept;
  if (resumeAt)
    kept = keptRecords(*resumeAt);
  // Written beside the file and renamed over it: a crash now leaves the
  // old file whole.
  std::string tmp = path + ".tmp";
  file_ = std::fopen(tmp.c_str(), "w");
  if (!file_)
    throw std::runtime_error(path + ": cannot open the metrics file (" +
                             std::strerror(errno) + ")");
  if (csv_)
    kept = std::string(kCsvHeader) + "\n" + kept;
  if (std::fputs(kept.c_str(), file_) < 0 || std::fflush(file_) != 0 ||
      std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string reason = std::strerror(errno);
    std::fclose(file_);
    file_ = nullptr;
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot write the metrics file (" +
                             reason + ")");
  }
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
  if (!s.droppedSlots.empty())
    record["dropped_slots"] = s.droppedSlots;
  if (!s.expertLayers.empty()) {
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (const ExpertLayerMetrics &layer : s.expertLayers) {
      int64_t total = 0, max = 0;
      for (int64_t rows : layer.rankRows) {
        total += rows;
        max = std::max(max, rows);
      }
      double mean = layer.rankRows.empty()
                        ? 0.0
                        : double(total) / double(layer.rankRows.size());
      layers.push_back(
          {{"expert_s", layer.expertSeconds},
           {"a2a_s", layer.allToAllSeconds},
           {"rank_rows", layer.rankRows},
           {"max_mean_rows", mean > 0 ? double(max) / mean : 0.0}});
    }
    record["ep_layers"] = std::move(layers);
  }
  writeLine(record.dump());
}

void MetricsWriter::logPlacement(
    int64_t step, const std::vector<std::vector<int32_t>> &slotExperts) {
  if (csv_)
    return;
  writeLine(
      nlohmann::ordered_json{{"step", step}, {"expert_placement", slotExperts}}
          .dump());
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
