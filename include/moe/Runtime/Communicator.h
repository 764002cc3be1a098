//===- Communicator.h - Collectives over a group of ranks -------*- C++ -*-===//
//
// The runtime's one interface for collective communication. Partitioned code
// calls it for every collective the compiler inserts (all-reduce for TP and
// DP gradients, all-gather / reduce-scatter for sharded weights, all-to-all
// for Ulysses CP and for EP token dispatch and combine), whatever the backend:
//
//   local  N virtual ranks as threads of one process (makeLocalCommunicators,
//          runLocal): unit tests, and an EP=8 mesh on one machine.
//   mpi    one rank per process (MpiSession, mpiWorld); only in builds with
//          MPI (the MoERuntimeMPI library, MOE_HAVE_MPI defined).
//
// Conventions. Buffers are contiguous, in elements of one CommDType; counts
// and offsets are in elements. A receive buffer never overlaps a send buffer
// (allReduceSum and broadcast work in place on one buffer). Every rank of a
// group calls the same collectives in the same order.
//
// Sums are deterministic: element i of a sum is
//   ((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{n-1}[i]
// in the element type, in group-rank order, on every backend. So every rank
// gets bit-identical results, and the local and MPI backends agree bit for
// bit (a resumed training run reproduces the uninterrupted one). Integer sums
// wrap modulo 2^bits.
//
// Errors throw std::runtime_error with a one-line message naming the backend,
// the collective and the rank. The local backend checks every rank's
// arguments together (counts that disagree between ranks, negative counts,
// a root out of range) and throws the same error on every rank; the MPI
// backend checks each rank's own arguments, plus the send/receive counts of
// allToAllV across ranks, agreeing on the outcome so that no rank hangs.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_COMMUNICATOR_H
#define MOE_RUNTIME_COMMUNICATOR_H

#include "moe/Support/MeshShape.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace moe::rt {

/// Element types of communicated buffers. BF16 sums add in fp32 and round
/// once (include/moe/Runtime/BFloat16.h).
enum class CommDType { F32, I32, I64, BF16 };

/// Bytes per element (4, 4, 8, 2).
size_t commDTypeSize(CommDType dtype);
/// "f32", "i32", "i64", "bf16".
const char *commDTypeName(CommDType dtype);

/// A group of `size()` ranks; this object is rank `rank()` of it.
class Communicator {
public:
  virtual ~Communicator();

  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "local" or "mpi", for messages.
  virtual const char *backend() const = 0;

  /// buf[0, count) = sum over ranks of buf[0, count), in place.
  virtual void allReduceSum(void *buf, int64_t count, CommDType dtype) = 0;

  /// recv[r * countPerRank + i] = send of rank r [i]: rank-major
  /// concatenation; recv holds size() * countPerRank elements.
  virtual void allGather(const void *send, void *recv, int64_t countPerRank,
                         CommDType dtype) = 0;

  /// recv[i] = sum over ranks r of (send of r)[rank() * countPerRank + i]:
  /// send holds size() * countPerRank elements, recv countPerRank.
  virtual void reduceScatterSum(const void *send, void *recv,
                                int64_t countPerRank, CommDType dtype) = 0;

  /// Even all-to-all: block j of send (countPerRank elements) goes to rank j,
  /// and block r of recv comes from rank r.
  virtual void allToAll(const void *send, void *recv, int64_t countPerRank,
                        CommDType dtype) = 0;

  /// Variable all-to-all (dropless EP dispatch and combine). For every peer
  /// j: sendCounts[j] elements from send + sendOffsets[j] go to rank j, and
  /// recvCounts[j] elements from rank j land at recv + recvOffsets[j]. Each
  /// array has size() entries; counts may be zero, so a rank may send or
  /// receive nothing (its buffer may then be null). Rank i's sendCounts[j]
  /// must equal rank j's recvCounts[i]; offsets need not be increasing.
  virtual void allToAllV(const void *send, const int64_t *sendCounts,
                         const int64_t *sendOffsets, void *recv,
                         const int64_t *recvCounts, const int64_t *recvOffsets,
                         CommDType dtype) = 0;

  /// buf[0, count) of rank `root` is copied to every rank's buf.
  virtual void broadcast(void *buf, int64_t count, CommDType dtype,
                         int root) = 0;

  /// Returns when every rank has called it.
  virtual void barrier() = 0;

  /// Collective, as MPI_Comm_split: the ranks passing the same colour >= 0
  /// form a new group, ordered by key (ties by rank() here). A negative
  /// colour joins no group and gets nullptr.
  virtual std::unique_ptr<Communicator> split(int colour, int key) = 0;
};

