//===- Train.cpp - The train and grad commands ----------------------------===//
//
// Every rank runs the same loop: it builds the same global batch from
// (seed, step), hands its block to the training step, takes its share of the
// global gradient norm, and updates its own blocks with AdamW, all in the
// backend's memory (host copies only while loading, checkpointing and
// re-placing, and for replicas' gradient sums). Whatever needs the whole job
// (the norm, expert counts, evaluation, generation, checkpoints) is a
// collective every rank reaches at the same step; rank 0 prints and writes
// the metrics and the plot.
//
//===----------------------------------------------------------------------===//

#include "driver/train/Train.h"

#include "driver/cli/RunFlags.h"
#include "driver/model/Generation.h"

#include "driver/model/Placement.h"
#include "driver/model/Weights.h"
#include "driver/train/Checkpoint.h"
#include "driver/train/Corpus.h"
#include "driver/train/Metrics.h"
#include "driver/train/Plot.h"
#include "moe/Runtime/Safetensors.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <stdexcept>

namespace moe::driver {

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

/// "shakespeare_ep4 (Qwen3MoeForCausalLM): mesh dp=4 ep=4, batch 16 x 128".
std::string plotTitle(const Manifest &m, const TrainOptions &o) {
  std::string title = o.program.empty() ? "model" : o.program;
  if (!m.hfConfig.empty()) {
    Json config = Json::parse(m.hfConfig, nullptr, false);
    if (config.is_object() && config.contains("architectures") &&
        config["architectures"].is_array() &&
        !config["architectures"].empty() &&
        config["architectures"][0].is_string())
      title += " (" + config["architectures"][0].get<std::string>() + ")";
  }
  return title + ": mesh " + m.mesh.str() + ", batch " +
         std::to_string(m.batch) + " x " + std::to_string(m.seq);
}

/// The flags a resumed run should repeat, recorded in the checkpoint.
Json trainJson(const TrainOptions &o, const Manifest &m) {
  return Json{{"data", o.data},
              {"steps", o.steps},
              {"seed", o.seed},
              {"batch", m.batch},
              {"micro_batches", o.microBatches},
              {"seq", m.seq},
              {"lr", o.schedule.lr},
              {"min_lr", o.schedule.minLr},
              {"warmup", o.schedule.warmup},
              {"weight_decay", o.adamw.weightDecay},
              {"beta1", o.adamw.beta1},
              {"beta2", o.adamw.beta2},
              {"adam_eps", o.adamw.eps},
              {"clip", o.adamw.clip},
              {"bias_update_rate", o.biasUpdateRate},
              {"placement_policy", o.placementPolicy},
              {"dispatch_policy", o.dispatchPolicy},
              {"replace_every", o.replaceEvery}};
}

/// Per-layer expert counts summed over the ranks that route different
/// tokens: every rank of a dp x cp plane routes its own tokens over all
/// global experts, and under sequence parallelism so does every tp rank.
std::vector<std::vector<int64_t>>
globalExpertCounts(const std::vector<std::vector<int64_t>> &local,
                   const RankEnv &env, bool sequenceParallel) {
  std::vector<std::vector<int64_t>> counts = local;
  if (!env.groups)
    return counts;
  std::vector<int64_t> flat;
  for (const std::vector<int64_t> &layer : counts)
    flat.insert(flat.end(), layer.begin(), layer.end());
  env.groups->dpCp->allReduceSum(flat.data(), static_cast<int64_t>(flat.size()),
                                 rt::CommDType::I64);
  if (sequenceParallel)
    env.groups->tp->allReduceSum(flat.data(), static_cast<int64_t>(flat.size()),
                                 rt::CommDType::I64);
  size_t at = 0;
  for (std::vector<int64_t> &layer : counts)
    for (int64_t &c : layer)
      c = flat[at++];
  return counts;
}

void printExpertCounts(const std::vector<std::vector<int64_t>> &counts,
                       const std::vector<int64_t> &dropped) {
  for (size_t layer = 0; layer < counts.size(); ++layer) {
    const std::vector<int64_t> &c = counts[layer];
    std::printf("experts layer %zu:", layer);
    int64_t total = 0, max = 0;
    for (size_t e = 0; e < c.size(); ++e) {
      if (e < 16)
        std::printf(" %" PRId64, c[e]);
      total += c[e];
      max = std::max(max, c[e]);
    }
    if (c.size() > 16)
      std::printf(" ...");
    double mean = c.empty() ? 0.0 : double(total) / double(c.size());
    std::printf(" (max/mean %.2f)\n", mean > 0 ? double(max) / mean : 0.0);
  }
  printDroppedSlots(dropped);
  std::fflush(stdout);
}

double evaluate(const Manifest &m, const Corpus &corpus, int64_t batches,
                ModelRunner &runner) {
  double total = 0.0;
  for (int64_t i = 0; i < batches; ++i) {
    Batch batch = corpus.validationBatch(i, batches, m.batch);
    total += runner.evalLoss(batch.tokens, batch.labels);
  }
  return total / static_cast<double>(batches);
}

/// The first line of the validation split (at most seq characters), or its
/// first tokens (at most seq / 2) for a model without characters.
std::vector<int32_t> samplePrompt(const Manifest &m, const Corpus &corpus) {
  std::vector<int32_t> prompt;
  const int32_t *text = corpus.validation();
  int64_t limit = m.hasVocabChars() ? m.seq : std::max<int64_t>(1, m.seq / 2);
  for (int64_t i = 0; i < std::min(limit, corpus.validationSize()); ++i) {
    prompt.push_back(text[i]);
    if (m.hasVocabChars() && m.vocabChars[text[i]] == "\n")
      break;
  }
  return prompt;
}

void sample(const Manifest &m, const Corpus &corpus, int64_t chars,
            uint64_t seed, ModelRunner &runner, const Entries &entries,
            const RankEnv &env) {
  std::vector<int32_t> context = samplePrompt(m, corpus);
  TokenPrinter printer(m);
  if (env.root) {
    std::printf("sample:\n");
    for (int32_t id : context)
      printer.print(id);
  }
  SamplingOptions sampling;
  sampling.temperature = 0.8;
  std::mt19937_64 rng(seed);
  continueTokens(m, runner, entries, context, chars, sampling, rng,
                 [&](int32_t id) {
                   if (env.root)
                     printer.print(id);
                 });
  if (env.root) {
    std::printf("\n");
    std::fflush(stdout);
  }
}

/// What the placement policy sees of the steps since the last placement:
/// per layer, the job's tokens per expert and this rank's expert seconds.
struct LoadWindow {
  std::vector<std::vector<int64_t>> load;
  std::vector<double> expertSeconds;

