//===- CApiCollectives.cpp - The collectives compiled models call ---------===//
//
// All-reduce, all-gather, all-slice, all-to-all, and the expert dispatch and
// combine. Each runs on the backend's buffers with a communicator that works
// on them: the host communicators on the CPU, the device groups (NCCL) the
// driver installs on a GPU. A device backend without device groups stages
// through host copies. Scratch comes from the context's pool.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CApi.h"

#include "Context.h"
#include "Guarded.h"
#include "moe/Runtime/Backend.h"
#include "moe/Runtime/TensorCollectives.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using moe::rt::backend;

namespace {

using moe::rt::guarded;

moe::rt::Communicator &groupIn(moe::rt::MeshGroups *g, moert_context *ctx,
                               int32_t id) {
  if (g) {
    std::unique_ptr<moe::rt::Communicator> *comm = nullptr;
    switch (id) {
    case MOERT_GROUP_DP:
      comm = &g->dp;
      break;
    case MOERT_GROUP_CP:
      comm = &g->cp;
      break;
    case MOERT_GROUP_TP:
      comm = &g->tp;
      break;
    case MOERT_GROUP_EP:
      comm = &g->ep;
      break;
    case MOERT_GROUP_EDP:
      comm = &g->edp;
      break;
    case MOERT_GROUP_DP_CP:
      comm = &g->dpCp;
      break;
    default:
      break;
    }
    if (!comm)
      throw std::runtime_error("unknown mesh group " + std::to_string(id));
    return **comm;
  }
  if (id < MOERT_GROUP_DP || id > MOERT_GROUP_DP_CP)
    throw std::runtime_error("unknown mesh group " + std::to_string(id));
  if (!ctx->self)
    ctx->self = std::move(moe::rt::makeLocalCommunicators(1).front());
  return *ctx->self;
}

const char *groupName(int32_t id) {
  switch (id) {
  case MOERT_GROUP_DP:
    return "dp";
  case MOERT_GROUP_CP:
    return "cp";
  case MOERT_GROUP_TP:
    return "tp";
  case MOERT_GROUP_EP:
    return "ep";
  case MOERT_GROUP_EDP:
    return "edp";
  case MOERT_GROUP_DP_CP:
    return "dp_cp";
  default:
    return "unknown";
  }
}

/// Tells the trace, when it records, that the running call is a collective
/// over group `id` that sends `bytes` from this rank.
void noteCollective(moert_context *ctx, int32_t id, size_t bytes) {
  if (ctx->tracer) {
    ctx->callGroup = groupName(id);
    ctx->callBytes = static_cast<int64_t>(bytes);
  }
}

moe::rt::Communicator &group(moert_context *ctx, int32_t id) {
  return groupIn(ctx->groups, ctx, id);
}

/// The group `id` over a communicator that works on the backend's own
/// buffers, or null. On a host backend that is the mesh group itself; on a
/// device backend, the device group the driver installed (NCCL), if any.
moe::rt::Communicator *directGroup(moert_context *ctx, int32_t id) {
  if (!backend(ctx).deviceMemory())
    return &group(ctx, id);
  if (ctx->deviceGroups)
    return &groupIn(ctx->deviceGroups, ctx, id);
  return nullptr;
}

/// The context's scratch pool, made on first use over its backend.
moe::rt::ScratchPool &scratchPool(moert_context *ctx) {
  if (!ctx->scratch) {
    moe::rt::Backend *b = &backend(ctx);
    ctx->scratch = std::make_unique<moe::rt::ScratchPool>(
        [b](size_t bytes) { return b->allocate(bytes); },
        [b](void *ptr) { b->release(ptr); });
  }
  return *ctx->scratch;
}

/// The backend's memory as a collective's buffer memory: scratch from the
/// context's pool (reused blocks, no allocation per collective), copies
/// queued on the backend, fenced by synchronising it.
class BackendBufferOps final : public moe::rt::BufferOps {
public:
  explicit BackendBufferOps(moert_context *ctx)
      : backend_(backend(ctx)), pool_(scratchPool(ctx)) {}
  void *allocate(size_t bytes) override { return pool_.acquire(bytes); }
  void release(void *ptr) override { pool_.release(ptr); }
  void copy2D(void *dst, size_t dstPitch, const void *src, size_t srcPitch,
              size_t width, size_t rows) override {
    backend_.copy2D(dst, dstPitch, src, srcPitch, width, rows);
  }
  void fence() override { backend_.synchronize(); }

private:
  moe::rt::Backend &backend_;
  moe::rt::ScratchPool &pool_;
};

moe::rt::CommDType dtypeOf(int32_t dtype) {
  switch (dtype) {
  case MOERT_DTYPE_F32:
    return moe::rt::CommDType::F32;
  case MOERT_DTYPE_I32:
    return moe::rt::CommDType::I32;
  case MOERT_DTYPE_I64:
    return moe::rt::CommDType::I64;
  case MOERT_DTYPE_BF16:
    return moe::rt::CommDType::BF16;
  default:
    break;
  }
  throw std::runtime_error("unknown element type " + std::to_string(dtype));
}

/// The element type of the token rows dispatch and combine move: the
/// storage type.
moe::rt::CommDType rowTypeOf(moe::rt::Backend &backend) {
  return backend.storage() == moe::rt::StorageType::BF16
             ? moe::rt::CommDType::BF16
             : moe::rt::CommDType::F32;
}

/// Collectives run on host buffers (the local and MPI communicators). On a
/// backend with host memory the buffers are used in place; on a device
/// backend each input is downloaded into a host copy and each output
/// computed in one, then uploaded. Buffers this stage made live until it
/// goes out of scope.
class HostStage {
public:
  explicit HostStage(moe::rt::Backend &backend) : backend_(backend) {}

