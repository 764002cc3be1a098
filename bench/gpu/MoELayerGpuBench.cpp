//===- MoELayerGpuBench.cpp - time one MoE layer on the GPU ---------------===//
//
// Times the pieces of one MoE layer with the runtime's CUDA kernels, each
// with CUDA events on the kernels' stream (median over repeats, after one
// warm-up): the router, the permutation (offsets and the row gather), the
// grouped expert FFN (gate, up and down projections with SwiGLU), the
// weighted combine, the forward of the routed block as a whole and its
// backward; beside them a device-to-device copy of the permuted rows' bytes,
// the ceiling a permutation is held against. bench/gpu/run.sh prints these
// next to PyTorch's figures for the same shapes (bench/gpu/moe_layer_torch.py).
//
// The routing is drawn on the host, so that the expert GEMM sees a chosen
// load: `uniform` (each token picks top-k distinct experts uniformly) or
// `skewed` (expert e is picked with weight 1 / (e + 1), a Zipf law: the
// first expert receives about 13 times the mean at 128 experts top-8).
//
// Prints one line of key=value pairs. Without a GPU it says so and exits 77.
//
//===----------------------------------------------------------------------===//

#include "cuda/CudaKernels.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

using namespace moe;
using namespace moe::cuda;

namespace {

struct Shape {
  int64_t tokens = 16384, hidden = 2048, experts = 128, topK = 8, inter = 768;
  bool bf16 = true;
  bool skewed = false;
  int repeats = 10;
};

[[noreturn]] void usage(const std::string &problem) {
  std::fprintf(stderr,
               "moe-gpu-bench: %s\nusage: moe-gpu-bench [--tokens N] "
               "[--hidden N] [--experts N] [--topk N] [--inter N] "
               "[--dtype bf16|f32] [--routing uniform|skewed] [--repeats N]\n",
               problem.c_str());
  std::exit(2);
}

Shape parseArgs(int argc, char **argv) {
  Shape s;
  for (int i = 1; i < argc; i += 2) {
    std::string flag = argv[i];
    if (i + 1 >= argc)
      usage(flag + " needs a value");
    std::string value = argv[i + 1];
    if (flag == "--dtype") {
      if (value != "bf16" && value != "f32")
        usage("--dtype is '" + value + "', expected bf16 or f32");
      s.bf16 = value == "bf16";
      continue;
    }
    if (flag == "--routing") {
      if (value != "uniform" && value != "skewed")
        usage("--routing is '" + value + "', expected uniform or skewed");
      s.skewed = value == "skewed";
      continue;
    }
    char *end = nullptr;
    long long v = std::strtoll(value.c_str(), &end, 10);
    if (*end != '\0' || v < 1)
      usage(flag + " needs a positive integer");
    if (flag == "--tokens")
      s.tokens = v;
    else if (flag == "--hidden")
      s.hidden = v;
    else if (flag == "--experts")
      s.experts = v;
    else if (flag == "--topk")
      s.topK = v;
    else if (flag == "--inter")
      s.inter = v;
    else if (flag == "--repeats")
      s.repeats = int(v);
    else
      usage("unknown flag " + flag);
  }
  if (s.topK > s.experts)
    usage("--topk must not exceed --experts");
  return s;
}

/// Device memory freed at scope exit.
struct DeviceArray {
  void *ptr = nullptr;
  explicit DeviceArray(size_t bytes) {
    check(cudaMalloc(&ptr, std::max<size_t>(bytes, 1)), "cudaMalloc");
  }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray &) = delete;
  DeviceArray &operator=(const DeviceArray &) = delete;
  template <typename T> T *as() const { return static_cast<T *>(ptr); }
};

/// Top-k distinct experts per token, drawn with the given weights.
std::vector<int32_t> drawRouting(const Shape &s, std::mt19937_64 &rng) {
  std::vector<double> weight(size_t(s.experts), 1.0);
  if (s.skewed)
    for (int64_t e = 0; e < s.experts; ++e)
      weight[size_t(e)] = 1.0 / double(e + 1);
  std::vector<int32_t> indices(size_t(s.tokens * s.topK));
  for (int64_t t = 0; t < s.tokens; ++t) {
    std::vector<double> w = weight;
    for (int64_t k = 0; k < s.topK; ++k) {
      std::discrete_distribution<int32_t> pick(w.begin(), w.end());
      int32_t e = pick(rng);
      indices[size_t(t * s.topK + k)] = e;
      w[size_t(e)] = 0.0; // distinct experts per token
    }
  }
  return indices;
}

