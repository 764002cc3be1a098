//===- Driver.cpp - The command line of a compiled model ------------------===//
//
// Each command first turns its flags into an options struct (so that every
// usage error is reported before any file is touched), then runs. Results go
// to stdout, notes and the one error line to stderr.
//
//===----------------------------------------------------------------------===//

#include "driver/cli/Driver.h"
#include "driver/cli/RunFlags.h"

#include "driver/cli/CommandLine.h"
#include "driver/model/AlignedBuffer.h"
#include "driver/model/Generation.h"
#include "driver/model/Manifest.h"
#include "driver/model/ModelRun.h"
#include "driver/model/Sampling.h"
#include "driver/model/Tokens.h"
#include "driver/model/Weights.h"
#include "driver/train/Optimizer.h"
#include "driver/train/Tracing.h"
#include "driver/train/Train.h"
#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/Safetensors.h"
#include "moe/Support/MemoryReport.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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

const FlagSpec kWeights = weightsFlag();
const FlagSpec kInitRandom = initRandomFlag();
const FlagSpec kInitStd = initStdFlag();
const FlagSpec kComm = commFlag();
const FlagSpec kBackend = backendFlag();
const FlagSpec kGpuComm = gpuCommFlag();
const FlagSpec kSums = sumsFlag();
const FlagSpec kCheckCollectives = checkCollectivesFlag();

const CommandSpec kForward{
    "forward",
    "(--weights PATH | --init-random SEED) --tokens IDS [--labels IDS] "
    "[--output PATH] [--save-weights PATH [--max-shard-size SIZE] "
    "[--save-dtype f32|bf16]] [--trace FILE]",
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
      "Write the weights used (e.g. those of --init-random) as a Hugging "
      "Face checkpoint (1-rank models): a .safetensors file, or a folder "
      "that from_pretrained reads."},
     maxShardSizeFlag(),
     saveDtypeFlag(),
     traceFlag(),
     kComm,
     kBackend,
     kGpuComm,
     kSums,
     kCheckCollectives}};

const CommandSpec kGenerate{
    "generate",
    "(--weights PATH | --init-random SEED) (--prompt TEXT | --prompt-ids "
    "IDS) [--max-new-tokens N] [--temperature T] [--top-k K] [--seed S]",
    "Continues a prompt one token at a time and streams it to stdout. The "
    "model sees the last seq tokens in row 0 of its fixed [batch, seq] input.",
    {kWeights,
     kInitRandom,
     kInitStd,
     {"prompt", "TEXT",
      "Text for a character-level model (every character must be in "
      "vocab_chars), else token ids separated by commas and/or whitespace. "
      "Empty: generation starts after token 0 (which is not printed)."},
     {"prompt-ids", "IDS",
      "The prompt as token ids separated by commas and/or whitespace, for "
      "any model (a tokenizer's output)."},
     {"max-new-tokens", "N", "Tokens to generate (default 64)."},
     {"temperature", "T",
      "Softmax temperature (default 1.0); 0 is greedy (argmax)."},
     {"top-k", "K",
      "Sample only among the K most likely tokens (default 0: all)."},
     {"seed", "S", "Seed of the sampler (default 0)."},
     kComm,
     kBackend,
     kGpuComm,
     kSums,
     kCheckCollectives}};

const CommandSpec kInit{
    "init",
    "--init-random SEED --output PATH [--init-std STD] [--max-shard-size "
    "SIZE] [--save-dtype f32|bf16]",
    "Writes random weights (see --init-random) as a checkpoint of whole "
    "tensors that --weights loads: the same whatever mesh the model is "
    "compiled for.",
    {kInitRandom,
     kInitStd,
     {"output", "PATH",
      "The checkpoint to write: a .safetensors file, or a folder of "
      "model.safetensors or of shards and their index, as save_pretrained "
      "writes (each file replaced atomically)."},
     maxShardSizeFlag(),
     saveDtypeFlag()}};

const CommandSpec kInfo{"info",
                        "",
                        "Prints what the model was compiled to: parameters, "
                        "buffer sizes, inputs and outputs, mesh, tokenizer.",
                        {}};

