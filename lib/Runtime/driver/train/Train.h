//===- Train.h - The train and grad commands --------------------*- C++ -*-===//
//
// `train` runs the model's training step (moe_entry_train_step) on batches of
// a character corpus, with AdamW, global-norm clipping and a warm-up + cosine
// learning rate, on every rank of the model's mesh; it evaluates, logs,
// checkpoints, resumes and finally samples text. `grad` runs the training
// step once on given tokens and writes every gradient (1-rank models), for
// comparisons with PyTorch autograd.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_TRAIN_H
#define MOE_LIB_RUNTIME_DRIVER_TRAIN_H

#include "driver/cli/CommandLine.h"
#include "driver/model/Entries.h"
#include "driver/model/Manifest.h"
#include "driver/model/ModelRun.h"
#include "driver/train/Optimizer.h"
#include "driver/train/Tracing.h"

#include <cstdint>
#include <optional>
#include <string>

namespace moe::driver {

const CommandSpec &trainCommand();
const CommandSpec &gradCommand();
const CommandSpec &exportCommand();

/// Everything `train` needs from its flags, validated.
struct TrainOptions {
  std::string data;
  /// How --data is read: 0 as text (characters of vocab_chars), else the
  /// bytes of one little-endian token id (2: u16, 4: u32).
  int dataIdBytes = 0;
  int64_t steps = 0;
  LrSchedule schedule;
  AdamWConfig adamw;
  uint64_t seed = 0;
  /// The initial weights; absent only with --resume (then a checkpoint must
  /// exist).
  std::optional<WeightSource> source;
  int64_t evalEvery = 100; ///< 0: only at the end.
  int64_t evalBatches = 8;
  int64_t logEvery = 10;
  int64_t saveEvery = 0; ///< 0: only at the end (with a checkpoint dir).
  std::optional<std::string> checkpointDir;
  bool resume = false;
  std::optional<std::string> metrics;
  std::optional<std::string> plot;
  /// The executable's name, for the plot's title.
  std::string program;
  int64_t sampleChars = 200;
  /// A step whose loss or gradient norm is not finite leaves the weights
  /// and moments as they were; more than this many in a row end the run.
  int64_t maxSkippedSteps = 3;
  /// Compiled batches per optimizer step: their gradients are averaged, as
  /// those of one batch this many times larger.
  int64_t microBatches = 1;
  /// Per-step expert-bias move of aux-loss-free balancing; 0 when the model
  /// has no router biases or --bias-update-rate 0.
  double biasUpdateRate = 0.0;
  /// Load-aware expert placement (expert-parallel models): every
  /// replaceEvery steps (0: never) the placement policy places each MoE
  /// layer's experts from the load measured since the last placement; the
  /// dispatch policy splits rows over replicas.
  std::string placementPolicy = "static";
  std::string dispatchPolicy = "least-loaded";
  int64_t replaceEvery = 0;
  /// --trace: a Chrome trace of a few steps.
  std::optional<TraceOptions> trace;
};

/// Throws std::runtime_error unless the model was compiled with a training
/// step.
void checkTrainable(const Manifest &m, TrainStepEntry trainStep);

/// Checks that the model can train (a training step, a character
/// vocabulary; std::runtime_error otherwise), then validates the flags
/// (UsageError). In TrainOptions.cpp, with the commands' flags.
TrainOptions parseTrainOptions(const ParsedFlags &flags, const Manifest &m,
                               TrainStepEntry trainStep);

/// One rank's part of `train`; returns the exit status.
int runTrain(const Manifest &m, const Entries &entries,
             const TrainOptions &options, RankEnv &env);

/// `grad` (1-rank models).
int runGrad(const Manifest &m, ForwardEntry forward, TrainStepEntry trainStep,
            const ParsedFlags &flags);

/// `export`: a training checkpoint's weights as a Hugging Face checkpoint
/// (one process whatever the mesh; under a launcher only rank 0 writes).
int runExport(const Manifest &m, const ParsedFlags &flags);

/// "45s", "1m23s", "2h03m".
std::string durationText(double seconds);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_TRAIN_H
