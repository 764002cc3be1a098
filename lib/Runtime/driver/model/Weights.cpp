//===- Weights.cpp - The weights blob of a compiled model -----------------===//

#include "driver/model/Weights.h"

#include "driver/model/Placement.h"

#include "moe/Runtime/Safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

namespace moe::driver {

namespace {

uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a64(const std::string &text) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : text)
    hash = (hash ^ c) * 0x100000001b3ull;
  return hash;
}

bool endsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The bytes of one HF tensor (slice) of a parameter.
uint64_t sliceBytes(const ParamInfo &param) {
  return param.numSlices() == 0 ? 0 : param.bytes() / param.numSlices();
}

void checkBlob(const Manifest &manifest, const AlignedBuffer &blob) {
  if (blob.size() != manifest.weightsBytes)
    throw std::invalid_argument("weights blob has " +
                                std::to_string(blob.size()) +
                                " bytes, the manifest says weights_bytes " +
                                std::to_string(manifest.weightsBytes));
}

} // namespace

namespace {

/// Produces every HF tensor (slice) of `param` this rank holds with
/// fill(hfName, wholeSliceShape, whole), which writes the whole tensor to
/// `whole`, and hands this rank's block of it to `sink` at its offset in the
/// rank's weights, one slice at a time: at most one tensor is staged.
template <typename Fill>
void forEachLocalSlice(const ParamInfo &param, const RankPlace *place,
                       const WeightSink &sink, Fill &&fill) {
  const uint64_t bytes = sliceBytes(param);
  std::vector<float> slice(bytes / sizeof(float));
  Block block = shardBlock(param.globalShape, param.split, place);
  std::vector<int64_t> wholeShape(param.globalShape.begin() +
                                      (param.stacked ? 1 : 0),
                                  param.globalShape.end());
  Block sliceBlock{
      std::vector<int64_t>(block.start.begin() + (param.stacked ? 1 : 0),
                           block.start.end()),
      param.sliceShape()};
  int64_t wholeElements = 1;
  for (int64_t d : wholeShape)
    wholeElements *= d;
  bool whole = wholeShape == param.sliceShape();
  std::vector<float> scratch(whole ? 0 : wholeElements);
  // This rank's block of slice `name` (an expert tensor parallel expert
  // weight, or one split over tp) into `slice`.
  auto fillBlock = [&](const std::string &name) {
    if (whole) {
      fill(name, wholeShape, slice.data());
    } else {
      fill(name, wholeShape, scratch.data());
      copyBlock(scratch.data(), wholeShape, sliceBlock, sizeof(float),
                slice.data());
    }
  };
  if (param.placement && place) {
    // An expert weight's slots hold experts (or, under expert tensor
    // parallelism, this rank's block of each); empty ones read zero.
    std::vector<int32_t> experts = slotExperts(param, *place);
    for (size_t l = 0; l < experts.size(); ++l) {
      if (experts[l] < 0)
        std::fill(slice.begin(), slice.end(), 0.0f);
      else
        fillBlock(param.sliceName(experts[l]));
      sink(param.offset + l * bytes, slice.data(), bytes);
    }
    return;
  }
  int64_t firstSlice = param.stacked ? block.start[0] : 0;
  for (int64_t e = 0; e < param.numSlices(); ++e) {
    fillBlock(param.sliceName(firstSlice + e));
    sink(param.offset + e * bytes, slice.data(), bytes);
  }
}

/// A sink that copies into `blob`.
WeightSink intoBlob(AlignedBuffer &blob) {
  return [&blob](uint64_t offset, const float *data, uint64_t bytes) {
    std::memcpy(blob.data() + offset, data, bytes);
  };
}

} // namespace

std::vector<std::string> streamWeights(const Manifest &manifest,
                                       const std::string &path,
                                       const RankPlace *place,
                                       const WeightSink &sink) {
  io::SafetensorsCheckpoint reader = io::SafetensorsCheckpoint::open(path);
  std::set<std::string> used;
  for (const ParamInfo &param : manifest.params)
    forEachLocalSlice(param, place, sink,
                      [&](const std::string &name,
                          const std::vector<int64_t> &shape, float *dst) {
                        reader.readF32(name, shape, dst);
                        used.insert(name);
                      });
  // A rank reads only its experts: the others' are not "unused".
  std::vector<std::string> unused;
  for (const std::string &name : reader.names())
    if (!used.count(name) && !place)
      unused.push_back(name);
  return unused;
}

