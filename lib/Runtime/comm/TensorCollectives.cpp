//===- TensorCollectives.cpp - Collectives on tensor layouts --------------===//

#include "moe/Runtime/TensorCollectives.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::rt {

BufferOps::~BufferOps() = default;

namespace {

class HostBufferOps final : public BufferOps {
public:
  void *allocate(size_t bytes) override {
    return ::operator new(std::max<size_t>(bytes, 1));
  }
  void release(void *ptr) override { ::operator delete(ptr); }
  void copy2D(void *dst, size_t dstPitch, const void *src, size_t srcPitch,
              size_t width, size_t rows) override {
    for (size_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char *>(dst) + r * dstPitch,
                  static_cast<const char *>(src) + r * srcPitch, width);
  }
};

/// A scratch buffer of `ops`, released with the object. Fenced once made:
/// its initialisation may be queued on the memory's own stream (a device
/// backend's), while the communicator may write it from another (NCCL's).
class Scratch {
public:
  Scratch(BufferOps &ops, size_t bytes)
      : ops_(ops), ptr_(bytes ? ops.allocate(bytes) : nullptr) {
    if (ptr_)
      ops_.fence();
  }
  ~Scratch() {
    if (ptr_)
      ops_.release(ptr_);
  }
  Scratch(const Scratch &) = delete;
  Scratch &operator=(const Scratch &) = delete;
  char *data() const { return static_cast<char *>(ptr_); }

private:
  BufferOps &ops_;
  void *ptr_;
};

} // namespace

BufferOps &hostBufferOps() {
  static HostBufferOps ops;
  return ops;
}

namespace {

[[noreturn]] void fail(const char *what, const std::string &message) {
  throw std::runtime_error(std::string(what) + ": " + message);
}

void checkLayout(const char *what, const char *name, AxisLayout l) {
  if (l.outer < 0 || l.mid < 0 || l.inner < 0)
    fail(what, std::string(name) + " has a negative extent");
}

/// Bytes of one row of the piece layout: (mid / n) * inner elements.
struct Pieces {
  int64_t outer, pieceRow, fullRow; // in bytes
};

Pieces pieces(const char *what, const char *name, AxisLayout l, int n,
              size_t elem) {
  checkLayout(what, name, l);
  if (l.mid % n != 0)
    fail(what, std::string(name) + " axis of size " + std::to_string(l.mid) +
                   " does not split into " + std::to_string(n) + " pieces");
  return {l.outer, static_cast<int64_t>((l.mid / n) * l.inner * elem),
          static_cast<int64_t>(l.mid * l.inner * elem)};
}

/// Copies piece j of a split-layout buffer to/from a contiguous block.
void packPiece(BufferOps &ops, const char *src, char *block, Pieces p,
               int j) {
  ops.copy2D(block, p.pieceRow, src + j * p.pieceRow, p.fullRow, p.pieceRow,
             p.outer);
}
void unpackPiece(BufferOps &ops, const char *block, char *dst, Pieces p,
                 int j) {
  ops.copy2D(dst + j * p.pieceRow, p.fullRow, block, p.pieceRow, p.pieceRow,
             p.outer);
}

} // namespace

void allGatherAxis(Communicator &comm, const void *send, void *recv,
                   AxisLayout local, CommDType dtype, BufferOps &ops) {
  const char *what = "all-gather along an axis";
  checkLayout(what, "the local tensor", local);
  int n = comm.size();
  size_t elem = commDTypeSize(dtype);
  int64_t count = local.outer * local.mid * local.inner;
  if (local.outer == 1 || n == 1) {
    comm.allGather(send, recv, count, dtype);
    return;
  }
  Scratch gathered(ops, static_cast<size_t>(count) * n * elem);
  comm.allGather(send, gathered.data(), count, dtype);
  Pieces p = pieces(what, "the gathered tensor",
                    {local.outer, local.mid * n, local.inner}, n, elem);
  for (int r = 0; r < n; ++r)
    unpackPiece(ops, gathered.data() + r * count * elem,
                static_cast<char *>(recv), p, r);
  ops.fence();
}

void allSliceAxis(Communicator &comm, const void *src, void *dst,
                  AxisLayout global, CommDType dtype, BufferOps &ops) {
  Pieces p = pieces("all-slice along an axis", "the sliced tensor", global,
                    comm.size(), commDTypeSize(dtype));
  packPiece(ops, static_cast<const char *>(src), static_cast<char *>(dst), p,
            comm.rank());
}

