//===- MoELayerBench.cpp - time one MoE layer forward on the CPU ----------===//
//
// Times the router and the dropless routed experts (permute, grouped SwiGLU,
// weighted unpermute) of one MoE layer with the runtime's CPU kernels, and
// prints the median over repeats as one line of "key=value" pairs that
// bench/cpu/run.sh reads beside the PyTorch figure of the same shapes.
// With --sgemm it times instead the ceiling the layer is reported against:
// one 2048x1024x1024 GEMM through the runtime's linear (the BLAS's sgemm).
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuKernels.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

struct Shape {
  int64_t tokens = 2048, hidden = 512, experts = 8, topK = 2, inter = 1024;
  int repeats = 10;
  bool sgemm = false;
};

[[noreturn]] void usage(const char *problem) {
  std::fprintf(stderr,
               "moe-cpu-bench: %s\nusage: moe-cpu-bench [--tokens N] "
               "[--hidden N] [--experts N] [--topk N] [--inter N] "
               "[--repeats N] | --sgemm [--repeats N]\n",
               problem);
  std::exit(2);
}

Shape parseArgs(int argc, char **argv) {
  Shape s;
  for (int i = 1; i < argc; i += 2) {
    if (std::string(argv[i]) == "--sgemm") {
      s.sgemm = true;
      --i; // no value
      continue;
    }
    if (i + 1 >= argc)
      usage((std::string(argv[i]) + " needs a value").c_str());
    char *end = nullptr;
    long long v = std::strtoll(argv[i + 1], &end, 10);
    if (*end != '\0' || v < 1)
      usage((std::string(argv[i]) + " needs a positive integer").c_str());
    std::string flag = argv[i];
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
      usage(("unknown flag " + flag).c_str());
  }
  if (s.topK > s.experts)
    usage("--topk must not exceed --experts");
  return s;
}

std::vector<float> randomVector(std::mt19937 &gen, size_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(gen);
  return v;
}

/// Median milliseconds of `repeats` calls of `run`, after one warm-up call.
template <typename F> double medianMs(int repeats, F run) {
  std::vector<double> ms;
  for (int r = 0; r < repeats + 1; ++r) {
    auto start = std::chrono::steady_clock::now();
    run();
    auto stop = std::chrono::steady_clock::now();
    if (r > 0) // the first call warms caches and BLAS threads
      ms.push_back(
          std::chrono::duration<double, std::milli>(stop - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

int sgemmCeiling(const Shape &s) {
  const int64_t m = 2048, n = 1024, k = 1024;
  std::mt19937 gen(0);
  std::vector<float> a = randomVector(gen, m * k, 1.0f);
  std::vector<float> b = randomVector(gen, n * k, 1.0f), c(m * n);
  double median = medianMs(s.repeats, [&] {
    moe::cpu::linear(a.data(), m, k, b.data(), n, nullptr, c.data());
  });
  std::printf("impl=sgemm median_ms=%.3f gflops=%.2f\n", median,
              2.0 * m * n * k / (median * 1e6));
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  Shape s = parseArgs(argc, argv);
  if (s.sgemm)
    return sgemmCeiling(s);
  std::mt19937 gen(0);
  std::vector<float> x = randomVector(gen, s.tokens * s.hidden, 1.0f);
  std::vector<float> gate = randomVector(gen, s.experts * s.hidden, 0.02f);
  std::vector<float> wGate =
      randomVector(gen, s.experts * s.inter * s.hidden, 0.02f);
  std::vector<float> wUp =
      randomVector(gen, s.experts * s.inter * s.hidden, 0.02f);
  std::vector<float> wDown =
      randomVector(gen, s.experts * s.hidden * s.inter, 0.02f);
  std::vector<float> weights(s.tokens * s.topK), logits(s.tokens * s.experts);
  std::vector<int32_t> indices(s.tokens * s.topK);
  std::vector<float> out(s.tokens * s.hidden);

  moe::cpu::RouterConfig cfg;
  cfg.experts = s.experts;
  cfg.topK = s.topK;
  cfg.normTopkProb = true;

  double median = medianMs(s.repeats, [&] {
    moe::cpu::router(x.data(), s.tokens, s.hidden, gate.data(), nullptr, cfg,
                     weights.data(), indices.data(), logits.data());
    moe::cpu::experts(x.data(), weights.data(), indices.data(), s.tokens,
                      s.topK, s.hidden, s.experts, s.inter, wGate.data(),
                      wUp.data(), wDown.data(), out.data());
  });
  double flops = 2.0 * s.tokens * s.hidden * s.experts +
                 2.0 * 3.0 * s.tokens * s.topK * s.hidden * s.inter;
  std::printf("impl=moe-cpu median_ms=%.3f gflops=%.2f\n", median,
              flops / (median * 1e6));
  return 0;
}