LoadedWeights loadWeights(const Manifest &manifest, const std::string &path,
                          const RankPlace *place) {
  LoadedWeights result{AlignedBuffer(manifest.weightsBytes), {}};
  result.unusedTensors =
      streamWeights(manifest, path, place, intoBlob(result.blob));
  return result;
}

std::vector<io::TensorToWrite> hfTensors(const Manifest &manifest,
                                         const AlignedBuffer &blob) {
  checkBlob(manifest, blob);
  std::vector<io::TensorToWrite> tensors;
  for (const ParamInfo &param : manifest.params)
    for (int64_t e = 0; e < param.numSlices(); ++e)
      tensors.push_back({param.sliceName(e), io::DType::F32, param.sliceShape(),
                         blob.f32(param.offset + e * sliceBytes(param))});
  return tensors;
}

/// `layout` with the model's config.json, its torch_dtype the one written.
static io::CheckpointLayout withHFConfig(const Manifest &manifest,
                                         io::CheckpointLayout layout) {
  if (manifest.hfConfig.empty())
    return layout;
  auto config = nlohmann::ordered_json::parse(manifest.hfConfig);
  config.erase("dtype");
  config["torch_dtype"] =
      layout.dtype == io::DType::BF16 ? "bfloat16" : "float32";
  layout.config = config.dump(2) + "\n";
  return layout;
}

void saveWeights(const Manifest &manifest, const AlignedBuffer &blob,
                 const std::string &path, const io::CheckpointLayout &layout) {
  io::writeCheckpoint(path, hfTensors(manifest, blob),
                      withHFConfig(manifest, layout));
}

void initRandomTensor(const std::string &name, int64_t rank,
                      int64_t numElements, uint64_t seed, double std,
                      float *dst) {
  if (rank < 2) {
    float fill = rank == 1 && endsWith(name, "norm.weight") ? 1.0f : 0.0f;
    std::fill(dst, dst + numElements, fill);
    return;
  }
  uint64_t state = seed;
  state = splitmix64(state) ^ fnv1a64(name);
  const double twoPi = 6.283185307179586476925286766559;
  for (int64_t i = 0; i < numElements; i += 2) {
    double u1 = static_cast<double>((splitmix64(state) >> 11) + 1) * 0x1.0p-53;
    double u2 = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
    double r = std::sqrt(-2.0 * std::log(u1));
    dst[i] = static_cast<float>(std * r * std::cos(twoPi * u2));
    if (i + 1 < numElements)
      dst[i + 1] = static_cast<float>(std * r * std::sin(twoPi * u2));
  }
}

void streamRandomWeights(const Manifest &manifest, uint64_t seed, double std,
                         const RankPlace *place, const WeightSink &sink) {
  for (const ParamInfo &param : manifest.params)
    forEachLocalSlice(param, place, sink,
                      [&](const std::string &name,
                          const std::vector<int64_t> &shape, float *dst) {
                        int64_t elements = 1;
                        for (int64_t d : shape)
                          elements *= d;
                        initRandomTensor(name,
                                         static_cast<int64_t>(shape.size()),
                                         elements, seed, std, dst);
                      });
}

void initRandomWeights(const Manifest &manifest, AlignedBuffer &blob,
                       uint64_t seed, double std, const RankPlace *place) {
  checkBlob(manifest, blob);
  streamRandomWeights(manifest, seed, std, place, intoBlob(blob));
}

void saveRandomWeights(const Manifest &manifest, uint64_t seed, double std,
                       const std::string &path,
                       const io::CheckpointLayout &layout) {
  // Whole tensors at their global shapes: a partitioned model's manifest
  // holds one rank's blocks, which are not what a checkpoint names.
  std::vector<std::vector<float>> storage;
  std::vector<io::TensorToWrite> tensors;
  for (const ParamInfo &param : manifest.params) {
    int64_t slices = param.stacked ? param.globalShape[0] : 1;
    std::vector<int64_t> shape(param.globalShape.begin() +
                                   (param.stacked ? 1 : 0),
                               param.globalShape.end());
    int64_t elements = 1;
    for (int64_t d : shape)
      elements *= d;
    for (int64_t e = 0; e < slices; ++e) {
      std::string name = param.sliceName(e);
      std::vector<float> &values = storage.emplace_back(elements);
      initRandomTensor(name, static_cast<int64_t>(shape.size()), elements, seed,
                       std, values.data());
      tensors.push_back({name, io::DType::F32, shape, values.data()});
    }
  }
  io::writeCheckpoint(path, tensors, withHFConfig(manifest, layout));
}

} // namespace moe::driver
