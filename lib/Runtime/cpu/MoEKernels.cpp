//===- MoEKernels.cpp - Router, token permutation and expert FFNs ---------===//

#include "moe/Runtime/CpuKernels.h"

#include "KernelUtils.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

using namespace moe::cpu::detail;

namespace moe::cpu {

namespace {

void checkRouterConfig(const RouterConfig &cfg) {
  const char *kernel = "router";
  checkSize(kernel, "experts", cfg.experts, /*positive=*/true);
  checkSize(kernel, "nGroup", cfg.nGroup, /*positive=*/true);
  if (cfg.experts % cfg.nGroup != 0)
    fail(kernel, "experts (" + std::to_string(cfg.experts) +
                     ") is not divisible by nGroup (" +
                     std::to_string(cfg.nGroup) + ")");
  if (cfg.topkGroup < 1 || cfg.topkGroup > cfg.nGroup)
    fail(kernel, "topkGroup " + std::to_string(cfg.topkGroup) +
                     " is outside [1, " + std::to_string(cfg.nGroup) + "]");
  int64_t eligible = cfg.topkGroup * (cfg.experts / cfg.nGroup);
  if (cfg.topK < 1 || cfg.topK > eligible)
    fail(kernel, "topK " + std::to_string(cfg.topK) + " is outside [1, " +
                     std::to_string(eligible) + "] (the eligible experts)");
}

/// The topkGroup groups with the highest group scores (ties to the lower
/// group), as a per-expert eligibility mask.
void markEligibleGroups(const float *select, const RouterConfig &cfg,
                        std::vector<int64_t> &groupOrder,
                        std::vector<float> &groupScore,
                        std::vector<char> &eligible) {
  int64_t groupSize = cfg.experts / cfg.nGroup;
  for (int64_t g = 0; g < cfg.nGroup; ++g) {
    const float *scores = select + g * groupSize;
    float best = scores[0];
    float second = -std::numeric_limits<float>::infinity();
    for (int64_t i = 1; i < groupSize; ++i) {
      if (scores[i] > best) {
        second = best;
        best = scores[i];
      } else if (scores[i] > second) {
        second = scores[i];
      }
    }
    groupScore[g] = groupSize > 1 ? best + second : best;
  }
  std::iota(groupOrder.begin(), groupOrder.end(), 0);
  std::partial_sort(groupOrder.begin(), groupOrder.begin() + cfg.topkGroup,
                    groupOrder.end(), [&](int64_t a, int64_t b) {
                      return groupScore[a] > groupScore[b] ||
                             (groupScore[a] == groupScore[b] && a < b);
                    });
  std::fill(eligible.begin(), eligible.end(), 0);
  for (int64_t i = 0; i < cfg.topkGroup; ++i)
    std::fill_n(eligible.begin() + groupOrder[i] * groupSize, groupSize, 1);
}

} // namespace

void router(const float *x, int64_t tokens, int64_t hidden, const float *gate,
            const float *expertBias, const RouterConfig &cfg, float *weights,
            int32_t *indices, float *logits) {
  checkSize("router", "tokens", tokens);
  checkSize("router", "hidden", hidden);
  checkRouterConfig(cfg);
  int64_t numExperts = cfg.experts, topK = cfg.topK;
  project("router", x, tokens, hidden, gate, numExperts, logits);

  std::vector<float> scores(numExperts), select(numExperts);
  std::vector<char> eligible(numExperts, 1);
  std::vector<int64_t> groupOrder(cfg.nGroup), candidates;
  std::vector<float> groupScore(cfg.nGroup);
  candidates.reserve(numExperts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = logits + t * numExperts;
    if (cfg.sigmoid)
      for (int64_t e = 0; e < numExperts; ++e)
        scores[e] = sigmoid(row[e]);
    else
      softmaxRow(row, numExperts, scores.data());
    // The bias steers the choice only; weights use the unbiased scores.
    for (int64_t e = 0; e < numExperts; ++e)
      select[e] = expertBias ? scores[e] + expertBias[e] : scores[e];
    if (cfg.nGroup > 1)
      markEligibleGroups(select.data(), cfg, groupOrder, groupScore, eligible);

    candidates.clear();
    for (int64_t e = 0; e < numExperts; ++e)
      if (eligible[e])
        candidates.push_back(e);
    std::partial_sort(candidates.begin(), candidates.begin() + topK,
                      candidates.end(), [&](int64_t a, int64_t b) {
                        return select[a] > select[b] ||
                               (select[a] == select[b] && a < b);
                      });

    float sum = 0.0f;
    for (int64_t k = 0; k < topK; ++k)
      sum += scores[candidates[k]];
    for (int64_t k = 0; k < topK; ++k) {
      indices[t * topK + k] = int32_t(candidates[k]);
      weights[t * topK + k] = cfg.normTopkProb
                                  ? scores[candidates[k]] / sum * cfg.routeScale
                                  : scores[candidates[k]] * cfg.routeScale;
    }
  }
}

void permuteByExpert(const int32_t *indices, int64_t tokens, int64_t topK,
                     int64_t experts, int64_t *counts, int64_t *offsets,
                     int32_t *rowToSlot) {
  const char *kernel = "permuteByExpert";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  int64_t slots = tokens * topK;
  std::fill_n(counts, experts, 0);
  for (int64_t s = 0; s < slots; ++s) {
    if (indices[s] == kDroppedSlot)
      continue;
    checkId(kernel, "expert id", indices[s], experts, s);
    ++counts[indices[s]];
  }
  offsets[0] = 0;
  for (int64_t e = 0; e < experts; ++e)
    offsets[e + 1] = offsets[e] + counts[e];
  // Visiting slots in order keeps each expert's rows in token order. counts
  // serves as each expert's cursor (its next row), then is restored.
  std::copy_n(offsets, experts, counts);
  for (int64_t s = 0; s < slots; ++s)
    if (indices[s] != kDroppedSlot)
      rowToSlot[counts[indices[s]]++] = int32_t(s);
  for (int64_t e = 0; e < experts; ++e)
    counts[e] = offsets[e + 1] - offsets[e];
  // Dropped slots leave padding rows at the end.
  std::fill(rowToSlot + offsets[experts], rowToSlot + slots, kDroppedSlot);
}

int64_t dropOverCapacity(const int32_t *indices, int64_t tokens, int64_t topK,
                         int64_t experts, int64_t capacity, int32_t *kept) {
  const char *kernel = "dropOverCapacity";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  checkSize(kernel, "capacity", capacity);
  std::vector<int64_t> taken(experts, 0);
  int64_t dropped = 0;
  for (int64_t s = 0; s < tokens * topK; ++s) {
    checkId(kernel, "expert id", indices[s], experts, s);
    bool keep = taken[indices[s]]++ < capacity;
    kept[s] = keep ? indices[s] : kDroppedSlot;
    dropped += keep ? 0 : 1;
  }
  return dropped;
}

void gatherRows(const float *x, const int32_t *rowToSlot, int64_t rows,
                int64_t topK, int64_t hidden, float *permuted) {
  checkSize("gatherRows", "rows", rows);
  checkSize("gatherRows", "topK", topK, /*positive=*/true);
  checkSize("gatherRows", "hidden", hidden);
  for (int64_t r = 0; r < rows; ++r) {
    if (rowToSlot[r] == kDroppedSlot) {
      std::fill_n(permuted + r * hidden, hidden, 0.0f); // padding
      continue;
    }
    if (rowToSlot[r] < 0)
      fail("gatherRows", "negative slot " + std::to_string(rowToSlot[r]) +
                             " at row " + std::to_string(r));
    std::copy_n(x + (rowToSlot[r] / topK) * hidden, hidden,
                permuted + r * hidden);
  }
}

void groupedSwiGLUSegments(const float *permuted, int64_t rows,
                           const int64_t *offsets, int64_t segments,
                           int64_t experts, int64_t hidden, int64_t inter,
                           const float *gate, const float *up,
                           const float *down, float *out) {
  const char *kernel = "groupedSwiGLU";
  checkSize(kernel, "experts", experts, /*positive=*/true);
  checkSize(kernel, "segments", segments);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "inter", inter);
  int64_t maxRows = checkSegments(kernel, offsets, segments, rows);
  int64_t blockSize = swigluBlockRows(maxRows) * inter;
  Scratch scratch(kernel, 2 * Scratch::bytes<float>(blockSize));
  float *act = scratch.take<float>(blockSize);
  float *upOut = scratch.take<float>(blockSize);
  int64_t weightSize = inter * hidden;
  for (int64_t g = 0; g < segments; ++g) {
    int64_t segmentRows = offsets[g + 1] - offsets[g];
    if (segmentRows == 0)
      continue;
    int64_t e = g % experts;
    for (int64_t b = 0, blocks = rowBlockCount(segmentRows); b < blocks; ++b) {
      int64_t first = offsets[g] + rowBlockBegin(segmentRows, b);
      int64_t last = offsets[g] + rowBlockBegin(segmentRows, b + 1);
      swigluBlock(kernel, permuted + first * hidden, last - first, hidden,
                  gate + e * weightSize, up + e * weightSize,
                  down + e * weightSize, inter, act, upOut,
                  out + first * hidden);
    }
  }
}

