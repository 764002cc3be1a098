//===- Checkpoint.cpp - Sharded training checkpoints ----------------------===//

#include "driver/train/Checkpoint.h"

#include "driver/model/Placement.h"
#include "driver/model/Weights.h"

#include "moe/Runtime/Safetensors.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace moe::driver {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

const char *const kFormat = "moe-checkpoint/1";
const char *const kMomentPrefixes[] = {"adam.m/", "adam.v/"};

std::string rankFileName(int rank) {
  char name[64];
  std::snprintf(name, sizeof name, "rank-%05d.safetensors", rank);
  return name;
}

[[noreturn]] void ioFailure(const std::string &path, const std::string &what) {
  throw std::runtime_error(path + ": " + what + " (" + std::strerror(errno) +
                           ")");
}

void fsyncPath(const std::string &path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0)
    ioFailure(path, "cannot open to sync");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0)
    ioFailure(path, "cannot sync");
}

} // namespace

void writeFileAtomically(const std::string &path, const std::string &text) {
  io::writeFileAtomically(path, {{text.data(), text.size()}});
}

namespace {

std::string readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open (" + std::strerror(errno) +
                             ")");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// The step of a checkpoint directory name "step-<digits>", or -1.
int64_t stepOfName(const std::string &name) {
  if (name.size() < 6 || name.compare(0, 5, "step-") != 0 ||
      name.size() > 5 + 18)
    return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9')
      return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

/// The place of world rank `rank` (null for a 1-rank model) under the
/// expert placement `tables`.
std::optional<RankPlace> placeOf(const MeshShape &mesh, int rank,
                                 const PlacementTables &tables) {
  if (mesh.worldSize() == 1)
    return std::nullopt;
  return RankPlace{mesh, rt::meshCoordinates(mesh, rank), tables};
}

/// For every world rank, the pieces of `param` it writes: the lowest rank
/// holding each distinct piece does (for an expert, its first replica in
/// the first EP group).
std::vector<std::vector<Piece>> pieceWriters(const ParamInfo &param,
                                             const MeshShape &mesh,
                                             const PlacementTables &tables) {
  int world = static_cast<int>(mesh.worldSize());
  std::vector<std::vector<Piece>> writes(world);
  std::set<std::vector<int64_t>> seen;
  for (int r = 0; r < world; ++r) {
    std::optional<RankPlace> place = placeOf(mesh, r, tables);
    for (Piece &piece : localPieces(param, place ? &*place : nullptr))
      if (seen.insert(piece.block.start).second)
        writes[r].push_back(std::move(piece));
  }
  return writes;
}

/// The tensor a rank file holds a piece under: the parameter's name, and
/// for a placed expert weight the expert too ("name[e]").
std::string pieceTensor(const ParamInfo &param, const Piece &piece) {
  if (!param.placement)
    return param.name;
  return param.name + "[" + std::to_string(piece.block.start[0]) + "]";
}

Json meshJson(const MeshShape &mesh) {
  Json json = Json::object();
  for (MeshAxis axis : kMeshAxes)
    json[axisName(axis)] = mesh.size(axis);
  return json;
}

Json placementJson(const PlacementTables &tables) {
  Json layers = Json::array();
  for (const rt::ExpertPlacement &table : tables)
    layers.push_back(Json{{"experts", table.experts()},
                          {"ranks", table.ranks()},
                          {"slots", table.slots()},
                          {"slot_experts", table.slotExperts()}});
  return layers;
}

Json indexJson(int64_t step, const Manifest &m, const Json &train,
               const PlacementTables &tables) {
  Json params = Json::array();
  for (const ParamInfo &param : m.params) {
    std::vector<std::vector<Piece>> writers =
        pieceWriters(param, m.mesh, tables);
    Json blocks = Json::array();
    for (int r = 0; r < static_cast<int>(writers.size()); ++r)
      for (const Piece &piece : writers[r])
        blocks.push_back(Json{{"file", rankFileName(r)},
                              {"tensor", pieceTensor(param, piece)},
                              {"offset", piece.block.start},
                              {"size", piece.block.size}});
    params.push_back(Json{{"name", param.name},
                          {"global_shape", param.globalShape},
                          {"split", param.split},
                          {"blocks", std::move(blocks)}});
  }
  Json index{{"format", kFormat},
             {"step", step},
             {"mesh", meshJson(m.mesh)},
             {"train", train},
             {"moments", Json{{"adam_m", "adam.m/<tensor>"},
                              {"adam_v", "adam.v/<tensor>"}}},
             {"params", std::move(params)}};
  // For the record (a resumed run starts from the static split).
  if (!tables.empty())
    index["expert_placement"] = placementJson(tables);
  return index;
}

/// Removes every checkpoint directory of `dir` but `keep`, and leftover
/// temporary ones.
void pruneCheckpoints(const std::string &dir,
                      const std::set<std::string> &keep) {
  std::error_code ec;
  for (const fs::directory_entry &entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    bool tmp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0;
    std::string base = tmp ? name.substr(0, name.size() - 4) : name;
    if (stepOfName(base) < 0 || (!tmp && keep.count(name)))
      continue;
    std::error_code ignored;
    fs::remove_all(entry.path(), ignored);
  }
}

[[noreturn]] void badIndex(const std::string &path, const std::string &what) {
  throw std::runtime_error(path + ": " + what);
}

std::vector<int64_t> intList(const Json &value, const std::string &path,
                             const std::string &field) {
  std::vector<int64_t> list;
  if (!value.is_array())
    badIndex(path, "'" + field + "' is not a list of integers");
  for (const Json &x : value) {
    if (!x.is_number_unsigned())
      badIndex(path, "'" + field + "' is not a list of non-negative integers");
    list.push_back(x.get<int64_t>());
  }
  return list;
}

const Json &field(const Json &object, const char *key, const std::string &path,
                  const std::string &where) {
  auto it = object.find(key);
  if (it == object.end())
    badIndex(path, where + " has no '" + key + "'");
  return *it;
}

} // namespace

std::string checkpointName(int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step-%06lld", static_cast<long long>(step));
  return name;
}

void saveCheckpoint(const std::string &dir, int64_t step, const Manifest &m,
                    RankEnv &env, const TrainState &state, const Json &train) {
  std::string name = checkpointName(step);
  std::string tmp = (fs::path(dir) / (name + ".tmp")).string();
  std::string final = (fs::path(dir) / name).string();

  // A diverged state is never saved: the latest checkpoint stays good.
  env.agree([&] {
    const AlignedBuffer *buffers[] = {state.weights, state.m, state.v};
    const char *what[] = {"weights", "first AdamW moments",
                          "second AdamW moments"};
    for (int k = 0; k < 3; ++k)
      for (const ParamInfo &param : m.params) {
        const float *x = buffers[k]->f32(param.offset);
        if (!std::all_of(x, x + param.numElements(),
                         [](float v) { return std::isfinite(v); }))
          throw std::runtime_error(
              "step " + std::to_string(step) + ": the " + what[k] + " of '" +
              param.name +
              "' hold a non-finite value: no checkpoint written (" +
              (latestCheckpoint(dir)
                   ? "the latest in " + dir + " is the last good one"
                   : "none in " + dir + " yet") +
              ")");
      }
  });

  env.agree([&] {
    if (!env.root)
      return;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      throw std::runtime_error(dir +
                               ": cannot create the checkpoint "
                               "directory (" +
                               ec.message() + ")");
    fs::remove_all(tmp, ec);
    if (!fs::create_directory(tmp, ec) || ec)
      throw std::runtime_error(tmp + ": cannot create (" + ec.message() + ")");
  });

  const PlacementTables tables =
      env.place ? env.place->placements : PlacementTables{};
  size_t pieceCount = 0;
  for (const ParamInfo &param : m.params)
    pieceCount += param.placement ? static_cast<size_t>(param.shape[0]) : 1;
  env.agree([&] {
    std::vector<io::TensorToWrite> tensors;
    std::vector<std::string> names; // keeps the moment names alive
    // Keeps every name alive: pointers into it go to the writer.
    names.reserve(pieceCount * 3);
    for (const ParamInfo &param : m.params) {
      std::vector<std::vector<Piece>> writers =
          pieceWriters(param, m.mesh, tables);
      for (const Piece &piece : writers[env.rank()]) {
        std::string base = pieceTensor(param, piece);
        const std::string tensorNames[] = {base, kMomentPrefixes[0] + base,
                                           kMomentPrefixes[1] + base};
        AlignedBuffer *buffers[] = {state.weights, state.m, state.v};
        for (int k = 0; k < 3; ++k) {
          names.push_back(tensorNames[k]);
          // An ordinary parameter's piece is its whole local block.
          std::vector<int64_t> shape =
              param.placement ? piece.block.size : param.shape;
          tensors.push_back({names.back(), io::DType::F32, shape,
                             buffers[k]->f32(param.offset) + piece.offset});
        }
      }
    }
    if (!tensors.empty())
      io::writeSafetensors((fs::path(tmp) / rankFileName(env.rank())).string(),
                           tensors, {{"format", kFormat}});
  });

  env.agree([&] {
    if (!env.root)
      return;
    writeFileAtomically((fs::path(tmp) / "index.json").string(),
                        indexJson(step, m, train, tables).dump(1) + "\n");
    fsyncPath(tmp, true);
    std::optional<std::string> previous;
    std::string latestPath = (fs::path(dir) / "latest").string();
    if (fs::exists(latestPath))
      previous = readText(latestPath);
    std::error_code ec;
    if (fs::exists(final)) {
      // The same step saved before (a rerun): replace it.
      std::string old = final + ".old.tmp";
      fs::remove_all(old, ec);
      fs::rename(final, old, ec);
      if (ec)
        throw std::runtime_error(final + ": cannot replace (" + ec.message() +
                                 ")");
    }
    fs::rename(tmp, final, ec);
    if (ec)
      throw std::runtime_error(tmp + ": cannot rename to " + final + " (" +
                               ec.message() + ")");
    fsyncPath(dir, true);
    writeFileAtomically(latestPath, name + "\n");
    fsyncPath(dir, true);
    std::set<std::string> keep = {name};
    if (previous) {
      std::string prev = *previous;
      while (!prev.empty() &&
             std::isspace(static_cast<unsigned char>(prev.back())))
        prev.pop_back();
      keep.insert(prev);
    }
    pruneCheckpoints(dir, keep);
  });
}

std::optional<std::string> latestCheckpoint(const std::string &dir) {
  std::string latestPath = (fs::path(dir) / "latest").string();
  std::error_code ec;
  if (!fs::exists(latestPath, ec))
    return std::nullopt;
  std::string name = readText(latestPath);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back())))
    name.pop_back();
  if (stepOfName(name) < 0)
    throw std::runtime_error(latestPath + ": is '" + name.substr(0, 40) +
                             "', expected a checkpoint name like "
                             "step-000200");
  std::string path = (fs::path(dir) / name).string();
  if (!fs::is_regular_file(fs::path(path) / "index.json", ec))
    throw std::runtime_error(latestPath + ": names " + name + ", but " + path +
                             "/index.json does not exist");
  return path;
}