  /// The host view of input `src` (bytes long).
  const void *in(const void *src, size_t bytes) {
    if (!backend_.deviceMemory())
      return src;
    void *host = fresh(bytes);
    backend_.synchronize();
    backend_.download(host, src, bytes);
    return host;
  }
  /// For an in-place collective: `dst` (dstBytes) starts as a copy of `src`.
  void *in(const void *src, size_t srcBytes, void *dst, size_t dstBytes) {
    if (!backend_.deviceMemory()) {
      if (src != dst)
        std::memcpy(dst, src, srcBytes);
      return dst;
    }
    void *host = fresh(dstBytes);
    backend_.synchronize();
    backend_.download(host, src, srcBytes);
    return host;
  }
  /// Where the host result for output `dst` (bytes long) is written.
  void *scratchOut(void *dst, size_t bytes) {
    return backend_.deviceMemory() ? fresh(bytes) : dst;
  }
  /// Makes output `dst` hold the `bytes` first bytes of `host`.
  void out(void *dst, const void *host, size_t bytes) {
    if (backend_.deviceMemory() && bytes)
      backend_.upload(dst, host, bytes);
  }

private:
  void *fresh(size_t bytes) {
    buffers_.emplace_back((bytes + 7) / 8);
    return buffers_.back().data();
  }
  moe::rt::Backend &backend_;
  std::vector<std::vector<uint64_t>> buffers_;
};

/// Placement table `id` for a call over `ranks` ranks with `experts`
/// experts and `slots` slots in all; id -1, or a table not installed yet,
/// is the static split (installed on first use).
const moe::rt::ExpertPlacement &placementFor(moert_context *ctx, int64_t id,
                                             int64_t ranks, int64_t experts,
                                             int64_t slots) {
  if (ranks <= 0 || slots < 0 || slots % ranks != 0)
    throw std::runtime_error(std::to_string(slots) +
                             " expert slots do not split over an EP group of " +
                             std::to_string(ranks));
  ctx->currentLayer = id;
  auto it = ctx->placements.find(id);
  if (it == ctx->placements.end())
    it = ctx->placements
             .emplace(id, moe::rt::ExpertPlacement::staticSplit(experts, ranks,
                                                                slots / ranks))
             .first;
  const moe::rt::ExpertPlacement &p = it->second;
  if (p.experts() != experts || p.ranks() != ranks ||
      p.ranks() * p.slots() != slots)
    throw std::runtime_error(
        "expert placement " + std::to_string(id) + " is for " +
        std::to_string(p.experts()) + " experts on " +
        std::to_string(p.ranks()) + " ranks of " + std::to_string(p.slots()) +
        " slots; the model's layer has " + std::to_string(experts) +
        " experts and " + std::to_string(slots) + " slots on " +
        std::to_string(ranks) + " ranks");
  return p;
}

/// A collective along a tensor axis that reads `inBytes` at `in` and writes
/// `outBytes` at `out`: `run(comm, src, dst, ops)` on the backend's own
/// buffers when a group works on them, else on host copies.
template <typename Run>
void axisCollective(moert_context *ctx, int32_t groupId, const void *in,
                    void *out, size_t inBytes, size_t outBytes, Run run) {
  noteCollective(ctx, groupId, inBytes);
  moe::rt::Backend &b = backend(ctx);
  if (moe::rt::Communicator *direct = directGroup(ctx, groupId)) {
    BackendBufferOps ops(ctx);
    b.synchronize();
    run(*direct, in, out, ops);
    return;
  }
  HostStage stage(b);
  const void *src = stage.in(in, inBytes);
  void *dst = stage.scratchOut(out, outBytes);
  run(group(ctx, groupId), src, dst, moe::rt::hostBufferOps());
  stage.out(out, dst, outBytes);
}

} // namespace

