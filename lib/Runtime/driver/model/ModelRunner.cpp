//===- ModelRunner.cpp - One rank's context, arena and entry calls --------===//
//
// The ModelRunner of ModelRun.h: the runtime context on the rank's backend,
// the arena, the weights (and gradients) in backend memory, and the calls of
// the compiled entry points with the rank's inputs; BackendBuffer, the
// backend memory it owns.
//
//===----------------------------------------------------------------------===//

#include "driver/model/ModelRun.h"

#include "moe/Runtime/RunContext.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace moe::driver {

BackendBuffer::BackendBuffer(rt::Backend &backend, uint64_t bytes)
    : backend_(&backend), ptr_(backend.allocate(bytes)), bytes_(bytes) {}

BackendBuffer::~BackendBuffer() {
  if (backend_ && ptr_) {
    try {
      backend_->release(ptr_);
    } catch (...) {
      // A device fault already reported elsewhere: nothing to free.
    }
  }
}

BackendBuffer::BackendBuffer(BackendBuffer &&other) noexcept
    : backend_(std::exchange(other.backend_, nullptr)),
      ptr_(std::exchange(other.ptr_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

BackendBuffer &BackendBuffer::operator=(BackendBuffer &&other) noexcept {
  if (this != &other) {
    BackendBuffer old(std::move(*this));
    backend_ = std::exchange(other.backend_, nullptr);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

ModelRunner::ModelRunner(const Manifest &manifest, ForwardEntry forward,
                         const RankEnv &env, TrainStepEntry trainStep,
                         EvalStepEntry evalStep, bool fp32Grads)
    : manifest_(manifest), forward_(forward), trainStep_(trainStep),
      evalStep_(evalStep && manifest.evalStep ? evalStep : nullptr), env_(env),
      context_(moert_context_create(), &moert_context_destroy) {
  if (!context_)
    throw std::runtime_error("cannot create the runtime context");
  rt::setMeshGroups(context_.get(), env.groups);
  rt::setDeviceMeshGroups(context_.get(), env.deviceGroups);
  if (env.backend != "cpu")
    rt::setBackend(context_.get(), rt::makeBackend(env.backend, env.device));
  backend_ = &rt::backendOf(context_.get());
  uint64_t arenaBytes = manifest.arenaBytes;
  if (trainStep && manifest.trainStep)
    arenaBytes = std::max(arenaBytes, manifest.trainStep->arenaBytes);
  if (evalStep_)
    arenaBytes = std::max(arenaBytes, manifest.evalStep->arenaBytes);
  arena_ = BackendBuffer(*backend_, arenaBytes);
  weights_ = BackendBuffer(*backend_, manifest.weightsBytes);
  // Under bf16 storage the step's bf16 gradients may be all there is.
  if (trainStep && manifest.trainStep && (fp32Grads || !manifest.bf16Storage()))
    grads_ = BackendBuffer(*backend_, manifest.weightsBytes);
  if (manifest.bf16Storage()) {
    storedWeights_ = BackendBuffer(*backend_, manifest.storageWeightsBytes);
    if (trainStep && manifest.trainStep)
      storedGrads_ = BackendBuffer(*backend_, manifest.storageWeightsBytes);
  }
  if (backend_->deviceMemory()) {
    uint64_t inputBytes = localInputElements() * sizeof(int32_t);
    deviceTokens_ = BackendBuffer(*backend_, inputBytes);
    deviceLabels_ = BackendBuffer(*backend_, inputBytes);
    deviceLoss_ = BackendBuffer(*backend_, sizeof(float));
  }
}

void ModelRunner::ensureLogits() {
  if (logits_.size() > 0)
    return;
  // The whole logits, on every rank: only a forward run needs them, so a
  // training run that evaluates with the evaluation step never holds them.
  uint64_t bytes = static_cast<uint64_t>(numLogits()) * sizeof(float);
  logits_ = AlignedBuffer(bytes);
  if (manifest_.bf16Storage())
    storedLogits_ = BackendBuffer(*backend_, bytes / 2);
  if (backend_->deviceMemory())
    deviceLogits_ = BackendBuffer(*backend_, bytes);
}

uint64_t ModelRunner::localInputElements() const {
  uint64_t n = 1;
  for (int64_t d : manifest_.inputs[0].shape)
    n *= static_cast<uint64_t>(d);
  return n;
}

void ModelRunner::check() {
  expertCounts_ = rt::takeExpertCounts(context_.get());
  droppedSlots_ = rt::takeDroppedSlots(context_.get());
  layerStats_ = rt::takeLayerStats(context_.get());
  // A recomputing training step routes each block again: its first calls
  // are the forward's, the rest repeat them.
  auto firstPass = [](auto &calls, int64_t n) {
    if (n >= 0 && calls.size() > static_cast<size_t>(n))
      calls.resize(static_cast<size_t>(n));
  };
  firstPass(expertCounts_, manifest_.forwardPermutes);
  firstPass(droppedSlots_, manifest_.forwardDrops);
  if (const char *error = moert_context_error(context_.get()))
    throw std::runtime_error(error);
}

void ModelRunner::setTracer(rt::Tracer *tracer) {
  rt::setTracer(context_.get(), tracer);
}

void ModelRunner::checkRange(uint64_t offset, uint64_t bytes,
                             const AlignedBuffer &host,
                             const BackendBuffer &mine) const {
  if (host.size() != mine.size())
    throw std::logic_error("ModelRunner: a copy outside the weights blob");
  checkRange(offset, bytes, mine);
}

void ModelRunner::checkRange(uint64_t offset, uint64_t bytes,
                             const BackendBuffer &mine) const {
  if (offset > mine.size() || bytes > mine.size() - offset)
    throw std::logic_error("ModelRunner: a copy outside the weights blob");
}

void ModelRunner::setWeights(const AlignedBuffer &weights) {
  uploadWeights(weights, 0, weights.size());
}

void ModelRunner::downloadWeights(AlignedBuffer &host, uint64_t offset,
                                  uint64_t bytes) {
  checkRange(offset, bytes, host, weights_);
  backend_->download(host.data() + offset, weights_.data() + offset, bytes);
}

void ModelRunner::uploadWeights(const AlignedBuffer &host, uint64_t offset,
                                uint64_t bytes) {
  checkRange(offset, bytes, host, weights_);
  backend_->upload(weights_.data() + offset, host.data() + offset, bytes);
  storedStale_ = true;
}

void ModelRunner::downloadWeights(void *host, uint64_t offset, uint64_t bytes) {
  checkRange(offset, bytes, weights_);
  backend_->download(host, weights_.data() + offset, bytes);
}

void ModelRunner::uploadWeights(const void *host, uint64_t offset,
                                uint64_t bytes) {
  checkRange(offset, bytes, weights_);
  backend_->upload(weights_.data() + offset, host, bytes);
  storedStale_ = true;
}

void ModelRunner::downloadGrads(AlignedBuffer &host, uint64_t offset,
                                uint64_t bytes) {
  checkRange(offset, bytes, host, grads_);
  backend_->download(host.data() + offset, grads_.data() + offset, bytes);
}

void ModelRunner::uploadGrads(const AlignedBuffer &host, uint64_t offset,
                              uint64_t bytes) {
  checkRange(offset, bytes, host, grads_);
  backend_->upload(grads_.data() + offset, host.data() + offset, bytes);
}

void ModelRunner::convertParams(uint8_t *fp32, uint8_t *stored,
                                bool toStorage) {
  for (const ParamInfo &p : manifest_.params) {
    if (toStorage)
      backend_->convert(stored + p.storageOffset, rt::StorageType::BF16,
                        fp32 + p.offset, rt::StorageType::F32, p.numElements());
    else
      backend_->convert(fp32 + p.offset, rt::StorageType::F32,
                        stored + p.storageOffset, rt::StorageType::BF16,
                        p.numElements());
  }
}

uint8_t *ModelRunner::entryWeights() {
  if (!manifest_.bf16Storage())
    return weights_.data();
  // The master weights may have changed since the last call (an optimizer
  // step, a load, a re-placement): round them again.
  if (storedStale_)
    convertParams(weights_.data(), storedWeights_.data(), /*toStorage=*/true);
  storedStale_ = false;
  return storedWeights_.data();
}

GradBlob ModelRunner::gradBlob() const {
  if (grads_.size() > 0 || !manifest_.bf16Storage())
    return {grads_.data(), false};
  return {storedGrads_.data(), true};
}

void ModelRunner::widenGrads() {
  if (manifest_.bf16Storage() && grads_.size() > 0)
    convertParams(grads_.data(), storedGrads_.data(), /*toStorage=*/false);
}

ModelRunner::EntryArgs ModelRunner::prepare(const std::vector<int32_t> &tokens,
                                            const std::vector<int32_t> &labels,
                                            bool zeroGrads) {
  localTokens_ = localInput(manifest_.inputs[0], tokens, env_);
  localLabels_ = localInput(manifest_.inputs[1], labels, env_);
  rt::clearExpertCounts(context_.get());
  if (env_.place)
    for (size_t l = 0; l < env_.place->placements.size(); ++l)
      rt::setExpertPlacement(context_.get(), static_cast<int64_t>(l),
                             env_.place->placements[l]);
  rt::setDispatchPolicy(context_.get(), env_.dispatchPolicy);
  // The training step writes only the slots of the parameters the loss
  // depends on: the others must read zero.
  if (zeroGrads) {
    if (grads_.size() > 0)
      backend_->zero(grads_.data(), grads_.size());
    if (manifest_.bf16Storage())
      backend_->zero(storedGrads_.data(), storedGrads_.size());
  }
  // Under bf16 storage the logits come in bf16 and are widened after; only
  // a forward run has them.
  float *logits = manifest_.bf16Storage() && logits_.size() > 0
                      ? reinterpret_cast<float *>(storedLogits_.data())
                      : nullptr;
  if (!backend_->deviceMemory())
    return {localTokens_.data(), localLabels_.data(),
            logits ? logits : logits_.f32(), &loss_};
  backend_->upload(deviceTokens_.data(), localTokens_.data(),
                   localTokens_.size() * sizeof(int32_t));
  backend_->upload(deviceLabels_.data(), localLabels_.data(),
                   localLabels_.size() * sizeof(int32_t));
  return {reinterpret_cast<const int32_t *>(deviceTokens_.data()),
          reinterpret_cast<const int32_t *>(deviceLabels_.data()),
          logits ? logits : reinterpret_cast<float *>(deviceLogits_.data()),
          reinterpret_cast<float *>(deviceLoss_.data())};
}

void ModelRunner::run(const std::vector<int32_t> &tokens,
                      const std::vector<int32_t> &labels) {
  ensureLogits();
  EntryArgs args = prepare(tokens, labels, /*zeroGrads=*/false);
  forward_(context_.get(), entryWeights(), arena_.data(), args.tokens,
           args.labels, args.logits, args.loss);
  if (!moert_context_error(context_.get())) {
    float *logits = args.logits;
    if (manifest_.bf16Storage()) {
      // Widened in backend memory (the host's own on the CPU).
      logits = backend_->deviceMemory()
                   ? reinterpret_cast<float *>(deviceLogits_.data())
                   : logits_.f32();
      backend_->convert(logits, rt::StorageType::F32, args.logits,
                        rt::StorageType::BF16, numLogits());
    }
    if (backend_->deviceMemory()) {
      backend_->download(logits_.data(), logits, logits_.size());
      backend_->download(&loss_, args.loss, sizeof(float));
    }
  }
  check();
}

const float *ModelRunner::generate(const GenerationInfo &info,
                                   GenerationEntry entry,
                                   const std::vector<int32_t> &tokens,
                                   const std::vector<int32_t> &positions) {
  uint64_t n = static_cast<uint64_t>(info.sequences * info.newTokens);
  if (tokens.size() != n || positions.size() != n)
    throw std::logic_error("ModelRunner::generate: inputs of another shape");
  for (int32_t p : positions)
    if (p < 0 || p >= info.cacheLen)
      throw std::logic_error("ModelRunner::generate: a position outside "
                             "the cache");
  // Decode and prefill share one cache; each gets its own arena when it
  // is larger than the runner's.
  if (cache_.size() == 0)
    cache_ = BackendBuffer(*backend_, info.cacheBytes);
  uint8_t *arena = arena_.data();
  if (info.arenaBytes > arena_.size()) {
    if (generationArena_.size() < info.arenaBytes)
      generationArena_ = BackendBuffer(*backend_, info.arenaBytes);
    arena = generationArena_.data();
  }
  uint64_t elements = n * static_cast<uint64_t>(manifest_.vocab);
  uint64_t floatBytes = elements * sizeof(float);
  // Under bf16 storage the entry's bf16 logits, then (aligned) their fp32
  // widening.
  uint64_t storedBytes =
      manifest_.bf16Storage() ? (elements * 2 + 63) / 64 * 64 : floatBytes;
  uint64_t widenedBytes = manifest_.bf16Storage() ? floatBytes : 0;
  if (hostGenerationLogits_.size() < floatBytes)
    hostGenerationLogits_ = AlignedBuffer(floatBytes);
  if (generationLogits_.size() < storedBytes + widenedBytes)
    generationLogits_ = BackendBuffer(*backend_, storedBytes + widenedBytes);
  if (generationInputs_.size() < 2 * n * sizeof(int32_t))
    generationInputs_ = BackendBuffer(*backend_, 2 * n * sizeof(int32_t));
  auto *inputs = reinterpret_cast<int32_t *>(generationInputs_.data());
  backend_->upload(inputs, tokens.data(), n * sizeof(int32_t));
  backend_->upload(inputs + n, positions.data(), n * sizeof(int32_t));
  rt::clearExpertCounts(context_.get());
  auto *stored = reinterpret_cast<float *>(generationLogits_.data());
  entry(context_.get(), entryWeights(), arena, cache_.data(), inputs,
        inputs + n, stored);
  if (!moert_context_error(context_.get())) {
    float *logits = stored;
    if (manifest_.bf16Storage()) {
      logits =
          reinterpret_cast<float *>(generationLogits_.data() + storedBytes);
      backend_->convert(logits, rt::StorageType::F32, stored,
                        rt::StorageType::BF16, elements);
    }
    backend_->download(hostGenerationLogits_.data(), logits, floatBytes);
  }
  check();
  return hostGenerationLogits_.f32();
}

float ModelRunner::evalLoss(const std::vector<int32_t> &tokens,
                            const std::vector<int32_t> &labels) {
  if (!evalStep_) {
    run(tokens, labels);
    return loss_;
  }
  EntryArgs args = prepare(tokens, labels, /*zeroGrads=*/false);
  evalStep_(context_.get(), entryWeights(), arena_.data(), args.tokens,
            args.labels, args.loss);
  if (!moert_context_error(context_.get()) && backend_->deviceMemory())
    backend_->download(&loss_, args.loss, sizeof(float));
  check();
  return loss_;
}

float ModelRunner::trainStep(const std::vector<int32_t> &tokens,
                             const std::vector<int32_t> &labels) {
  if (!trainStep_ || !manifest_.trainStep)
    throw std::logic_error("ModelRunner: no training step");
  EntryArgs args = prepare(tokens, labels, /*zeroGrads=*/true);
  trainStep_(context_.get(), entryWeights(), arena_.data(),
             manifest_.bf16Storage() ? storedGrads_.data() : grads_.data(),
             args.tokens, args.labels, args.loss);
  if (!moert_context_error(context_.get())) {
    widenGrads();
    if (backend_->deviceMemory())
      backend_->download(&loss_, args.loss, sizeof(float));
  }
  check();
  return loss_;
}

} // namespace moe::driver
