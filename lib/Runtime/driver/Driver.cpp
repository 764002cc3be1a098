//===- Driver.cpp - The command line of a compiled model ------------------===//
//
// Each command first turns its flags into an options struct (so that every
// usage error is reported before any file is touched), then runs. Results go
// to stdout, notes and the one error line to stderr.
//
//===----------------------------------------------------------------------===//

#include "driver/Driver.h"

#include "driver/AlignedBuffer.h"
#include "driver/CommandLine.h"
#include "driver/Manifest.h"
#include "driver/Sampling.h"
#include "driver/Tokens.h"
#include "driver/Weights.h"
#include "core/Context.h"
#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/Safetensors.h"

#include <algorithm>
#include <cinttypes>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::driver {

namespace {

//===----------------------------------------------------------------------===//
// Commands and their flags
//===----------------------------------------------------------------------===//

const FlagSpec kWeights{"weights", "PATH",
                        "Safetensors checkpoint holding every parameter under "
                        "its Hugging Face name (F32, or BF16/F16 converted); "
                        "tensors the model does not use are ignored."};
const FlagSpec kInitRandom{
    "init-random", "SEED",
    "Random weights instead of --weights: normal(0, --init-std) for "
    "matrices, ones for norm weights, zeros for other vectors; the same "
    "SEED gives the same weights on every machine."};
const FlagSpec kInitStd{"init-std", "STD",
                        "Standard deviation of --init-random (default 0.02)."};
const FlagSpec kComm{
    "comm", "mpi|local",
    "How the ranks of a model compiled for a mesh of several ranks run: "
    "'mpi', one process per rank under mpirun or srun (the default there), "
    "or 'local', every rank a thread of this process."};

const CommandSpec kForward{
    "forward",
    "(--weights PATH | --init-random SEED) --tokens IDS [--labels IDS] "
    "[--output PATH] [--save-weights PATH]",
    "Runs the model once on one batch; prints the loss and a summary of the "
    "logits.",
    {kWeights,
     kInitRandom,
     kInitStd,
     {"tokens", "IDS",
      "Token ids, batch*seq of them (row-major; see 'info'), separated by "
      "commas and/or whitespace."},
     {"labels", "IDS",
      "Label ids like --tokens; ignore_index skips a position. Default: the "
      "tokens shifted left by one within each row, ignore_index at the end."},
     {"output", "PATH",
      "Write \"logits\" [batch, seq, vocab] and \"loss\" [] as F32 "
      "safetensors."},
     {"save-weights", "PATH",
      "Write the weights used (e.g. those of --init-random) as safetensors "
      "(1-rank models)."},
     kComm}};

const CommandSpec kGenerate{
    "generate",
    "(--weights PATH | --init-random SEED) --prompt TEXT "
    "[--max-new-tokens N] [--temperature T] [--top-k K] [--seed S]",
    "Continues a prompt one token at a time and streams it to stdout. The "
    "model sees the last seq tokens in row 0 of its fixed [batch, seq] input.",
    {kWeights,
     kInitRandom,
     kInitStd,
     {"prompt", "TEXT",
      "Text for a character-level model (every character must be in "
      "vocab_chars), else token ids separated by commas and/or whitespace. "
      "Empty: generation starts after token 0 (which is not printed)."},
     {"max-new-tokens", "N", "Tokens to generate (default 64)."},
     {"temperature", "T",
      "Softmax temperature (default 1.0); 0 is greedy (argmax)."},
     {"top-k", "K",
      "Sample only among the K most likely tokens (default 0: all)."},
     {"seed", "S", "Seed of the sampler (default 0)."},
     kComm}};

const CommandSpec kInit{
    "init",
    "--init-random SEED --output PATH [--init-std STD]",
    "Writes random weights (see --init-random) as a safetensors checkpoint "
    "that --weights loads.",
    {kInitRandom,
     kInitStd,
     {"output", "PATH", "The checkpoint to write (replaced atomically)."}}};

const CommandSpec kInfo{"info",
                        "",
                        "Prints what the model was compiled to: parameters, "
                        "buffer sizes, inputs and outputs, mesh, tokenizer.",
                        {}};

const CommandSpec *const kCommands[] = {&kForward, &kGenerate, &kInit, &kInfo};

std::string programHelp(const std::string &program) {
  std::string text = "usage: " + program +
                     " <command> [flags]\n\n"
                     "Runs a model compiled by moec.\n\ncommands:\n";
  for (const CommandSpec *command : kCommands) {
    std::string name = "  " + command->name;
    name.resize(12, ' ');
    text += name + wrapText(command->summary, 12, 12) + "\n";
  }
  text += "\nRun '" + program +
          " <command> --help' for the flags of a command.\n"
          "Flags take a value: '--flag VALUE' or '--flag=VALUE'.\n"
          "Exit status: 0 on success; 1 when the run fails (ids or "
          "characters that do\nnot fit the model, files, the model itself); "
          "2 when the command line is\nmalformed. Errors are one line "
          "'error: ...' on stderr.\n";
  return text;
}

//===----------------------------------------------------------------------===//
// Running the model
//===----------------------------------------------------------------------===//

/// Where the weights come from.
struct WeightSource {
  std::optional<std::string> path;
  uint64_t seed = 0;
  double std = 0.02;
};

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

AlignedBuffer obtainWeights(const Manifest &manifest,
                            const WeightSource &source,
                            const RankPlace *place = nullptr) {
  if (!source.path) {
    AlignedBuffer blob(manifest.weightsBytes);
    initRandomWeights(manifest, blob, source.seed, source.std, place);
    return blob;
  }
  LoadedWeights loaded = loadWeights(manifest, *source.path, place);
  if (!loaded.unusedTensors.empty())
    std::fprintf(stderr,
                 "note: %s: %zu tensor(s) not used by the model, e.g. '%s'\n",
                 source.path->c_str(), loaded.unusedTensors.size(),
                 loaded.unusedTensors.front().c_str());
  return std::move(loaded.blob);
}

/// A failure another rank reports: this rank exits with status 1 quietly.
struct SilentFailure : std::exception {};

/// One rank of the model's mesh: its groups and place (none in a 1-rank
/// model) and whether it speaks for the job (rank 0).
struct RankEnv {
  rt::Communicator *world = nullptr;
  rt::MeshGroups *groups = nullptr;
  std::optional<RankPlace> place;
  bool root = true;
  /// Set once every rank has finished setting up: a failure after it may be
  /// this rank's alone.
  bool agreed = false;

