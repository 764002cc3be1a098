//===- TrainOptions.cpp - The train and grad commands' flags --------------===//
//
// The flags of `train` and `grad` (their help text) and their validation
// into TrainOptions: every value in range, every combination meaningful, one
// UsageError naming the flag otherwise, before anything runs.
//
//===----------------------------------------------------------------------===//

#include "driver/cli/RunFlags.h"
#include "driver/train/Train.h"

#include "driver/model/ModelRun.h"
#include "driver/train/Metrics.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

namespace moe::driver {

const CommandSpec &trainCommand() {
  static const CommandSpec command{
      "train",
      "--data FILE --steps N (--init-random SEED | --weights PATH | --resume) "
      "[--lr LR] [--checkpoint-dir D [--save-every K] [--resume]] "
      "[--metrics FILE] [--plot FILE.png] [--trace FILE] [flags]",
      "Trains the model on a text file (character-level models) or a file "
      "of token ids (any model compiled with a training step): AdamW, "
      "gradient clipping, warm-up then cosine learning rate; evaluates, "
      "checkpoints, and samples at the end.",
      {{"data", "FILE",
        "What to train on: the first 90% of its tokens train, the last 10% "
        "validate. Every token must be in the model's vocabulary."},
       {"data-format", "text|u16|u32",
        "How --data is read: 'text' (the default; characters of a "
        "character-level model's vocabulary) or a flat array of "
        "little-endian unsigned 16- or 32-bit token ids, as nanoGPT's "
        "prepare scripts write (numpy: ids.astype(np.uint16).tofile(path))."},
       {"steps", "N",
        "Training steps, counted from 1 (a resumed run goes on "
        "up to N)."},
       {"batch", "B", "Optional check: must equal the compiled global batch."},
       {"seq", "S", "Optional check: must equal the compiled sequence length."},
       {"lr", "LR", "Peak learning rate (default 3e-3)."},
       {"min-lr", "LR",
        "Learning rate at the last step, the end of the cosine (default "
        "lr/10)."},
       {"warmup", "K",
        "Steps of linear warm-up from 0 (default min(100, steps/10))."},
       {"weight-decay", "WD",
        "AdamW decoupled weight decay of matrices (default 0.1); norm "
        "weights and other vectors are not decayed."},
       {"beta1", "B1", "AdamW beta1 (default 0.9)."},
       {"beta2", "B2", "AdamW beta2 (default 0.95)."},
       {"adam-eps", "EPS", "AdamW epsilon (default 1e-8)."},
       {"clip", "C",
        "Clip the global gradient norm to C (default 1.0; 0 turns it off)."},
       {"max-skipped-steps", "N",
        "A step whose loss or gradient norm is not finite (inf, nan) skips "
        "its update; more than N such steps in a row end the run with an "
        "error (default 3). No checkpoint with a non-finite value is "
        "written."},
       {"micro-batches", "N",
        "Gradient accumulation: each optimizer step averages the gradients "
        "of N compiled batches, as one batch N times larger would (default "
        "1). Costs one more fp32 gradient blob a rank when N > 1."},
       {"bias-update-rate", "R",
        "Aux-loss-free load balancing (DeepSeek-V3) for routers with an "
        "expert bias: after each step a bias rises by R where its expert got "
        "fewer tokens than the mean and falls by R where it got more "
        "(default 1e-3; 0 turns it off)."},
       {"seed", "S",
        "Seed of the data order and of the final sample (default 0); the "
        "batch of a step depends on (seed, step) only."},
       weightsFlag(),
       initRandomFlag(),
       initStdFlag(),
       {"eval-every", "K",
        "Validation loss every K steps and at the end (default 100; 0: only "
        "at the end)."},
       {"eval-batches", "N",
        "Batches of fixed validation windows per evaluation (default 8)."},
       {"log-every", "K",
        "Print progress every K steps and at the last "
        "(default 10)."},
       {"save-every", "K",
        "Checkpoint every K steps (needs --checkpoint-dir; default: only at "
        "the end)."},
       {"checkpoint-dir", "D",
        "Write sharded checkpoints D/step-NNNNNN (the last two are kept; "
        "D/latest names the newest), always at the end."},
       {"resume", "",
        "Continue from D/latest (any mesh); start from scratch when D has no "
        "checkpoint yet.",
        /*isSwitch=*/true},
       {"metrics", "FILE",
        "Write metrics per logged step and evaluation, as JSON lines (.jsonl, "
        "with per-expert token counts) or CSV (.csv); on --resume, the "
        "records up to the checkpoint's step are kept and the rest dropped."},
       {"plot", "FILE.png",
        "Draw the train and validation loss curves as a PNG with gnuplot "
        "(Debian's gnuplot-nox) after every evaluation; a resumed run draws "
        "the kept --metrics records too."},
       {"sample-chars", "N",
        "Tokens (characters of a character-level model) to generate from "
        "the trained model at the end (default 200; temperature 0.8, seeded "
        "by --seed)."},
       {"placement-policy", "P",
        "Expert placement of expert-parallel models (moec --mesh with ep): "
        "static (default: rank j holds experts [j*E/n, (j+1)*E/n)), "
        "replicate-hot (the spare slots of moec --replica-slots take "
        "replicas of the most loaded experts, on the least loaded ranks) or "
        "plugin:LIB.so (moe_place_experts, include/moe/Runtime/"
        "PlacementPlugin.h). Applied every --replace-every steps."},
       {"replace-every", "K",
        "Re-place the experts every K steps from the tokens routed since the "
        "last placement; weights and AdamW moments move with their experts "
        "(default 0: never)."},
       {"dispatch-policy", "D",
        "How the rows of an expert with replicas are split over them: "
        "least-loaded (default: level the rows each rank receives), first, "
        "or plugin:LIB.so (moe_split_tokens)."},
       traceFlag(),
       traceStepsFlag(),
       commFlag(),
       backendFlag(),
       gpuCommFlag(),
       sumsFlag(),
       checkCollectivesFlag()}};
  return command;
}

const CommandSpec &gradCommand() {
  static const CommandSpec command{
      "grad",
      "(--weights PATH | --init-random SEED) --tokens IDS [--labels IDS] "
      "--output FILE",
      "Runs the training step once (1-rank models) and writes the loss and "
      "the gradient of every parameter.",
      {weightsFlag(),
       initRandomFlag(),
       initStdFlag(),
       {"tokens", "IDS", "Token ids, batch*seq of them (see 'forward')."},
       {"labels", "IDS",
        "Label ids (default: the tokens shifted left within each row)."},
       {"output", "FILE",
        "Write \"loss\" [] and every gradient under its parameter's Hugging "
        "Face name as F32 safetensors."},
       backendFlag()}};
  return command;
}

const CommandSpec &exportCommand() {
  static const CommandSpec command{
      "export",
      "--checkpoint PATH --output PATH [--max-shard-size SIZE] [--save-dtype "
      "f32|bf16]",
      "Writes the weights of a training checkpoint (saved on any mesh) as a "
      "Hugging Face checkpoint of whole tensors that --weights and "
      "from_pretrained read. Runs as one process whatever the mesh.",
      {{"checkpoint", "PATH",
        "A checkpoint (D/step-000200) or a --checkpoint-dir D (its latest)."},
       {"output", "PATH",
        "A .safetensors file, or a folder of model.safetensors or of shards "
        "and their index, as save_pretrained writes."},
       maxShardSizeFlag(),
       saveDtypeFlag()}};
  return command;
}

namespace {

double realFlag(const ParsedFlags &flags, const char *name, double fallback,
                double min, double below = INFINITY) {
  if (!flags.has(name))
    return fallback;
  double value = parseReal(name, flags.get(name), min);
  if (!(value < below)) {
    char bound[32];
    std::snprintf(bound, sizeof bound, "%g", below);
    throw UsageError(std::string("--") + name + " is " + flags.get(name) +
                     ", expected a value below " + bound);
  }
  return value;
}

int64_t integerFlag(const ParsedFlags &flags, const char *name,
                    int64_t fallback, int64_t min,
                    int64_t max = std::numeric_limits<int32_t>::max()) {
  return flags.has(name) ? parseInteger(name, flags.get(name), min, max)
                         : fallback;
}

bool endsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

} // namespace

TrainOptions parseTrainOptions(const ParsedFlags &flags, const Manifest &m,
                               TrainStepEntry trainStep) {
  checkTrainable(m, trainStep);
  TrainOptions o;
  if (!flags.has("data"))
    throw UsageError("give --data FILE");
  o.data = flags.get("data");
  std::string format =
      flags.has("data-format") ? flags.get("data-format") : std::string("text");
  if (format == "u16" || format == "u32")
    o.dataIdBytes = format == "u16" ? 2 : 4;
  else if (format != "text")
    throw UsageError("--data-format is '" + format +
                     "', expected text, u16 or u32");
  if (o.dataIdBytes == 0 && !m.hasVocabChars())
    throw std::runtime_error(
        "train reads --data as text, but this model has no character "
        "vocabulary (vocab_chars): give its token ids with --data-format "
        "u16 or u32");
  if (!flags.has("steps"))
    throw UsageError("give --steps N");
  o.steps = parseInteger("steps", flags.get("steps"), 1, 1000000000);
  for (auto [name, compiled] :
       {std::pair{"batch", m.batch}, std::pair{"seq", m.seq}})
    if (flags.has(name) &&
        parseInteger(name, flags.get(name), 1, 1 << 30) != compiled)
      throw UsageError("--" + std::string(name) + " is " + flags.get(name) +
                       ", but the model is compiled for batch " +
                       std::to_string(m.batch) + " and seq " +
                       std::to_string(m.seq) +
                       "; recompile it for another shape");

  o.schedule.steps = o.steps;
  o.schedule.lr = realFlag(flags, "lr", 3e-3, 0.0);
  o.schedule.minLr = realFlag(flags, "min-lr", o.schedule.lr / 10, 0.0);
  if (o.schedule.minLr > o.schedule.lr)
    throw UsageError("--min-lr is " + flags.get("min-lr") + ", above --lr (" +
                     std::to_string(o.schedule.lr) + ")");
  o.schedule.warmup = integerFlag(
      flags, "warmup", std::min<int64_t>(100, o.steps / 10), 0, o.steps);
  o.adamw.weightDecay = realFlag(flags, "weight-decay", 0.1, 0.0);
  o.adamw.beta1 = realFlag(flags, "beta1", 0.9, 0.0, 1.0);
  o.adamw.beta2 = realFlag(flags, "beta2", 0.95, 0.0, 1.0);
  o.adamw.eps = realFlag(flags, "adam-eps", 1e-8, 0.0);
  o.adamw.clip = realFlag(flags, "clip", 1.0, 0.0);
  if (flags.has("seed"))
    o.seed = parseSeed("seed", flags.get("seed"));
  bool hasBiases =
      std::any_of(m.params.begin(), m.params.end(), [](const ParamInfo &p) {
        return p.balancesLayer.has_value();
      });
  o.biasUpdateRate = realFlag(flags, "bias-update-rate", 1e-3, 0.0);
  if (!hasBiases) {
    if (flags.has("bias-update-rate") && o.biasUpdateRate > 0)
      throw UsageError("--bias-update-rate is " +
                       flags.get("bias-update-rate") +
                       ", but this model's routers have no expert bias to "
                       "balance");
    o.biasUpdateRate = 0.0;
  }

  bool placed =
      std::any_of(m.params.begin(), m.params.end(),
                  [](const ParamInfo &p) { return p.placement.has_value(); });
  if (flags.has("placement-policy"))
    o.placementPolicy = flags.get("placement-policy");
  if (flags.has("dispatch-policy"))
    o.dispatchPolicy = flags.get("dispatch-policy");
  o.replaceEvery = integerFlag(flags, "replace-every", 0, 0);
  if (!placed && (flags.has("placement-policy") ||
                  flags.has("dispatch-policy") || o.replaceEvery > 0))
    throw UsageError("expert placement needs an expert-parallel model "
                     "(compiled with moec --mesh ...,ep=N); this one is "
                     "compiled for mesh " +
                     m.mesh.str());
  if (o.replaceEvery > 0 && o.placementPolicy == "static")
    throw UsageError("--replace-every " + flags.get("replace-every") +
                     " needs a --placement-policy other than static");
  // Unknown names and plugins that do not load fail here, before training.
  auto checkSpec = [](const char *flag, auto &&make) {
    try {
      make();
    } catch (const std::invalid_argument &e) {
      throw UsageError(std::string("--") + flag + ": " + e.what());
    }
  };
  checkSpec("placement-policy",
            [&] { rt::makePlacementPolicy(o.placementPolicy); });
  checkSpec("dispatch-policy",
            [&] { rt::makeDispatchPolicy(o.dispatchPolicy); });

  o.resume = flags.has("resume");
  if (flags.has("checkpoint-dir"))
    o.checkpointDir = flags.get("checkpoint-dir");
  if (o.checkpointDir && o.checkpointDir->empty())
    throw UsageError("--checkpoint-dir is empty");
  if (o.resume && !o.checkpointDir)
    throw UsageError("--resume needs --checkpoint-dir D");
  if (flags.has("save-every") && !o.checkpointDir)
    throw UsageError("--save-every needs --checkpoint-dir D");
  o.saveEvery = integerFlag(flags, "save-every", 0, 1);
  if (!o.resume || flags.has("weights") || flags.has("init-random") ||
      flags.has("init-std"))
    o.source = parseWeightSource(flags, /*allowPath=*/true);

  o.evalEvery = integerFlag(flags, "eval-every", 100, 0);
  o.evalBatches = integerFlag(flags, "eval-batches", 8, 1, 1 << 20);
  o.logEvery = integerFlag(flags, "log-every", 10, 1);
  o.maxSkippedSteps = integerFlag(flags, "max-skipped-steps", 3, 0);
  o.microBatches = integerFlag(flags, "micro-batches", 1, 1, 1 << 16);
  o.sampleChars = integerFlag(flags, "sample-chars", 200, 0, 1 << 20);
  if (flags.has("metrics")) {
    o.metrics = flags.get("metrics");
    if (!MetricsWriter::knownFormat(*o.metrics))
      throw UsageError("--metrics is '" + *o.metrics +
                       "', expected a file name ending in .jsonl or .csv");
  }
  if (flags.has("plot")) {
    o.plot = flags.get("plot");
    if (!endsWith(*o.plot, ".png"))
      throw UsageError("--plot is '" + *o.plot +
                       "', expected a file name ending in .png");
  }
  o.trace = parseTraceOptions(flags);
  return o;
}

} // namespace moe::driver