  void add(const std::vector<std::vector<int64_t>> &counts,
           const std::vector<rt::LayerStats> &stats) {
    load.resize(std::max(load.size(), counts.size()));
    for (size_t l = 0; l < counts.size(); ++l) {
      load[l].resize(std::max(load[l].size(), counts[l].size()), 0);
      for (size_t e = 0; e < counts[l].size(); ++e)
        load[l][e] += counts[l][e];
    }
    expertSeconds.resize(std::max(expertSeconds.size(), stats.size()), 0.0);
    for (size_t l = 0; l < stats.size(); ++l)
      expertSeconds[l] += stats[l].expert;
  }
};

/// Per layer, the values `mine` of every rank of the EP group (rank-major
/// [layer][ep rank]), averaged over the EP groups of the mesh.
std::vector<std::vector<double>> perEpRank(const std::vector<double> &mine,
                                           size_t layers, const RankEnv &env) {
  // Seconds travel as f32: ample for timings.
  std::vector<float> padded(layers, 0.0f);
  for (size_t l = 0; l < layers && l < mine.size(); ++l)
    padded[l] = static_cast<float>(mine[l]);
  int n = env.groups ? env.groups->ep->size() : 1;
  std::vector<float> all(padded);
  if (env.groups && layers > 0) {
    all.assign(layers * n, 0.0f);
    env.groups->ep->allGather(padded.data(), all.data(),
                              static_cast<int64_t>(layers), rt::CommDType::F32);
    env.groups->edp->allReduceSum(all.data(), static_cast<int64_t>(all.size()),
                                  rt::CommDType::F32);
  }
  double groups = env.groups ? double(env.groups->edp->size()) : 1.0;
  std::vector<std::vector<double>> out(layers, std::vector<double>(n));
  for (int j = 0; j < n; ++j)
    for (size_t l = 0; l < layers; ++l)
      out[l][j] = double(all[j * layers + l]) / groups;
  return out;
}

/// Places every layer's experts with `policy` from the window's load, on
/// rank 0, and broadcasts the tables (so that every rank gets the same ones
/// whatever the policy does). Returns them if any layer's placement
/// changed, else nothing.
std::optional<PlacementTables> nextPlacement(RankEnv &env,
                                             rt::PlacementPolicy &policy,
                                             const LoadWindow &window) {
  const PlacementTables &current = env.place->placements;
  std::vector<std::vector<double>> seconds =
      perEpRank(window.expertSeconds, current.size(), env);
  std::vector<std::vector<int32_t>> tables(current.size());
  env.agree([&] {
    if (!env.root)
      return;
    for (size_t l = 0; l < current.size(); ++l) {
      std::vector<int64_t> load(current[l].experts(), 0);
      if (l < window.load.size())
        for (size_t e = 0; e < load.size() && e < window.load[l].size(); ++e)
          load[e] = window.load[l][e];
      rt::PlacementRequest request{static_cast<int64_t>(l), &current[l],
                                   load.data(), seconds[l].data()};
      tables[l] = policy.place(request).slotExperts();
    }
  });
  PlacementTables next;
  for (size_t l = 0; l < current.size(); ++l) {
    tables[l].resize(current[l].slotExperts().size());
    env.world->broadcast(tables[l].data(),
                         static_cast<int64_t>(tables[l].size()),
                         rt::CommDType::I32, 0);
    next.emplace_back(current[l].experts(), current[l].ranks(),
                      current[l].slots(), tables[l]);
  }
  if (next == current)
    return std::nullopt;
  return next;
}

/// Rank 0's EP group's expert time and rows per rank in the last step.
std::vector<ExpertLayerMetrics>
expertLayerMetrics(const std::vector<rt::LayerStats> &stats, size_t layers,
                   const RankEnv &env) {
  std::vector<double> expert(layers, 0.0), allToAll(layers, 0.0);
  for (size_t l = 0; l < stats.size() && l < layers; ++l) {
    expert[l] = stats[l].expert;
    allToAll[l] = stats[l].allToAll;
  }
  std::vector<std::vector<double>> e = perEpRank(expert, layers, env);
  std::vector<std::vector<double>> a = perEpRank(allToAll, layers, env);
  std::vector<ExpertLayerMetrics> out(layers);
  for (size_t l = 0; l < layers; ++l) {
    out[l].expertSeconds = e[l];
    out[l].allToAllSeconds = a[l];
    if (l < stats.size())
      out[l].rankRows = stats[l].rankRows;
  }
  return out;
}

/// Notes, on rank 0, the flags of a resumed run that differ from those the
/// checkpoint's run used.
void noteChangedFlags(const Json &saved, const Json &now) {
  for (auto it = now.begin(); it != now.end(); ++it) {
    auto old = saved.find(it.key());
    if (old != saved.end() && *old != *it)
      std::fprintf(stderr,
                   "note: resuming with %s %s; the checkpoint's run had %s\n",
                   it.key().c_str(), it->dump().c_str(), old->dump().c_str());
  }
}

} // namespace