void groupedSwiGLU(const float *permuted, const int64_t *offsets,
                   int64_t experts, int64_t hidden, int64_t inter,
                   const float *gate, const float *up, const float *down,
                   float *out) {
  groupedSwiGLUSegments(permuted, offsets[experts], offsets, experts, experts,
                        hidden, inter, gate, up, down, out);
}

void unpermuteCombine(const float *expertOut, const int32_t *rowToSlot,
                      const float *weights, int64_t tokens, int64_t topK,
                      int64_t hidden, float *out) {
  const char *kernel = "unpermuteCombine";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "hidden", hidden);
  // Invert the permutation so each token sums its slots in k order.
  std::vector<int64_t> slotToRow =
      invertRowToSlot(kernel, rowToSlot, tokens * topK);
  for (int64_t t = 0; t < tokens; ++t) {
    float *o = out + t * hidden;
    std::fill_n(o, hidden, 0.0f);
    for (int64_t k = 0; k < topK; ++k) {
      int64_t row = slotToRow[t * topK + k];
      if (row < 0)
        continue; // dropped
      float w = weights[t * topK + k];
      const float *y = expertOut + row * hidden;
      for (int64_t i = 0; i < hidden; ++i)
        o[i] += w * y[i];
    }
  }
}

void experts(const float *x, const float *weights, const int32_t *indices,
             int64_t tokens, int64_t topK, int64_t hidden, int64_t numExperts,
             int64_t inter, const float *gate, const float *up,
             const float *down, float *out) {
  const char *kernel = "experts";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "numExperts", numExperts, /*positive=*/true);
  checkSize(kernel, "inter", inter);
  int64_t slots = tokens * topK;
  // permuteByExpert's sort checks the ids; the expert FFN then runs block by
  // block (rowBlockCount) on rows gathered into a cache-sized buffer, and
  // each block's result is added to its tokens at once: no [slots, hidden]
  // permuted input or expert output, and no inverse permutation.
  // No expert has more rows than there are slots.
  int64_t blockRows = swigluBlockRows(slots);
  Scratch scratch(kernel, Scratch::bytes<int64_t>(numExperts) +
                              Scratch::bytes<int64_t>(numExperts + 1) +
                              Scratch::bytes<int32_t>(slots) +
                              2 * Scratch::bytes<float>(blockRows * hidden) +
                              2 * Scratch::bytes<float>(blockRows * inter));
  int64_t *counts = scratch.take<int64_t>(numExperts);
  int64_t *offsets = scratch.take<int64_t>(numExperts + 1);
  int32_t *rowToSlot = scratch.take<int32_t>(slots);
  float *rowsIn = scratch.take<float>(blockRows * hidden);
  float *rowsOut = scratch.take<float>(blockRows * hidden);
  float *act = scratch.take<float>(blockRows * inter);
  float *upOut = scratch.take<float>(blockRows * inter);
  permuteByExpert(indices, tokens, topK, numExperts, counts, offsets,
                  rowToSlot);

  std::fill_n(out, tokens * hidden, 0.0f);
  int64_t weightSize = inter * hidden;
  for (int64_t e = 0; e < numExperts; ++e) {
    for (int64_t b = 0, blocks = rowBlockCount(counts[e]); b < blocks; ++b) {
      const int32_t *blockSlots =
          rowToSlot + offsets[e] + rowBlockBegin(counts[e], b);
      int64_t rows =
          rowBlockBegin(counts[e], b + 1) - rowBlockBegin(counts[e], b);
      for (int64_t r = 0; r < rows; ++r)
        std::copy_n(x + blockSlots[r] / topK * hidden, hidden,
                    rowsIn + r * hidden);
      swigluBlock(kernel, rowsIn, rows, hidden, gate + e * weightSize,
                  up + e * weightSize, down + e * weightSize, inter, act, upOut,
                  rowsOut);
      // A token's slots are summed in expert order: the same as slot order
      // up to fp32 rounding, and exactly the same for topK <= 2.
      for (int64_t r = 0; r < rows; ++r) {
        float w = weights[blockSlots[r]];
        float *o = out + blockSlots[r] / topK * hidden;
        const float *y = rowsOut + r * hidden;
        for (int64_t i = 0; i < hidden; ++i)
          o[i] += w * y[i];
      }
    }
  }
}

void sharedExperts(const float *x, int64_t rows, int64_t hidden,
                   const float *gate, const float *up, const float *down,
                   int64_t inter, const float *sharedGate, float *out) {
  swigluMlp(x, rows, hidden, gate, up, down, inter, out);
  if (!sharedGate)
    return;
  std::vector<float> gateLogits(rows);
  project("sharedExperts", x, rows, hidden, sharedGate, 1, gateLogits.data());
  for (int64_t r = 0; r < rows; ++r) {
    float g = sigmoid(gateLogits[r]);
    for (int64_t i = 0; i < hidden; ++i)
      out[r * hidden + i] *= g;
  }
}

} // namespace moe::cpu
