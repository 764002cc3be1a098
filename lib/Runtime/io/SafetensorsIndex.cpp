//===- SafetensorsIndex.cpp - Checkpoints sharded over several files ------===//
//
// SafetensorsCheckpoint (Safetensors.h): a single safetensors file, or the
// shards of a model.safetensors.index.json. The index is parsed with
// nlohmann::json and validated whole when it opens (a JSON object with a
// "weight_map" object of tensor name -> shard file name, every shard a file
// beside the index); shards open on first use. writeCheckpoint writes the
// same layout.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <sys/stat.h>

namespace moe::io {

namespace {

constexpr const char *kIndexName = "model.safetensors.index.json";
constexpr const char *kSingleName = "model.safetensors";

[[noreturn]] void fail(const std::string &path, const std::string &what) {
  std::string message = path + ": " + what;
  std::replace(message.begin(), message.end(), '\n', ' ');
  throw SafetensorsError(message);
}

bool isFolder(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool isFile(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool endsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string folderOf(const std::string &path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

} // namespace

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string &path) {
  SafetensorsCheckpoint checkpoint;
  std::string file = path;
  if (isFolder(path)) {
    std::string index = path + "/" + kIndexName;
    std::string single = path + "/" + kSingleName;
    if (isFile(index))
      file = index;
    else if (isFile(single))
      file = single;
    else
      fail(path, std::string("is a folder without ") + kIndexName + " or " +
                     kSingleName);
  }
  checkpoint.path_ = file;
  checkpoint.folder_ = folderOf(file);
  if (!endsWith(file, ".json")) {
    checkpoint.shards_.emplace(file, SafetensorsReader::open(file));
    return checkpoint;
  }

  std::ifstream in(file);
  if (!in)
    fail(file, "cannot open the index");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception &e) {
    fail(file, std::string("is not valid JSON: ") + e.what());
  }
  if (!root.is_object() || !root.contains("weight_map") ||
      !root["weight_map"].is_object())
    fail(file, "has no \"weight_map\" object (tensor name -> shard file)");
  std::set<std::string> checked;
  for (const auto &[name, shard] : root["weight_map"].items()) {
    if (!shard.is_string())
      fail(file, "weight_map['" + name + "'] is not a file name");
    std::string shardName = shard.get<std::string>();
    if (shardName.empty() || shardName.find('/') != std::string::npos)
      fail(file, "weight_map['" + name + "'] is '" + shardName +
                     "', expected a file name beside the index");
    if (checked.insert(shardName).second &&
        !isFile(checkpoint.folder_ + "/" + shardName))
      fail(file, "names shard '" + shardName + "' (of tensor '" + name +
                     "'), which is not a file in " + checkpoint.folder_);
    checkpoint.weightMap_.emplace(name, shardName);
  }
  if (checkpoint.weightMap_.empty())
    fail(file, "names no tensors");
  return checkpoint;
}

bool SafetensorsCheckpoint::contains(const std::string &name) const {
  if (weightMap_.empty())
    return shards_.begin()->second.contains(name);
  return weightMap_.count(name) != 0;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  if (weightMap_.empty())
    return shards_.begin()->second.names();
  std::vector<std::string> names;
  for (const auto &entry : weightMap_)
    names.push_back(entry.first);
  return names;
}

const SafetensorsReader &
SafetensorsCheckpoint::shardOf(const std::string &name) const {
  if (weightMap_.empty())
    return shards_.begin()->second;
  auto entry = weightMap_.find(name);
  if (entry == weightMap_.end())
    fail(path_, "has no tensor '" + name + "'");
  std::string shard = folder_ + "/" + entry->second;
  auto open = shards_.find(shard);
  if (open == shards_.end())
    open = shards_.emplace(shard, SafetensorsReader::open(shard)).first;
  if (!open->second.contains(name))
    fail(path_, "lists tensor '" + name + "' in shard '" + entry->second +
                    "', which does not hold it");
  return open->second;
}

namespace {

uint64_t dataBytes(const TensorToWrite &tensor, DType dtype) {
  uint64_t elements = 1;
  for (int64_t d : tensor.shape)
    elements *= static_cast<uint64_t>(d);
  return elements * dtypeSize(dtype);
}

/// Writes `text` to `path` atomically.
void writeTextFile(const std::string &path, const std::string &text) {
  writeFileAtomically(path, {{text.data(), text.size()}});
}

} // namespace

void writeCheckpoint(const std::string &target,
                     const std::vector<TensorToWrite> &tensors,
                     const CheckpointLayout &layout) {
  if (layout.dtype != DType::F32 && layout.dtype != DType::BF16)
    fail(target, "checkpoints are written as F32 or BF16");
  // The tensors in the layout's dtype (BF16 copies of F32 tensors).
  std::vector<std::vector<uint16_t>> narrowed;
  std::vector<TensorToWrite> converted;
  for (const TensorToWrite &tensor : tensors) {
    if (layout.dtype != DType::BF16 || tensor.dtype != DType::F32) {
      converted.push_back(tensor);
      continue;
    }
    uint64_t n = dataBytes(tensor, DType::F32) / 4;
    std::vector<uint16_t> &bits = narrowed.emplace_back(n);
    const auto *src = static_cast<const float *>(tensor.data);
    for (uint64_t i = 0; i < n; ++i)
      bits[i] = f32ToBf16(src[i]);
    converted.push_back({tensor.name, DType::BF16, tensor.shape, bits.data()});
  }

  // Shards in order, each at most maxShardBytes unless one tensor is larger.
  std::vector<std::vector<TensorToWrite>> shards(1);
  uint64_t shardBytes = 0, totalBytes = 0;
  for (const TensorToWrite &tensor : converted) {
    uint64_t bytes = dataBytes(tensor, tensor.dtype);
    if (!shards.back().empty() && shardBytes + bytes > layout.maxShardBytes) {
      shards.emplace_back();
      shardBytes = 0;
    }
    shards.back().push_back(tensor);
    shardBytes += bytes;
    totalBytes += bytes;
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (endsWith(target, ".safetensors")) {
    if (shards.size() > 1)
      fail(target, std::to_string(totalBytes) +
                       " bytes of tensors do not fit in one file of at most " +
                       std::to_string(layout.maxShardBytes) +
                       " bytes: give a folder to write shards into");
    writeSafetensors(target, converted, metadata);
    return;
  }
  if (!isFolder(target) && ::mkdir(target.c_str(), 0755) != 0)
    fail(target,
         std::string("cannot create the folder: ") + std::strerror(errno));
  // A loader picks one of model.safetensors and the index (this project
  // the index, transformers the single file), so the one not written now
  // is removed once the new checkpoint is complete.
  std::string single = target + "/" + kSingleName;
  std::string indexPath = target + "/" + kIndexName;
  if (!layout.config.empty())
    writeTextFile(target + "/config.json", layout.config);
  if (shards.size() == 1) {
    writeSafetensors(single, converted, metadata);
    std::remove(indexPath.c_str());
    return;
  }
  nlohmann::json weightMap = nlohmann::json::object();
  char name[64];
  for (size_t s = 0; s < shards.size(); ++s) {
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1,
                  shards.size());
    writeSafetensors(target + "/" + name, shards[s], metadata);
    for (const TensorToWrite &tensor : shards[s])
      weightMap[tensor.name] = name;
  }
  nlohmann::json index = {{"metadata", {{"total_size", totalBytes}}},
                          {"weight_map", weightMap}};
  writeTextFile(indexPath, index.dump(2) + "\n");
  std::remove(single.c_str());
}

void SafetensorsCheckpoint::readF32(const std::string &name,
                                    const std::vector<int64_t> &expectedShape,
                                    float *dst) const {
  shardOf(name).readF32(name, expectedShape, dst);
}

} // namespace moe::io
