//===- ExpertKernels.cpp - The dropless expert pipeline -------------------===//
//
// The capacity drop, permute (counting sort of token-slots by expert, then
// the row gather), the grouped SwiGLU over expert segments, the weighted
// unpermute, the whole experts block as one reference, their gradients, and
// the CPU backend's methods for the calls.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuKernels.h"

#include "CpuBackend.h"
#include "KernelUtils.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

using namespace moe::cpu::detail;

namespace moe::cpu {

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

void permuteGrad(const float *dpermuted, const int32_t *rowToSlot,
                 int64_t tokens, int64_t topK, int64_t hidden, float *dx) {
  const char *kernel = "permuteGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  // The transpose of the row gather sums each token's rows: the combine
  // with unit weights (exact, so the same sums in the same order).
  std::vector<float> ones(static_cast<size_t>(tokens * topK), 1.0f);
  unpermuteCombine(dpermuted, rowToSlot, ones.data(), tokens, topK, hidden, dx);
}

void unpermuteCombineGrad(const float *dout, const float *expertOut,
                          const int32_t *rowToSlot, const float *weights,
                          int64_t tokens, int64_t topK, int64_t hidden,
                          float *dexpertOut, float *dweights) {
  const char *kernel = "unpermuteCombineGrad";
  checkSize(kernel, "tokens", tokens);
  checkSize(kernel, "topK", topK, /*positive=*/true);
  checkSize(kernel, "hidden", hidden);
  std::vector<int64_t> slotToRow =
      invertRowToSlot(kernel, rowToSlot, tokens * topK);
  // Padding rows get no gradient.
  for (int64_t r = 0; r < tokens * topK; ++r)
    if (rowToSlot[r] == kDroppedSlot)
      std::fill_n(dexpertOut + r * hidden, hidden, 0.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *g = dout + t * hidden;
    for (int64_t k = 0; k < topK; ++k) {
      int64_t slot = t * topK + k, row = slotToRow[slot];
      if (row < 0) { // dropped: no output, no weight gradient
        dweights[slot] = 0.0f;
        continue;
      }
      const float *y = expertOut + row * hidden;
      float *dy = dexpertOut + row * hidden;
      float w = weights[slot];
      double dot = 0.0;
      for (int64_t i = 0; i < hidden; ++i) {
        dy[i] = w * g[i];
        dot += double(g[i]) * y[i];
      }
      dweights[slot] = float(dot);
    }
  }
}

void groupedSwiGLUSegmentsGrad(const float *dout, const float *permuted,
                               int64_t rows, const int64_t *offsets,
                               int64_t segments, int64_t experts,
                               int64_t hidden, int64_t inter, const float *gate,
                               const float *up, const float *down,
                               float *dpermuted, float *dgate, float *dup,
                               float *ddown) {
  const char *kernel = "groupedSwiGLUGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "experts", experts, /*positive=*/true);
  checkSize(kernel, "segments", segments);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "inter", inter);
  int64_t maxRows = checkSegments(kernel, offsets, segments, rows);
  int64_t end = offsets[segments];
  int64_t weightSize = inter * hidden;
  // An expert's weight gradients sum over its segments.
  std::fill_n(dgate, experts * weightSize, 0.0f);
  std::fill_n(dup, experts * weightSize, 0.0f);
  std::fill_n(ddown, experts * weightSize, 0.0f);
  std::fill(dpermuted + end * hidden, dpermuted + rows * hidden, 0.0f);
  std::vector<float> scratch(4 * swigluBlockRows(maxRows) * inter);
  for (int64_t g = 0; g < segments; ++g) {
    int64_t segmentRows = offsets[g + 1] - offsets[g];
    if (segmentRows == 0)
      continue;
    int64_t e = g % experts, first = offsets[g] * hidden;
    swigluRowsGrad(kernel, dout + first, permuted + first, segmentRows, hidden,
                   gate + e * weightSize, up + e * weightSize,
                   down + e * weightSize, inter, /*weightBeta=*/1.0f,
                   scratch.data(), dpermuted + first, dgate + e * weightSize,
                   dup + e * weightSize, ddown + e * weightSize);
  }
}

} // namespace moe::cpu

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//
namespace moe::rt {

void CpuBackend::dropOverCapacity(const int32_t *indices, int32_t *kept,
                                  int64_t tokens, int64_t topK, int64_t experts,
                                  int64_t capacity) {
  droppedSlots_.push_back(
      cpu::dropOverCapacity(indices, tokens, topK, experts, capacity, kept));
}

void CpuBackend::permute(const float *x, const int32_t *indices,
                         float *permuted, int64_t *offsets, int32_t *rowToSlot,
                         int64_t tokens, int64_t topK, int64_t hidden,
                         int64_t experts) {
  std::vector<int64_t> counts(experts > 0 ? experts : 0);
  cpu::permuteByExpert(indices, tokens, topK, experts, counts.data(), offsets,
                       rowToSlot);
  Widened w(storage_);
  cpu::gatherRows(w.in(x, tokens * hidden), rowToSlot, tokens * topK, topK,
                  hidden, w.out(permuted, tokens * topK * hidden));
  w.store();
  expertCounts_.push_back(std::move(counts));
}

void CpuBackend::groupedSwiglu(const float *permuted, const int64_t *offsets,
                               const float *gate, const float *up,
                               const float *down, float *out, int64_t rows,
                               int64_t segments, int64_t experts,
                               int64_t hidden, int64_t inter) {
  Widened w(storage_);
  int64_t nw = experts * inter * hidden;
  cpu::groupedSwiGLUSegments(w.in(permuted, rows * hidden), rows, offsets,
                             segments, experts, hidden, inter, w.in(gate, nw),
                             w.in(up, nw), w.in(down, nw),
                             w.out(out, rows * hidden));
  w.store();
}

void CpuBackend::unpermuteCombine(const float *expertOut,
                                  const int32_t *rowToSlot,
                                  const float *weights, float *out,
                                  int64_t tokens, int64_t topK,
                                  int64_t hidden) {
  Widened w(storage_);
  cpu::unpermuteCombine(w.in(expertOut, tokens * topK * hidden), rowToSlot,
                        w.in(weights, tokens * topK), tokens, topK, hidden,
                        w.out(out, tokens * hidden));
  w.store();
}

void CpuBackend::permuteGrad(const float *dpermuted, const int32_t *rowToSlot,
                             float *dx, int64_t tokens, int64_t topK,
                             int64_t hidden) {
  Widened w(storage_);
  cpu::permuteGrad(w.in(dpermuted, tokens * topK * hidden), rowToSlot, tokens,
                   topK, hidden, w.out(dx, tokens * hidden));
  w.store();
}

void CpuBackend::unpermuteGrad(const float *dout, const float *expertOut,
                               const int32_t *rowToSlot, const float *weights,
                               float *dexpertOut, float *dweights,
                               int64_t tokens, int64_t topK, int64_t hidden) {
  Widened w(storage_);
  int64_t rows = tokens * topK * hidden;
  cpu::unpermuteCombineGrad(w.in(dout, tokens * hidden), w.in(expertOut, rows),
                            rowToSlot, w.in(weights, tokens * topK), tokens,
                            topK, hidden, w.out(dexpertOut, rows),
                            w.out(dweights, tokens * topK));
  w.store();
}

void CpuBackend::groupedSwigluGrad(const float *dout, const float *permuted,
                                   const int64_t *offsets, const float *gate,
                                   const float *up, const float *down,
                                   float *dpermuted, float *dgate, float *dup,
                                   float *ddown, int64_t rows, int64_t segments,
                                   int64_t experts, int64_t hidden,
                                   int64_t inter) {
  Widened w(storage_);
  int64_t n = rows * hidden, nw = experts * inter * hidden;
  cpu::groupedSwiGLUSegmentsGrad(
      w.in(dout, n), w.in(permuted, n), rows, offsets, segments, experts,
      hidden, inter, w.in(gate, nw), w.in(up, nw), w.in(down, nw),
      w.out(dpermuted, n), w.out(dgate, nw), w.out(dup, nw), w.out(ddown, nw));
  w.store();
}

} // namespace moe::rt
