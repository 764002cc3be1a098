//===- ModelRun.h - Running a model on the ranks of its mesh ----*- C++ -*-===//
//
// What every command that runs the model shares: where the weights come
// from, the rank's place on the mesh (RankEnv, runOnMesh), and ModelRunner,
// which owns the runtime context and the arena and calls the entry points.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_MODELRUN_H
#define MOE_LIB_RUNTIME_DRIVER_MODELRUN_H

#include "driver/model/AlignedBuffer.h"
#include "driver/model/BackendBuffer.h"
#include "driver/model/Entries.h"
#include "driver/model/Errors.h"
#include "driver/model/Manifest.h"
#include "driver/model/Sampling.h"
#include "driver/model/Tokens.h"
#include "driver/model/Weights.h"
#include "moe/Runtime/Backend.h"
#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/Trace.h"

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace moe::driver {

/// Where the weights come from.
struct WeightSource {
  std::optional<std::string> path;
  uint64_t seed = 0;
  double std = 0.02;
};

/// This rank's weights from `source` into `sink`, a slice at a time (a note
/// on stderr for tensors of the file that the model does not use).
void streamWeights(const Manifest &manifest, const WeightSource &source,
                   const RankPlace *place, const WeightSink &sink);

/// This rank's weights blob from `source` (streamWeights into a host blob:
/// for commands that keep the weights on the host).
AlignedBuffer obtainWeights(const Manifest &manifest,
                            const WeightSource &source,
                            const RankPlace *place = nullptr);

/// A failure another rank reports: this rank exits with status 1 quietly.
struct SilentFailure : std::exception {};

/// One rank of the model's mesh: its groups and place (none in a 1-rank
/// model) and whether it speaks for the job (rank 0).
struct RankEnv {
  rt::Communicator *world = nullptr;
  rt::MeshGroups *groups = nullptr;
  /// The same groups over the device communicator (--gpu-comm nccl), or
  /// null: collectives then stage through the host.
  rt::MeshGroups *deviceGroups = nullptr;
  std::optional<RankPlace> place;
  bool root = true;
  /// Splits the rows of replicated experts over their replicas (train's
  /// --dispatch-policy; least-loaded by default).
  std::shared_ptr<rt::DispatchPolicy> dispatchPolicy;
  /// Where this rank's runtime calls run: "cpu" or "cuda" (--backend).
  std::string backend = "cpu";
  /// The GPU of this rank (its rank on its node, under a launcher).
  int device = 0;
  /// Set once every rank has finished setting up: a failure after it may be
  /// this rank's alone.
  bool agreed = false;
  /// Set by agree() on the rank whose error the job reports (the lowest
  /// failing one); the other ranks leave quietly.
  bool reportsFailure = false;

  const RankPlace *placePtr() const { return place ? &*place : nullptr; }
  int rank() const { return world ? world->rank() : 0; }
  int size() const { return world ? world->size() : 1; }

  /// Runs `step` on every rank and agrees on the outcome, so that a rank
  /// never waits in a collective for one that failed: if any rank failed,
  /// the lowest failing rank throws its error and the others SilentFailure.
  void agree(const std::function<void()> &step);

  /// agree() for the set-up of a command; marks the ranks as agreed.
  void agreeOnSetup(const std::function<void()> &setup) {
    agree(setup);
    agreed = true;
  }
};

/// This process's rank under an MPI launcher (its environment), else 0. The
/// driver prints errors that every process meets alike on rank 0 only.
int launcherRank();

/// How the ranks of a model run and communicate.
struct MeshRun {
  /// "none" (a 1-rank model in this process), "local" (every rank a thread
  /// of this process) or "mpi" (one process per rank under a launcher).
  std::string comm = "none";
  /// "cpu" or "cuda".
  std::string backend = "cpu";
  /// The collectives of a cuda backend under mpi run over NCCL.
  bool nccl = false;
  /// The options of the host (MPI) and device (NCCL) communicators.
  rt::CommOptions hostOptions, deviceOptions;
};

/// Runs `command` on every rank of the model's mesh as `run` says. Returns
/// rank 0's status.
int runOnMesh(const Manifest &m, const MeshRun &run,
              const std::function<int(RankEnv &)> &command);

/// The block of a whole [batch, seq] input this rank takes.
std::vector<int32_t> localInput(const TensorSpec &spec,
                                const std::vector<int32_t> &whole,
                                const RankEnv &env);

/// The runtime context and the arena (large enough for every entry point
/// the runner may call) of one rank, and the weights (and, with a training
/// step, the gradients) in the backend's memory: they stay there from call
/// to call, so a training loop moves nothing between host and device but
/// inputs, the loss and the logits. Host blobs are mirrors that callers copy
/// in and out explicitly (setWeights, the up/download calls). On a device
/// backend (--backend cuda) the inputs and outputs have device copies too.
class ModelRunner {
public:
  ModelRunner(const Manifest &manifest, ForwardEntry forward,
              const RankEnv &env, TrainStepEntry trainStep = nullptr,
              EvalStepEntry evalStep = nullptr, bool fp32Grads = true);

  /// Copies the host blob `weights` (weights_bytes) into the runner's.
  void setWeights(const AlignedBuffer &weights);
  /// Bytes [offset, offset + bytes) of the runner's weights or gradients
  /// to or from the same bytes of a host blob.
  void downloadWeights(AlignedBuffer &host, uint64_t offset, uint64_t bytes);
  void uploadWeights(const AlignedBuffer &host, uint64_t offset,
                     uint64_t bytes);
  /// The same bytes of the runner's weights to or from `host`, `bytes` of
  /// host memory of their own (one parameter, say: no whole blob needed).
  void downloadWeights(void *host, uint64_t offset, uint64_t bytes);
  void uploadWeights(const void *host, uint64_t offset, uint64_t bytes);
  void downloadGrads(AlignedBuffer &host, uint64_t offset, uint64_t bytes);
  void uploadGrads(const AlignedBuffer &host, uint64_t offset, uint64_t bytes);

  /// The runner's weights and gradients (the manifest's fp32 blob each;
  /// gradients only with a training step) in the backend's memory, and that
  /// backend. Under bf16 storage these are the fp32 master weights and fp32
  /// gradients; the entries run on a bf16 copy of the weights made from
  /// them before every call, and their bf16 gradients are widened into
  /// grads() after every training step.
  /// Writable: under bf16 storage the entries' copy is refreshed before the
  /// next call.
  uint8_t *weights() {
    storedStale_ = true;
    return weights_.data();
  }
  uint8_t *grads() { return grads_.data(); }
  /// The gradients the optimizer reads: grads(), or, for a runner made
  /// without fp32Grads under bf16 storage (no fp32 blob at all), the
  /// training step's bf16 blob.
  GradBlob gradBlob() const;
  rt::Backend &backend() { return *backend_; }

  /// Runs the forward entry on this rank's block of the whole tokens and
  /// labels; throws with the context's error if a runtime call failed.
  void run(const std::vector<int32_t> &tokens,
           const std::vector<int32_t> &labels);

  /// The global mean loss on the whole tokens and labels: the evaluation
  /// step's (no logits anywhere) when the model has one, else the
  /// forward's.
  float evalLoss(const std::vector<int32_t> &tokens,
                 const std::vector<int32_t> &labels);

  /// Runs the training step: zeroes the gradients, then lets the entry
  /// write this rank's gradient slots; returns the global mean loss.
  float trainStep(const std::vector<int32_t> &tokens,
                  const std::vector<int32_t> &labels);

  const float *logits() const { return logits_.f32(); }
  int64_t numLogits() const {
    return manifest_.batch * manifest_.seq * manifest_.vocab;
  }
  float loss() const { return loss_; }

  /// The per-expert token counts of this rank's last call (one entry per
  /// MoE layer and pass, in program order).
  const std::vector<std::vector<int64_t>> &expertCounts() const {
    return expertCounts_;
  }
  /// The token-slots dropped over capacity in the last call, per
  /// capacity-factor MoE layer (the same on every rank: the drop sees all
  /// tokens); empty for dropless models.
  const std::vector<int64_t> &droppedSlots() const { return droppedSlots_; }
  /// The time and rows per EP rank of each expert-parallel MoE layer in
  /// this rank's last call.
  const std::vector<rt::LayerStats> &layerStats() const { return layerStats_; }

  /// Runs the decode or prefill entry `entry` (of `info`) on `tokens` and
  /// `positions` [sequences, newTokens] against the runner's key/value
  /// cache (zeroed when first made); returns the logits [sequences,
  /// newTokens, vocab] on the host, valid until the next call.
  const float *generate(const GenerationInfo &info, GenerationEntry entry,
                        const std::vector<int32_t> &tokens,
                        const std::vector<int32_t> &positions);
  /// Records every runtime call of the runner's context in `tracer` from
  /// now on, or none (null); waits for the backend's pending timings first.
  void setTracer(rt::Tracer *tracer);

private:
  void check();
  /// The pointers an entry gets for `tokens` and `labels` and its outputs:
  /// the host buffers on the CPU, their device copies otherwise (inputs
  /// uploaded). With `zeroGrads`, the gradients are zeroed.
  struct EntryArgs {
    const int32_t *tokens, *labels;
    float *logits, *loss;
  };
  EntryArgs prepare(const std::vector<int32_t> &tokens,
                    const std::vector<int32_t> &labels, bool zeroGrads);
  void checkRange(uint64_t offset, uint64_t bytes, const AlignedBuffer &host,
                  const BackendBuffer &mine) const;
  void checkRange(uint64_t offset, uint64_t bytes,
                  const BackendBuffer &mine) const;
  /// Elements of this rank's block of each [batch, seq] input.
  uint64_t localInputElements() const;
  /// The weights blob the entries read: weights_, or under bf16 storage its
  /// bf16 copy, refreshed from weights_ if they may have changed since.
  uint8_t *entryWeights();
  /// Under bf16 storage: grads_ = the entry's bf16 gradients, widened.
  void widenGrads();
  /// Converts every parameter between the fp32 blob and the storage blob.
  void convertParams(uint8_t *fp32, uint8_t *stored, bool toStorage);

  const Manifest &manifest_;
  ForwardEntry forward_;
  TrainStepEntry trainStep_;
  EvalStepEntry evalStep_;
  /// Allocates the whole logits (host, and the backend's copies) on the
  /// first forward run.
  void ensureLogits();
  const RankEnv &env_;
  std::unique_ptr<moert_context, void (*)(moert_context *)> context_;
  rt::Backend *backend_ = nullptr; // owned by the context
  BackendBuffer arena_, weights_, grads_;
  // Under bf16 storage: what the entries read and write (weights, gradients
  // and logits in bf16).
  BackendBuffer storedWeights_, storedGrads_, storedLogits_;
  bool storedStale_ = true;
  AlignedBuffer logits_;
  // The key/value cache and the generation entries' inputs and logits.
  BackendBuffer cache_, generationArena_, generationInputs_, generationLogits_;
  AlignedBuffer hostGenerationLogits_;
  // Device copies (empty on the CPU backend).
  BackendBuffer deviceTokens_, deviceLabels_, deviceLogits_, deviceLoss_;
  float loss_ = 0.0f;
  std::vector<int32_t> localTokens_, localLabels_;
  std::vector<std::vector<int64_t>> expertCounts_;
  std::vector<int64_t> droppedSlots_;
  std::vector<rt::LayerStats> layerStats_;
};

/// This rank's weights from `source` straight into the runner's weights, a
/// slice at a time, so that no host copy of the rank's weights is made.
void loadWeightsInto(ModelRunner &runner, const Manifest &manifest,
                     const WeightSource &source, const RankPlace *place);

/// Prints tokens as characters or as space-separated ids, as they come.
class TokenPrinter {
public:
  explicit TokenPrinter(const Manifest &m) : manifest_(m) {}
  void print(int32_t id);

private:
  const Manifest &manifest_;
  bool first_ = true;
};

/// One forward pass over the last <= seq tokens of `context` in row 0 (every
/// other position padded with token 0, no labels); returns the sampled token.
/// Every rank of a mesh calls it alike and gets the same token.
int32_t nextToken(const Manifest &m, ModelRunner &runner,
                  const std::vector<int32_t> &context,
                  const SamplingOptions &sampling, std::mt19937_64 &rng);

/// 12345 -> "12,345".
std::string withThousands(uint64_t n);

/// The line "dropped token-slots per layer (over capacity): n..." on stdout,
/// for a model with capacity-factor experts (nothing when `dropped` is
/// empty).
void printDroppedSlots(const std::vector<int64_t> &dropped);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_MODELRUN_H
