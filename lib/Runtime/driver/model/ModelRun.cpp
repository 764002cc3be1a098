//===- ModelRun.cpp - Running a model on the ranks of its mesh ------------===//

#include "driver/model/ModelRun.h"

#include "driver/model/Placement.h"
#include "driver/model/Weights.h"
#include "moe/Runtime/RunContext.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace moe::driver {

void streamWeights(const Manifest &manifest, const WeightSource &source,
                   const RankPlace *place, const WeightSink &sink) {
  if (!source.path) {
    streamRandomWeights(manifest, source.seed, source.std, place, sink);
    return;
  }
  std::vector<std::string> unused =
      streamWeights(manifest, *source.path, place, sink);
  if (!unused.empty())
    std::fprintf(stderr,
                 "note: %s: %zu tensor(s) not used by the model, e.g. '%s'\n",
                 source.path->c_str(), unused.size(), unused.front().c_str());
}

AlignedBuffer obtainWeights(const Manifest &manifest,
                            const WeightSource &source,
                            const RankPlace *place) {
  AlignedBuffer blob(manifest.weightsBytes);
  streamWeights(manifest, source, place,
                [&](uint64_t offset, const float *data, uint64_t bytes) {
                  std::memcpy(blob.data() + offset, data, bytes);
                });
  return blob;
}

void loadWeightsInto(ModelRunner &runner, const Manifest &manifest,
                     const WeightSource &source, const RankPlace *place) {
  streamWeights(manifest, source, place,
                [&](uint64_t offset, const float *data, uint64_t bytes) {
                  runner.uploadWeights(data, offset, bytes);
                });
}

void RankEnv::agree(const std::function<void()> &step) {
  std::exception_ptr error;
  try {
    step();
  } catch (...) {
    error = std::current_exception();
  }
  if (world) {
    int32_t failed = error ? 1 : 0;
    std::vector<int32_t> all(world->size());
    world->allGather(&failed, all.data(), 1, rt::CommDType::I32);
    auto first = std::find(all.begin(), all.end(), 1);
    if (first != all.end() && first - all.begin() != world->rank())
      throw SilentFailure();
  }
  if (error) {
    reportsFailure = true;
    std::rethrow_exception(error);
  }
}

namespace {

/// This process's rank among those of its node, from the launcher's
/// environment (0 when none says).
int localRankOnNode() {
  for (const char *var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                          "SLURM_LOCALID", "PMI_LOCAL_RANK"})
    if (const char *value = std::getenv(var))
      return std::atoi(value);
  return 0;
}

} // namespace

