//===- SafetensorsIndex.cpp - Checkpoints sharded over several files ------===//
//
// SafetensorsCheckpoint (Safetensors.h): a single safetensors file, or the
// shards of a model.safetensors.index.json. The index is parsed with
// nlohmann::json and validated whole when it opens (a JSON object with a
// "weight_map" object of tensor name -> shard file name, every shard a file
// beside the index); shards open on first use.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
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

void SafetensorsCheckpoint::readF32(const std::string &name,
                                    const std::vector<int64_t> &expectedShape,
                                    float *dst) const {
  shardOf(name).readF32(name, expectedShape, dst);
}

} // namespace moe::io
