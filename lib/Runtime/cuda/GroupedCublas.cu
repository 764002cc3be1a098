//===- GroupedCublas.cu - bf16 expert FFN on the tensor cores -------------===//
//
// See GroupedCublas.h. Every function reads the segment offsets to the host,
// plans the non-empty segments, carves its temporaries from one
// dev.scratch() block and queues its GEMMs (DenseGemm.h's gemm() for single
// calls, cublasGemmGroupedBatchedEx for the grouped ones) and elementwise
// kernels on dev.stream().
//
//===----------------------------------------------------------------------===//

#include "GroupedCublas.h"

#include "CudaKernels.h"
#include "DenseGemm.h"
#include "DeviceMath.cuh"
#include "SegmentPlan.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::cuda::grouped {

namespace {

constexpr unsigned kThreads = 256;

unsigned blocksFor(const Device &dev, int64_t n) {
  int64_t cap = std::max<int64_t>(1, int64_t(dev.smCount()) * 32);
  return static_cast<unsigned>(std::min<int64_t>(gridFor(n, kThreads), cap));
}

/// act[i] = silu(g[i]) * u[i] for i < n, in fp32 from bf16, rounded once.
__global__ void swigluBf16Kernel(const bf16 *g, const bf16 *u, bf16 *act,
                                 int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    act[i] = fromF32<bf16>(swiglu(toF32(g[i]), toF32(u[i])));
}

/// From d act (in `dact`): d(gate out) into `dact` (in place) and d(up out)
/// into `du`, for i < n.
__global__ void swigluGradBf16Kernel(const bf16 *g, const bf16 *u, bf16 *dact,
                                     bf16 *du, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float dg = 0.0f, dup = 0.0f;
    swigluGrad(toF32(g[i]), toF32(u[i]), toF32(dact[i]), dg, dup);
    dact[i] = fromF32<bf16>(dg);
    du[i] = fromF32<bf16>(dup);
  }
}

/// y [m, n] = x [m, k] @ op(w) for one segment: op(w) = w^T for w stored
/// [n, k] (`transW`), else w stored [k, n]. Row-major, packed rows.
struct Product {
  const bf16 *x;
  const bf16 *w;
  bf16 *y;
  int64_t m, n, k;
  bool transW;
};

/// Device room for the pointer arrays of `products` grouped GEMMs.
size_t pointerBytes(size_t products) {
  return ScratchCarver::bytes<const void *>(int64_t(3 * products));
}

/// Runs `products`: one cublasGemmGroupedBatchedEx call (each product its
/// own group) when `grouped`, else one gemm() each. `devPointers` is device
/// room for pointerBytes(products.size()); it is rewritten in stream order,
/// so consecutive calls may share it.
void runProducts(Device &dev, const char *kernel,
                 const std::vector<Product> &products, bool grouped,
                 const void **devPointers) {
  if (products.empty())
    return;
  if (!grouped) {
    for (const Product &p : products)
      gemm<bf16, bf16>(dev, kernel, /*transA=*/false, p.transW, p.m, p.n, p.k,
                       1.0f, p.x, p.k, p.w, p.transW ? p.k : p.n, 0.0f, p.y,
                       p.n);
    return;
  }
  // Row-major y = x op(w) is column-major y^T = op(w)^T x^T: cuBLAS's A is
  // w, its B is x (as DenseGemm.cu maps a single GEMM).
  const size_t count = products.size();
  std::vector<cublasOperation_t> opW(count), opX(count, CUBLAS_OP_N);
  std::vector<int> m(count), n(count), k(count), ldw(count), ldx(count),
      ldy(count), groupSize(count, 1);
  std::vector<float> alpha(count, 1.0f), beta(count, 0.0f);
  std::vector<const void *> pointers(3 * count);
  for (size_t i = 0; i < count; ++i) {
    const Product &p = products[i];
    for (int64_t v : {p.m, p.n, p.k})
      if (v > INT_MAX)
        fail(kernel, "GEMM dimension " + std::to_string(v) +
                         " exceeds the cuBLAS integer range");
    opW[i] = p.transW ? CUBLAS_OP_T : CUBLAS_OP_N;
    m[i] = int(p.n);
    n[i] = int(p.m);
    k[i] = int(p.k);
    ldw[i] = int(p.transW ? p.k : p.n);
    ldx[i] = int(p.k);
    ldy[i] = int(p.n);
    pointers[i] = p.w;
    pointers[count + i] = p.x;
    pointers[2 * count + i] = p.y;
  }
  // From pageable memory: returns once the pointers are staged.
  check(cudaMemcpyAsync(devPointers, pointers.data(),
                        pointers.size() * sizeof(void *),
                        cudaMemcpyHostToDevice, dev.stream()),
        "cudaMemcpyAsync (grouped GEMM pointers)");
  check(cublasSetPointerMode(dev.cublas(), CUBLAS_POINTER_MODE_HOST),
        "cublasSetPointerMode");
  check(cublasGemmGroupedBatchedEx(
            dev.cublas(), opW.data(), opX.data(), m.data(), n.data(), k.data(),
            alpha.data(), devPointers, CUDA_R_16BF, ldw.data(),
            devPointers + count, CUDA_R_16BF, ldx.data(), beta.data(),
            const_cast<void **>(devPointers + 2 * count), CUDA_R_16BF,
            ldy.data(), int(count), groupSize.data(), CUBLAS_COMPUTE_32F),
        kernel);
}