void reduceScatterAxis(Communicator &comm, const void *send, void *recv,
                       AxisLayout global, CommDType dtype, BufferOps &ops) {
  const char *what = "reduce-scatter along an axis";
  int n = comm.size();
  size_t elem = commDTypeSize(dtype);
  Pieces p = pieces(what, "the summed tensor", global, n, elem);
  int64_t count = global.outer * (global.mid / n) * global.inner;
  if (global.outer == 1 || n == 1) {
    comm.reduceScatterSum(send, recv, count, dtype);
    return;
  }
  // Each rank's piece made contiguous, in rank order.
  Scratch packed(ops, static_cast<size_t>(count) * n * elem);
  for (int r = 0; r < n; ++r)
    packPiece(ops, static_cast<const char *>(send),
              packed.data() + r * count * elem, p, r);
  ops.fence();
  comm.reduceScatterSum(packed.data(), recv, count, dtype);
}

void allToAllAxes(Communicator &comm, const void *send, void *recv,
                  AxisLayout sendSplit, AxisLayout recvConcat, CommDType dtype,
                  BufferOps &ops) {
  const char *what = "all-to-all along axes";
  int n = comm.size();
  size_t elem = commDTypeSize(dtype);
  Pieces in = pieces(what, "the split", sendSplit, n, elem);
  Pieces out = pieces(what, "the concatenation", recvConcat, n, elem);
  int64_t pieceBytes = in.outer * in.pieceRow;
  if (pieceBytes != out.outer * out.pieceRow)
    fail(what, "sent pieces of " + std::to_string(pieceBytes) +
                   " bytes do not fill received pieces of " +
                   std::to_string(out.outer * out.pieceRow) + " bytes");
  Scratch packed(ops, static_cast<size_t>(pieceBytes) * n);
  Scratch received(ops, static_cast<size_t>(pieceBytes) * n);
  for (int j = 0; j < n; ++j)
    packPiece(ops, static_cast<const char *>(send),
              packed.data() + j * pieceBytes, in, j);
  ops.fence();
  comm.allToAll(packed.data(), received.data(),
                pieceBytes / static_cast<int64_t>(elem), dtype);
  for (int r = 0; r < n; ++r)
    unpackPiece(ops, received.data() + r * pieceBytes,
                static_cast<char *>(recv), out, r);
  ops.fence();
}

namespace {

void checkOffsets(const char *what, const char *name, const int64_t *offsets,
                  int64_t segments) {
  if (offsets[0] != 0)
    fail(what, std::string(name) + " do not start at 0");
  for (int64_t s = 0; s < segments; ++s)
    if (offsets[s + 1] < offsets[s])
      fail(what, std::string(name) + " decrease at segment " +
                     std::to_string(s));
}

/// The fixed split the placement-free entry points use: E/n slots per rank.
ExpertPlacement fixedSplit(const char *what, Communicator &ep,
                           int64_t experts) {
  int n = ep.size();
  if (experts <= 0 || experts % n != 0)
    fail(what, std::to_string(experts) +
                   " experts do not split evenly over an EP group of " +
                   std::to_string(n));
  return ExpertPlacement::staticSplit(experts, n, experts / n);
}

/// Where one dispatch's rows go; its combine recomputes the same plan.
/// Slots are global (g = rank * S + slot), as in ExpertPlacement.
struct SlotPlan {
  /// This rank's rows for global slot g: [sendBegin[g], + sendCount[g]).
  std::vector<int64_t> sendBegin, sendCount;
  /// Rows source s sends to this rank's slot l, at s * S + l (dispatch only).
  std::vector<int64_t> recvCount;
  /// Rows every rank receives in all (dispatch only).
  std::vector<int64_t> rankReceives;
};

/// An order-sensitive hash of a split, to check that ranks agree on it.
int64_t splitHash(const std::vector<int64_t> &split) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int64_t v : split)
    h = (h ^ static_cast<uint64_t>(v)) * 0x100000001b3ull;
  return static_cast<int64_t>(h);
}