  const RankPlace *placePtr() const { return place ? &*place : nullptr; }

  /// Runs `setup` on every rank and agrees on the outcome, so that a rank
  /// never waits in a collective for one that failed: if any rank failed,
  /// the lowest failing rank throws its error and the others SilentFailure.
  template <typename Setup> void agreeOnSetup(Setup &&setup) {
    std::exception_ptr error;
    try {
      setup();
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
    if (error)
      std::rethrow_exception(error);
    agreed = true;
  }
};

/// The block of a whole [batch, seq] input this rank takes.
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

/// The runtime context, the arena and the outputs of one entry point.
class ModelRunner {
public:
  ModelRunner(const Manifest &manifest, ForwardEntry forward,
              const RankEnv &env)
      : manifest_(manifest), forward_(forward), env_(env),
        context_(moert_context_create(), &moert_context_destroy),
        arena_(manifest.arenaBytes),
        logits_(static_cast<uint64_t>(manifest.batch * manifest.seq *
                                      manifest.vocab) *
                sizeof(float)) {
    if (!context_)
      throw std::runtime_error("cannot create the runtime context");
    rt::setMeshGroups(context_.get(), env.groups);
  }

  /// Runs the entry on this rank's block of the whole tokens and labels;
  /// throws with the context's error if a runtime call failed.
  void run(AlignedBuffer &weights, const std::vector<int32_t> &tokens,
           const std::vector<int32_t> &labels) {
    std::vector<int32_t> localTokens =
        localInput(manifest_.inputs[0], tokens, env_);
    std::vector<int32_t> localLabels =
        localInput(manifest_.inputs[1], labels, env_);
    forward_(context_.get(), weights.data(), arena_.data(),
             localTokens.data(), localLabels.data(), logits_.f32(), &loss_);
    if (const char *error = moert_context_error(context_.get()))
      throw std::runtime_error(error);
  }

