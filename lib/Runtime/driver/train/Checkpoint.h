//===- Checkpoint.h - Sharded training checkpoints --------------*- C++ -*-===//
//
// A checkpoint is a directory D/step-000200 holding, per rank that owns a
// distinct block of some parameter, rank-00003.safetensors with that rank's
// blocks: the weights under the parameter's name (a stacked "{e}" parameter
// keeps its stacked local block under the stacked name) and the AdamW
// moments under "adam.m/<name>" and "adam.v/<name>". Of the ranks holding
// the same block (replicas), only the lowest writes it. index.json, written
// by rank 0, records the format, the step, the mesh, the training flags that
// matter for resuming and, for every parameter, its global shape, its split
// and its blocks (file, tensor, offset, size).
//
// Saving is atomic: every rank writes into D/step-000200.tmp/, then rank 0
// renames the directory to D/step-000200 and rewrites D/latest (the
// directory's name) via a temporary file and rename, so a crash at any
// point leaves the previous checkpoint and D/latest as they were. The two
// newest checkpoints are kept.
//
// Loading reads, for each parameter, every saved block that overlaps this
// rank's block and copies the intersection: a checkpoint loads onto any mesh.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_CHECKPOINT_H
#define MOE_LIB_RUNTIME_DRIVER_CHECKPOINT_H

#include "driver/model/AlignedBuffer.h"
#include "driver/model/Manifest.h"
#include "driver/model/ModelRun.h"
#include "driver/model/Shard.h"
#include "moe/Runtime/Safetensors.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace moe::driver {

/// The state a checkpoint holds, all laid out like the weights blob. When
/// loading, null moments are not read (export wants the weights only).
struct TrainState {
  AlignedBuffer *weights;
  AlignedBuffer *m;
  AlignedBuffer *v;
};

/// "step-000200".
std::string checkpointName(int64_t step);

/// Writes `text` to `path` atomically: a temporary file beside it, fsync,
/// rename (std::runtime_error naming the file on failure).
void writeFileAtomically(const std::string &path, const std::string &text);

/// Collective over env.world: writes `state` at `step` into `dir` as
/// described above. `train` (a JSON object) goes into index.json as is.
void saveCheckpoint(const std::string &dir, int64_t step, const Manifest &m,
                    RankEnv &env, const TrainState &state,
                    const nlohmann::ordered_json &train);

/// The checkpoint directory D/latest names, or nullopt when `dir` has no
/// D/latest (no checkpoint yet; leftover *.tmp directories are ignored).
/// Throws std::runtime_error when D/latest is malformed or names a missing
/// checkpoint.
std::optional<std::string> latestCheckpoint(const std::string &dir);

struct LoadedCheckpoint {
  int64_t step = 0;
  nlohmann::ordered_json train; ///< index.json's "train" object.
};

/// Fills this rank's blocks of `state` from the checkpoint directory `path`.
/// Throws std::runtime_error (one line naming the file) when index.json or
/// a rank file is malformed, a parameter is missing or has another global
/// shape, or the saved blocks do not cover this rank's block.
LoadedCheckpoint loadCheckpoint(const std::string &path, const Manifest &m,
                                const RankPlace *place,
                                const TrainState &state);

/// The checkpoint `path` names: a checkpoint directory (with index.json),
/// or a --checkpoint-dir whose `latest` names one. Throws
/// std::runtime_error naming `path` when it is neither.
std::string resolveCheckpoint(const std::string &path);

/// Writes the weights of checkpoint `path` (see resolveCheckpoint), saved
/// from any mesh, as a Hugging Face checkpoint of whole tensors (see
/// io::writeCheckpoint); the model `m` may be compiled for any mesh. Holds
/// the whole model's fp32 weights in memory, not the moments. Returns the
/// checkpoint's step.
int64_t exportCheckpoint(const std::string &path, const Manifest &m,
                         const std::string &output,
                         const io::CheckpointLayout &layout);

/// The intersection of blocks `a` and `b` (of one tensor), nullopt when it
/// is empty.
std::optional<Block> intersectBlocks(const Block &a, const Block &b);

/// Copies the elements of the intersection of srcBlock and dstBlock from
/// `src` (dense, srcBlock's shape) to `dst` (dense, dstBlock's shape);
/// returns how many were copied. Elements are elemSize bytes.
int64_t copyIntersection(const void *src, const Block &srcBlock, void *dst,
                         const Block &dstBlock, size_t elemSize);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_CHECKPOINT_H