std::string resolveCheckpoint(const std::string &path) {
  std::error_code ec;
  if (fs::is_regular_file(fs::path(path) / "index.json", ec))
    return path;
  if (std::optional<std::string> latest = latestCheckpoint(path))
    return *latest;
  throw std::runtime_error(path + ": is not a checkpoint (no index.json) nor "
                                  "a checkpoint directory (no 'latest')");
}

int64_t exportCheckpoint(const std::string &path, const Manifest &m,
                         const std::string &output,
                         const io::CheckpointLayout &layout) {
  std::string checkpoint = resolveCheckpoint(path);
  // The same model on one rank: every parameter whole, in the same order.
  Manifest whole = m;
  uint64_t at = 0;
  for (ParamInfo &param : whole.params) {
    param.shape = param.globalShape;
    param.split.clear();
    param.placement.reset();
    param.offset = at;
    at += alignedSize(param.bytes());
  }
  whole.weightsBytes = at;
  AlignedBuffer weights(whole.weightsBytes);
  LoadedCheckpoint loaded =
      loadCheckpoint(checkpoint, whole, nullptr, {&weights, nullptr, nullptr});
  saveWeights(whole, weights, output, layout);
  return loaded.step;
}

std::optional<Block> intersectBlocks(const Block &a, const Block &b) {
  Block out{std::vector<int64_t>(a.start.size()),
            std::vector<int64_t>(a.start.size())};
  for (size_t d = 0; d < a.start.size(); ++d) {
    int64_t lo = std::max(a.start[d], b.start[d]);
    int64_t hi = std::min(a.start[d] + a.size[d], b.start[d] + b.size[d]);
    if (hi <= lo)
      return std::nullopt;
    out.start[d] = lo;
    out.size[d] = hi - lo;
  }
  return out;
}