  const float *logits() const { return logits_.f32(); }
  int64_t numLogits() const {
    return manifest_.batch * manifest_.seq * manifest_.vocab;
  }
  float loss() const { return loss_; }

private:
  const Manifest &manifest_;
  ForwardEntry forward_;
  const RankEnv &env_;
  std::unique_ptr<moert_context, void (*)(moert_context *)> context_;
  AlignedBuffer arena_;
  AlignedBuffer logits_;
  float loss_ = 0.0f;
};

//===----------------------------------------------------------------------===//
// forward
//===----------------------------------------------------------------------===//

void printLogitsSummary(const Manifest &m, const ModelRunner &runner) {
  double sum = 0.0, minValue = INFINITY, maxValue = -INFINITY;
  int64_t finite = 0;
  for (int64_t i = 0; i < runner.numLogits(); ++i) {
    float v = runner.logits()[i];
    if (!std::isfinite(v))
      continue;
    sum += v;
    minValue = std::min<double>(minValue, v);
    maxValue = std::max<double>(maxValue, v);
    ++finite;
  }
  std::string shape = shapeText({m.batch, m.seq, m.vocab});
  std::printf("logits %s: min %.6g max %.6g mean %.6g", shape.c_str(), minValue,
              maxValue, finite ? sum / finite : NAN);
  if (finite != runner.numLogits())
    std::printf(" non-finite %" PRId64, runner.numLogits() - finite);
  std::printf("\n");
}

int runForward(const Manifest &m, ForwardEntry forward,
               const ParsedFlags &flags, RankEnv &env) {
  WeightSource source = parseWeightSource(flags, /*allowPath=*/true);
  if (!flags.has("tokens"))
    throw UsageError("give --tokens IDS (" + std::to_string(m.batch * m.seq) +
                     " ids)");
  if (flags.has("save-weights") && env.place)
    throw UsageError("--save-weights needs a model compiled for one rank");
  std::vector<int64_t> tokenIds = parseIds("tokens", flags.get("tokens"));
  std::optional<std::vector<int64_t>> labelIds;
  if (flags.has("labels"))
    labelIds = parseIds("labels", flags.get("labels"));

  checkIdCount("tokens", tokenIds, m.batch, m.seq);
  std::vector<int32_t> tokens =
      checkIds("tokens", tokenIds, m.vocab, false, m.ignoreIndex, m.seq);
  std::vector<int32_t> labels;
  if (labelIds) {
    checkIdCount("labels", *labelIds, m.batch, m.seq);
    labels = checkIds("labels", *labelIds, m.vocab, true, m.ignoreIndex, m.seq);
  } else {
    labels = defaultLabels(tokens, m.batch, m.seq, m.ignoreIndex);
  }

  std::optional<AlignedBuffer> weights;
  env.agreeOnSetup([&] { weights = obtainWeights(m, source, env.placePtr()); });
  ModelRunner runner(m, forward, env);
  runner.run(*weights, tokens, labels);
  if (!env.root)
    return 0;

  std::printf("loss %.9g\n", runner.loss());
  printLogitsSummary(m, runner);
  if (flags.has("output")) {
    float loss = runner.loss();
    io::writeSafetensors(
        flags.get("output"),
        {{"logits", io::DType::F32, {m.batch, m.seq, m.vocab}, runner.logits()},
         {"loss", io::DType::F32, {}, &loss}},
        {{"format", "pt"}});
  }
  if (flags.has("save-weights"))
    saveWeights(m, *weights, flags.get("save-weights"));
  return 0;
}

//===----------------------------------------------------------------------===//
// generate
//===----------------------------------------------------------------------===//

struct GenerateOptions {
  WeightSource source;
  std::string prompt;
  int64_t maxNewTokens = 64;
  SamplingOptions sampling;
  uint64_t seed = 0;
};

GenerateOptions parseGenerateOptions(const ParsedFlags &flags) {
  GenerateOptions options;
  options.source = parseWeightSource(flags, /*allowPath=*/true);
  if (!flags.has("prompt"))
    throw UsageError("give --prompt TEXT");
  options.prompt = flags.get("prompt");
  const int64_t maxInt = std::numeric_limits<int32_t>::max();
  if (flags.has("max-new-tokens"))
    options.maxNewTokens =
        parseInteger("max-new-tokens", flags.get("max-new-tokens"), 0, maxInt);
  if (flags.has("temperature"))
    options.sampling.temperature =
        parseReal("temperature", flags.get("temperature"), 0.0);
  if (flags.has("top-k"))
    options.sampling.topK =
        parseInteger("top-k", flags.get("top-k"), 0, maxInt);
  if (flags.has("seed"))
    options.seed = parseSeed("seed", flags.get("seed"));
  return options;
}

/// Prints tokens as characters or as space-separated ids, as they come.
class TokenPrinter {
public:
  explicit TokenPrinter(const Manifest &m) : manifest_(m) {}
  void print(int32_t id) {
    if (manifest_.hasVocabChars()) {
      std::fputs(manifest_.vocabChars[id].c_str(), stdout);
    } else {
      std::printf(first_ ? "%d" : " %d", id);
      first_ = false;
    }
    std::fflush(stdout);
  }

private:
  const Manifest &manifest_;
  bool first_ = true;
};

std::vector<int32_t> encodePrompt(const Manifest &m, const std::string &text) {
  if (m.hasVocabChars())
    return encodeChars("prompt", text, m.vocabChars);
  return checkIds("prompt", parseIds("prompt", text), m.vocab, false,
                  m.ignoreIndex);
}

// One forward pass over the last <= seq tokens of `context` in row 0 (every
// other position padded with token 0, no labels); returns the sampled token.
int32_t nextToken(const Manifest &m, ModelRunner &runner,
                  AlignedBuffer &weights, const std::vector<int32_t> &context,
                  const SamplingOptions &sampling, std::mt19937_64 &rng) {
  size_t window = std::min<size_t>(context.size(), m.seq);
  std::vector<int32_t> tokens(m.batch * m.seq, 0);
  std::copy(context.end() - window, context.end(), tokens.begin());
  std::vector<int32_t> labels(tokens.size(),
                              static_cast<int32_t>(m.ignoreIndex));
  runner.run(weights, tokens, labels);
  return sampleToken(runner.logits() + (window - 1) * m.vocab, m.vocab,
                     sampling, rng);
}

int runGenerate(const Manifest &m, ForwardEntry forward,
                const ParsedFlags &flags, RankEnv &env) {
  GenerateOptions options = parseGenerateOptions(flags);
  std::vector<int32_t> context = encodePrompt(m, options.prompt);
  std::optional<AlignedBuffer> weights;
  env.agreeOnSetup(
      [&] { weights = obtainWeights(m, options.source, env.placePtr()); });
  ModelRunner runner(m, forward, env);

  // Every rank samples the same tokens (the logits are whole and identical
  // on every rank, the sampler seeded alike); rank 0 prints them.
  TokenPrinter printer(m);
  if (context.empty()) {
    std::string shown =
        m.hasVocabChars() ? " (" + quoteChar(m.vocabChars[0]) + ")" : "";
    if (env.root)
      std::fprintf(stderr,
                   "note: empty --prompt: generating after token 0%s, which "
                   "is not printed\n",
                   shown.c_str());
    context.push_back(0);
  } else if (env.root) {
    for (int32_t id : context)
      printer.print(id);
  }

  std::mt19937_64 rng(options.seed);
  try {
    for (int64_t i = 0; i < options.maxNewTokens; ++i) {
      context.push_back(
          nextToken(m, runner, *weights, context, options.sampling, rng));
      if (env.root)
        printer.print(context.back());
    }
  } catch (...) {
    // End the streamed line so that the error line starts on its own.
    if (env.root) {
      std::printf("\n");
      std::fflush(stdout);
    }
    throw;
  }
  if (env.root)
    std::printf("\n");
  return 0;
}

//===----------------------------------------------------------------------===//
// Ranks
//===----------------------------------------------------------------------===//

bool underMpiLauncher() {
  for (const char *var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                          "SLURM_PROCID", "MPI_LOCALNRANKS"})
    if (std::getenv(var))
      return true;
  return false;
}

/// Runs `command` on every rank of the model's mesh: directly for a 1-rank
/// model, else as threads (--comm local) or MPI processes (--comm mpi).
template <typename Command>
int runOnMesh(const Manifest &m, const ParsedFlags &flags, Command &&command) {
  int64_t ranks = m.mesh.worldSize();
  std::string comm = flags.has("comm")        ? flags.get("comm")
                     : underMpiLauncher()     ? std::string("mpi")
                     : ranks == 1             ? std::string("none")
                                              : std::string();
  if (comm != "local" && comm != "mpi" && comm != "none")
    throw UsageError(comm.empty()
                         ? "the model is compiled for mesh " + m.mesh.str() +
                               " (" + std::to_string(ranks) +
                               " ranks): run it under 'mpirun -np " +
                               std::to_string(ranks) +
                               "' or pass --comm local"
                         : "--comm is '" + comm + "', expected mpi or local");
  if (comm == "none") {
    RankEnv env;
    return command(env);
  }
  auto runRank = [&](rt::Communicator &world, RankEnv &env) {
    rt::MeshGroups groups = rt::makeMeshGroups(world, m.mesh);
    env.world = &world;
    env.groups = &groups;
    env.place = RankPlace{m.mesh, groups.coords};
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
  std::unique_ptr<rt::Communicator> world = rt::mpiWorld();
  if (world->size() != ranks) {
    // Every rank sees the mismatch itself: no communication, no hang.
    if (world->rank() != 0)
      return 1;
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
    return 1;
  } catch (const UsageError &) {
    // Before setup every rank fails alike: rank 0 speaks for all.
    if (world->rank() != 0)
      return 2;
    throw;
  } catch (const std::exception &e) {
    if (!env.agreed) {
      if (world->rank() != 0)
        return 1;
      throw;
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

//===----------------------------------------------------------------------===//
// init, info
//===----------------------------------------------------------------------===//

int runInit(const Manifest &m, const ParsedFlags &flags) {
  WeightSource source = parseWeightSource(flags, /*allowPath=*/false);
  if (!flags.has("output"))
    throw UsageError("give --output PATH");
  AlignedBuffer weights = obtainWeights(m, source);
  saveWeights(m, weights, flags.get("output"));
  return 0;
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

void printSpecs(const char *title, const std::vector<TensorSpec> &specs) {
  std::printf("%s:\n", title);
  for (const TensorSpec &spec : specs) {
    std::printf("  %-8s %s %s", spec.name.c_str(), spec.dtype.c_str(),
                shapeText(spec.globalShape).c_str());
    if (spec.shape != spec.globalShape)
      std::printf(" (per rank %s)", shapeText(spec.shape).c_str());
    std::printf("\n");
  }
}

int runInfo(const Manifest &m) {
  std::printf("function     %s (entry %s)\n", m.function.c_str(),
              m.entry.c_str());
  size_t tensors = 0;
  for (const ParamInfo &p : m.params)
    tensors += static_cast<size_t>(p.numSlices());
  std::printf("parameters   %zu (%zu HF tensors), %s scalars\n",
              m.params.size(), tensors,
              withThousands(m.totalParameters()).c_str());
  std::printf("weights      %s bytes\n", withThousands(m.weightsBytes).c_str());
  std::printf("arena        %s bytes (%s without buffer reuse)\n",
              withThousands(m.arenaBytes).c_str(),
              withThousands(m.unplannedBytes).c_str());
  printSpecs("inputs", m.inputs);
  printSpecs("outputs", m.outputs);
  std::printf("mesh         %s (%lld ranks)\n", m.mesh.str().c_str(),
              static_cast<long long>(m.mesh.worldSize()));
  std::printf("ignore index %" PRId64 "\n", m.ignoreIndex);
  if (m.hasVocabChars())
    std::printf("tokenizer    characters (vocab_chars, %" PRId64 ")\n",
                m.vocab);
  else
    std::printf("tokenizer    none: token ids (vocab %" PRId64 ")\n", m.vocab);
  return 0;
}

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

Manifest loadManifest(const char *text) {
  Manifest m = parseManifest(text);
  if (m.function != "forward" || m.entry != "moe_entry_forward")
    throw std::runtime_error("manifest: describes function '" + m.function +
                             "' with entry '" + m.entry +
                             "', but this driver calls moe_entry_forward");
  return m;
}

int dispatch(const std::string &program, const std::vector<std::string> &args,
             const char *manifestText, ForwardEntry forward) {
  if (args.empty())
    throw UsageError("no command given (see '" + program + " --help')");
  const std::string &name = args[0];
  if (name == "--help" || name == "-h" || name == "help") {
    const CommandSpec *topic = nullptr;
    for (const CommandSpec *command : kCommands)
      if (args.size() > 1 && args[1] == command->name)
        topic = command;
    std::fputs(topic ? commandHelp(program, *topic).c_str()
                     : programHelp(program).c_str(),
               stdout);
    return 0;
  }
  const CommandSpec *command = nullptr;
  for (const CommandSpec *candidate : kCommands)
    if (candidate->name == name)
      command = candidate;
  if (!command)
    throw UsageError("unknown command '" + name + "' (see '" + program +
                     " --help')");

  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (wantsHelp(rest)) {
    std::fputs(commandHelp(program, *command).c_str(), stdout);
    return 0;
  }
  try {
    ParsedFlags flags = parseFlags(*command, rest);
    Manifest manifest = loadManifest(manifestText);
    if (command == &kForward)
      return runOnMesh(manifest, flags, [&](RankEnv &env) {
        return runForward(manifest, forward, flags, env);
      });
    if (command == &kGenerate)
      return runOnMesh(manifest, flags, [&](RankEnv &env) {
        return runGenerate(manifest, forward, flags, env);
      });
    if (command == &kInit)
      return runInit(manifest, flags);
    return runInfo(manifest);
  } catch (const UsageError &e) {
    throw UsageError(std::string(e.what()) + " (see '" + program + " " + name +
                     " --help')");
  }
}

std::string oneLine(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s;
}

int reportError(const std::string &message, int status) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: %s\n", oneLine(message).c_str());
  return status;
}

} // namespace

int runDriver(int argc, char **argv, const char *manifestText,
              ForwardEntry forward) {
  std::string program = argc > 0 ? argv[0] : "model";
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  try {
    return dispatch(program, args, manifestText, forward);
  } catch (const UsageError &e) {
    return reportError(e.what(), 2);
  } catch (const std::bad_alloc &) {
    return reportError("out of memory", 1);
  } catch (const std::exception &e) {
    return reportError(e.what(), 1);
  } catch (...) {
    return reportError("unknown exception", 1);
  }
}

} // namespace moe::driver
