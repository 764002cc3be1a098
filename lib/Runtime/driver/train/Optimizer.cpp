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
/// elements [first, first + elements) of `param`'s gradient, over
/// `replicas`.
struct NormTerm {
  const ParamInfo *param;
  int64_t first;
  int64_t elements;
  double replicas;
};

std::vector<NormTerm> normTerms(const Manifest &m, const RankPlace *place) {
  std::vector<NormTerm> terms;
  for (const ParamInfo &param : m.params) {
    if (param.numElements() == 0)
      continue; // adds nothing (and a device kernel would get no blocks)
    if (!param.placement || !place) {
      terms.push_back({&param, 0, param.numElements(),
                       static_cast<double>(paramReplicas(param, m.mesh))});
      continue;
    }
    // Expert slots: each expert's replicas share its part of the norm.
    std::vector<int64_t> holders = slotHolders(param, *place);
    int64_t slice = param.numElements() / param.shape[0];
    for (size_t l = 0; l < holders.size(); ++l)
      if (holders[l] > 0)
        terms.push_back({&param, static_cast<int64_t>(l) * slice, slice,
                         static_cast<double>(holders[l])});
  }
  return terms;
}

} // namespace

double localGradNormSquared(const Manifest &m, const AlignedBuffer &grads,
                            const RankPlace *place) {
  double total = 0.0;
  for (const NormTerm &term : normTerms(m, place))
    total += cpu::sumSquares(grads.f32(term.param->offset) + term.first,
                             term.elements) /
             term.replicas;
  return total;
}

const float *AdamW::fp32Grads(GradBlob grads, const ParamInfo &param,
                              int64_t first, int64_t count) {
  if (!grads.bf16)
    return f32At(grads.data, param.offset) + first;
  uint64_t bytes = static_cast<uint64_t>(count) * sizeof(float);
  if (widened_.size() < bytes)
    widened_ = BackendBuffer(backend_, bytes);
  auto *out = reinterpret_cast<float *>(widened_.data());
  backend_.convert(out, rt::StorageType::F32,
                   grads.data + param.storageOffset +
                       static_cast<uint64_t>(first) * sizeof(uint16_t),
                   rt::StorageType::BF16, count);
  return out;
}