const CommandSpec *const kCommands[] = {
    &kForward,        &kGenerate, &trainCommand(), &gradCommand(),
    &exportCommand(), &kInit,     &kInfo};

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
               const ParsedFlags &flags,
               const std::optional<TraceOptions> &traceOptions, RankEnv &env) {
  WeightSource source = parseWeightSource(flags, /*allowPath=*/true);
  if (flags.has("save-weights") && env.place)
    throw UsageError("--save-weights needs a model compiled for one rank");
  io::CheckpointLayout layout = checkpointLayoutFromFlags(flags);
  Batch batch = batchFromFlags(m, flags);
  const std::vector<int32_t> &tokens = batch.tokens, &labels = batch.labels;

  ModelRunner runner(m, forward, env);
  env.agreeOnSetup([&] {
    if (traceOptions)
      checkTraceTarget(*traceOptions, env.rank());
    loadWeightsInto(runner, m, source, env.placePtr());
  });
  std::optional<RunTrace> trace;
  if (traceOptions) {
    trace.emplace(*traceOptions, env, runner);
    trace->begin("forward");
  }
  runner.run(tokens, labels);
  if (trace) {
    trace->end();
    trace->write();
  }
  if (!env.root)
    return 0;

  std::printf("loss %.9g\n", runner.loss());
  printLogitsSummary(m, runner);
  printDroppedSlots(runner.droppedSlots());
  if (flags.has("output")) {
    float loss = runner.loss();
    io::writeSafetensors(
        flags.get("output"),
        {{"logits", io::DType::F32, {m.batch, m.seq, m.vocab}, runner.logits()},
         {"loss", io::DType::F32, {}, &loss}},
        {{"format", "pt"}});
  }
  if (flags.has("save-weights")) // the weights as read, whatever the storage
    saveWeights(m, obtainWeights(m, source), flags.get("save-weights"), layout);
  return 0;
}

//===----------------------------------------------------------------------===//
// generate
//===----------------------------------------------------------------------===//

struct GenerateOptions {
  WeightSource source;
  std::string prompt;
  bool promptIsIds = false; ///< --prompt-ids

  int64_t maxNewTokens = 64;
  SamplingOptions sampling;
  uint64_t seed = 0;
};