int64_t copyIntersection(const void *src, const Block &srcBlock, void *dst,
                         const Block &dstBlock, size_t elemSize) {
  std::optional<Block> common = intersectBlocks(srcBlock, dstBlock);
  if (!common)
    return 0;
  size_t rank = common->start.size();
  auto *out = static_cast<char *>(dst);
  const auto *in = static_cast<const char *>(src);
  if (rank == 0) {
    std::memcpy(out, in, elemSize);
    return 1;
  }
  // Walk the rows of the intersection; each is contiguous in both blocks.
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < rank; ++d)
    rows *= common->size[d];
  int64_t rowElements = common->size[rank - 1];
  std::vector<int64_t> index(rank, 0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t srcOffset = 0, dstOffset = 0;
    for (size_t d = 0; d < rank; ++d) {
      int64_t global = common->start[d] + index[d];
      srcOffset = srcOffset * srcBlock.size[d] + (global - srcBlock.start[d]);
      dstOffset = dstOffset * dstBlock.size[d] + (global - dstBlock.start[d]);
    }
    std::memcpy(out + dstOffset * elemSize, in + srcOffset * elemSize,
                static_cast<size_t>(rowElements) * elemSize);
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < common->size[d])
        break;
      index[d] = 0;
    }
  }
  return rows * rowElements;
}