int launcherRank() {
  for (const char *var :
       {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"})
    if (const char *value = std::getenv(var))
      return std::atoi(value);
  return 0;
}

int runOnMesh(const Manifest &m, const MeshRun &run,
              const std::function<int(RankEnv &)> &command) {
  const std::string &comm = run.comm, &backend = run.backend;
  const bool nccl = run.nccl;
  [[maybe_unused]] const rt::CommOptions &hostOptions = run.hostOptions;
  const rt::CommOptions &deviceOptions = run.deviceOptions;
  int64_t ranks = m.mesh.worldSize();
  if (comm == "none") {
    RankEnv env;
    env.backend = backend;
    return command(env);
  }
  auto runRank = [&](rt::Communicator &world, RankEnv &env) {
    env.backend = backend;
    env.device = comm == "mpi" ? localRankOnNode() : 0;
    rt::MeshGroups groups = rt::makeMeshGroups(world, m.mesh);
    env.world = &world;
    env.groups = &groups;
    // Declared after `groups`, destroyed before them: NCCL tears down its
    // communicators collectively on every rank.
    std::unique_ptr<rt::Communicator> deviceWorld;
    rt::MeshGroups deviceGroups;
    if (nccl) {
      deviceWorld =
          rt::deviceCommunicatorFactory()(world, env.device, deviceOptions);
      deviceGroups = rt::makeMeshGroups(*deviceWorld, m.mesh);
      env.deviceGroups = &deviceGroups;
    }
    env.place = RankPlace{m.mesh, groups.coords, staticPlacements(m)};
    env.dispatchPolicy = rt::makeDispatchPolicy("least-loaded");
    env.root = world.rank() == 0;
    return command(env);
  };
  if (comm == "local") {
    int status = 0;
    rt::runLocal(static_cast<int>(ranks), [&](rt::Communicator &world) {
      try {
        RankEnv env;
        int s = runRank(world, env);
        if (world.rank() == 0)
          status = s;
      } catch (const SilentFailure &) {
      }
    });
    return status;
  }
#ifdef MOE_HAVE_MPI
  rt::MpiSession session;
  std::unique_ptr<rt::Communicator> world = rt::mpiWorld(hostOptions);
  // A failure every rank knows of (a mismatch each sees, or one agree()
  // shared) is reported by one rank, whose status is the job's; the others
  // leave with status 0, because a launcher that sees a non-zero status ends
  // the job and could kill the reporting rank before it has printed.
  if (world->size() != ranks) {
    // Every rank sees the mismatch itself: no communication, no hang.
    if (world->rank() != 0)
      return 0;
    throw std::runtime_error(
        "the model is compiled for mesh " + m.mesh.str() + " (" +
        std::to_string(ranks) + " ranks) but runs on " +
        std::to_string(world->size()) + " MPI ranks (mpirun -np " +
        std::to_string(ranks) + ")");
  }
  RankEnv env;
  try {
    return runRank(*world, env);
  } catch (const SilentFailure &) {
    return 0;
  } catch (const std::exception &e) {
    int status = dynamic_cast<const UsageError *>(&e) ? 2 : 1;
    // Before setup every rank fails alike and rank 0 speaks for all (the
    // driver prints nothing on other ranks), unless agree() chose this rank
    // to report the failure.
    if (!env.agreed || env.reportsFailure) {
      if (world->rank() == 0)
        throw;
      if (env.reportsFailure) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
      }
      return status;
    }
    // A failure of this rank alone while the others may wait for it in a
    // collective: report it and end the job.
    std::fflush(stdout);
    std::fprintf(stderr, "error: rank %d: %s\n", world->rank(), e.what());
    std::fflush(stderr);
    rt::mpiAbort(1);
  }
#else
  throw std::runtime_error("this executable was built without MPI; run the "
                           "ranks as threads with --comm local");
#endif
}

std::vector<int32_t> localInput(const TensorSpec &spec,
                                const std::vector<int32_t> &whole,
                                const RankEnv &env) {
  if (!env.place)
    return whole;
  Block block = shardBlock(spec.globalShape, spec.split, env.placePtr());
  std::vector<int32_t> local(block.size[0] * block.size[1]);
  copyBlock(whole.data(), spec.globalShape, block, sizeof(int32_t),
            local.data());
  return local;
}

void TokenPrinter::print(int32_t id) {
  if (manifest_.hasVocabChars()) {
    std::fputs(manifest_.vocabChars[id].c_str(), stdout);
  } else {
    std::printf(first_ ? "%d" : " %d", id);
    first_ = false;
  }
  std::fflush(stdout);
}

int32_t nextToken(const Manifest &m, ModelRunner &runner,
                  const std::vector<int32_t> &context,
                  const SamplingOptions &sampling, std::mt19937_64 &rng) {
  size_t window = std::min<size_t>(context.size(), m.seq);
  std::vector<int32_t> tokens(m.batch * m.seq, 0);
  std::copy(context.end() - window, context.end(), tokens.begin());
  std::vector<int32_t> labels(tokens.size(),
                              static_cast<int32_t>(m.ignoreIndex));
  runner.run(tokens, labels);
  return sampleToken(runner.logits() + (window - 1) * m.vocab, m.vocab,
                     sampling, rng);
}

std::string withThousands(uint64_t n) {
  std::string digits = std::to_string(n), result;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0)
      result += ',';
    result += digits[i];
  }
  return result;
}

void printDroppedSlots(const std::vector<int64_t> &dropped) {
  if (dropped.empty())
    return;
  std::printf("dropped token-slots per layer (over capacity):");
  for (int64_t n : dropped)
    std::printf(" %" PRId64, n);
  std::printf("\n");
}

} // namespace moe::driver
