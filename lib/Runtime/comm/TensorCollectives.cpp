//===- TensorCollectives.cpp - Collectives on tensor layouts --------------===//

#include "moe/Runtime/TensorCollectives.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::rt {
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
void packPiece(const char *src, char *block, Pieces p, int j) {
  for (int64_t o = 0; o < p.outer; ++o)
    std::memcpy(block + o * p.pieceRow, src + o * p.fullRow + j * p.pieceRow,
                p.pieceRow);
}
void unpackPiece(const char *block, char *dst, Pieces p, int j) {
  for (int64_t o = 0; o < p.outer; ++o)
    std::memcpy(dst + o * p.fullRow + j * p.pieceRow, block + o * p.pieceRow,
                p.pieceRow);
}

} // namespace

void allGatherAxis(Communicator &comm, const void *send, void *recv,
                   AxisLayout local, CommDType dtype) {
  const char *what = "all-gather along an axis";
  checkLayout(what, "the local tensor", local);
  int n = comm.size();
  size_t elem = commDTypeSize(dtype);
  int64_t count = local.outer * local.mid * local.inner;
  if (local.outer == 1 || n == 1) {
    comm.allGather(send, recv, count, dtype);
    return;
  }
  std::vector<char> gathered(static_cast<size_t>(count) * n * elem);
  comm.allGather(send, gathered.data(), count, dtype);
  Pieces p = pieces(what, "the gathered tensor",
                    {local.outer, local.mid * n, local.inner}, n, elem);
  for (int r = 0; r < n; ++r)
    unpackPiece(gathered.data() + r * count * elem, static_cast<char *>(recv),
                p, r);
}

void allSliceAxis(Communicator &comm, const void *src, void *dst,
                  AxisLayout global, CommDType dtype) {
  Pieces p = pieces("all-slice along an axis", "the sliced tensor", global,
                    comm.size(), commDTypeSize(dtype));
  packPiece(static_cast<const char *>(src), static_cast<char *>(dst), p,
            comm.rank());
}

void allToAllAxes(Communicator &comm, const void *send, void *recv,
                  AxisLayout sendSplit, AxisLayout recvConcat,
                  CommDType dtype) {
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
  std::vector<char> packed(static_cast<size_t>(pieceBytes) * n);
  std::vector<char> received(packed.size());
  for (int j = 0; j < n; ++j)
    packPiece(static_cast<const char *>(send), packed.data() + j * pieceBytes,
              in, j);
  comm.allToAll(packed.data(), received.data(),
                pieceBytes / static_cast<int64_t>(elem), dtype);
  for (int r = 0; r < n; ++r)
    unpackPiece(received.data() + r * pieceBytes, static_cast<char *>(recv),
                out, r);
}

namespace {

/// The expert split of an EP dispatch: n ranks of `local` experts each.
struct ExpertSplit {
  int n;
  int64_t local;
};

ExpertSplit expertSplit(const char *what, Communicator &ep, int64_t experts,
                        int64_t hidden) {
  int n = ep.size();
  if (experts <= 0 || experts % n != 0)
    fail(what, std::to_string(experts) +
                   " experts do not split evenly over an EP group of " +
                   std::to_string(n));
  if (hidden < 0)
    fail(what, "negative hidden size");
  return {n, experts / n};
}

/// Element counts and offsets (rows * hidden) of the per-rank ranges of a
/// segment table whose segment s*local+l starts at segOffsets[s*local+l].
void rankRanges(const int64_t *segOffsets, ExpertSplit split, int64_t hidden,
                std::vector<int64_t> &counts, std::vector<int64_t> &offsets) {
  counts.resize(split.n);
  offsets.resize(split.n);
  for (int j = 0; j < split.n; ++j) {
    int64_t begin = segOffsets[j * split.local];
    int64_t end = segOffsets[(j + 1) * split.local];
    offsets[j] = begin * hidden;
    counts[j] = (end - begin) * hidden;
  }
}

void checkOffsets(const char *what, const char *name, const int64_t *offsets,
                  int64_t segments) {
  if (offsets[0] != 0)
    fail(what, std::string(name) + " do not start at 0");
  for (int64_t s = 0; s < segments; ++s)
    if (offsets[s + 1] < offsets[s])
      fail(what, std::string(name) + " decrease at segment " +
                     std::to_string(s));
}

} // namespace

void dispatchTokens(Communicator &ep, const float *rows,
                    const int64_t *offsets, int64_t experts, int64_t hidden,
                    float *recv, int64_t recvCapacity, int64_t *recvOffsets) {
  const char *what = "expert dispatch";
  ExpertSplit split = expertSplit(what, ep, experts, hidden);
  checkOffsets(what, "expert offsets", offsets, experts);
  // Rows per (destination, local expert), then who sends me how many.
  std::vector<int64_t> sendCounts(experts), recvCounts(experts);
  for (int64_t e = 0; e < experts; ++e)
    sendCounts[e] = offsets[e + 1] - offsets[e];
  ep.allToAll(sendCounts.data(), recvCounts.data(), split.local,
              CommDType::I64);
  recvOffsets[0] = 0;
  for (int64_t s = 0; s < experts; ++s)
    recvOffsets[s + 1] = recvOffsets[s] + recvCounts[s];
  // Every rank checks its own capacity, then all agree before moving rows.
  int64_t overflow = recvOffsets[experts] > recvCapacity ? 1 : 0;
  int64_t anyOverflow = overflow;
  ep.allReduceSum(&anyOverflow, 1, CommDType::I64);
  if (anyOverflow != 0)
    fail(what, overflow ? "rank " + std::to_string(ep.rank()) + " receives " +
                              std::to_string(recvOffsets[experts]) +
                              " rows but has room for " +
                              std::to_string(recvCapacity)
                        : std::string("another rank's receive buffer is full"));
  std::vector<int64_t> sc, so, rc, ro;
  rankRanges(offsets, split, hidden, sc, so);
  rankRanges(recvOffsets, split, hidden, rc, ro);
  ep.allToAllV(rows, sc.data(), so.data(), recv, rc.data(), ro.data(),
               CommDType::F32);
}

void combineTokens(Communicator &ep, const float *expertOut,
                   const int64_t *recvOffsets, const int64_t *offsets,
                   int64_t experts, int64_t hidden, float *out) {
  const char *what = "expert combine";
  ExpertSplit split = expertSplit(what, ep, experts, hidden);
  checkOffsets(what, "expert offsets", offsets, experts);
  checkOffsets(what, "received segment offsets", recvOffsets, experts);
  std::vector<int64_t> sc, so, rc, ro;
  rankRanges(recvOffsets, split, hidden, sc, so);
  rankRanges(offsets, split, hidden, rc, ro);
  ep.allToAllV(expertOut, sc.data(), so.data(), out, rc.data(), ro.data(),
               CommDType::F32);
}

} // namespace moe::rt