std::string durationText(double seconds) {
  int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  char text[64];
  if (s < 60)
    std::snprintf(text, sizeof text, "%" PRId64 "s", s);
  else if (s < 3600)
    std::snprintf(text, sizeof text, "%" PRId64 "m%02" PRId64 "s", s / 60,
                  s % 60);
  else
    std::snprintf(text, sizeof text, "%" PRId64 "h%02" PRId64 "m", s / 3600,
                  s / 60 % 60);
  return text;
}

/// Runs the training step on the `o.microBatches` compiled batches of
/// `step` (the rows of one batch that many times larger) and leaves the sum
/// of their gradients in the runner's; returns their mean loss and adds
/// this rank's expert counts of every micro-batch to `counts`. `gradSum`
/// (weights_bytes in the backend's memory) collects the sum when N > 1.
float trainMicroBatches(const Manifest &m, ModelRunner &runner,
                        const Corpus &corpus, const TrainOptions &o,
                        int64_t step, BackendBuffer &gradSum,
                        std::vector<std::vector<int64_t>> &counts) {
  const int64_t n = o.microBatches;
  Batch whole = corpus.trainBatch(o.seed, step, m.batch * n);
  const size_t rows = static_cast<size_t>(m.batch * m.seq);
  rt::Backend &backend = runner.backend();
  double loss = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    auto from = [&](const std::vector<int32_t> &all) {
      return std::vector<int32_t>(all.begin() + k * rows,
                                  all.begin() + (k + 1) * rows);
    };
    loss += runner.trainStep(from(whole.tokens), from(whole.labels));
    const std::vector<std::vector<int64_t>> &mine = runner.expertCounts();
    counts.resize(std::max(counts.size(), mine.size()));
    for (size_t l = 0; l < mine.size(); ++l) {
      counts[l].resize(std::max(counts[l].size(), mine[l].size()), 0);
      for (size_t e = 0; e < mine[l].size(); ++e)
        counts[l][e] += mine[l][e];
    }
    if (n == 1)
      break;
    auto *grads = reinterpret_cast<float *>(runner.grads());
    auto *sum = reinterpret_cast<float *>(gradSum.data());
    if (k == 0) {
      backend.copy(sum, grads, m.weightsBytes);
      continue;
    }
    backend.addF32(sum, grads, sum, static_cast<int64_t>(m.weightsBytes / 4));
  }
  if (n > 1)
    backend.copy(runner.grads(), gradSum.data(), m.weightsBytes);
  return static_cast<float>(loss / static_cast<double>(n));
}

