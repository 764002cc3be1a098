//===- SegmentPlan.h - The non-empty segments of a grouped GEMM -*- C++ -*-===//
//
// Private to lib/Runtime/cuda; plain C++ (no CUDA), so that its unit test
// runs on any machine. The cuBLAS expert GEMMs (GroupedCublas.cu) read a
// segmented row layout's offsets on the host and issue one GEMM per
// non-empty segment: planSegments lists them, checking the offsets (which the
// device kernels can only clamp) on the way.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_SEGMENTPLAN_H
#define MOE_LIB_RUNTIME_CUDA_SEGMENTPLAN_H

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::cuda::grouped {

/// Rows [row0, row0 + rows) of segment `segment`, which uses weight set
/// `expert` (= segment % experts).
struct SegmentRun {
  int64_t segment = 0, row0 = 0, rows = 0, expert = 0;
};

/// The non-empty segments of offsets[0..segments] (host memory) over `rows`
/// activation rows, in order. Throws std::invalid_argument naming `kernel`
/// unless offsets[0] = 0, the offsets never decrease and the last is at most
/// `rows`.
inline std::vector<SegmentRun> planSegments(const char *kernel,
                                            const int64_t *offsets,
                                            int64_t segments, int64_t experts,
                                            int64_t rows) {
  auto bad = [&](const std::string &what) {
    throw std::invalid_argument(std::string("moe::cuda::") + kernel + ": " +
                                what);
  };
  if (experts < 1)
    bad("experts is " + std::to_string(experts));
  if (segments > 0 && offsets[0] != 0)
    bad("the first segment offset is " + std::to_string(offsets[0]) +
        ", not 0");
  std::vector<SegmentRun> runs;
  for (int64_t g = 0; g < segments; ++g) {
    int64_t begin = offsets[g], end = offsets[g + 1];
    if (end < begin)
      bad("segment " + std::to_string(g) + " ends at row " +
          std::to_string(end) + " before it begins (" + std::to_string(begin) +
          ")");
    if (end > rows)
      bad("segment " + std::to_string(g) + " ends at row " +
          std::to_string(end) + ", past the " + std::to_string(rows) + " rows");
    if (end > begin)
      runs.push_back({g, begin, end - begin, g % experts});
  }
  return runs;
}

/// The last row any segment covers (the padding rows follow it).
inline int64_t segmentsEnd(const int64_t *offsets, int64_t segments) {
  return segments > 0 ? offsets[segments] : 0;
}

} // namespace moe::cuda::grouped

#endif // MOE_LIB_RUNTIME_CUDA_SEGMENTPLAN_H
