//===- Manifest.h - The manifest of a compiled model ------------*- C++ -*-===//
//
// `moe_model_manifest` (format "moe-model/1", documented in
// include/moe/Runtime/ModelABI.h) describes the weights blob, the arena and
// the entry point's inputs and outputs. parseManifest validates all of it up
// front, so that the driver can trust every offset and shape afterwards; each
// problem is a one-line std::runtime_error naming the field, e.g.
// "manifest: 'params[2].offset' is 100, expected a multiple of 64".
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_MANIFEST_H
#define MOE_LIB_RUNTIME_DRIVER_MANIFEST_H

#include "driver/model/Shard.h"
#include "moe/Support/MeshShape.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moe::driver {

/// One parameter in the weights blob. A stacked parameter (its name contains
/// "{e}") holds one Hugging Face tensor per index of dim 0: slice e is the
/// tensor named with "{e}" replaced by e.
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  /// The storage type of the compiled program's copy: "F32" or "BF16".
  std::string dtype;
  /// Offset in the fp32 blob every host-side user sees (the master weights,
  /// gradients, optimizer moments, checkpoints). Under F32 storage it is the
  /// manifest's offset; under BF16 the driver lays the fp32 blob out itself,
  /// in the same order and alignment.
  uint64_t offset = 0;
  /// Offset in the blob the entry points read (the manifest's offset).
  uint64_t storageOffset = 0;
  bool stacked = false;
  /// The whole tensor's shape and how it is split over the mesh (a
  /// partitioned model); `shape` is this rank's block. Without "split" in
  /// the manifest, globalShape == shape and nothing is split.
  std::vector<int64_t> globalShape;
  Split split;
  /// Set on a router's expert bias (selection only, DeepSeek-V3): the slot
  /// of its layer among the per-expert token counts a run reports. The
  /// bias is not trained by gradients; `train` nudges it toward balance.
  std::optional<int64_t> balancesLayer;
  /// Set on an expert weight of an expert-parallel layer: the placement
  /// table (MoE layer) whose slots its dim-0 rows are. `shape[0]` is then
  /// the slots per EP rank, which the table fills with experts (ep's
  /// ExpertPlacement), instead of a block of globalShape[0].
  std::optional<int64_t> placement;

  int64_t numElements() const;
  /// Bytes in the fp32 blob.
  uint64_t bytes() const { return static_cast<uint64_t>(numElements()) * 4; }
  /// Bytes in the entry points' blob.
  uint64_t storageBytes() const {
    return static_cast<uint64_t>(numElements()) * (dtype == "BF16" ? 2 : 4);
  }
  /// shape[0] for a stacked parameter, else 1.
  int64_t numSlices() const { return stacked ? shape[0] : 1; }
  /// The shape of one HF tensor: `shape` without dim 0 when stacked.
  std::vector<int64_t> sliceShape() const;
  /// The HF name of slice `e` (`name` itself when not stacked).
  std::string sliceName(int64_t e) const;
};

/// An input or output of the entry point.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape; ///< this rank's block
  std::string dtype;
  std::vector<int64_t> globalShape;
  Split split;
};

/// The optional training step (manifest "train_step"): the entry
/// moe_entry_train_step, run on the forward's weights layout with a gradient
/// blob laid out alike. Its inputs are the forward's tokens and labels; its
/// one output is the scalar loss.
struct TrainStepInfo {
  std::string function;
  std::string entry;
  uint64_t arenaBytes = 0;
  uint64_t unplannedBytes = 0;
  /// The largest scratch one of its collectives allocates (0 if unknown).
  uint64_t commBytes = 0;
};

/// A generation entry (manifest "decode" or "prefill", moec's
/// moe-build-decode): `newTokens` tokens of each of `sequences` sequences a
/// call, at given positions, against a key/value cache of `cacheLen`
/// positions a sequence kept in a blob of `cacheBytes` that the caller holds
/// between calls (moe_entry_decode and moe_entry_prefill, ModelABI.h).
struct GenerationInfo {
  std::string entry;
  uint64_t arenaBytes = 0;
  int64_t sequences = 0;
  int64_t newTokens = 0;
  int64_t cacheLen = 0;
  uint64_t cacheBytes = 0;
};

struct Manifest {
  std::string function;
  std::string entry;
  std::vector<ParamInfo> params; ///< In weights-blob order.
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  /// The fp32 blob's size (see ParamInfo::offset).
  uint64_t weightsBytes = 0;
  /// "F32" or "BF16" (manifest "storage"): how the compiled program stores
  /// its floating-point tensors; the entries' weights blob has
  /// storageWeightsBytes bytes, and the logits are of this type.
  std::string storage = "F32";
  uint64_t storageWeightsBytes = 0;
  uint64_t arenaBytes = 0;
  uint64_t unplannedBytes = 0;
  /// The largest scratch one of the forward's collectives allocates (0 if
  /// the manifest does not say).
  uint64_t commBytes = 0;
  int64_t ignoreIndex = -100;
  /// Character-level models: token i is vocabChars[i] (one UTF-8 character
  /// each); empty when the manifest has no "vocab_chars".
  std::vector<std::string> vocabChars;
  /// The Hugging Face config.json of an imported model (moe.hf_config, a
  /// JSON object's text); empty when the manifest has no "hf_config".
  std::string hfConfig;
  /// The mesh the model was compiled for (all 1 when the manifest has none).
  moe::MeshShape mesh;
  /// Present when the model was compiled with a training step.
  std::optional<TrainStepInfo> trainStep;
  /// The evaluation step beside it (manifest "eval_step", entry
  /// moe_entry_eval_step): the forward's loss without its logits.
  std::optional<TrainStepInfo> evalStep;
  /// Present when the model was compiled with a key/value cache: one token
  /// of each sequence a call (decode), and up to seq a call (prefill).
  std::optional<GenerationInfo> decode, prefill;
  /// ZeRO stage (manifest "zero_stage", moec --zero): 1 splits each
  /// weight's AdamW state over its data-parallel replicas
  /// (moe/Support/OptimizerShards.h); 2 and 3 also split the dense weights
  /// over dp x cp in the compiled program (their moe.split names dp or cp,
  /// so their state is already a slice), and the optimizer treats what
  /// stays whole as under 1; 0 keeps everything whole on every rank.
  int zeroStage = 0;
  /// Activation recompute of the training step (manifest "recompute", moec
  /// --recompute): "full", or empty for none.
  std::string recompute;
  /// Under recompute, the routing calls of one forward pass (manifest
  /// "forward_routing_calls"): a training step reports the expert counts
  /// and dropped slots of its first `permutes` and `drops` calls only, the
  /// recomputed ones repeating them. -1: every call's.
  int64_t forwardPermutes = -1, forwardDrops = -1;

  // The forward signature, checked by parseManifest: tokens and labels
  // [batch, seq] I32, logits [batch, seq, vocab] F32, loss [] F32, in whole
  // (global) shapes; the outputs are whole on every rank.
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t vocab = 0;

  bool hasVocabChars() const { return !vocabChars.empty(); }
  bool bf16Storage() const { return storage == "BF16"; }
  /// Number of scalars over all parameters.
  uint64_t totalParameters() const;
};

/// Parses and validates manifest JSON; throws std::runtime_error.
Manifest parseManifest(const std::string &text);

/// "[2, 8, 16]"; "[]" for a scalar.
std::string shapeText(const std::vector<int64_t> &shape);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_MANIFEST_H