void checkTrainable(const Manifest &m, TrainStepEntry trainStep) {
  if (!trainStep || !m.trainStep)
    throw std::runtime_error("this model was compiled without a training "
                             "step; recompile with moec --train-step");
}

int runTrain(const Manifest &m, const Entries &entries, const TrainOptions &o,
             RankEnv &env) {
  std::optional<Corpus> corpus;
  // Host copies of the training state (loaded, checkpointed and re-placed
  // through them) exist only while in use: a rank's memory is the backend's,
  // what moec --memory-report plans (on the CPU backend a kept copy would
  // double it). The state itself lives there: the runner's weights and
  // gradients, the optimizer's moments.
  AlignedBuffer weights, moment1, moment2;
  TrainState state{&weights, &moment1, &moment2};
  auto allocateState = [&] {
    weights = AlignedBuffer(m.weightsBytes);
    moment1 = AlignedBuffer(m.weightsBytes);
    moment2 = AlignedBuffer(m.weightsBytes);
  };
  auto releaseState = [&] {
    weights = AlignedBuffer();
    moment1 = AlignedBuffer();
    moment2 = AlignedBuffer();
  };
  bool resumed = false;
  std::optional<MetricsWriter> metrics;
  int64_t first = 1;
  Json train = trainJson(o, m);

  env.agreeOnSetup([&] {
    if (o.trace)
      checkTraceTarget(*o.trace, env.rank());
    corpus = o.dataIdBytes
                 ? Corpus::readTokenFile(o.data, o.dataIdBytes, m.vocab, m.seq)
                 : Corpus::readFile(o.data, m.vocabChars, m.seq);
    std::optional<std::string> checkpoint;
    if (o.resume)
      checkpoint = latestCheckpoint(*o.checkpointDir);
    if (checkpoint) {
      resumed = true;
      allocateState();
      LoadedCheckpoint loaded =
          loadCheckpoint(*checkpoint, m, env.placePtr(), state);
      first = loaded.step + 1;
      if (env.root) {
        std::fprintf(stderr, "note: resuming from %s (step %" PRId64 ")\n",
                     checkpoint->c_str(), loaded.step);
        noteChangedFlags(loaded.train, train);
      }
    } else {
      if (o.resume && env.root)
        std::fprintf(stderr,
                     "note: no checkpoint in %s yet: starting from scratch\n",
                     o.checkpointDir->c_str());
      if (!o.source)
        throw std::runtime_error(
            "--resume found no checkpoint in " + *o.checkpointDir +
            "; give --init-random SEED or --weights PATH to start from");
    }
    // The plot is first written at the first evaluation: fail now instead.
    if (env.root && o.plot) {
      std::filesystem::path parent =
          std::filesystem::path(*o.plot).parent_path();
      if (!parent.empty() && !std::filesystem::is_directory(parent))
        throw std::runtime_error("--plot " + *o.plot + ": directory " +
                                 parent.string() + " does not exist");
      if (std::string why = gnuplotProblem(); !why.empty())
        throw std::runtime_error("--plot " + *o.plot + ": " + why);
    }
  });

  // The optimizer reads bf16 gradients directly unless something needs
  // them whole in fp32: the micro-batches' sum, or replicated experts'
  // host reduction.
  const bool fp32Grads =
      !m.bf16Storage() || o.microBatches > 1 || maySpawnReplicas(env);
  ModelRunner runner(m, entries.forward, env, entries.trainStep,
                     entries.evalStep, fp32Grads);
  AdamW adam(m, o.adamw, runner.backend(), env.groups);
  auto pullState = [&] {
    allocateState();
    runner.downloadWeights(weights, 0, weights.size());
    adam.pull(moment1, moment2);
  };
  auto pushState = [&] {
    runner.setWeights(weights);
    adam.push(moment1, moment2);
  };
  // A fresh start's moments are zero, as the backend allocates them, and
  // its weights stream into the runner's a tensor at a time: no host copy
  // of the rank's weights lives beside them. The metrics file is begun once
  // the weights are in, so that a bad weights file leaves none.
  if (resumed)
    pushState();
  releaseState();
  env.agree([&] {
    if (!resumed)
      loadWeightsInto(runner, m, *o.source, env.placePtr());
    if (env.root && o.metrics)
      metrics.emplace(*o.metrics, resumed ? std::optional<int64_t>(first - 1)
                                          : std::nullopt);
  });
  // The replica reduction's host copy of the gradients, kept while some
  // expert has replicas (a re-placement may add or drop them).
  AlignedBuffer grads;
  auto sizeReplicaGrads = [&] {
    grads = hasReplicas(env) ? AlignedBuffer(m.weightsBytes) : AlignedBuffer();
  };
  sizeReplicaGrads();
  const size_t placedLayers = env.place ? env.place->placements.size() : 0;
  std::unique_ptr<rt::PlacementPolicy> placementPolicy;
  if (placedLayers > 0) {
    env.dispatchPolicy = rt::makeDispatchPolicy(o.dispatchPolicy);
    placementPolicy = rt::makePlacementPolicy(o.placementPolicy);
  }
  LoadWindow window;
  // Declared after the runner, whose calls it records while a step is traced.
  std::optional<RunTrace> trace;
  StepWindow traced{1, 0};
  if (o.trace) {
    trace.emplace(*o.trace, env, runner);
    traced = traceWindow(first, o.steps, o.trace->steps);
  }
  auto phase = [&](const char *name, auto &&fn) {
    if (trace)
      trace->phase(name, fn);
    else
      fn();
  };
  // A resumed run's curves go on from the records it kept.
  Curve trainCurve, valCurve;
  if (metrics) {
    trainCurve = metrics->history().train;
    valCurve = metrics->history().validation;
  }
  const int64_t tokensPerStep = m.batch * m.seq * o.microBatches;
  // Gradient accumulation: the sum of the micro-batches' gradients.
  BackendBuffer gradSum;
  if (o.microBatches > 1)
    gradSum = BackendBuffer(runner.backend(), m.weightsBytes);
  double trainSeconds = 0.0, windowSeconds = 0.0;
  int64_t stepsRun = 0, windowSteps = 0;
  Clock::time_point start = Clock::now();
  if (first > o.steps && env.root)
    std::fprintf(stderr,
                 "note: the checkpoint is at step %" PRId64
                 ", --steps is %" PRId64 ": nothing to train\n",
                 first - 1, o.steps);

  int64_t skippedInARow = 0;
  for (int64_t step = first; step <= o.steps; ++step) {
    if (traced.contains(step))
      trace->begin("step " + std::to_string(step), {{"step", step}});
    Clock::time_point stepStart = Clock::now();
    float loss = 0.0f;
    std::vector<std::vector<int64_t>> localCounts;
    phase("train_step", [&] {
      loss = trainMicroBatches(m, runner, *corpus, o, step, gradSum,
                               localCounts);
    });
    if (hasReplicas(env)) {
      // Only the expert weights' gradients travel to the host and back.
      for (const ParamInfo &p : m.params)
        if (p.placement)
          runner.downloadGrads(grads, p.offset, p.bytes());
      reduceReplicaGrads(m, env, grads);
      for (const ParamInfo &p : m.params)
        if (p.placement)
          runner.uploadGrads(grads, p.offset, p.bytes());
    }
    double norm = 0.0, lr = o.schedule.at(step);
    bool skipped = false;
    phase("optimizer", [&] {
      // A non-finite loss on any rank makes the global sum non-finite, so
      // every rank reaches the same verdict without another collective.
      double local =
          adam.localGradNormSquared(runner.gradBlob(), env.placePtr());
      if (!std::isfinite(loss))
        local = std::numeric_limits<double>::quiet_NaN();
      // The gradients hold the micro-batches' sum: the mean is 1/N of it.
      const double mean = 1.0 / static_cast<double>(o.microBatches);
      norm = std::sqrt(sumOverRanks(local, env.world)) * mean;
      skipped = !std::isfinite(norm);
      if (!skipped)
        adam.step(runner.weights(), runner.gradBlob(), lr,
                  clipScale(norm, o.adamw.clip) * static_cast<float>(mean),
                  step, env.placePtr());
    });
    if (skipped) {
      // The weights and moments stay those of the last good step.
      ++skippedInARow;
      if (env.root) {
        std::printf("step %" PRId64 "/%" PRId64 "  loss %.4f  grad-norm %.3f"
                    "  update skipped: not finite (%" PRId64 " in a row)\n",
                    step, o.steps, loss, norm, skippedInARow);
        std::fflush(stdout);
      }
      env.agree([&] {
        if (skippedInARow > o.maxSkippedSteps)
          throw std::runtime_error(
              "step " + std::to_string(step) +
              ": the loss or gradient norm "
              "was not finite for " +
              std::to_string(skippedInARow) +
              " steps in a row (--max-skipped-steps " +
              std::to_string(o.maxSkippedSteps) +
              "): training diverged; the weights are those of step " +
              std::to_string(step - skippedInARow) +
              (o.checkpointDir ? ", the latest checkpoint the last good one"
                               : ""));
      });
    } else {
      skippedInARow = 0;
    }
    bool last = step == o.steps;
    bool logNow = step % o.logEvery == 0 || last;
    bool evalNow = (o.evalEvery > 0 && step % o.evalEvery == 0) || last;
    std::vector<int64_t> dropped = runner.droppedSlots();
    std::vector<std::vector<int64_t>> counts;
    bool replaceNow = o.replaceEvery > 0 && step % o.replaceEvery == 0 &&
                      !last && placedLayers > 0;
    if (logNow || evalNow || o.biasUpdateRate > 0 || o.replaceEvery > 0)
      counts = globalExpertCounts(localCounts, env, m.mesh.sp);
    if (o.biasUpdateRate > 0) {
      // Only the biases travel: a few floats per MoE layer.
      for (const ParamInfo &p : m.params) {
        if (!p.balancesLayer)
          continue;
        std::vector<float> bias(p.numElements());
        runner.downloadWeights(bias.data(), p.offset, p.bytes());
        balanceExpertBias(p, bias.data(), counts, o.biasUpdateRate);
        runner.uploadWeights(bias.data(), p.offset, p.bytes());
      }
    }
    std::vector<ExpertLayerMetrics> expertLayers;
    if (logNow && placedLayers > 0)
      expertLayers = expertLayerMetrics(runner.layerStats(), placedLayers, env);
    if (o.replaceEvery > 0)
      window.add(counts, runner.layerStats());
    if (replaceNow) {
      std::optional<PlacementTables> next =
          nextPlacement(env, *placementPolicy, window);
      bool changed = next.has_value();
      if (changed) {
        // The weights and moments move on the host (rarely: every K steps,
        // and only when the placement changed).
        pullState();
        movePlacedState(m, env, *next, {&weights, &moment1, &moment2});
        pushState();
        releaseState();
        sizeReplicaGrads();
      }
      window = LoadWindow();
      if (changed && env.root) {
        std::vector<std::vector<int32_t>> tables;
        for (const rt::ExpertPlacement &t : env.place->placements)
          tables.push_back(t.slotExperts());
        std::printf("step %" PRId64 "  expert placement changed\n", step);
        std::fflush(stdout);
        if (metrics)
          metrics->logPlacement(step, tables);
      }
    }
    double seconds =
        std::chrono::duration<double>(Clock::now() - stepStart).count();
    trainSeconds += seconds;
    windowSeconds += seconds;
    ++stepsRun;
    ++windowSteps;

    if (logNow && env.root && !skipped) {
      double tokensPerSecond =
          windowSeconds > 0
              ? double(windowSteps * tokensPerStep) / windowSeconds
              : 0.0;
      double eta = trainSeconds / double(stepsRun) * double(o.steps - step);
      std::printf("step %" PRId64 "/%" PRId64
                  "  loss %.4f  lr %.2e  grad-norm %.3f  %s tok/s  ETA %s\n",
                  step, o.steps, loss, lr, norm,
                  withThousands(static_cast<uint64_t>(tokensPerSecond)).c_str(),
                  durationText(eta).c_str());
      std::fflush(stdout);
      trainCurve.emplace_back(double(step), loss);
      if (metrics)
        metrics->logStep(
            {step, loss, lr, norm, tokensPerSecond,
             std::chrono::duration<double>(Clock::now() - start).count(),
             counts, dropped, expertLayers});
    }
    if (logNow) {
      windowSeconds = 0.0;
      windowSteps = 0;
    }

    if (evalNow) {
      double valLoss = 0.0;
      phase("evaluate",
            [&] { valLoss = evaluate(m, *corpus, o.evalBatches, runner); });
      if (env.root) {
        std::printf("eval step %" PRId64 "  val loss %.4f\n", step, valLoss);
        printExpertCounts(counts, dropped);
        valCurve.emplace_back(double(step), valLoss);
        if (metrics)
          metrics->logEval(step, valLoss);
        if (o.plot)
          plotLossCurves(*o.plot, plotTitle(m, o), trainCurve, valCurve);
      }
    }

    if (o.checkpointDir &&
        ((o.saveEvery > 0 && step % o.saveEvery == 0) || last)) {
      phase("checkpoint", [&] {
        pullState();
        saveCheckpoint(*o.checkpointDir, step, m, env, state, train);
        releaseState();
      });
      if (env.root) {
        std::printf("checkpoint %s\n",
                    (*o.checkpointDir + "/" + checkpointName(step)).c_str());
        std::fflush(stdout);
      }
    }

    if (traced.contains(step)) {
      trace->end();
      if (step == traced.last)
        trace->write();
    }
  }
  if (trace)
    trace->write(); // nothing to train: an empty trace

  if (o.sampleChars > 0)
    sample(m, *corpus, o.sampleChars, o.seed, runner, entries, env);
  return 0;
}

