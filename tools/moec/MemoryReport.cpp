//===- MemoryReport.cpp - moec --memory-report and --max-memory -----------===//

#include "MemoryReport.h"

#include "moe/Support/MeshShape.h"
#include "moe/Support/OptimizerShards.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Format.h"

#include <cmath>

using namespace llvm;

namespace moec {

namespace {

constexpr uint64_t kAlignment = 64; // MOE_BUFFER_ALIGNMENT

uint64_t alignUp(uint64_t bytes) {
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

uint64_t elements(const json::Array *shape) {
  uint64_t n = 1;
  for (const json::Value &d : *shape)
    n *= static_cast<uint64_t>(d.getAsInteger().value_or(0));
  return n;
}

/// Elements of the table entry `name` of `table` ("inputs", "outputs").
std::optional<uint64_t> tensorElements(const json::Object &manifest,
                                       StringRef table, StringRef name) {
  const json::Array *rows = manifest.getArray(table);
  if (!rows)
    return std::nullopt;
  for (const json::Value &row : *rows) {
    const json::Object *object = row.getAsObject();
    if (object && object->getString("name") == name)
      if (const json::Array *shape = object->getArray("shape"))
        return elements(shape);
  }
  return std::nullopt;
}

/// A manifest entry's "split": per dimension, the mesh axes.
std::vector<std::vector<std::string>> split(const json::Object &entry) {
  std::vector<std::vector<std::string>> axes;
  if (const json::Array *dims = entry.getArray("split"))
    for (const json::Value &dim : *dims) {
      axes.emplace_back();
      if (const json::Array *names = dim.getAsArray())
        for (const json::Value &name : *names)
          axes.back().push_back(name.getAsString().value_or("").str());
    }
  return axes;
}

moe::MeshShape meshShape(const json::Object &manifest) {
  const json::Object *mesh = manifest.getObject("mesh");
  moe::MeshShape shape;
  for (moe::MeshAxis a : moe::kMeshAxes)
    shape.setSize(a, mesh ? mesh->getInteger(moe::axisName(a)).value_or(1) : 1);
  return shape;
}

} // namespace

std::optional<moe::RankProgram> rankProgram(const json::Object &manifest,
                                            std::string &error) {
  moe::RankProgram p;
  auto integer = [&](const json::Object &o, StringRef key) -> uint64_t {
    std::optional<int64_t> v = o.getInteger(key);
    if (!v && error.empty())
      error = ("the manifest has no '" + key + "'").str();
    return v ? static_cast<uint64_t>(*v) : 0;
  };
  p.bf16 = manifest.getString("storage") == "BF16";
  p.weightsBytes = integer(manifest, "weights_bytes");
  p.forwardArenaBytes = integer(manifest, "arena_bytes");
  p.forwardCommBytes = manifest.getInteger("comm_bytes").value_or(0);
  std::vector<moe::ParamBlock> blocks;
  if (const json::Array *params = manifest.getArray("params"))
    for (const json::Value &param : *params)
      if (const json::Object *object = param.getAsObject())
        if (const json::Array *shape = object->getArray("shape")) {
          p.fp32WeightsBytes += alignUp(4 * elements(shape));
          p.largestParamElements =
              std::max(p.largestParamElements, elements(shape));
          // Spare expert slots (moec --replica-slots): replicas' gradients
          // need the fp32 blob.
          const json::Array *global = object->getArray("global_shape");
          if (object->get("placement") && global && !global->empty() &&
              !shape->empty() &&
              shape->front().getAsInteger().value_or(0) *
                      meshShape(manifest).ep >
                  global->front().getAsInteger().value_or(0))
            p.fp32Grads = true;
          blocks.push_back({static_cast<int64_t>(elements(shape)),
                            moe::optimizerShardGroup(split(*object))});
        }
  moe::MomentFootprint moments = moe::momentFootprint(
      blocks, meshShape(manifest),
      static_cast<int>(manifest.getInteger("zero_stage").value_or(0)));
  p.momentBytes = moments.momentBytes;
  p.shardGatherBytes = moments.gatherBytes;
  if (const json::Object *step = manifest.getObject("train_step")) {
    p.trains = true;
    p.trainArenaBytes = integer(*step, "arena_bytes");
    p.trainCommBytes = step->getInteger("comm_bytes").value_or(0);
  }
  if (const json::Object *eval = manifest.getObject("eval_step")) {
    p.evaluates = true;
    p.evalArenaBytes = integer(*eval, "arena_bytes");
    p.evalCommBytes = eval->getInteger("comm_bytes").value_or(0);
  }
  std::optional<uint64_t> logits =
      tensorElements(manifest, "outputs", "logits");
  std::optional<uint64_t> tokens = tensorElements(manifest, "inputs", "tokens");
  if ((!logits || !tokens) && error.empty())
    error = "the manifest has no logits output or tokens input";
  p.logitsElements = logits.value_or(0);
  p.inputElements = tokens.value_or(0);
  if (!error.empty())
    return std::nullopt;
  return p;
}

void printMemoryReport(const json::Object &manifest, const moe::RankMemory &m,
                       bool asJson, raw_ostream &os) {
  moe::MeshShape shape = meshShape(manifest);
  int64_t ranks = shape.worldSize();
  json::Object meshSizes;
  for (moe::MeshAxis a : moe::kMeshAxes)
    meshSizes[moe::axisName(a)] = shape.size(a);
  if (asJson) {
    json::Array perRank;
    for (int64_t rank = 0; rank < ranks; ++rank)
      perRank.push_back(json::Object{
          {"rank", rank},
          {"weights", m.weights},
          {"gradients", m.gradients},
          {"optimizer", m.optimizer},
          {"activations_forward", m.activationsForward},
          {"activations_train", m.activationsTrain},
          {"comm", m.comm},
          {"total", m.total},
      });
    os << formatv("{0:2}",
                  json::Value(json::Object{
                      {"mesh", std::move(meshSizes)},
                      {"storage",
                       manifest.getString("storage").value_or("F32").str()},
                      {"ranks", std::move(perRank)},
                  }))
       << "\n";
    return;
  }
  os << "memory per rank: mesh";
  for (moe::MeshAxis a : moe::kMeshAxes)
    os << " " << moe::axisName(a) << "=" << shape.size(a);
  os << " (" << ranks << (ranks == 1 ? " rank" : " ranks")
     << "), storage " << manifest.getString("storage").value_or("F32").lower()
     << "\n";
  const char *columns[] = {"ranks",    "weights",    "gradients", "optimizer",
                           "act. fwd", "act. train", "comm",      "total"};
  std::string who = ranks == 1 ? "0" : "0-" + std::to_string(ranks - 1);
  std::string cells[] = {who,
                         moe::formatBytes(m.weights),
                         moe::formatBytes(m.gradients),
                         moe::formatBytes(m.optimizer),
                         moe::formatBytes(m.activationsForward),
                         moe::formatBytes(m.activationsTrain),
                         moe::formatBytes(m.comm),
                         moe::formatBytes(m.total)};
  for (auto [i, column] : llvm::enumerate(columns))
    os << "  " << left_justify(column, i ? 10 : 6);
  os << "\n";
  for (auto [i, cell] : llvm::enumerate(cells))
    os << "  " << left_justify(cell, i ? 10 : 6);
  os << "\n";
  os << "  (every rank runs the same program; the total counts a training "
        "run's activations"
     << (m.activationsTrain ? "" : ": here a forward run's") << ")\n";
}

std::optional<uint64_t> parseByteSize(StringRef text) {
  StringRef number = text.take_while([](char c) {
    return isDigit(c) || c == '.' || c == 'e' || c == 'E' || c == '+';
  });
  StringRef unit = text.drop_front(number.size()).trim();
  double value;
  if (number.empty() || number.getAsDouble(value) || !(value >= 0))
    return std::nullopt;
  struct Unit {
    const char *name;
    double scale;
  };
  static const Unit units[] = {{"", 1},
                               {"B", 1},
                               {"KB", 1e3},
                               {"MB", 1e6},
                               {"GB", 1e9},
                               {"TB", 1e12},
                               {"K", 1e3},
                               {"M", 1e6},
                               {"G", 1e9},
                               {"T", 1e12},
                               {"KiB", 1024.0},
                               {"MiB", 1048576.0},
                               {"GiB", 1073741824.0},
                               {"TiB", 1099511627776.0}};
  for (const Unit &u : units)
    if (unit.equals_insensitive(u.name)) {
      double bytes = value * u.scale;
      if (bytes >= 18446744073709551615.0)
        return std::nullopt;
      return static_cast<uint64_t>(std::llround(bytes));
    }
  return std::nullopt;
}

std::string largestBuffer(const json::Object &manifest) {
  std::string what;
  uint64_t largest = 0;
  auto consider = [&](uint64_t bytes, std::string name) {
    if (bytes > largest) {
      largest = bytes;
      what = std::move(name);
    }
  };
  bool bf16 = manifest.getString("storage") == "BF16";
  if (const json::Array *params = manifest.getArray("params"))
    for (const json::Value &param : *params)
      if (const json::Object *object = param.getAsObject())
        if (const json::Array *shape = object->getArray("shape"))
          consider(elements(shape) * (bf16 ? 2 : 4),
                   ("weight '" + object->getString("name").value_or("?") + "'")
                       .str());
  for (const json::Object *entry :
       {&manifest, manifest.getObject("train_step")})
    if (entry)
      if (const json::Object *buffer = entry->getObject("largest_buffer"))
        consider(buffer->getInteger("bytes").value_or(0),
                 ("the activation of the op at " +
                  buffer->getString("at").value_or("?"))
                     .str());
  return what + " (" + moe::formatBytes(largest) + ")";
}

} // namespace moec
