//===- TensorCollectives.h - Collectives on tensor layouts ------*- C++ -*-===//
//
// The collectives partitioned models need, expressed on dense row-major
// tensors rather than flat buffers: gather, slice and all-to-all along a
// tensor axis (the upstream `shard` dialect's all_gather, all_slice and
// all_to_all), and the expert-parallel token dispatch and combine. Each is
// built on the Communicator interface, so it works on every backend.
//
// A tensor axis is described by AxisLayout {outer, mid, inner}: the product
// of the dimensions before the axis, the axis's size, and the product of the
// dimensions after it. Splitting that axis into n equal pieces gives piece j
// = elements [o][j * mid/n, (j+1) * mid/n)[i] for every o and i.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_TENSORCOLLECTIVES_H
#define MOE_RUNTIME_TENSORCOLLECTIVES_H

#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/ExpertPlacement.h"

namespace moe::rt {

struct AxisLayout {
  int64_t outer = 1;
  int64_t mid = 1;
  int64_t inner = 1;
};

/// The memory a collective's tensor buffers live in: scratch buffers and the
/// strided copies that reorder pieces. The default, hostBufferOps(), is host
/// memory. A device backend brings its own, so that a communicator working
/// on device memory (NCCL) gets device buffers throughout and nothing is
/// staged through the host; only offsets and counts are host arrays.
class BufferOps {
public:
  virtual ~BufferOps();
  /// New memory; its initialisation may be asynchronous until fence().
  virtual void *allocate(size_t bytes) = 0;
  virtual void release(void *ptr) = 0;
  /// `rows` rows of `width` bytes: row r from src + r * srcPitch to dst +
  /// r * dstPitch. May be asynchronous until fence().
  virtual void copy2D(void *dst, size_t dstPitch, const void *src,
                      size_t srcPitch, size_t width, size_t rows) = 0;
  /// Waits for the copies issued so far; called before a communicator
  /// reads what they wrote.
  virtual void fence() {}
};

/// Host memory: new/delete and memcpy.
BufferOps &hostBufferOps();

/// recv = concatenation along the axis of every rank's send, in rank order:
/// send has `local` layout; recv has layout {outer, local.mid * n, inner}.
void allGatherAxis(Communicator &comm, const void *send, void *recv,
                   AxisLayout local, CommDType dtype,
                   BufferOps &ops = hostBufferOps());

/// dst = this rank's piece of src along the axis (no communication): src has
/// `global` layout, dst {outer, global.mid / n, inner}.
void allSliceAxis(Communicator &comm, const void *src, void *dst,
                  AxisLayout global, CommDType dtype,
                  BufferOps &ops = hostBufferOps());

/// recv = this rank's piece along the axis of the sum over the ranks of
/// send (ZeRO stage 3's gradients): send has `global` layout, recv
/// {outer, global.mid / n, inner}. The sum is the communicator's
/// reduceScatterSum, element for element the sum its allReduceSum forms.
void reduceScatterAxis(Communicator &comm, const void *send, void *recv,
                       AxisLayout global, CommDType dtype,
                       BufferOps &ops = hostBufferOps());
/// Splits send along its split axis into size() pieces, sends piece j to rank
/// j, and concatenates the pieces received along recv's concat axis in rank
/// order (Ulysses: sequence <-> heads). `sendSplit` is send's layout around
/// the split axis, `recvConcat` recv's layout around the concat axis; both
/// mids must divide by size() and the pieces must have the same size.
void allToAllAxes(Communicator &comm, const void *send, void *recv,
                  AxisLayout sendSplit, AxisLayout recvConcat, CommDType dtype,
                  BufferOps &ops = hostBufferOps());

/// Expert-parallel dispatch over the EP group `ep` (n ranks). `rows` [N,
/// hidden] are grouped by the E global experts, expert e owning rows
/// [offsets[e], offsets[e+1]); rank j holds experts [j*E/n, (j+1)*E/n). Sends
/// each expert's rows to its rank (token counts first, then a variable
/// all-to-all). On return recv holds, for src = 0..n-1 and local expert l =
/// 0..E/n-1 in that order, the rows src sent for l: segment s*(E/n)+l is
/// [recvOffsets[s*(E/n)+l], recvOffsets[s*(E/n)+l+1]); recvOffsets has n*E/n
/// + 1 entries. Rows past recvOffsets[n*E/n] are untouched. Throws on every
/// rank when more than recvCapacity rows (the same on every rank) arrive at
/// any rank.
void dispatchTokens(Communicator &ep, const float *rows, const int64_t *offsets,
                    int64_t experts, int64_t hidden, float *recv,
                    int64_t recvCapacity, int64_t *recvOffsets);

/// The inverse of dispatchTokens: returns the rows of each (src, local
/// expert) segment of expertOut to the rank they came from, where they land
/// at the positions they were sent from, so out [offsets[E], hidden] is in
/// the permuted order of the dispatch's rows.
void combineTokens(Communicator &ep, const float *expertOut,
                   const int64_t *recvOffsets, const int64_t *offsets,
                   int64_t experts, int64_t hidden, float *out);

/// dispatchTokens over the S slots per rank of `placement` (its ranks must
/// be ep's size): each expert's rows go to the slots holding it, split over
/// its replicas by `policy` (needed only when the placement has replicas).
/// recv and recvOffsets [n*S + 1] have the layout above with slots for
/// local experts: segment s*S + l holds what source s sent to slot l. Every
/// rank of the group learns every rank's counts (an all-gather of [E]), so
/// a full receive buffer fails on every rank with the same message; when
/// `rankReceives` is given, it gets the rows each of the n ranks receives.
/// offsets, recvOffsets and rankReceives are host arrays; rows and recv live
/// where `ops` says.
/// Rows are `hidden` elements of `rowType` (F32, or BF16 under bf16
/// storage).
void dispatchTokens(Communicator &ep, const void *rows, const int64_t *offsets,
                    int64_t hidden, void *recv, int64_t recvCapacity,
                    int64_t *recvOffsets, const ExpertPlacement &placement,
                    DispatchPolicy *policy, int64_t *rankReceives = nullptr,
                    BufferOps &ops = hostBufferOps(),
                    CommDType rowType = CommDType::F32);

/// The inverse of the dispatch above, with the same placement and policy
/// (it recomputes the dispatch's split: with replicas, from the counts of
/// every rank, all-gathered again).
void combineTokens(Communicator &ep, const void *expertOut,
                   const int64_t *recvOffsets, const int64_t *offsets,
                   int64_t hidden, void *out, const ExpertPlacement &placement,
                   DispatchPolicy *policy, BufferOps &ops = hostBufferOps(),
                   CommDType rowType = CommDType::F32);

} // namespace moe::rt

#endif // MOE_RUNTIME_TENSORCOLLECTIVES_H