/// dw_e [n, k] = sum over the runs of expert e of a_run^T @ b_run (a rows
/// [m, n], b rows [m, k]), for every expert: one bf16 GEMM for an expert
/// with one run, an fp32 sum in `acc` ([n, k]) rounded once for several,
/// zeros for none.
void weightGrad(Device &dev, const char *kernel,
                const std::vector<SegmentRun> &runs, int64_t experts,
                const bf16 *a, int64_t n, const bf16 *b, int64_t k, bf16 *dw,
                float *acc) {
  std::vector<std::vector<const SegmentRun *>> byExpert(
      static_cast<size_t>(experts));
  for (const SegmentRun &r : runs)
    byExpert[size_t(r.expert)].push_back(&r);
  for (int64_t e = 0; e < experts; ++e) {
    bf16 *out = dw + e * n * k;
    const auto &mine = byExpert[size_t(e)];
    if (mine.empty()) {
      check(cudaMemsetAsync(out, 0, size_t(n * k) * sizeof(bf16), dev.stream()),
            "cudaMemsetAsync");
      continue;
    }
    if (mine.size() == 1) {
      const SegmentRun &r = *mine[0];
      gemm<bf16, bf16>(dev, kernel, /*transA=*/true, /*transB=*/false, n, k,
                       r.rows, 1.0f, a + r.row0 * n, n, b + r.row0 * k, k, 0.0f,
                       out, k);
      continue;
    }
    for (size_t i = 0; i < mine.size(); ++i) {
      const SegmentRun &r = *mine[i];
      gemm<bf16, float>(dev, kernel, /*transA=*/true, /*transB=*/false, n, k,
                        r.rows, 1.0f, a + r.row0 * n, n, b + r.row0 * k, k,
                        i == 0 ? 0.0f : 1.0f, acc, k);
    }
    convertStorage(dev, out, /*dstBf16=*/true, acc, /*srcBf16=*/false, n * k);
  }
}

/// The gate and up projections of every run: hg / hu [rows, inter].
std::vector<Product> gateUpProducts(const std::vector<SegmentRun> &runs,
                                    const bf16 *x, int64_t hidden,
                                    const bf16 *gate, const bf16 *up,
                                    int64_t inter, bf16 *hg, bf16 *hu) {
  std::vector<Product> products;
  for (const SegmentRun &r : runs) {
    const int64_t w = r.expert * inter * hidden;
    products.push_back({x + r.row0 * hidden, gate + w, hg + r.row0 * inter,
                        r.rows, inter, hidden, true});
    products.push_back({x + r.row0 * hidden, up + w, hu + r.row0 * inter,
                        r.rows, inter, hidden, true});
  }
  return products;
}

/// hg / hu = the gate and up projections of every run, then act =
/// silu(hg) * hu over the `size` elements they cover (act may be hg).
void gateUpSwiGLU(Device &dev, const char *kernel,
                  const std::vector<SegmentRun> &runs, const bf16 *x,
                  int64_t hidden, const bf16 *gate, const bf16 *up,
                  int64_t inter, bf16 *hg, bf16 *hu, bf16 *act, int64_t size,
                  bool grouped, const void **pointers) {
  runProducts(dev, kernel,
              gateUpProducts(runs, x, hidden, gate, up, inter, hg, hu), grouped,
              pointers);
  if (size > 0) {
    swigluBf16Kernel<<<blocksFor(dev, size), kThreads, 0, dev.stream()>>>(
        hg, hu, act, size);
    checkLaunch("swigluBf16Kernel");
  }
}

void zeroRows(Device &dev, bf16 *base, int64_t from, int64_t to,
              int64_t width) {
  if (to > from && width > 0)
    check(cudaMemsetAsync(base + from * width, 0,
                          size_t((to - from) * width) * sizeof(bf16),
                          dev.stream()),
          "cudaMemsetAsync");
}

} // namespace

ExpertGemm bf16ExpertGemm() {
  const char *value = std::getenv("MOE_CUDA_EXPERT_GEMM");
  if (!value || !*value || std::string(value) == "cublas-grouped")
    return ExpertGemm::CublasGrouped;
  std::string v = value;
  if (v == "cublas")
    return ExpertGemm::Cublas;
  if (v == "tiled")
    return ExpertGemm::Tiled;
  throw std::runtime_error("MOE_CUDA_EXPERT_GEMM is '" + v +
                           "', expected cublas-grouped, cublas or tiled");
}

