//===- RunFlags.cpp - The flags of the commands that run the model --------===//
//
// The flags every running command shares and what they select: the weights,
// the backend, how the ranks run and communicate (a MeshRun for runOnMesh),
// and the input batch.
//
//===----------------------------------------------------------------------===//

#include "driver/cli/RunFlags.h"

#include "moe/Runtime/Backend.h"

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::driver {

const FlagSpec &weightsFlag() {
  static const FlagSpec flag{
      "weights", "PATH",
      "Safetensors checkpoint holding every parameter under its Hugging Face "
      "name (F32, or BF16/F16 converted): one file, a sharded checkpoint's "
      "model.safetensors.index.json, or a folder holding either (as "
      "save_pretrained writes it); tensors the model does not use are "
      "ignored."};
  return flag;
}
const FlagSpec &initRandomFlag() {
  static const FlagSpec flag{
      "init-random", "SEED",
      "Random weights instead of --weights: normal(0, --init-std) for "
      "matrices, ones for norm weights, zeros for other vectors; the same "
      "SEED gives the same weights on every machine."};
  return flag;
}
const FlagSpec &initStdFlag() {
  static const FlagSpec flag{
      "init-std", "STD", "Standard deviation of --init-random (default 0.02)."};
  return flag;
}
const FlagSpec &backendFlag() {
  static const FlagSpec flag{
      "backend", "cpu|cuda",
      "Where the model runs: 'cpu' (the default; fp32) or 'cuda' (one GPU "
      "per rank: its rank on the node under a launcher, GPU 0 for every "
      "--comm local rank; see docs/cuda.md)."};
  return flag;
}

const FlagSpec &gpuCommFlag() {
  static const FlagSpec flag{
      "gpu-comm", "nccl|host",
      "How the collectives of a --backend cuda run under --comm mpi move "
      "tensors: 'nccl' (the default in executables built with NCCL) between "
      "the GPUs, or 'host' staged through host memory over MPI (the only "
      "way for --comm local ranks, which share GPU 0)."};
  return flag;
}

const FlagSpec &sumsFlag() {
  static const FlagSpec flag{
      "sums", "deterministic|native",
      "How the MPI and NCCL collectives add floats: 'deterministic' (the "
      "default on host memory) adds in rank order, the same bits on every "
      "backend and mesh; 'native' (the default for NCCL on the GPUs) leaves "
      "the order to the library, faster (NCCL then reduces on the GPUs "
      "instead of through the host)."};
  return flag;
}

const FlagSpec &checkCollectivesFlag() {
  static const FlagSpec flag{
      "check-collectives", "",
      "Debug mode: every variable all-to-all first checks that all ranks "
      "agree on the counts (two small extra collectives), and fails on every "
      "rank naming the mismatch instead of hanging or corrupting memory.",
      true};
  return flag;
}

const FlagSpec &commFlag() {
  static const FlagSpec flag{
      "comm", "mpi|local",
      "How the ranks of a model compiled for a mesh of several ranks run: "
      "'mpi', one process per rank under mpirun or srun (the default there), "
      "or 'local', every rank a thread of this process."};
  return flag;
}

const FlagSpec &maxShardSizeFlag() {
  static const FlagSpec flag{
      "max-shard-size", "SIZE",
      "Largest file of a checkpoint written into a folder, as "
      "save_pretrained's max_shard_size: bytes, or with KB, MB, GB (powers of "
      "1000) or KiB, MiB, GiB (default 5GB); larger checkpoints are written "
      "as shards plus model.safetensors.index.json."};
  return flag;
}

const FlagSpec &saveDtypeFlag() {
  static const FlagSpec flag{"save-dtype", "f32|bf16",
                             "Element type of the weights written (default "
                             "f32; bf16 rounds to nearest even)."};
  return flag;
}

io::CheckpointLayout checkpointLayoutFromFlags(const ParsedFlags &flags) {
  io::CheckpointLayout layout;
  if (flags.has("max-shard-size")) {
    std::string text = flags.get("max-shard-size");
    static const std::pair<const char *, uint64_t> units[] = {
        {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30},
        {"KB", 1000ull},     {"MB", 1000000ull},  {"GB", 1000000000ull},
        {"B", 1ull}};
    uint64_t unit = 1;
    std::string number = text;
    for (const auto &[suffix, scale] : units) {
      std::string s = suffix;
      if (text.size() > s.size() &&
          text.compare(text.size() - s.size(), s.size(), s) == 0) {
        number = text.substr(0, text.size() - s.size());
        unit = scale;
        break;
      }
    }
    bool digits = !number.empty() && number.size() <= 15 &&
                  number.find_first_not_of("0123456789") == std::string::npos;
    uint64_t count = digits ? std::stoull(number) : 0;
    if (count == 0)
      throw UsageError("--max-shard-size is '" + text +
                       "', expected a positive number of bytes, optionally "
                       "with KB, MB, GB, KiB, MiB or GiB");
    layout.maxShardBytes = count * unit;
  }
  if (flags.has("save-dtype")) {
    std::string dtype = flags.get("save-dtype");
    if (dtype != "f32" && dtype != "bf16")
      throw UsageError("--save-dtype is '" + dtype + "', expected f32 or bf16");
    layout.dtype = dtype == "bf16" ? io::DType::BF16 : io::DType::F32;
  }
  return layout;
}

WeightSource parseWeightSource(const ParsedFlags &flags, bool allowPath) {
  bool fromFile = allowPath && flags.has("weights");
  bool random = flags.has("init-random");
  if (fromFile && random)
    throw UsageError("give either --weights or --init-random, not both");
  if (!fromFile && !random)
    throw UsageError(allowPath ? "give --weights PATH or --init-random SEED"
                               : "give --init-random SEED");
  if (flags.has("init-std") && !random)
    throw UsageError("--init-std needs --init-random");
  WeightSource source;
  if (fromFile)
    source.path = flags.get("weights");
  else
    source.seed = parseSeed("init-random", flags.get("init-random"));
  if (flags.has("init-std"))
    source.std = parseReal("init-std", flags.get("init-std"), 0.0);
  return source;
}

std::string backendFromFlags(const ParsedFlags &flags) {
  std::string backend = flags.has("backend") ? flags.get("backend") : "cpu";
  if (backend != "cpu" && backend != "cuda")
    throw UsageError("--backend is '" + backend + "', expected cpu or cuda");
  return backend;
}

namespace {

/// --gpu-comm: whether the collectives run over the device communicator.
bool gpuCommIsNccl(const ParsedFlags &flags, const std::string &backend,
                   const std::string &comm) {
  bool available = rt::deviceCommunicatorFactory() != nullptr;
  bool applies = backend == "cuda" && comm == "mpi";
  if (!flags.has("gpu-comm"))
    return applies && available;
  std::string value = flags.get("gpu-comm");
  if (value == "host")
    return false;
  if (value != "nccl")
    throw UsageError("--gpu-comm is '" + value + "', expected nccl or host");
  if (backend != "cuda")
    throw UsageError("--gpu-comm nccl needs --backend cuda");
  if (comm == "local")
    throw UsageError("--gpu-comm nccl needs one GPU per rank (--comm mpi); "
                     "--comm local ranks share GPU 0: use --gpu-comm host");
  if (!available)
    throw std::runtime_error("--gpu-comm nccl: this executable was built "
                             "without NCCL (see docs/cuda.md)");
  return applies;
}

/// --sums and --check-collectives for the MPI or (`nccl`) NCCL world.
rt::CommOptions commOptionsFromFlags(const ParsedFlags &flags, bool nccl) {
  rt::CommOptions options;
  options.deterministicSums = !nccl;
  if (flags.has("sums")) {
    std::string value = flags.get("sums");
    if (value != "deterministic" && value != "native")
      throw UsageError("--sums is '" + value +
                       "', expected deterministic or native");
    options.deterministicSums = value == "deterministic";
  }
  options.checkAllToAllVCounts = flags.has("check-collectives");
  return options;
}

} // namespace

MeshRun meshRunFromFlags(const Manifest &m, const ParsedFlags &flags) {
  MeshRun run;
  int64_t ranks = m.mesh.worldSize();
  std::string comm = flags.has("comm")        ? flags.get("comm")
                     : rt::underMpiLauncher() ? std::string("mpi")
                     : ranks == 1             ? std::string("none")
                                              : std::string();
  if (comm != "local" && comm != "mpi" && comm != "none")
    throw UsageError(comm.empty()
                         ? "the model is compiled for mesh " + m.mesh.str() +
                               " (" + std::to_string(ranks) +
                               " ranks): run it under 'mpirun -np " +
                               std::to_string(ranks) + "' or pass --comm local"
                         : "--comm is '" + comm + "', expected mpi or local");
  run.comm = comm;
  run.backend = backendFromFlags(flags);
  run.nccl = gpuCommIsNccl(flags, run.backend, comm);
  run.hostOptions = commOptionsFromFlags(flags, false);
  run.deviceOptions = commOptionsFromFlags(flags, true);
  return run;
}

Batch batchFromFlags(const Manifest &m, const ParsedFlags &flags) {
  if (!flags.has("tokens"))
    throw UsageError("give --tokens IDS (" + std::to_string(m.batch * m.seq) +
                     " ids)");
  std::vector<int64_t> tokenIds = parseIds("tokens", flags.get("tokens"));
  std::optional<std::vector<int64_t>> labelIds;
  if (flags.has("labels"))
    labelIds = parseIds("labels", flags.get("labels"));

  Batch batch;
  checkIdCount("tokens", tokenIds, m.batch, m.seq);
  batch.tokens =
      checkIds("tokens", tokenIds, m.vocab, false, m.ignoreIndex, m.seq);
  if (labelIds) {
    checkIdCount("labels", *labelIds, m.batch, m.seq);
    batch.labels =
        checkIds("labels", *labelIds, m.vocab, true, m.ignoreIndex, m.seq);
  } else {
    batch.labels = defaultLabels(batch.tokens, m.batch, m.seq, m.ignoreIndex);
  }
  return batch;
}

} // namespace moe::driver