/// Builds the plan of a dispatch (`receiving`) or a combine. Without
/// replicas a combine needs nothing from the other ranks; otherwise the
/// ranks all-gather their counts per expert and run the dispatch policy.
SlotPlan planSlots(const char *what, Communicator &ep, const int64_t *offsets,
                   const ExpertPlacement &placement, DispatchPolicy *policy,
                   bool receiving) {
  const int n = ep.size(), me = ep.rank();
  const int64_t experts = placement.experts(), slots = placement.slots();
  const int64_t total = n * slots;
  if (placement.ranks() != n)
    fail(what, "the expert placement is for " +
                   std::to_string(placement.ranks()) +
                   " ranks, the EP group has " + std::to_string(n));
  checkOffsets(what, "expert offsets", offsets, experts);
  std::vector<int64_t> counts(experts);
  for (int64_t e = 0; e < experts; ++e)
    counts[e] = offsets[e + 1] - offsets[e];

  SlotPlan plan;
  plan.sendBegin.assign(total, 0);
  plan.sendCount.assign(total, 0);
  const std::vector<int32_t> &held = placement.slotExperts();
  if (!placement.hasReplicas()) {
    for (int64_t g = 0; g < total; ++g)
      if (held[g] >= 0) {
        plan.sendBegin[g] = offsets[held[g]];
        plan.sendCount[g] = counts[held[g]];
      }
    if (!receiving)
      return plan;
  }

  std::vector<int64_t> all(n * experts);
  ep.allGather(counts.data(), all.data(), experts, CommDType::I64);
  plan.recvCount.assign(total, 0);
  plan.rankReceives.assign(n, 0);
  if (!placement.hasReplicas()) {
    for (int s = 0; s < n; ++s)
      for (int64_t g = 0; g < total; ++g)
        if (held[g] >= 0) {
          int64_t rows = all[s * experts + held[g]];
          plan.rankReceives[g / slots] += rows;
          if (g / slots == me)
            plan.recvCount[s * slots + g % slots] = rows;
        }
    return plan;
  }

  if (!policy)
    fail(what, "the expert placement has replicas but no dispatch policy "
               "chooses among them");
  std::vector<int64_t> split(n * total);
  DispatchRequest request{&placement, all.data()};
  policy->split(request, split.data());
  checkSplit(request, split.data(), policy->name());
  if (policy->checkAgreement()) {
    std::vector<int64_t> hashes(n);
    int64_t mine = splitHash(split);
    ep.allGather(&mine, hashes.data(), 1, CommDType::I64);
    for (int r = 0; r < n; ++r)
      if (hashes[r] != hashes[0])
        fail(what, "dispatch policy " + policy->name() +
                       " gave ranks 0 and " + std::to_string(r) +
                       " different splits (it must be deterministic)");
  }
  // An expert's rows fill its replicas in ascending slot order.
  const int64_t *mySplit = split.data() + me * total;
  for (int64_t e = 0; e < experts; ++e) {
    int64_t cursor = offsets[e];
    for (const int64_t *g = placement.replicasBegin(e),
                       *end = g + placement.numReplicas(e);
         g != end; ++g) {
      plan.sendBegin[*g] = cursor;
      plan.sendCount[*g] = mySplit[*g];
      cursor += mySplit[*g];
    }
  }
  if (receiving)
    for (int s = 0; s < n; ++s)
      for (int64_t g = 0; g < total; ++g) {
        int64_t rows = split[s * total + g];
        plan.rankReceives[g / slots] += rows;
        if (g / slots == me)
          plan.recvCount[s * slots + g % slots] = rows;
      }
  return plan;
}

/// The rows of one side of the exchange as (element count, offset) per
/// peer. The slot-major side (what a rank received, per source in order)
/// is always contiguous per peer; the plan side is when each peer's slots
/// take adjacent rows in slot order (no replicas and ascending experts, the
/// fixed split), and is otherwise packed into `staging` in that order.
struct PeerRanges {
  std::vector<int64_t> counts, offsets;
};

PeerRanges slotMajorRanges(const int64_t *recvOffsets, int n, int64_t slots,
                           int64_t hidden) {
  PeerRanges r{std::vector<int64_t>(n), std::vector<int64_t>(n)};
  for (int j = 0; j < n; ++j) {
    r.offsets[j] = recvOffsets[j * slots] * hidden;
    r.counts[j] = (recvOffsets[(j + 1) * slots] - recvOffsets[j * slots]) *
                  hidden;
  }
  return r;
}

/// The plan side's ranges; `packed` says whether they index a staging
/// buffer holding every peer's slots back to back instead of the rows.
PeerRanges planRanges(const SlotPlan &plan, int n, int64_t slots,
                      int64_t hidden, bool &packed) {
  PeerRanges r{std::vector<int64_t>(n, 0), std::vector<int64_t>(n, 0)};
  packed = false;
  for (int j = 0; j < n && !packed; ++j) {
    int64_t cursor = -1;
    for (int64_t g = j * slots; g < (j + 1) * slots; ++g) {
      if (plan.sendCount[g] == 0)
        continue;
      if (cursor < 0)
        r.offsets[j] = cursor = plan.sendBegin[g];
      if (plan.sendBegin[g] != cursor) {
        packed = true;
        break;
      }
      cursor += plan.sendCount[g];
      r.counts[j] += plan.sendCount[g];
    }
  }
  int64_t at = 0;
  for (int j = 0; j < n; ++j) {
    if (packed) {
      r.offsets[j] = at;
      r.counts[j] = 0;
      for (int64_t g = j * slots; g < (j + 1) * slots; ++g)
        r.counts[j] += plan.sendCount[g];
      at += r.counts[j];
    }
    r.offsets[j] *= hidden;
    r.counts[j] *= hidden;
  }
  return r;
}

