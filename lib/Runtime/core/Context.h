//===- Context.h - The state behind moert_context ---------------*- C++ -*-===//

#ifndef MOE_RUNTIME_CORE_CONTEXT_H
#define MOE_RUNTIME_CORE_CONTEXT_H

#include "ScratchPool.h"
#include "moe/Runtime/Backend.h"
#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/ExpertPlacement.h"
#include "moe/Runtime/ModelABI.h"
#include "moe/Runtime/RunContext.h"
#include "moe/Runtime/Trace.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moe::rt {

/// The time between two backend marks (Backend::mark), waiting for
/// resolveTimings(): a traced runtime call (`call` set), a layer statistic
/// (`field` set), or both.
struct TimedSpan {
  uint32_t begin = 0, end = 0;
  const char *call = nullptr;  ///< the entry point (__func__)
  const char *group = nullptr; ///< a collective's mesh group ("ep", ...)
  int64_t bytes = -1;          ///< what a collective sends from this rank
  int64_t layer = -1;
  double LayerStats::*field = nullptr;
};

} // namespace moe::rt

struct moert_context {
  /// The first error recorded since the last reset; empty when none.
  std::string error;
  bool failed = false;
  /// The rank's mesh-axis groups, owned by the caller (the driver); null in
  /// a 1-rank program, where every group is `self`.
  moe::rt::MeshGroups *groups = nullptr;
  /// The same groups over communicators that work on the backend's device
  /// memory (NCCL), installed by the driver when it has them: collectives
  /// then run on the device buffers. Without them a device backend's
  /// collectives stage through host copies. Owned by the caller.
  moe::rt::MeshGroups *deviceGroups = nullptr;
  /// A group of this rank alone, made on first use.
  std::unique_ptr<moe::rt::Communicator> self;
  /// Where the calls run (CPU unless the driver installs another); it also
  /// keeps the routing statistics of the calls (tokens per expert of every
  /// permute, slots dropped by every capacity drop) until they are taken.
  std::unique_ptr<moe::rt::Backend> backend;
  /// The collectives' scratch blocks in the backend's memory, kept for
  /// reuse (made on first use; declared after `backend`, which it frees
  /// into, so destroyed before it).
  std::unique_ptr<moe::rt::ScratchPool> scratch;
  /// Expert placement tables by id (moe.dispatch's `placement`, the MoE
  /// layer), installed by the driver; a call whose table is not installed
  /// installs the static split. The policy splits rows over replicas.
  std::map<int64_t, moe::rt::ExpertPlacement> placements;
  std::shared_ptr<moe::rt::DispatchPolicy> dispatchPolicy;
  /// Statistics per placement id; expert compute counts toward the layer
  /// of the last dispatch or combine (-1 before any).
  std::vector<moe::rt::LayerStats> layerStats;
  int64_t currentLayer = -1;
  /// The driver's tracer while it records (a traced step), else null: then
  /// the only cost of tracing is one branch per call (guarded()).
  moe::rt::Tracer *tracer = nullptr;
  /// Spans timed on the backend's timeline since the last resolveTimings().
  std::vector<moe::rt::TimedSpan> timedSpans;
  /// What the traced collective running now moves (noteCollective()).
  const char *callGroup = nullptr;
  int64_t callBytes = -1;
};

namespace moe::rt {

/// The statistics of the layer of the last dispatch or combine, or null.
inline LayerStats *currentLayerStats(moert_context *ctx) {
  int64_t layer = ctx->currentLayer;
  if (layer < 0)
    return nullptr;
  if (ctx->layerStats.size() <= static_cast<size_t>(layer))
    ctx->layerStats.resize(layer + 1);
  return &ctx->layerStats[layer];
}

/// Adds the time of the backend's work in its scope (between two backend
/// marks, so on a GPU the kernels' time, not their queuing) to `field` of
/// the current layer, once resolveTimings() runs; a null `field` times
/// nothing.
class LayerTimer {
public:
  LayerTimer(moert_context *ctx, double LayerStats::*field)
      : ctx(ctx), field(field), layer(field ? ctx->currentLayer : -1) {
    if (layer >= 0)
      begin = ctx->backend->mark();
  }
  ~LayerTimer() {
    if (layer < 0)
      return;
    try {
      TimedSpan span;
      span.begin = begin;
      span.end = ctx->backend->mark();
      span.layer = layer;
      span.field = field;
      ctx->timedSpans.push_back(span);
    } catch (...) {
      // A device fault: the call that follows reports it.
    }
  }
  LayerTimer(const LayerTimer &) = delete;
  LayerTimer &operator=(const LayerTimer &) = delete;

private:
  moert_context *ctx;
  double LayerStats::*field;
  int64_t layer;
  uint32_t begin = 0;
};

/// Turns the spans timed since the last call into seconds (waiting for the
/// backend): layer statistics, and trace events when a tracer records.
inline void resolveTimings(moert_context *ctx) {
  std::vector<double> times = ctx->backend->resolveMarks();
  for (const TimedSpan &span : ctx->timedSpans) {
    if (span.begin >= times.size() || span.end >= times.size())
      continue; // marks of a call that failed in the middle
    if (span.field) {
      if (ctx->layerStats.size() <= static_cast<size_t>(span.layer))
        ctx->layerStats.resize(span.layer + 1);
      ctx->layerStats[span.layer].*span.field +=
          times[span.end] - times[span.begin];
    }
    if (span.call && ctx->tracer) {
      std::string name = span.call;
      if (name.rfind("moert_", 0) == 0)
        name.erase(0, std::strlen("moert_"));
      std::vector<TraceArg> args;
      if (span.group) {
        args.push_back({"group", std::string(span.group)});
        args.push_back({"bytes", span.bytes});
      }
      ctx->tracer->complete(std::move(name), span.group ? "collective" : "op",
                            Tracer::RuntimeTrack, times[span.begin],
                            times[span.end], std::move(args));
    }
  }
  ctx->timedSpans.clear();
}

} // namespace moe::rt

#endif // MOE_RUNTIME_CORE_CONTEXT_H
