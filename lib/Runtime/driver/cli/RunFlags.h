//===- RunFlags.h - Flags of the commands that run the model ----*- C++ -*-===//
//
// The flags every running command shares (functions, so that other files'
// static command tables can copy them whatever the order of
// initialisation), and what they select.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_RUNFLAGS_H
#define MOE_LIB_RUNTIME_DRIVER_RUNFLAGS_H

#include "driver/cli/CommandLine.h"
#include "driver/model/ModelRun.h"
#include "moe/Runtime/Safetensors.h"

#include <string>

namespace moe::driver {

const FlagSpec &weightsFlag();
const FlagSpec &initRandomFlag();
const FlagSpec &initStdFlag();
const FlagSpec &commFlag();
const FlagSpec &backendFlag();
const FlagSpec &gpuCommFlag();
/// --sums deterministic|native and --check-collectives: the MPI and NCCL
/// communicators' CommOptions.
const FlagSpec &sumsFlag();
const FlagSpec &checkCollectivesFlag();

/// --max-shard-size and --save-dtype: how the commands that write weights
/// lay the checkpoint out.
const FlagSpec &maxShardSizeFlag();
const FlagSpec &saveDtypeFlag();
io::CheckpointLayout checkpointLayoutFromFlags(const ParsedFlags &flags);

/// --weights / --init-random / --init-std; throws UsageError.
WeightSource parseWeightSource(const ParsedFlags &flags, bool allowPath);

/// --backend (default cpu); throws UsageError for an unknown one.
std::string backendFromFlags(const ParsedFlags &flags);

/// --comm, --backend, --gpu-comm, --sums and --check-collectives for a model
/// compiled for `m`'s mesh: directly for a 1-rank model, else as threads
/// (--comm local) or MPI processes (--comm mpi, the default under a
/// launcher); throws UsageError.
MeshRun meshRunFromFlags(const Manifest &m, const ParsedFlags &flags);

/// --tokens and --labels (default: the tokens shifted left in each row) as
/// whole [batch, seq] inputs; malformed text is a UsageError, ids that do
/// not fit the model a std::runtime_error.
Batch batchFromFlags(const Manifest &m, const ParsedFlags &flags);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_RUNFLAGS_H