void swigluCublas(Device &dev, const char *kernel, const bf16 *permuted,
                  int64_t rows, const int64_t *offsets, int64_t segments,
                  int64_t experts, int64_t hidden, int64_t inter,
                  const bf16 *gate, const bf16 *up, const bf16 *down, bf16 *out,
                  bool grouped) {
  const int64_t *host = dev.readToHost(offsets, segments + 1);
  std::vector<SegmentRun> runs =
      planSegments(kernel, host, segments, experts, rows);
  const int64_t end = segmentsEnd(host, segments);
  if (inter == 0) {
    zeroRows(dev, out, 0, rows, hidden); // an empty FFN adds nothing
    return;
  }
  const int64_t size = end * inter;
  ScratchCarver carve(dev.scratch(pointerBytes(2 * runs.size()) +
                                  2 * ScratchCarver::bytes<bf16>(size)));
  auto **pointers = carve.take<const void *>(int64_t(6 * runs.size()));
  bf16 *hg = carve.take<bf16>(size), *hu = carve.take<bf16>(size);

  gateUpSwiGLU(dev, kernel, runs, permuted, hidden, gate, up, inter, hg, hu,
               /*act=*/hg, size, grouped, pointers);
  std::vector<Product> downs;
  for (const SegmentRun &r : runs)
    downs.push_back({hg + r.row0 * inter, down + r.expert * hidden * inter,
                     out + r.row0 * hidden, r.rows, hidden, inter, true});
  runProducts(dev, kernel, downs, grouped, pointers);
  zeroRows(dev, out, end, rows, hidden); // padding rows
}

void swigluGradCublas(Device &dev, const char *kernel, const bf16 *dout,
                      const bf16 *permuted, int64_t rows,
                      const int64_t *offsets, int64_t segments, int64_t experts,
                      int64_t hidden, int64_t inter, const bf16 *gate,
                      const bf16 *up, const bf16 *down, bf16 *dpermuted,
                      bf16 *dgate, bf16 *dup, bf16 *ddown, bool grouped) {
  const int64_t *host = dev.readToHost(offsets, segments + 1);
  std::vector<SegmentRun> runs =
      planSegments(kernel, host, segments, experts, rows);
  const int64_t end = segmentsEnd(host, segments);
  if (inter == 0) {
    zeroRows(dev, dpermuted, 0, rows, hidden); // weight grads are empty
    return;
  }
  const int64_t size = end * inter;
  ScratchCarver carve(dev.scratch(pointerBytes(2 * runs.size()) +
                                  4 * ScratchCarver::bytes<bf16>(size) +
                                  ScratchCarver::bytes<float>(end * hidden) +
                                  ScratchCarver::bytes<float>(inter * hidden)));
  auto **pointers = carve.take<const void *>(int64_t(6 * runs.size()));
  bf16 *hg = carve.take<bf16>(size), *hu = carve.take<bf16>(size);
  bf16 *act = carve.take<bf16>(size), *dact = carve.take<bf16>(size);
  float *dx = carve.take<float>(end * hidden);
  float *wAcc = carve.take<float>(inter * hidden);

  // Recompute the forward: gate and up outputs, act = silu(g) * u.
  gateUpSwiGLU(dev, kernel, runs, permuted, hidden, gate, up, inter, hg, hu,
               act, size, grouped, pointers);
  // d act = dout @ down_e (down_e stored [hidden, inter]); ddown_e =
  // sum dout^T @ act.
  std::vector<Product> dacts;
  for (const SegmentRun &r : runs)
    dacts.push_back({dout + r.row0 * hidden, down + r.expert * hidden * inter,
                     dact + r.row0 * inter, r.rows, inter, hidden, false});
  runProducts(dev, kernel, dacts, grouped, pointers);
  weightGrad(dev, kernel, runs, experts, dout, hidden, act, inter, ddown, wAcc);
  // dact becomes d(gate out), act d(up out).
  if (size > 0) {
    swigluGradBf16Kernel<<<blocksFor(dev, size), kThreads, 0, dev.stream()>>>(
        hg, hu, dact, act, size);
    checkLaunch("swigluGradBf16Kernel");
  }
  // dgate_e / dup_e [inter, hidden] = sum d(gate|up out)^T @ x.
  weightGrad(dev, kernel, runs, experts, dact, inter, permuted, hidden, dgate,
             wAcc);
  weightGrad(dev, kernel, runs, experts, act, inter, permuted, hidden, dup,
             wAcc);
  // dx = d(gate out) @ gate_e + d(up out) @ up_e, summed in fp32; zero on
  // the padding rows.
  for (const SegmentRun &r : runs) {
    const int64_t w = r.expert * inter * hidden;
    gemm<bf16, float>(dev, kernel, false, false, r.rows, hidden, inter, 1.0f,
                      dact + r.row0 * inter, inter, gate + w, hidden, 0.0f,
                      dx + r.row0 * hidden, hidden);
    gemm<bf16, float>(dev, kernel, false, false, r.rows, hidden, inter, 1.0f,
                      act + r.row0 * inter, inter, up + w, hidden, 1.0f,
                      dx + r.row0 * hidden, hidden);
  }
  if (end > 0)
    convertStorage(dev, dpermuted, /*dstBf16=*/true, dx, /*srcBf16=*/false,
                   end * hidden);
  zeroRows(dev, dpermuted, end, rows, hidden);
}

} // namespace moe::cuda::grouped