//===----------------------------------------------------------------------===//
// Mesh-axis groups
//===----------------------------------------------------------------------===//
//
// Rank layout of a dp x cp x tp mesh (tp fastest, as Megatron and torchtitan,
// so that a TP group is consecutive ranks, usually on one node):
//
//   rank = ((d * cp) + c) * tp + t,  d in [0, dp), c in [0, cp), t in [0, tp)
//
// p = d * cp + c is the rank's index in the dp x cp plane. EP borrows its ranks
// from that plane: an EP group is ep consecutive plane indices with the same
// t (EP group id p / ep, EP rank p % ep), and the expert-data-parallel group
// (replicas of the same experts, where expert gradients are summed) joins the
// ranks with the same p % ep and t (its rank is p / ep).
//
// Example dp=2, cp=2, tp=2, ep=2 (8 ranks; plane p holds ranks 2p, 2p+1):
//   tp   {0,1} {2,3} {4,5} {6,7}        cp   {0,2} {1,3} {4,6} {5,7}
//   dp   {0,4} {1,5} {2,6} {3,7}        ep   {0,2} {1,3} {4,6} {5,7}
//   edp  {0,4} {1,5} {2,6} {3,7}        dpCp {0,2,4,6} {1,3,5,7}

/// One axis group of a rank: the colour that names the group among the
/// groups of that axis, and the rank's position in it (the split key).
struct MeshGroupId {
  int colour = 0;
  int rank = 0;
};

/// Where a world rank sits in the mesh, and its group on every axis.
struct MeshCoordinates {
  int d = 0, c = 0, t = 0; ///< position on the dp, cp and tp axes
  int plane = 0;           ///< p = d * cp + c
  MeshGroupId dp;          ///< same c, t; rank d
  MeshGroupId cp;          ///< same d, t; rank c
  MeshGroupId tp;          ///< same p; rank t
  MeshGroupId ep;          ///< same p / ep and t; rank p % ep
  MeshGroupId edp;         ///< expert data parallel: same p % ep and t
  MeshGroupId dpCp;        ///< the dp x cp plane (non-expert gradients): same t
};

/// The coordinates of `worldRank` in `mesh`. Throws std::runtime_error when
/// the mesh is invalid or the rank is outside [0, mesh.worldSize()).
MeshCoordinates meshCoordinates(const MeshShape &mesh, int worldRank);

/// A rank's communicators for every mesh axis (size 1 where the axis is 1).
struct MeshGroups {
  MeshShape mesh;
  MeshCoordinates coords;
  std::unique_ptr<Communicator> dp, cp, tp, ep, edp, dpCp;
};

/// Collective over `world`: splits it into the groups of every axis of
/// `mesh`, in a fixed order. Throws std::runtime_error on every rank, before
/// any communication, when the mesh is invalid or does not span world.size().
MeshGroups makeMeshGroups(Communicator &world, const MeshShape &mesh);

//===----------------------------------------------------------------------===//
// Local backend: ranks are threads of this process
//===----------------------------------------------------------------------===//

/// The n >= 1 ranks of one new local group; element r is rank r. Each must
/// be driven by its own thread. Ranks and groups split from them share their
/// fate: when runLocal sees a rank fail, every rank waiting in a collective
/// throws instead of hanging.
std::vector<std::unique_ptr<Communicator>> makeLocalCommunicators(int n);

/// Runs body(rank r's communicator) on n threads, joins them, and rethrows
/// the first exception a rank threw (the others then stop with an error at
/// their next collective rather than wait for the failed rank).
void runLocal(int n, const std::function<void(Communicator &)> &body);

/// How the MPI and NCCL communicators (and their splits) run; the driver
/// sets them from --sums and --check-collectives.
struct CommOptions {
  /// true: f32 sums as documented above, bit-identical across the backends
  /// (all-to-all, sum in rank order, then all-gather). false: the library's
  /// own reduction (MPI_Allreduce / MPI_Reduce_scatter_block, ncclAllReduce
  /// / ncclReduceScatter), whose summation order is its own: faster, not
  /// bit-reproducible.
  bool deterministicSums = true;
  /// Check that allToAllV's counts agree across ranks (two small extra
  /// collectives) and throw on every rank if they do not. Without the check
  /// a mismatch is undefined (MPI may truncate, NCCL may hang or corrupt the
  /// receive buffers).
  bool checkAllToAllVCounts = true;
};

//===----------------------------------------------------------------------===//
// MPI backend (MoERuntimeMPI; declared always, defined when MOE_HAVE_MPI)
//===----------------------------------------------------------------------===//

/// Initialises MPI (MPI_Init_thread, MPI_THREAD_FUNNELED) unless it already
/// is, and finalises it on destruction if it initialised it. Destroy every
/// MPI communicator first.
class MpiSession {
public:
  explicit MpiSession(int *argc = nullptr, char ***argv = nullptr);
  ~MpiSession();
  MpiSession(const MpiSession &) = delete;
  MpiSession &operator=(const MpiSession &) = delete;

  /// Whether this session called MPI_Init_thread (and will finalise).
  bool initialisedHere() const { return initialisedHere_; }

private:
  bool initialisedHere_ = false;
};

/// Whether this process runs under an MPI launcher (mpirun, srun): its
/// environment names a world.
bool underMpiLauncher();

/// A communicator over a duplicate of MPI_COMM_WORLD (MPI must be
/// initialised). MPI errors on it are returned and thrown, not fatal.
std::unique_ptr<Communicator> mpiWorld(const CommOptions &options = {});

/// MPI_Abort on MPI_COMM_WORLD: ends every process of the job. For a failure
/// that only some ranks see, after which the others would wait forever.
[[noreturn]] void mpiAbort(int exitCode);

} // namespace moe::rt

#endif // MOE_RUNTIME_COMMUNICATOR_H