int runExport(const Manifest &m, const ParsedFlags &flags) {
  if (!flags.has("checkpoint") || !flags.has("output"))
    throw UsageError("give --checkpoint PATH and --output PATH");
  io::CheckpointLayout layout = checkpointLayoutFromFlags(flags);
  if (launcherRank() > 0)
    return 0; // one writer: rank 0
  int64_t step =
      exportCheckpoint(flags.get("checkpoint"), m, flags.get("output"), layout);
  std::printf("exported step %lld of %s to %s\n", static_cast<long long>(step),
              flags.get("checkpoint").c_str(), flags.get("output").c_str());
  return 0;
}

int runGrad(const Manifest &m, ForwardEntry forward, TrainStepEntry trainStep,
            const ParsedFlags &flags) {
  checkTrainable(m, trainStep);
  if (m.mesh.worldSize() != 1)
    throw UsageError("grad needs a model compiled for one rank; this one is "
                     "compiled for mesh " +
                     m.mesh.str());
  WeightSource source = parseWeightSource(flags, /*allowPath=*/true);
  if (!flags.has("output"))
    throw UsageError("give --output FILE");
  Batch batch = batchFromFlags(m, flags);

  RankEnv env;
  env.backend = backendFromFlags(flags);
  AlignedBuffer grads(m.weightsBytes);
  ModelRunner runner(m, forward, env, trainStep);
  loadWeightsInto(runner, m, source, nullptr);
  float loss = runner.trainStep(batch.tokens, batch.labels);
  runner.downloadGrads(grads, 0, grads.size());
  std::printf("loss %.9g\n", loss);
  std::vector<io::TensorToWrite> tensors = hfTensors(m, grads);
  tensors.push_back({"loss", io::DType::F32, {}, &loss});
  io::writeSafetensors(flags.get("output"), tensors, {{"format", "pt"}});
  return 0;
}

} // namespace moe::driver