/// Copies the plan's rows from `rows` into the packed staging order (pack)
/// or back.
void copyPacked(BufferOps &ops, const SlotPlan &plan, int64_t hidden,
                size_t elem, const void *from, void *to, bool pack) {
  auto *src = static_cast<const unsigned char *>(from);
  auto *dst = static_cast<unsigned char *>(to);
  size_t at = 0;
  for (size_t g = 0; g < plan.sendCount.size(); ++g) {
    size_t bytes = plan.sendCount[g] * hidden * elem;
    size_t planAt = plan.sendBegin[g] * hidden * elem;
    if (bytes)
      ops.copy2D(dst + (pack ? at : planAt), bytes, src + (pack ? planAt : at),
                 bytes, bytes, 1);
    at += bytes;
  }
  ops.fence();
}

int64_t totalRows(const std::vector<int64_t> &counts) {
  int64_t sum = 0;
  for (int64_t c : counts)
    sum += c;
  return sum;
}

} // namespace

void dispatchTokens(Communicator &ep, const void *rows,
                    const int64_t *offsets, int64_t hidden, void *recv,
                    int64_t recvCapacity, int64_t *recvOffsets,
                    const ExpertPlacement &placement, DispatchPolicy *policy,
                    int64_t *rankReceives, BufferOps &ops, CommDType rowType) {
  const char *what = "expert dispatch";
  if (hidden < 0)
    fail(what, "negative hidden size");
  SlotPlan plan = planSlots(what, ep, offsets, placement, policy, true);
  const int n = ep.size();
  const int64_t slots = placement.slots();
  recvOffsets[0] = 0;
  for (int64_t i = 0; i < n * slots; ++i)
    recvOffsets[i + 1] = recvOffsets[i] + plan.recvCount[i];
  if (rankReceives)
    std::copy(plan.rankReceives.begin(), plan.rankReceives.end(),
              rankReceives);
  // Every rank knows every rank's total, so all fail together.
  for (int j = 0; j < n; ++j)
    if (plan.rankReceives[j] > recvCapacity)
      fail(what, "rank " + std::to_string(j) + " of the EP group receives " +
                     std::to_string(plan.rankReceives[j]) +
                     " rows but has room for " + std::to_string(recvCapacity));
  bool packed;
  PeerRanges send = planRanges(plan, n, slots, hidden, packed);
  PeerRanges receive = slotMajorRanges(recvOffsets, n, slots, hidden);
  const size_t elem = commDTypeSize(rowType);
  Scratch staging(ops, packed ? totalRows(send.counts) * elem : 0);
  if (packed) {
    copyPacked(ops, plan, hidden, elem, rows, staging.data(), /*pack=*/true);
    rows = staging.data();
  }
  ep.allToAllV(rows, send.counts.data(), send.offsets.data(), recv,
               receive.counts.data(), receive.offsets.data(), rowType);
}

void combineTokens(Communicator &ep, const void *expertOut,
                   const int64_t *recvOffsets, const int64_t *offsets,
                   int64_t hidden, void *out,
                   const ExpertPlacement &placement, DispatchPolicy *policy,
                   BufferOps &ops, CommDType rowType) {
  const char *what = "expert combine";
  if (hidden < 0)
    fail(what, "negative hidden size");
  const int n = ep.size();
  const int64_t slots = placement.slots();
  checkOffsets(what, "received segment offsets", recvOffsets, n * slots);
  SlotPlan plan = planSlots(what, ep, offsets, placement, policy, false);
  bool packed;
  PeerRanges receive = planRanges(plan, n, slots, hidden, packed);
  PeerRanges send = slotMajorRanges(recvOffsets, n, slots, hidden);
  const size_t elem = commDTypeSize(rowType);
  Scratch staging(ops, packed ? totalRows(receive.counts) * elem : 0);
  ep.allToAllV(expertOut, send.counts.data(), send.offsets.data(),
               packed ? staging.data() : out, receive.counts.data(),
               receive.offsets.data(), rowType);
  if (packed)
    copyPacked(ops, plan, hidden, elem, staging.data(), out, /*pack=*/false);
}

void dispatchTokens(Communicator &ep, const float *rows,
                    const int64_t *offsets, int64_t experts, int64_t hidden,
                    float *recv, int64_t recvCapacity, int64_t *recvOffsets) {
  dispatchTokens(ep, rows, offsets, hidden, recv, recvCapacity, recvOffsets,
                 fixedSplit("expert dispatch", ep, experts), nullptr);
}

void combineTokens(Communicator &ep, const float *expertOut,
                   const int64_t *recvOffsets, const int64_t *offsets,
                   int64_t experts, int64_t hidden, float *out) {
  combineTokens(ep, expertOut, recvOffsets, offsets, hidden, out,
                fixedSplit("expert combine", ep, experts), nullptr);
}

} // namespace moe::rt
