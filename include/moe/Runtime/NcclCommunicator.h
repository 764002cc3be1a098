//===- NcclCommunicator.h - The communicator over NCCL ----------*- C++ -*-===//
//
// A Communicator whose ranks are GPUs talking through NCCL (one GPU per rank).
// It is made from a host communicator (the bootstrap: MPI between processes,
// or local ranks, e.g. one per GPU of one process), whose ranks it spans in
// the same order; the bootstrap carries only the NCCL unique id and the
// agreement on start-up errors.
//
// Free of NCCL and CUDA headers: callers need neither to include it. Defined
// in the MoERuntimeNCCL library (only in builds with CUDA and NCCL; its users
// see MOE_HAVE_NCCL defined).
//
// Memory. Every buffer passed to the collectives is DEVICE memory of the
// communicator's GPU (cudaMalloc, cudaMallocAsync or managed memory; a host
// pointer throws). Only allToAllV's counts and offsets are host arrays, as
// in the interface. Counts and offsets are in elements, as for every backend.
//
// Synchronisation (first version). The communicator queues its work on a
// stream of its own and each collective waits for that stream before it
// returns: the result is in the receive buffer on return, as the Communicator
// interface promises for host memory, so callers (and the tests shared with
// the other backends) need not know about streams. The flip side:
//   - the caller must have finished writing the send buffers before the call
//     (e.g. Device::synchronize() of the stream that produced them), since
//     this stream does not wait for other streams;
//   - communication does not overlap the caller's kernels.
// A stream-ordered variant (collectives queued on the caller's stream, no
// host wait) is the next step; it needs its own interface, because the host
// one has no stream to order against.
//
// While it waits, the communicator polls NCCL for asynchronous errors (a peer
// that died, a network failure): such an error aborts the NCCL communicator
// (ncclCommAbort) and throws, and every later call throws too, instead of
// waiting forever.
//
// Sums. NCCL's ncclSum adds in an order of its own choosing (ring or tree,
// chunked by size and topology), which is not the rank-order sum
//   ((x_0 + x_1) + x_2) + ... + x_{n-1}
// the interface promises for floats. So, as for MPI:
//   deterministicSums = true (default): f32 allReduceSum and reduceScatterSum
//     are an all-to-all of chunks on the GPUs (NCCL), the rank-order sum of
//     each rank's chunk, and (allReduceSum) an all-gather on the GPUs. In
//     this first version the rank-order sum runs on the host, through pinned
//     staging memory, with the very loop of the local and MPI backends
//     (detail::sumInRankOrder), so the three backends agree bit for bit; it
//     costs a device-to-host copy of about the whole buffer per rank. A
//     device kernel for that sum (in MoERuntimeCUDA) is the obvious next
//     step.
//   deterministicSums = false: ncclAllReduce / ncclReduceScatter with
//     ncclSum: fast, but not bit-reproducible across group sizes, topologies
//     or NCCL versions, and not equal to the other backends' bits.
// Integer sums (i32, i64) always use ncclSum: addition modulo 2^bits is
// associative and commutative, so every order gives the same bits.
//
// Errors throw std::runtime_error("nccl communicator: <op>: ...") naming the
// NCCL or CUDA call, the rank, ncclGetErrorString / cudaGetErrorString and,
// where it has one, ncclGetLastError. Each rank checks its own arguments (as
// the MPI backend does), plus allToAllV's send and receive counts across
// ranks: the counts are exchanged first and every rank throws on a mismatch
// anywhere, instead of truncating or hanging.
//
// Destruction never throws (ncclCommDestroy, or ncclCommAbort after an
// error). Like creation and split it is collective in NCCL: the last rank of
// a group to destroy its communicator in a process tears down that
// process's ranks together, and ranks on one node may wait for each other,
// so destroy a communicator on every rank of its group (in any order, from
// any thread).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_NCCLCOMMUNICATOR_H
#define MOE_RUNTIME_NCCLCOMMUNICATOR_H

#include "moe/Runtime/Communicator.h"

#include <memory>

namespace moe::rt {

/// Collective over `bootstrap`: an NCCL communicator spanning its ranks (rank
/// r of the result is rank r of bootstrap), on GPU `device` of this rank
/// (each rank its own GPU; NCCL refuses two ranks on one GPU). Rank 0 creates
/// the NCCL unique id and broadcasts it over bootstrap. An invalid device on
/// any rank, or a failed ncclGetUniqueId, throws on every rank before NCCL
/// starts. Splits of the result are NCCL communicators too (ncclCommSplit)
/// with the same device and options; bootstrap is not needed after this call
/// returns.
std::unique_ptr<Communicator> ncclWorld(Communicator &bootstrap, int device,
                                        const CommOptions &options = {});

/// The NCCL library's version, e.g. "2.28.3" (never throws; "unknown" if the
/// library does not say).
const char *ncclLibraryVersion();

} // namespace moe::rt

#endif // MOE_RUNTIME_NCCLCOMMUNICATOR_H
