//===- Optimizer.h - Learning rate, clipping and AdamW ----------*- C++ -*-===//
//
// The optimizer runs on each rank over its own blocks (the flat weights and
// gradient blobs). The training step has already summed gradients over
// data-parallel replicas, so every replica of a block takes the same update
// and replicas stay equal. Without ZeRO each rank keeps the moments m and v
// of its whole blocks, laid out like the weights; under ZeRO stage 1 each
// replica keeps and updates one slice of every block (OptimizerShards.h)
// and the replicas then gather the updated slices.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_OPTIMIZER_H
#define MOE_LIB_RUNTIME_DRIVER_OPTIMIZER_H

#include "driver/model/AlignedBuffer.h"
#include "driver/model/BackendBuffer.h"
#include "driver/model/Manifest.h"
#include "moe/Runtime/Communicator.h"
#include "moe/Support/OptimizerShards.h"

#include <cstdint>
#include <functional>
#include <vector>

namespace moe::driver {

/// Linear warm-up from 0 to `lr` over `warmup` steps (step 1 gets
/// lr / warmup), then a cosine from `lr` down to `minLr` at step `steps`.
/// Steps count from 1.
struct LrSchedule {
  double lr = 3e-3;
  double minLr = 3e-4;
  int64_t warmup = 0;
  int64_t steps = 1;

  double at(int64_t step) const;
};

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  /// Decoupled weight decay, applied to matrices only (HF tensors of rank
  /// >= 2), not to norm weights and other vectors.
  double weightDecay = 0.1;
  /// Global gradient-norm clipping threshold; 0 turns clipping off.
  double clip = 1.0;
};

/// How many ranks hold the same block of `param`: the world size over the
/// number of blocks its split makes.
int64_t paramReplicas(const ParamInfo &param, const MeshShape &mesh);

/// This rank's share of the squared global gradient norm: sum over params of
/// sumSquares(local gradient block) / paramReplicas (for an expert slot,
/// over the ranks holding its expert), so that the sum over all ranks counts
/// every element of every whole gradient once.
double localGradNormSquared(const Manifest &m, const AlignedBuffer &grads,
                            const RankPlace *place = nullptr);

/// sum over the ranks of `world` of `value` (in rank order, the same on
/// every rank); `value` itself when `world` is null.
double sumOverRanks(double value, rt::Communicator *world);

/// min(1, clip / (norm + 1e-6)); 1 when clip is 0.
float clipScale(double norm, double clip);

/// Aux-loss-free load balancing (DeepSeek-V3, arXiv:2412.19437 sec. 2.1.2):
/// every router expert bias (a parameter with `balancesLayer`) moves by
/// `rate` toward balance, +rate for an expert that received fewer token
/// slots than the layer's mean, -rate for one that received more, nothing
/// at the mean. `counts` are the step's per-layer counts over all tokens
/// (the same on every rank, so replicas of the bias stay equal). The bias
/// only steers selection; the gradient step never touches it. This moves
/// one such parameter, `param`, whose values `bias` holds (on the host).
void balanceExpertBias(const ParamInfo &param, float *bias,
                       const std::vector<std::vector<int64_t>> &counts,
                       double rate);

/// Every parameter block of `m` as the optimizer shards it.
std::vector<moe::ParamBlock> paramBlocks(const Manifest &m);

/// AdamW moments of one rank, in the backend's memory, where the update runs
/// (zero at first): laid out like the weights, or under the manifest's ZeRO
/// stage 1 this rank's slices one after another. Checkpoints and
/// re-placement work on host copies of the whole blocks: pull() and push().
class AdamW {
public:
  /// `groups`: the rank's mesh groups, over which ZeRO stage 1 splits the
  /// state (unused, and may be null, without it); `gatherScratchBytes`
  /// bounds the pieces its gathers move (tests make it small).
  AdamW(const Manifest &m, const AdamWConfig &config, rt::Backend &backend,
        rt::MeshGroups *groups = nullptr,
        uint64_t gatherScratchBytes = moe::kGatherScratchBytes);

  /// One step (counted from 1) of every parameter of `weights` (the fp32
  /// blob, weights_bytes, in the backend's memory) from `grads`. With `place`,
  /// expert slots that hold no expert are skipped (they stay as they are).
  /// Under ZeRO stage 1 the rank updates its slices, then gathers its replicas'
  /// (a collective over each slice's group: every rank calls it).
  void step(uint8_t *weights, GradBlob grads, double lr, float gradScale,
            int64_t step, const RankPlace *place = nullptr);

  /// localGradNormSquared of `grads` (in the backend's memory): the sums
  /// of squares run on the backend, into a buffer kept
  /// from step to step, their weighted sum here in the same order (so the
  /// CPU backend gives the same bits).
  double localGradNormSquared(GradBlob grads, const RankPlace *place);

  /// Copies the moments to host blobs m and v laid out like the weights
  /// (weights_bytes each), or from them. Under ZeRO stage 1 pull() gathers
  /// the slices (a collective) and push() keeps this rank's.
  void pull(AlignedBuffer &m, AlignedBuffer &v);
  void push(const AlignedBuffer &m, const AlignedBuffer &v);

  /// Bytes of one moment on this rank (what moec --memory-report counts).
  uint64_t momentBytes() const { return m_.size(); }

private:
  /// Where one parameter's moments live: elements [begin, end) of the
  /// rank's block, at byte `offset` of m_ and v_. `group` is null when the
  /// block is whole here; else the block is cut into `slice`-element
  /// pieces over the group's ranks, this rank's being [begin, end).
  struct Slice {
    const ParamInfo *param = nullptr;
    rt::Communicator *group = nullptr;
    int64_t begin = 0, end = 0, slice = 0;
    uint64_t offset = 0;
  };

  void checkBlobs(const AlignedBuffer &m, const AlignedBuffer &v) const;
  /// Elements [first, first + count) of `param`'s gradient as fp32 in the
  /// backend's memory: in place, or widened into widened_ (overwritten by
  /// the next call).
  const float *fp32Grads(GradBlob grads, const ParamInfo &param, int64_t first,
                         int64_t count);
  /// Gathers a block of which this rank holds elements [s.begin, s.end) at
  /// `local` (backend memory) from the ranks of s.group, a piece of each
  /// rank's slice at a time (gatherPieceElements): `deliver(first, data,
  /// count)` gets elements [first, first + count) of the block in host
  /// scratch.
  void gatherSlice(
      const Slice &s, const uint8_t *local,
      const std::function<void(int64_t, const float *, int64_t)> &deliver);

  const Manifest &manifest_;
  AdamWConfig config_;
  rt::Backend &backend_;
  uint64_t gatherScratchBytes_;
  std::vector<Slice> slices_;
  BackendBuffer m_, v_, sums_;
  /// Under bf16 gradients, one chunk of them widened to fp32.
  BackendBuffer widened_;
  /// Host scratch of gatherSlice: one piece sent, the group's received.
  std::vector<float> send_, received_;
};

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_OPTIMIZER_H
