//===- MemoryReport.cpp - The bytes one rank holds to run a model ---------===//

#include "moe/Support/MemoryReport.h"
#include "moe/Support/OptimizerShards.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace moe {

namespace {

// Saturating: a report of an absurd model says "16.0 EiB", never wraps.
uint64_t add(uint64_t a, uint64_t b) {
  uint64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? UINT64_MAX : sum;
}
uint64_t mul(uint64_t a, uint64_t b) {
  uint64_t product;
  return __builtin_mul_overflow(a, b, &product) ? UINT64_MAX : product;
}

} // namespace

RankMemory rankMemory(const RankProgram &p) {
  RankMemory m;
  m.weights = p.weightsBytes;
  // The fp32 master copy exists under bf16 storage whether or not it trains.
  uint64_t master = p.bf16 ? p.fp32WeightsBytes : 0;
  if (p.trains) {
    if (!p.bf16)
      m.gradients = p.fp32WeightsBytes;
    else if (p.fp32Grads)
      m.gradients = add(p.weightsBytes, p.fp32WeightsBytes);
    else
      m.gradients = add(p.weightsBytes,
                        mul(4, std::min<uint64_t>(p.largestParamElements,
                                                  moe::kGradChunkElements)));
    m.optimizer = add(master, mul(2, p.momentBytes));
  } else {
    m.optimizer = master;
  }
  uint64_t logits = mul(p.logitsElements, p.bf16 ? 4 + 2 : 4);
  uint64_t inputs = add(mul(2 * 4, p.inputElements), 4); // and the loss
  m.activationsForward = add(p.forwardArenaBytes, add(logits, inputs));
  m.comm = p.forwardCommBytes;
  if (p.trains) {
    // The runner's one arena fits every entry it may call; a training run
    // that evaluates with the evaluation step never holds the logits, nor
    // gathers them.
    uint64_t arena = std::max(p.forwardArenaBytes, p.trainArenaBytes);
    if (p.evaluates)
      arena = std::max(arena, p.evalArenaBytes);
    m.activationsTrain = add(arena, p.evaluates ? inputs : add(logits, inputs));
    m.comm = std::max({p.evaluates ? p.evalCommBytes : p.forwardCommBytes,
                       p.trainCommBytes, p.shardGatherBytes});
  }
  m.total = add(add(add(m.weights, m.gradients), add(m.optimizer, m.comm)),
                p.trains ? m.activationsTrain : m.activationsForward);
  return m;
}

std::string formatBytes(uint64_t bytes) {
  static const char *const units[] = {"B",   "KiB", "MiB", "GiB",
                                      "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 6) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  if (unit == 0)
    std::snprintf(text, sizeof text, "%llu B",
                  static_cast<unsigned long long>(bytes));
  else
    std::snprintf(text, sizeof text,
                  value >= 100  ? "%.0f %s"
                  : value >= 10 ? "%.1f %s"
                                : "%.2f %s",
                  value, units[unit]);
  return text;
}

} // namespace moe