double AdamW::localGradNormSquared(GradBlob grads, const RankPlace *place) {
  // Under bf16 a term is widened a chunk at a time, each chunk its own sum.
  std::vector<NormTerm> terms;
  for (const NormTerm &term : normTerms(manifest_, place)) {
    int64_t chunk = grads.bf16 ? moe::kGradChunkElements : term.elements;
    for (int64_t first = 0; first < term.elements; first += chunk)
      terms.push_back({term.param, term.first + first,
                       std::min(chunk, term.elements - first), term.replicas});
  }
  size_t bytes = terms.size() * sizeof(double);
  if (sums_.size() < bytes)
    sums_ = BackendBuffer(backend_, bytes);
  auto *out = reinterpret_cast<double *>(sums_.data());
  for (size_t i = 0; i < terms.size(); ++i)
    backend_.sumSquares(
        fp32Grads(grads, *terms[i].param, terms[i].first, terms[i].elements),
        out + i, terms[i].elements);
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

std::vector<moe::ParamBlock> paramBlocks(const Manifest &m) {
  std::vector<moe::ParamBlock> blocks;
  for (const ParamInfo &param : m.params)
    blocks.push_back({param.numElements(), moe::optimizerShardGroup(param.split)});
  return blocks;
}

AdamW::AdamW(const Manifest &m, const AdamWConfig &config, rt::Backend &backend,
             rt::MeshGroups *groups, uint64_t gatherScratchBytes)
    : manifest_(m), config_(config), backend_(backend),
      gatherScratchBytes_(gatherScratchBytes) {
  std::vector<moe::ParamBlock> blocks = paramBlocks(m);
  std::vector<moe::MomentSlot> slots;
  if (m.zeroStage >= 1)
    slots = moe::momentSlots(blocks, m.mesh);
  for (size_t i = 0; i < m.params.size(); ++i) {
    const ParamInfo &param = m.params[i];
    Slice s;
    s.param = &param;
    s.end = param.numElements();
    s.offset = param.offset;
    if (m.zeroStage >= 1) {
      int64_t ranks = slots[i].ranks;
      s.slice = slots[i].slice;
      s.offset = slots[i].offset;
      if (ranks > 1) {
        if (!groups)
          throw std::logic_error("AdamW: ZeRO needs the mesh groups");
        s.group = blocks[i].group == moe::ShardGroup::ExpertDataParallel
                      ? groups->edp.get()
                      : groups->dpCp.get();
        if (s.group->size() != ranks)
          throw std::logic_error("AdamW: a ZeRO group of another size");
        s.begin = std::min(s.end, s.group->rank() * s.slice);
        s.end = std::min(s.end, s.begin + s.slice);
        size_t piece =
            static_cast<size_t>(moe::gatherPieceElements(
                s.slice, ranks, gatherScratchBytes_));
        send_.resize(std::max(send_.size(), piece));
        received_.resize(std::max(received_.size(), piece * ranks));
      }
    }
    slices_.push_back(s);
  }
  uint64_t bytes =
      m.zeroStage >= 1
          ? moe::momentFootprint(blocks, m.mesh, m.zeroStage).momentBytes
          : m.weightsBytes;
  m_ = BackendBuffer(backend, bytes);
  v_ = BackendBuffer(backend, bytes);
}

void AdamW::checkBlobs(const AlignedBuffer &m, const AlignedBuffer &v) const {
  if (m.size() != manifest_.weightsBytes || v.size() != manifest_.weightsBytes)
    throw std::logic_error("AdamW: host moments of another size");
}

void AdamW::gatherSlice(
    const Slice &s, const uint8_t *local,
    const std::function<void(int64_t, const float *, int64_t)> &deliver) {
  const int64_t ranks = s.group->size(), elements = s.param->numElements();
  const int64_t piece =
      moe::gatherPieceElements(s.slice, ranks, gatherScratchBytes_);
  const int64_t held = s.end - s.begin;
  for (int64_t at = 0; at < s.slice; at += piece) {
    // Elements [at, at + count) of every rank's slice; past a slice's end
    // (the last ranks' may be short or empty) the piece is padding.
    int64_t count = std::min(piece, s.slice - at);
    int64_t mine = std::clamp<int64_t>(held - at, 0, count);
    std::fill(send_.begin() + mine, send_.begin() + count, 0.0f);
    if (mine > 0)
      backend_.download(send_.data(), local + at * sizeof(float),
                        static_cast<size_t>(mine) * sizeof(float));
    s.group->allGather(send_.data(), received_.data(), count,
                       rt::CommDType::F32);
    for (int64_t r = 0; r < ranks; ++r) {
      int64_t first = r * s.slice + at;
      int64_t real = std::clamp<int64_t>(elements - first, 0, count);
      if (real > 0)
        deliver(first, received_.data() + r * count, real);
    }
  }
}

void AdamW::pull(AlignedBuffer &m, AlignedBuffer &v) {
  checkBlobs(m, v);
  for (const Slice &s : slices_)
    for (auto [host, moment] : {std::pair{&m, &m_}, std::pair{&v, &v_}}) {
      float *whole = host->f32(s.param->offset);
      if (s.group)
        gatherSlice(s, moment->data() + s.offset,
                    [&](int64_t first, const float *data, int64_t count) {
                      std::copy_n(data, count, whole + first);
                    });
      else
        backend_.download(whole, moment->data() + s.offset,
                          s.param->bytes());
    }
}

void AdamW::push(const AlignedBuffer &m, const AlignedBuffer &v) {
  checkBlobs(m, v);
  for (const Slice &s : slices_)
    for (auto [host, moment] : {std::pair{&m, &m_}, std::pair{&v, &v_}})
      backend_.upload(moment->data() + s.offset,
                      host->f32(s.param->offset) + s.begin,
                      static_cast<size_t>(s.end - s.begin) * sizeof(float));
}

void AdamW::step(uint8_t *weights, GradBlob grads, double lr, float gradScale,
                 int64_t step, const RankPlace *place) {
  // Elements [from, to) of the block of `s` (under bf16 gradients a chunk
  // at a time: the update is elementwise).
  auto update = [&](const Slice &s, int64_t from, int64_t to) {
    from = std::max(from, s.begin);
    to = std::min(to, s.end);
    int64_t chunk = grads.bf16 ? moe::kGradChunkElements : to - from;
    for (; from < to; from += chunk) {
      int64_t count = std::min(chunk, to - from);
      uint64_t at =
          s.param->offset + static_cast<uint64_t>(from) * sizeof(float);
      uint64_t moment =
          s.offset + static_cast<uint64_t>(from - s.begin) * sizeof(float);
      bool matrix = s.param->sliceShape().size() >= 2;
      backend_.adamw(
          f32At(weights, at), fp32Grads(grads, *s.param, from, count),
          f32At(m_.data(), moment), f32At(v_.data(), moment), count,
          static_cast<float>(lr), static_cast<float>(config_.beta1),
          static_cast<float>(config_.beta2), static_cast<float>(config_.eps),
          matrix ? static_cast<float>(config_.weightDecay) : 0.0f, gradScale,
          step);
    }
  };
  for (const Slice &s : slices_) {
    const ParamInfo &param = *s.param;
    if (param.numElements() == 0)
      continue;
    if (!param.placement || !place) {
      update(s, 0, param.numElements());
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
      update(s, static_cast<int64_t>(l) * slice,
             static_cast<int64_t>(end) * slice);
      l = end;
    }
  }
  // Every replica takes the others' updated slices: afterwards the block is
  // the same on all of them, as without ZeRO.
  for (const Slice &s : slices_) {
    if (!s.group)
      continue;
    uint8_t *block = weights + s.param->offset;
    gatherSlice(s, block + s.begin * sizeof(float),
                [&](int64_t first, const float *data, int64_t count) {
                  backend_.upload(block + first * sizeof(float), data,
                                  static_cast<size_t>(count) * sizeof(float));
                });
  }
}

} // namespace moe::driver