extern "C" {

void moert_all_reduce_sum(moert_context *ctx, int32_t groupId, int32_t dtype,
                          const void *in, void *out, int64_t count) {
  guarded(ctx, __func__, [&] {
    moe::rt::CommDType type = dtypeOf(dtype);
    size_t bytes = count * moe::rt::commDTypeSize(type);
    noteCollective(ctx, groupId, bytes);
    moe::rt::Backend &b = backend(ctx);
    if (moe::rt::Communicator *direct = directGroup(ctx, groupId)) {
      if (in != out)
        b.copy(out, in, bytes);
      b.synchronize();
      direct->allReduceSum(out, count, type);
      return;
    }
    HostStage stage(b);
    void *buf = stage.in(in, bytes, out, bytes);
    group(ctx, groupId).allReduceSum(buf, count, type);
    stage.out(out, buf, bytes);
  });
}

void moert_all_gather(moert_context *ctx, int32_t groupId, int32_t dtype,
                      const void *in, void *out, int64_t outer, int64_t mid,
                      int64_t inner) {
  guarded(ctx, __func__, [&] {
    moe::rt::CommDType type = dtypeOf(dtype);
    size_t inBytes = outer * mid * inner * moe::rt::commDTypeSize(type);
    axisCollective(ctx, groupId, in, out, inBytes,
                   inBytes * group(ctx, groupId).size(),
                   [&](moe::rt::Communicator &comm, const void *src, void *dst,
                       moe::rt::BufferOps &ops) {
                     moe::rt::allGatherAxis(comm, src, dst, {outer, mid, inner},
                                            type, ops);
                   });
  });
}

void moert_all_slice(moert_context *ctx, int32_t groupId, int32_t dtype,
                     const void *in, void *out, int64_t outer, int64_t mid,
                     int64_t inner) {
  guarded(ctx, __func__, [&] {
    // No communication: a strided copy in the backend's memory.
    BackendBufferOps ops(ctx);
    moe::rt::allSliceAxis(group(ctx, groupId), in, out, {outer, mid, inner},
                          dtypeOf(dtype), ops);
  });
}

void moert_reduce_scatter_sum(moert_context *ctx, int32_t groupId,
                              int32_t dtype, const void *in, void *out,
                              int64_t outer, int64_t mid, int64_t inner) {
  guarded(ctx, __func__, [&] {
    moe::rt::CommDType type = dtypeOf(dtype);
    size_t inBytes = outer * mid * inner * moe::rt::commDTypeSize(type);
    axisCollective(ctx, groupId, in, out, inBytes,
                   inBytes / group(ctx, groupId).size(),
                   [&](moe::rt::Communicator &comm, const void *src, void *dst,
                       moe::rt::BufferOps &ops) {
                     moe::rt::reduceScatterAxis(comm, src, dst,
                                                {outer, mid, inner}, type, ops);
                   });
  });
}

void moert_all_to_all(moert_context *ctx, int32_t groupId, int32_t dtype,
                      const void *in, void *out, int64_t splitOuter,
                      int64_t splitMid, int64_t splitInner, int64_t concatOuter,
                      int64_t concatMid, int64_t concatInner) {
  guarded(ctx, __func__, [&] {
    moe::rt::CommDType type = dtypeOf(dtype);
    moe::rt::AxisLayout split{splitOuter, splitMid, splitInner};
    moe::rt::AxisLayout concat{concatOuter, concatMid, concatInner};
    moe::rt::Backend &b = backend(ctx);
    size_t size = moe::rt::commDTypeSize(type);
    size_t inBytes = splitOuter * splitMid * splitInner * size;
    noteCollective(ctx, groupId, inBytes);
    if (moe::rt::Communicator *direct = directGroup(ctx, groupId)) {
      BackendBufferOps ops(ctx);
      b.synchronize();
      moe::rt::allToAllAxes(*direct, in, out, split, concat, type, ops);
      return;
    }
    size_t outBytes = concatOuter * concatMid * concatInner * size;
    HostStage stage(b);
    const void *src = stage.in(in, inBytes);
    void *dst = stage.scratchOut(out, outBytes);
    moe::rt::allToAllAxes(group(ctx, groupId), src, dst, split, concat, type);
    stage.out(out, dst, outBytes);
  });
}

// Dispatch and combine need the offsets on the host (the plan of the
// exchange); the rows stay in the backend's memory when a direct group
// exists, else they are staged too.

void moert_dispatch(moert_context *ctx, int32_t groupId, int64_t placement,
                    const float *rows, const int64_t *offsets, float *recv,
                    int64_t *recvOffsets, int64_t experts, int64_t slots,
                    int64_t hidden, int64_t recvCapacity) {
  guarded(ctx, __func__, [&] {
    moe::rt::Communicator &ep = group(ctx, groupId);
    const moe::rt::ExpertPlacement &place =
        placementFor(ctx, placement, ep.size(), experts, slots);
    moe::rt::LayerTimer timer(ctx, &moe::rt::LayerStats::allToAll);
    moe::rt::Backend &b = backend(ctx);
    HostStage stage(b);
    auto *hostOffsets = static_cast<const int64_t *>(
        stage.in(offsets, (experts + 1) * sizeof(int64_t)));
    size_t recvOffsetBytes = (slots + 1) * sizeof(int64_t);
    auto *hostRecvOffsets =
        static_cast<int64_t *>(stage.scratchOut(recvOffsets, recvOffsetBytes));
    std::vector<int64_t> rankRows(ep.size());
    moe::rt::CommDType rowType = rowTypeOf(b);
    size_t rowBytes = hidden * moe::rt::commDTypeSize(rowType);
    noteCollective(ctx, groupId,
                   std::max<int64_t>(hostOffsets[experts], 0) * rowBytes);
    if (moe::rt::Communicator *direct = directGroup(ctx, groupId)) {
      BackendBufferOps ops(ctx);
      b.synchronize();
      moe::rt::dispatchTokens(*direct, rows, hostOffsets, hidden, recv,
                              recvCapacity, hostRecvOffsets, place,
                              ctx->dispatchPolicy.get(), rankRows.data(), ops,
                              rowType);
    } else {
      int64_t sent = hostOffsets[experts];
      const void *hostRows =
          stage.in(rows, std::max<int64_t>(sent, 0) * rowBytes);
      void *hostRecv =
          stage.scratchOut(recv, std::max<int64_t>(recvCapacity, 0) * rowBytes);
      moe::rt::dispatchTokens(ep, hostRows, hostOffsets, hidden, hostRecv,
                              recvCapacity, hostRecvOffsets, place,
                              ctx->dispatchPolicy.get(), rankRows.data(),
                              moe::rt::hostBufferOps(), rowType);
      // Only the rows that arrived: the rest of recv stays untouched.
      stage.out(recv, hostRecv, hostRecvOffsets[slots] * rowBytes);
    }
    if (moe::rt::LayerStats *stats = moe::rt::currentLayerStats(ctx)) {
      stats->rankRows.resize(rankRows.size(), 0);
      for (size_t j = 0; j < rankRows.size(); ++j)
        stats->rankRows[j] += rankRows[j];
    }
    stage.out(recvOffsets, hostRecvOffsets, recvOffsetBytes);
  });
}

void moert_combine(moert_context *ctx, int32_t groupId, int64_t placement,
                   const float *expertOut, const int64_t *recvOffsets,
                   const int64_t *offsets, float *out, int64_t experts,
                   int64_t slots, int64_t hidden) {
  guarded(ctx, __func__, [&] {
    moe::rt::Communicator &ep = group(ctx, groupId);
    const moe::rt::ExpertPlacement &place =
        placementFor(ctx, placement, ep.size(), experts, slots);
    moe::rt::LayerTimer timer(ctx, &moe::rt::LayerStats::allToAll);
    moe::rt::Backend &b = backend(ctx);
    HostStage stage(b);
    auto *hostRecvOffsets = static_cast<const int64_t *>(
        stage.in(recvOffsets, (slots + 1) * sizeof(int64_t)));
    auto *hostOffsets = static_cast<const int64_t *>(
        stage.in(offsets, (experts + 1) * sizeof(int64_t)));
    moe::rt::CommDType rowType = rowTypeOf(b);
    size_t rowBytes = hidden * moe::rt::commDTypeSize(rowType);
    // Combine sends back the rows this rank's experts received.
    noteCollective(ctx, groupId,
                   std::max<int64_t>(hostRecvOffsets[slots], 0) * rowBytes);
    if (moe::rt::Communicator *direct = directGroup(ctx, groupId)) {
      BackendBufferOps ops(ctx);
      b.synchronize();
      moe::rt::combineTokens(*direct, expertOut, hostRecvOffsets, hostOffsets,
                             hidden, out, place, ctx->dispatchPolicy.get(), ops,
                             rowType);
      return;
    }
    size_t received = hostRecvOffsets[slots] * rowBytes;
    size_t sent = hostOffsets[experts] * rowBytes;
    const void *hostExpertOut = stage.in(expertOut, received);
    void *hostOut = stage.scratchOut(out, sent);
    moe::rt::combineTokens(ep, hostExpertOut, hostRecvOffsets, hostOffsets,
                           hidden, hostOut, place, ctx->dispatchPolicy.get(),
                           moe::rt::hostBufferOps(), rowType);
    stage.out(out, hostOut, sent);
  });
}

} // extern "C"