/// Median milliseconds of `fn` queued on the device's stream.
double medianMs(Device &dev, int repeats, const std::function<void()> &fn) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  fn(); // warm-up
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    check(cudaEventRecord(start, dev.stream()), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, dev.stream()), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float elapsed = 0;
    check(cudaEventElapsedTime(&elapsed, start, stop), "cudaEventElapsedTime");
    ms.push_back(elapsed);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

/// `n` values normal(0, scale) in device memory of the storage type.
void fillRandom(Device &dev, void *dst, bool bf16, int64_t n, float scale,
                std::mt19937_64 &rng) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> host(static_cast<size_t>(n));
  for (float &x : host)
    x = dist(rng);
  DeviceArray staging(size_t(n) * sizeof(float));
  check(cudaMemcpy(staging.ptr, host.data(), host.size() * sizeof(float),
                   cudaMemcpyHostToDevice),
        "cudaMemcpy");
  convertStorage(dev, dst, bf16, staging.ptr, false, n);
  dev.synchronize();
}

template <typename T> int run(const Shape &s) {
  Device dev(0);
  std::mt19937_64 rng(1);
  const int64_t T_ = s.tokens, H = s.hidden, E = s.experts, K = s.topK,
                F = s.inter, rows = T_ * K;
  const size_t el = sizeof(T);

  DeviceArray x(size_t(T_ * H) * el), routerW(size_t(E * H) * el),
      gate(size_t(E * F * H) * el), up(size_t(E * F * H) * el),
      down(size_t(E * H * F) * el);
  for (auto [buf, n, scale] :
       {std::tuple{&x, T_ * H, 1.0f}, std::tuple{&routerW, E * H, 0.02f},
        std::tuple{&gate, E * F * H, 0.02f}, std::tuple{&up, E * F * H, 0.02f},
        std::tuple{&down, E * H * F, 0.02f}})
    fillRandom(dev, buf->ptr, s.bf16, n, scale, rng);

  std::vector<int32_t> hostIndices = drawRouting(s, rng);
  DeviceArray indices(size_t(rows) * sizeof(int32_t));
  check(cudaMemcpy(indices.ptr, hostIndices.data(),
                   hostIndices.size() * sizeof(int32_t),
                   cudaMemcpyHostToDevice),
        "cudaMemcpy");
  DeviceArray routeWeights(size_t(rows) * el), logits(size_t(T_ * E) * el),
      routerIndices(size_t(rows) * sizeof(int32_t));
  fillRandom(dev, routeWeights.ptr, s.bf16, rows, 0.3f, rng);

  DeviceArray offsets(size_t(E + 1) * sizeof(int64_t)),
      rowToSlot(size_t(rows) * sizeof(int32_t)),
      permuted(size_t(rows * H) * el), expertOut(size_t(rows * H) * el),
      out(size_t(T_ * H) * el), copyDst(size_t(rows * H) * el);
  DeviceArray dout(size_t(T_ * H) * el), dexpertOut(size_t(rows * H) * el),
      dweights(size_t(rows) * el), dpermuted(size_t(rows * H) * el),
      dx(size_t(T_ * H) * el), dgate(size_t(E * F * H) * el),
      dup(size_t(E * F * H) * el), ddown(size_t(E * H * F) * el),
      dlogits(size_t(T_ * E) * el), dxRouter(size_t(T_ * H) * el),
      drouterW(size_t(E * H) * el);
  fillRandom(dev, dout.ptr, s.bf16, T_ * H, 1.0f, rng);
  check(cudaMemset(dlogits.ptr, 0, size_t(T_ * E) * el), "cudaMemset");

  RouterConfig cfg;
  cfg.experts = E;
  cfg.topK = K;
  cfg.normTopkProb = true;
  auto routerFwd = [&] {
    router<T>(dev, x.as<T>(), T_, H, routerW.as<T>(), nullptr, cfg,
              routeWeights.as<T>(), routerIndices.as<int32_t>(),
              logits.as<T>());
  };
  // The drawn routing, not the router's, decides the load below.
  auto permute = [&] {
    permuteByExpert(dev, indices.as<int32_t>(), T_, K, E, offsets.as<int64_t>(),
                    rowToSlot.as<int32_t>());
    gatherRows<T>(dev, x.as<T>(), rowToSlot.as<int32_t>(), rows, K, H,
                  permuted.as<T>());
  };
  auto experts = [&] {
    groupedSwiGLUSegments<T>(dev, permuted.as<T>(), rows, offsets.as<int64_t>(),
                             E, E, H, F, gate.as<T>(), up.as<T>(), down.as<T>(),
                             expertOut.as<T>());
  };
  auto combine = [&] {
    unpermuteCombine<T>(dev, expertOut.as<T>(), rowToSlot.as<int32_t>(),
                        routeWeights.as<T>(), T_, K, H, out.as<T>());
  };
  auto backward = [&] {
    unpermuteCombineGrad<T>(dev, dout.as<T>(), expertOut.as<T>(),
                            rowToSlot.as<int32_t>(), routeWeights.as<T>(), T_,
                            K, H, dexpertOut.as<T>(), dweights.as<T>());
    groupedSwiGLUSegmentsGrad<T>(
        dev, dexpertOut.as<T>(), permuted.as<T>(), rows, offsets.as<int64_t>(),
        E, E, H, F, gate.as<T>(), up.as<T>(), down.as<T>(), dpermuted.as<T>(),
        dgate.as<T>(), dup.as<T>(), ddown.as<T>());
    permuteGrad<T>(dev, dpermuted.as<T>(), rowToSlot.as<int32_t>(), T_, K, H,
                   dx.as<T>());
    routerGrad<T>(dev, dweights.as<T>(), dlogits.as<T>(), x.as<T>(), T_, H,
                  routerW.as<T>(), logits.as<T>(), routerIndices.as<int32_t>(),
                  cfg, dxRouter.as<T>(), drouterW.as<T>());
  };
  auto copy = [&] {
    check(cudaMemcpyAsync(copyDst.ptr, permuted.ptr, size_t(rows * H) * el,
                          cudaMemcpyDeviceToDevice, dev.stream()),
          "cudaMemcpyAsync");
  };

  routerFwd();
  permute();
  experts();
  combine();
  dev.synchronize();

  const int n = s.repeats;
  double routerMs = medianMs(dev, n, routerFwd);
  double permuteMs = medianMs(dev, n, permute);
  double gatherMs = medianMs(dev, n, [&] {
    gatherRows<T>(dev, x.as<T>(), rowToSlot.as<int32_t>(), rows, K, H,
                  permuted.as<T>());
  });
  double expertMs = medianMs(dev, n, experts);
  double combineMs = medianMs(dev, n, combine);
  double forwardMs = medianMs(dev, n, [&] {
    routerFwd();
    permute();
    experts();
    combine();
  });
  double backwardMs = medianMs(dev, n, backward);
  double copyMs = medianMs(dev, n, copy);

  std::vector<int64_t> counts(size_t(E), 0);
  for (int32_t e : hostIndices)
    ++counts[size_t(e)];
  int64_t maxLoad = *std::max_element(counts.begin(), counts.end());
  // Bytes a permutation moves: every routed row read once and written once.
  double moved = 2.0 * double(rows) * double(H) * double(el);
  double expertFlops = 2.0 * double(rows) * double(H) * double(F) * 3.0;
  std::printf("dtype=%s routing=%s tokens=%lld hidden=%lld experts=%lld "
              "topk=%lld inter=%lld max_load_over_mean=%.2f router_ms=%.4f "
              "permute_ms=%.4f gather_ms=%.4f expert_ms=%.4f "
              "expert_tflops=%.2f combine_ms=%.4f forward_ms=%.4f "
              "backward_ms=%.4f copy_ms=%.4f copy_gbs=%.1f gather_gbs=%.1f\n",
              s.bf16 ? "bf16" : "f32", s.skewed ? "skewed" : "uniform",
              (long long)T_, (long long)H, (long long)E, (long long)K,
              (long long)F, double(maxLoad) * double(E) / double(rows),
              routerMs, permuteMs, gatherMs, expertMs,
              expertFlops / (expertMs * 1e-3) / 1e12, combineMs, forwardMs,
              backwardMs, copyMs, moved / (copyMs * 1e-3) / 1e9,
              moved / (gatherMs * 1e-3) / 1e9);
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  Shape s = parseArgs(argc, argv);
  if (deviceCount() == 0) {
    std::printf("moe-gpu-bench: skipped: no GPU\n");
    return 77;
  }
  try {
    return s.bf16 ? run<bf16>(s) : run<float>(s);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "moe-gpu-bench: %s\n", e.what());
    return 1;
  }
}
