//===- KernelTypes.h - Types every backend's kernels share ------*- C++ -*-===//
//
// Backend-neutral: the router's attributes and the id of a dropped slot,
// used alike by the CPU kernels (CpuKernels.h), the CUDA kernels
// (lib/Runtime/cuda) and the Backend interface between them and the C API.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_KERNELTYPES_H
#define MOE_RUNTIME_KERNELTYPES_H

#include <cstdint>
#include <string>

namespace moe {

/// The attributes of moe.router.
struct RouterConfig {
  int64_t experts = 0;
  int64_t topK = 1;
  bool sigmoid = false; ///< sigmoid scores instead of softmax
  bool normTopkProb = false;
  float routeScale = 1.0f;
  int64_t nGroup = 1;
  int64_t topkGroup = 1;
  /// A group's score sums its groupTop highest selection scores: 2
  /// (DeepSeek-V3) or 1, its best (DeepSeek-V2).
  int64_t groupTop = 2;

  /// "" when the attributes make sense together, else one sentence naming
  /// the first one that does not: every backend's router checks this.
  std::string problem() const {
    if (experts < 1)
      return "experts must be positive, got " + std::to_string(experts);
    if (nGroup < 1)
      return "nGroup must be positive, got " + std::to_string(nGroup);
    if (experts % nGroup != 0)
      return "experts (" + std::to_string(experts) +
             ") is not divisible by nGroup (" + std::to_string(nGroup) + ")";
    if (topkGroup < 1 || topkGroup > nGroup)
      return "topkGroup " + std::to_string(topkGroup) + " is outside [1, " +
             std::to_string(nGroup) + "]";
    if (groupTop != 1 && groupTop != 2)
      return "groupTop must be 1 or 2, got " + std::to_string(groupTop);
    int64_t eligible = topkGroup * (experts / nGroup);
    if (topK < 1 || topK > eligible)
      return "topK " + std::to_string(topK) + " is outside [1, " +
             std::to_string(eligible) + "] (the eligible experts)";
    return "";
  }
};

/// The expert id of a token-slot dropped over capacity, and the rowToSlot of
/// a padding row.
/// The router's attributes as the runtime call moert_router passes them.
inline RouterConfig routerConfig(int64_t experts, int64_t topK, bool sigmoid,
                                 bool normTopkProb, float routeScale,
                                 int64_t nGroup = 1, int64_t topkGroup = 1,
                                 int64_t groupTop = 2) {
  RouterConfig cfg;
  cfg.experts = experts;
  cfg.topK = topK;
  cfg.sigmoid = sigmoid;
  cfg.normTopkProb = normTopkProb;
  cfg.routeScale = routeScale;
  cfg.nGroup = nGroup;
  cfg.topkGroup = topkGroup;
  cfg.groupTop = groupTop;
  return cfg;
}

inline constexpr int32_t kDroppedSlot = -1;

/// "" when the sizes of concat and split (moert_concat, moert_split) fit
/// together, else one sentence naming what does not: every backend checks
/// this.
inline std::string concatProblem(int64_t rows, int64_t aWidth, int64_t bWidth,
                                 int64_t aRepeat, int64_t bRepeat) {
  if (rows < 0 || aWidth < 0 || bWidth < 0)
    return "rows and widths must be >= 0";
  if (aRepeat < 1 || bRepeat < 1)
    return "aRepeat and bRepeat must be positive, got " +
           std::to_string(aRepeat) + " and " + std::to_string(bRepeat);
  if (rows % aRepeat != 0 || rows % bRepeat != 0)
    return "rows (" + std::to_string(rows) +
           ") is not a multiple of aRepeat and bRepeat (" +
           std::to_string(aRepeat) + ", " + std::to_string(bRepeat) + ")";
  return "";
}

} // namespace moe

#endif // MOE_RUNTIME_KERNELTYPES_H
