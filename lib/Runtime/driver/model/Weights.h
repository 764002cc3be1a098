//===- Weights.h - The weights blob of a compiled model ---------*- C++ -*-===//
//
// The blob is one MOE_BUFFER_ALIGNMENT-aligned allocation of weights_bytes
// holding every parameter at its manifest offset as fp32. It is filled from a
// Hugging Face style safetensors checkpoint (stacked expert parameters are
// gathered from one tensor per expert) or from a deterministic random init,
// and can be written back under the HF names.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_WEIGHTS_H
#define MOE_LIB_RUNTIME_DRIVER_WEIGHTS_H

#include "driver/model/AlignedBuffer.h"
#include "driver/model/Manifest.h"
#include "moe/Runtime/Safetensors.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moe::driver {

/// Where a rank's weights go as they are produced, one slice (an expert, or
/// the rank's block of one tensor) at a time: `bytes` of fp32 for the
/// rank's weights blob at `offset` (a host blob, or the runner's weights
/// on its backend), so that loading stages at most one tensor in host
/// memory.
using WeightSink =
    std::function<void(uint64_t offset, const float *data, uint64_t bytes)>;

struct LoadedWeights {
  AlignedBuffer blob;
  /// Tensors of the file that no parameter uses (sorted): ignored, but worth
  /// a note (a checkpoint of another configuration?).
  std::vector<std::string> unusedTensors;
};

/// Reads every parameter from the checkpoint at `path` (a safetensors file, a
/// model.safetensors.index.json and its shards, or a folder holding either;
/// io::SafetensorsCheckpoint): F32, or BF16 / F16 converted, with exactly
/// the parameter's (slice) shape. Only the shards holding this rank's
/// tensors are opened. A missing
/// tensor, another shape, another dtype or a truncated file throws
/// moe::io::SafetensorsError, whose one-line message names file and tensor.
///
/// With `place` (a partitioned model's rank), each parameter gets this rank's
/// block: a stacked parameter reads only the experts of its block, any other
/// the whole tensor, of which it keeps the block.
LoadedWeights loadWeights(const Manifest &manifest, const std::string &path,
                          const RankPlace *place = nullptr);

/// loadWeights into `sink` instead of a blob; returns the tensors of the
/// checkpoint the model does not use (always none with `place`).
std::vector<std::string> streamWeights(const Manifest &manifest,
                                       const std::string &path,
                                       const RankPlace *place,
                                       const WeightSink &sink);

/// Writes every parameter under its HF names (one tensor per expert for
/// stacked parameters) as io::writeCheckpoint does: one file, or a folder of
/// shards and their index, F32 or BF16 as `layout` says, each file atomic,
/// with metadata {"format": "pt"} so that from_pretrained accepts it; into a
/// folder, an imported model's config.json too (torch_dtype as written).
void saveWeights(const Manifest &manifest, const AlignedBuffer &blob,
                 const std::string &path,
                 const io::CheckpointLayout &layout = {});

/// Every parameter of `blob` (weights_bytes, e.g. weights or gradients) as
/// F32 tensors under its HF names: one tensor per expert for stacked
/// parameters. The tensors point into `blob`.
std::vector<io::TensorToWrite> hfTensors(const Manifest &manifest,
                                         const AlignedBuffer &blob);

/// Fills `blob` (weights_bytes) deterministically from `seed`:
///   - tensors of rank >= 2: normal(0, std);
///   - rank-1 tensors whose name ends with "norm.weight": ones;
///   - every other tensor (biases, e_score_correction_bias): zeros.
/// Rank and name are those of the HF tensor, so a stacked [E, a, b]
/// parameter is E rank-2 tensors. Each HF tensor draws from its own stream,
/// seeded from `seed` and the tensor's name alone (see initRandomTensor): the
/// values do not depend on the order or offsets of the parameters, so slice
/// e of a stacked parameter is exactly the tensor drawn for its HF name.
/// With `place`, each rank's blocks are those of the whole tensors drawn the
/// same way, so every mesh starts from the same model.
void initRandomWeights(const Manifest &manifest, AlignedBuffer &blob,
                       uint64_t seed, double std = 0.02,
                       const RankPlace *place = nullptr);

/// initRandomWeights into `sink` instead of a blob.
void streamRandomWeights(const Manifest &manifest, uint64_t seed, double std,
                         const RankPlace *place, const WeightSink &sink);

/// Writes the random init of `seed` (initRandomWeights' rules) as a
/// checkpoint of whole tensors under their HF names, whatever mesh the model
/// is compiled for: a partitioned model's file equals the one-rank model's.
void saveRandomWeights(const Manifest &manifest, uint64_t seed, double std,
                       const std::string &path,
                       const io::CheckpointLayout &layout = {});

/// One HF tensor of `numElements` values, by the rules above. The normal
/// draws: a splitmix64 stream starting at splitmix64(seed) ^ fnv1a64(name);
/// each pair of elements (2i, 2i+1) takes the two Box-Muller values of two
/// consecutive outputs u1 = (x1 >> 11) + 1, u2 = x2 >> 11 (times 2^-53):
/// r = sqrt(-2 ln u1), values r cos(2 pi u2), r sin(2 pi u2), computed in
/// double and rounded to float (which hides any last-bit libm differences).
void initRandomTensor(const std::string &name, int64_t rank,
                      int64_t numElements, uint64_t seed, double std,
                      float *dst);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_WEIGHTS_H
