//===- Optimizer.cpp - Learning rate, clipping and AdamW ------------------===//

#include "driver/train/Optimizer.h"

#include "driver/model/Placement.h"

#include "moe/Runtime/CpuKernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::driver {

double LrSchedule::at(int64_t step) const {
  if (step <= warmup)
    return lr * static_cast<double>(step) / static_cast<double>(warmup);
  if (steps <= warmup)
    return lr;
  double progress =
      static_cast<double>(step - warmup) / static_cast<double>(steps - warmup);
  progress = std::min(progress, 1.0);
  const double pi = 3.14159265358979323846;
  return minLr + (lr - minLr) * 0.5 * (1.0 + std::cos(pi * progress));
}

int64_t paramReplicas(const ParamInfo &param, const MeshShape &mesh) {
  int64_t blocks = 1;
  for (const std::vector<std::string> &axes : param.split)
    blocks *= splitParts(axes, mesh);
  return mesh.worldSize() / blocks;
}

namespace {

float *f32At(uint8_t *blob, uint64_t offset) {
  return reinterpret_cast<float *>(blob + offset);
}
const float *f32At(const uint8_t *blob, uint64_t offset) {
  return reinterpret_cast<const float *>(blob + offset);
}

/// One term of a rank's squared gradient norm: the sum of squares of
/// `elements` floats at byte `offset` of the gradients, over `replicas`.
struct NormTerm {
  uint64_t offset;
  int64_t elements;
  double replicas;
};

std::vector<NormTerm> normTerms(const Manifest &m, const RankPlace *place) {
  std::vector<NormTerm> terms;
  for (const ParamInfo &param : m.params) {
    if (param.numElements() == 0)
      continue; // adds nothing (and a device kernel would get no blocks)
    if (!param.placement || !place) {
      terms.push_back({param.offset, param.numElements(),
                       static_cast<double>(paramReplicas(param, m.mesh))});
      continue;
    }
    // Expert slots: each expert's replicas share its part of the norm.
    std::vector<int64_t> holders = slotHolders(param, *place);
    int64_t slice = param.numElements() / param.shape[0];
    for (size_t l = 0; l < holders.size(); ++l)
      if (holders[l] > 0)
        terms.push_back({param.offset + l * slice * sizeof(float), slice,
                         static_cast<double>(holders[l])});
  }
  return terms;
}

} // namespace

double localGradNormSquared(const Manifest &m, const AlignedBuffer &grads,
                            const RankPlace *place) {
  double total = 0.0;
  for (const NormTerm &term : normTerms(m, place))
    total +=
        cpu::sumSquares(grads.f32(term.offset), term.elements) / term.replicas;
  return total;
}

double AdamW::localGradNormSquared(const uint8_t *grads,
                                   const RankPlace *place) {
  std::vector<NormTerm> terms = normTerms(manifest_, place);
  size_t bytes = terms.size() * sizeof(double);
  if (sums_.size() < bytes)
    sums_ = BackendBuffer(backend_, bytes);
  auto *out = reinterpret_cast<double *>(sums_.data());
  for (size_t i = 0; i < terms.size(); ++i)
    backend_.sumSquares(f32At(grads, terms[i].offset), out + i,
                        terms[i].elements);
  std::vector<double> host(terms.size());
  backend_.download(host.data(), out, bytes);
  double total = 0.0;
  for (size_t i = 0; i < terms.size(); ++i)
    total += host[i] / terms[i].replicas;
  return total;
}

double sumOverRanks(double value, rt::Communicator *world) {
  if (!world)
    return value;
  // No f64 collective: gather the bits and add them up in rank order.
  int64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  std::vector<int64_t> all(world->size());
  world->allGather(&bits, all.data(), 1, rt::CommDType::I64);
  double sum = 0.0;
  for (int64_t b : all) {
    double x;
    std::memcpy(&x, &b, sizeof x);
    sum += x;
  }
  return sum;
}

float clipScale(double norm, double clip) {
  if (clip <= 0.0)
    return 1.0f;
  return static_cast<float>(std::min(1.0, clip / (norm + 1e-6)));
}

void balanceExpertBias(const ParamInfo &param, float *bias,
                       const std::vector<std::vector<int64_t>> &counts,
                       double rate) {
  size_t layer = static_cast<size_t>(*param.balancesLayer);
  if (layer >= counts.size() ||
      static_cast<int64_t>(counts[layer].size()) != param.numElements())
    throw std::runtime_error(
        param.name + " balances MoE layer " + std::to_string(layer) +
        ", but the step reported " + std::to_string(counts.size()) +
        " layers of expert counts" +
        (layer < counts.size()
             ? " (" + std::to_string(counts[layer].size()) + " experts there)"
             : std::string()));
  const std::vector<int64_t> &load = counts[layer];
  int64_t total = 0;
  for (int64_t c : load)
    total += c;
  // Compare c * E with the total rather than c with a rounded mean.
  int64_t experts = static_cast<int64_t>(load.size());
  for (int64_t e = 0; e < experts; ++e) {
    int64_t scaled = load[e] * experts;
    if (scaled < total)
      bias[e] += static_cast<float>(rate);
    else if (scaled > total)
      bias[e] -= static_cast<float>(rate);
  }
}

AdamW::AdamW(const Manifest &m, const AdamWConfig &config, rt::Backend &backend)
    : manifest_(m), config_(config), backend_(backend),
      m_(backend, m.weightsBytes), v_(backend, m.weightsBytes) {}

void AdamW::checkBlobs(const AlignedBuffer &m, const AlignedBuffer &v) const {
  if (m.size() != m_.size() || v.size() != v_.size())
    throw std::logic_error("AdamW: host moments of another size");
}

void AdamW::pull(AlignedBuffer &m, AlignedBuffer &v) {
  checkBlobs(m, v);
  backend_.download(m.data(), m_.data(), m_.size());
  backend_.download(v.data(), v_.data(), v_.size());
}

void AdamW::push(const AlignedBuffer &m, const AlignedBuffer &v) {
  checkBlobs(m, v);
  backend_.upload(m_.data(), m.data(), m_.size());
  backend_.upload(v_.data(), v.data(), v_.size());
}

void AdamW::step(uint8_t *weights, const uint8_t *grads, double lr,
                 float gradScale, int64_t step, const RankPlace *place) {
  auto update = [&](const ParamInfo &param, uint64_t offset, int64_t elements) {
    bool matrix = param.sliceShape().size() >= 2;
    backend_.adamw(f32At(weights, offset), f32At(grads, offset),
                   f32At(m_.data(), offset), f32At(v_.data(), offset), elements,
                   static_cast<float>(lr), static_cast<float>(config_.beta1),
                   static_cast<float>(config_.beta2),
                   static_cast<float>(config_.eps),
                   matrix ? static_cast<float>(config_.weightDecay) : 0.0f,
                   gradScale, step);
  };
  for (const ParamInfo &param : manifest_.params) {
    if (param.numElements() == 0)
      continue;
    if (!param.placement || !place) {
      update(param, param.offset, param.numElements());
      continue;
    }
    // One update per run of occupied slots.
    std::vector<int32_t> experts = slotExperts(param, *place);
    int64_t slice = param.numElements() / param.shape[0];
    size_t l = 0;
    while (l < experts.size()) {
      if (experts[l] < 0) {
        ++l;
        continue;
      }
      size_t end = l;
      while (end < experts.size() && experts[end] >= 0)
        ++end;
      update(param, param.offset + l * slice * sizeof(float),
             static_cast<int64_t>(end - l) * slice);
      l = end;
    }
  }
}

} // namespace moe::driver