LoadedCheckpoint loadCheckpoint(const std::string &path, const Manifest &m,
                                const RankPlace *place,
                                const TrainState &state) {
  std::string indexPath = (fs::path(path) / "index.json").string();
  Json index;
  try {
    index = Json::parse(readText(indexPath));
  } catch (const Json::exception &e) {
    badIndex(indexPath, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!index.is_object() || !index.contains("format") ||
      index["format"] != kFormat)
    badIndex(indexPath,
             std::string("is not a checkpoint index (format ") + kFormat + ")");
  const Json &stepValue = field(index, "step", indexPath, "the index");
  if (!stepValue.is_number_unsigned())
    badIndex(indexPath, "'step' is not a non-negative integer");
  LoadedCheckpoint loaded;
  loaded.step = stepValue.get<int64_t>();
  if (auto it = index.find("train"); it != index.end() && it->is_object())
    loaded.train = *it;
  const Json &params = field(index, "params", indexPath, "the index");
  if (!params.is_array())
    badIndex(indexPath, "'params' is not a list");
  std::map<std::string, const Json *> byName;
  for (const Json &p : params)
    if (p.is_object() && p.contains("name") && p["name"].is_string())
      byName[p["name"].get<std::string>()] = &p;

  std::map<std::string, std::unique_ptr<io::SafetensorsReader>> readers;
  auto reader = [&](const std::string &file) -> io::SafetensorsReader & {
    if (file.empty() || file.find('/') != std::string::npos ||
        file.find("..") != std::string::npos)
      badIndex(indexPath, "block file '" + file + "' is not a file name");
    auto &slot = readers[file];
    if (!slot)
      slot = std::make_unique<io::SafetensorsReader>(
          io::SafetensorsReader::open((fs::path(path) / file).string()));
    return *slot;
  };

  for (const ParamInfo &param : m.params) {
    auto it = byName.find(param.name);
    if (it == byName.end())
      badIndex(indexPath, "has no parameter '" + param.name + "'");
    const Json &entry = *it->second;
    std::string where = "parameter '" + param.name + "'";
    std::vector<int64_t> global =
        intList(field(entry, "global_shape", indexPath, where), indexPath,
                param.name + ".global_shape");
    if (global != param.globalShape)
      badIndex(indexPath, where + " has global shape " + shapeText(global) +
                              ", the model " + shapeText(param.globalShape));
    const Json &blocks = field(entry, "blocks", indexPath, where);
    if (!blocks.is_array())
      badIndex(indexPath, where + ": 'blocks' is not a list");

    std::vector<Piece> mine = localPieces(param, place);
    int64_t covered = 0, wanted = 0;
    for (const Piece &piece : mine) {
      int64_t elements = 1;
      for (int64_t d : piece.block.size)
        elements *= d;
      wanted += elements;
    }
    std::vector<float> scratch;
    for (const Json &b : blocks) {
      if (!b.is_object())
        badIndex(indexPath, where + ": a block is not an object");
      const Json &file = field(b, "file", indexPath, where + "'s block");
      const Json &tensor = field(b, "tensor", indexPath, where + "'s block");
      if (!file.is_string() || !tensor.is_string())
        badIndex(indexPath, where + ": a block's file or tensor is not a "
                                    "string");
      Block saved{intList(field(b, "offset", indexPath, where + "'s block"),
                          indexPath, param.name + ".offset"),
                  intList(field(b, "size", indexPath, where + "'s block"),
                          indexPath, param.name + ".size")};
      bool fits = saved.start.size() == global.size() &&
                  saved.size.size() == global.size();
      for (size_t d = 0; fits && d < global.size(); ++d)
        fits = saved.start[d] + saved.size[d] <= global[d];
      if (!fits)
        badIndex(indexPath,
                 where + ": a block (offset " + shapeText(saved.start) +
                     ", size " + shapeText(saved.size) +
                     ") is not inside the global shape " + shapeText(global));
      bool overlaps = global.empty();
      for (const Piece &piece : mine)
        overlaps = overlaps || intersectBlocks(saved, piece.block);
      if (!overlaps)
        continue;
      int64_t elements = 1;
      for (int64_t d : saved.size)
        elements *= d;
      scratch.resize(static_cast<size_t>(elements));
      io::SafetensorsReader &r = reader(file.get<std::string>());
      std::string name = tensor.get<std::string>();
      AlignedBuffer *targets[] = {state.weights, state.m, state.v};
      const std::string prefixes[] = {"", kMomentPrefixes[0],
                                      kMomentPrefixes[1]};
      int64_t copied = 0;
      for (int k = 0; k < 3; ++k) {
        if (!targets[k])
          continue;
        r.readF32(prefixes[k] + name, saved.size, scratch.data());
        copied = 0;
        for (const Piece &piece : mine)
          copied +=
              copyIntersection(scratch.data(), saved,
                               targets[k]->f32(param.offset) + piece.offset,
                               piece.block, sizeof(float));
      }
      covered += copied;
    }
    if (covered != wanted)
      badIndex(indexPath, where + ": the saved blocks cover " +
                              std::to_string(covered) + " of the " +
                              std::to_string(wanted) +
                              " elements of this rank's block");
  }
  return loaded;
}

} // namespace moe::driver
