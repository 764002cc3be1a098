//===- SegmentPlanTest.cpp - The cuBLAS expert GEMMs' segment plan --------===//
//
// planSegments (lib/Runtime/cuda/SegmentPlan.h, plain C++) on hand-written
// offsets: empty segments are left out, a segment's weight set is its index
// modulo the experts, and offsets the device kernels could only clamp are
// errors naming the kernel and the segment.
//
//===----------------------------------------------------------------------===//

#include "cuda/SegmentPlan.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

using moe::cuda::grouped::planSegments;
using moe::cuda::grouped::SegmentRun;

namespace {

std::string describe(const std::vector<SegmentRun> &runs) {
  std::string s;
  for (const SegmentRun &r : runs)
    s += "[" + std::to_string(r.segment) + " e" + std::to_string(r.expert) +
         " " + std::to_string(r.row0) + "+" + std::to_string(r.rows) + "]";
  return s;
}

std::string errorOf(const std::vector<int64_t> &offsets, int64_t rows) {
  try {
    planSegments("k", offsets.data(), int64_t(offsets.size()) - 1, 2, rows);
  } catch (const std::invalid_argument &e) {
    return e.what();
  }
  return "no error";
}

} // namespace

TEST(SegmentPlan, ListsNonEmptySegmentsWithTheirExpert) {
  // Two source ranks of 3 experts each: segment g uses expert g % 3; the
  // empty segments 1 and 4 are left out; rows 21..25 are padding.
  std::vector<int64_t> offsets = {0, 5, 5, 12, 14, 14, 21};
  auto runs = planSegments("k", offsets.data(), 6, 3, 26);
  EXPECT_EQ(describe(runs), "[0 e0 0+5][2 e2 5+7][3 e0 12+2][5 e2 14+7]");
  EXPECT_EQ(moe::cuda::grouped::segmentsEnd(offsets.data(), 6), 21);
}

TEST(SegmentPlan, NoSegmentsNoRuns) {
  std::vector<int64_t> offsets = {0};
  EXPECT_TRUE(planSegments("k", offsets.data(), 0, 4, 10).empty());
  std::vector<int64_t> empty = {0, 0, 0};
  EXPECT_TRUE(planSegments("k", empty.data(), 2, 2, 0).empty());
}

TEST(SegmentPlan, RejectsOffsetsTheKernelsCouldOnlyClamp) {
  EXPECT_EQ(errorOf({1, 3, 4}, 10),
            "moe::cuda::k: the first segment offset is 1, not 0");
  EXPECT_EQ(errorOf({0, 5, 4}, 10),
            "moe::cuda::k: segment 1 ends at row 4 before it begins (5)");
  EXPECT_EQ(errorOf({0, 5, 11}, 10),
            "moe::cuda::k: segment 1 ends at row 11, past the 10 rows");
}