GenerateOptions parseGenerateOptions(const ParsedFlags &flags) {
  GenerateOptions options;
  options.source = parseWeightSource(flags, /*allowPath=*/true);
  if (flags.has("prompt") == flags.has("prompt-ids"))
    throw UsageError("give --prompt TEXT or --prompt-ids IDS (one of them)");
  options.promptIsIds = flags.has("prompt-ids");
  options.prompt = flags.get(options.promptIsIds ? "prompt-ids" : "prompt");
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

std::vector<int32_t> encodePrompt(const Manifest &m,
                                  const GenerateOptions &options) {
  if (m.hasVocabChars() && !options.promptIsIds)
    return encodeChars("prompt", options.prompt, m.vocabChars);
  const char *flag = options.promptIsIds ? "prompt-ids" : "prompt";
  return checkIds(flag, parseIds(flag, options.prompt), m.vocab, false,
                  m.ignoreIndex);
}

int runGenerate(const Manifest &m, const Entries &entries,
                const ParsedFlags &flags, RankEnv &env) {
  GenerateOptions options = parseGenerateOptions(flags);
  std::vector<int32_t> context = encodePrompt(m, options);
  bool cached = CachedGenerator::available(m, entries);
  if (cached && static_cast<int64_t>(context.size()) > m.decode->cacheLen)
    throw std::invalid_argument(
        "the prompt has " + std::to_string(context.size()) +
        " tokens, more than the " + std::to_string(m.decode->cacheLen) +
        " positions of the model's key/value cache (compile it with moec "
        "--max-seq N for a longer one)");
  ModelRunner runner(m, entries.forward, env);
  env.agreeOnSetup(
      [&] { loadWeightsInto(runner, m, options.source, env.placePtr()); });

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
  auto started = std::chrono::steady_clock::now();
  try {
    continueTokens(m, runner, entries, context, options.maxNewTokens,
                   options.sampling, rng, [&](int32_t id) {
                     if (env.root)
                       printer.print(id);
                   });
  } catch (...) {
    // End the streamed line so that the error line starts on its own.
    if (env.root) {
      std::printf("\n");
      std::fflush(stdout);
    }
    throw;
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
          .count();
  if (env.root) {
    std::printf("\n");
    std::fflush(stdout);
    if (options.maxNewTokens > 0)
      std::fprintf(stderr, "%lld tokens in %.2f s: %.3g tokens/s (%s)\n",
                   static_cast<long long>(options.maxNewTokens), seconds,
                   options.maxNewTokens / std::max(seconds, 1e-9),
                   cached ? "key/value cache" : "a full forward a token");
  }
  return 0;
}

//===----------------------------------------------------------------------===//
// init, info
//===----------------------------------------------------------------------===//

int runInit(const Manifest &m, const ParsedFlags &flags) {
  WeightSource source = parseWeightSource(flags, /*allowPath=*/false);
  if (!flags.has("output"))
    throw UsageError("give --output PATH");
  io::CheckpointLayout layout = checkpointLayoutFromFlags(flags);
  saveRandomWeights(m, source.seed, source.std, flags.get("output"), layout);
  return 0;
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

/// What one rank of this program holds (moec --memory-report, from the same
/// manifest fields).
moe::RankMemory rankMemory(const Manifest &m) {
  moe::RankProgram p;
  p.bf16 = m.bf16Storage();
  p.weightsBytes = m.storageWeightsBytes;
  p.fp32WeightsBytes = m.weightsBytes;
  moe::MomentFootprint moments =
      moe::momentFootprint(paramBlocks(m), m.mesh, m.zeroStage);
  p.momentBytes = moments.momentBytes;
  p.shardGatherBytes = moments.gatherBytes;
  for (const ParamInfo &param : m.params) {
    p.largestParamElements = std::max(
        p.largestParamElements, static_cast<uint64_t>(param.numElements()));
    if (param.placement &&
        param.shape[0] * m.mesh.ep > param.globalShape[0]) // spare slots
      p.fp32Grads = true;
  }
  p.forwardArenaBytes = m.arenaBytes;
  p.forwardCommBytes = m.commBytes;
  if (m.trainStep) {
    p.trains = true;
    p.trainArenaBytes = m.trainStep->arenaBytes;
    p.trainCommBytes = m.trainStep->commBytes;
  }
  if (m.evalStep) {
    p.evaluates = true;
    p.evalArenaBytes = m.evalStep->arenaBytes;
    p.evalCommBytes = m.evalStep->commBytes;
  }
  p.logitsElements = static_cast<uint64_t>(m.batch * m.seq * m.vocab);
  p.inputElements = 1;
  for (int64_t d : m.inputs[0].shape)
    p.inputElements *= static_cast<uint64_t>(d);
  return moe::rankMemory(p);
}

/// What ZeRO stage `stage` slices over the data-parallel replicas.
const char *zeroStageSlices(int stage) {
  switch (stage) {
  case 2:
    return "dense weights between steps, gradients and AdamW state";
  case 3:
    return "dense weights, gradients and AdamW state";
  default:
    return "AdamW state";
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
  std::printf("storage      %s\n",
              m.bf16Storage() ? "BF16 (fp32 master weights in the driver)"
                              : "F32");
  if (m.bf16Storage())
    std::printf("weights      %s bytes (bf16; fp32 master %s bytes)\n",
                withThousands(m.storageWeightsBytes).c_str(),
                withThousands(m.weightsBytes).c_str());
  else
    std::printf("weights      %s bytes\n",
                withThousands(m.weightsBytes).c_str());
  std::printf("arena        %s bytes (%s without buffer reuse)\n",
              withThousands(m.arenaBytes).c_str(),
              withThousands(m.unplannedBytes).c_str());
  moe::RankMemory memory = rankMemory(m);
  std::printf("memory       %s bytes a rank to %s: weights %s, gradients %s, "
              "optimizer %s, activations %s, collective scratch %s\n",
              withThousands(memory.total).c_str(),
              m.trainStep ? "train" : "run the forward",
              withThousands(memory.weights).c_str(),
              withThousands(memory.gradients).c_str(),
              withThousands(memory.optimizer).c_str(),
              withThousands(m.trainStep ? memory.activationsTrain
                                        : memory.activationsForward)
                  .c_str(),
              withThousands(memory.comm).c_str());
  printSpecs("inputs", m.inputs);
  printSpecs("outputs", m.outputs);
  std::printf("mesh         %s (%lld ranks)\n", m.mesh.str().c_str(),
              static_cast<long long>(m.mesh.worldSize()));
  if (m.zeroStage)
    std::printf("zero         stage %d (%s sliced over the data-parallel "
                "replicas)\n",
                m.zeroStage, zeroStageSlices(m.zeroStage));
  if (!m.recompute.empty())
    std::printf("recompute    %s (the training step runs each block's "
                "forward again before its backward)\n",
                m.recompute.c_str());
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
             const char *manifestText, const Entries &entries) {
  ForwardEntry forward = entries.forward;
  TrainStepEntry trainStep = entries.trainStep;
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
    if (command == &kForward) {
      std::optional<TraceOptions> trace = parseTraceOptions(flags);
      return runOnMesh(
          manifest, meshRunFromFlags(manifest, flags), [&](RankEnv &env) {
            return runForward(manifest, forward, flags, trace, env);
          });
    }
    if (command == &kGenerate)
      return runOnMesh(manifest, meshRunFromFlags(manifest, flags),
                       [&](RankEnv &env) {
                         return runGenerate(manifest, entries, flags, env);
                       });
    if (command == &trainCommand()) {
      TrainOptions options = parseTrainOptions(flags, manifest, trainStep);
      options.program = std::filesystem::path(program).filename().string();
      return runOnMesh(manifest, meshRunFromFlags(manifest, flags),
                       [&](RankEnv &env) {
                         return runTrain(manifest, entries, options, env);
                       });
    }
    if (command == &gradCommand())
      return runGrad(manifest, forward, trainStep, flags);
    if (command == &exportCommand())
      return runExport(manifest, flags);
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
  if (launcherRank() > 0)
    return status; // rank 0 reports what every rank met (see runOnMesh)
  std::fprintf(stderr, "error: %s\n", oneLine(message).c_str());
  return status;
}

} // namespace

int runDriver(int argc, char **argv, const char *manifestText,
              const Entries &entries) {
  std::string program = argc > 0 ? argv[0] : "model";
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  try {
    return dispatch(program, args, manifestText, entries);
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
