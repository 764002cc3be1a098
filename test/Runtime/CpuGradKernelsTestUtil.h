//===- CpuGradKernelsTestUtil.h - Inputs, forwards, checks ------*- C++ -*-===//
//
// Shared by the CPU gradient tests (CpuGradKernelsTest.cpp,
// CpuMoEGradKernelsTest.cpp, CpuLossGradKernelsTest.cpp).
//
// Every gradient kernel is compared with central finite differences of a
// forward written here independently: straightforward loops in double
// precision, no BLAS, on small random inputs from a fixed-seed generator.
// The scalar differentiated is sum(dy * forward(inputs)) for a random dy, so
// its gradient is the vector-Jacobian product the kernel computes (d loss = 1
// for the losses). Outputs start as garbage, so a kernel that accumulates
// instead of overwriting fails. Each case also calls the C entry point and
// expects the very same floats.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_RUNTIME_CPUGRADKERNELSTESTUTIL_H
#define MOE_TEST_RUNTIME_CPUGRADKERNELSTESTUTIL_H

#include "moe/Runtime/CApi.h"
#include "moe/Runtime/CpuKernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::gradtest {

using Floats = std::vector<float>;
using Doubles = std::vector<double>;
using Ids = std::vector<int32_t>;

// fp32 kernels against double finite differences (their own error ~1e-9),
// relative to the largest gradient entry; the kernels agree to ~1e-6.
inline constexpr double kTol = 1e-4;
inline constexpr float kGarbage = 123.0f;

inline Floats randomVector(std::mt19937 &gen, size_t n, float lo = -1.0f,
                           float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats v(n);
  for (float &x : v)
    x = dist(gen);
  return v;
}

/// topK distinct experts per token, in random order.
inline Ids randomRouting(std::mt19937 &gen, int tokens, int experts, int topK) {
  Ids indices;
  std::vector<int32_t> all(experts);
  for (int t = 0; t < tokens; ++t) {
    for (int e = 0; e < experts; ++e)
      all[e] = e;
    std::shuffle(all.begin(), all.end(), gen);
    indices.insert(indices.end(), all.begin(), all.begin() + topK);
  }
  return indices;
}

inline Doubles toDoubles(const Floats &v) {
  return Doubles(v.begin(), v.end());
}

inline Floats garbage(size_t n) { return Floats(n, kGarbage); }

/// Central differences of loss() with respect to every entry of `param`
/// (perturbed in place and restored).
inline Doubles numericGrad(Doubles &param, const std::function<double()> &loss,
                           double h = 1e-6) {
  Doubles grad(param.size());
  for (size_t i = 0; i < param.size(); ++i) {
    double saved = param[i];
    param[i] = saved + h;
    double plus = loss();
    param[i] = saved - h;
    double minus = loss();
    param[i] = saved;
    grad[i] = (plus - minus) / (2.0 * h);
  }
  return grad;
}

inline double dot(const Doubles &a, const Doubles &b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    sum += a[i] * b[i];
  return sum;
}

/// Errors are measured against the largest expected magnitude (see
/// CpuKernelsTest.cpp).
inline void expectClose(const Floats &actual, const Doubles &expected,
                        double relTol, const std::string &what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double scale = 0.0;
  for (double e : expected)
    scale = std::max(scale, std::abs(e));
  ASSERT_GT(scale, 1e-8) << what << ": a vanishing reference tests nothing";
  for (size_t i = 0; i < actual.size(); ++i)
    ASSERT_LE(std::abs(actual[i] - expected[i]), relTol * scale)
        << what << "[" << i << "]: got " << actual[i] << ", expected "
        << expected[i];
}

inline void expectSame(const Floats &capi, const Floats &cpu,
                       const std::string &what) {
  ASSERT_EQ(capi.size(), cpu.size()) << what;
  for (size_t i = 0; i < capi.size(); ++i)
    ASSERT_EQ(capi[i], cpu[i]) << what << " (C API)[" << i << "]";
}

/// A context that must still be error-free when the test ends.
struct Context {
  moert_context *ctx = moert_context_create();
  ~Context() { moert_context_destroy(ctx); }
  operator moert_context *() { return ctx; }
  void expectNoError() {
    const char *error = moert_context_error(ctx);
    EXPECT_EQ(error, nullptr) << error;
  }
};

//===----------------------------------------------------------------------===//
// Double-precision forwards
//===----------------------------------------------------------------------===//

inline double sigmoidD(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// y [rows, out] = x [rows, in] @ w[out, in]^T.
inline Doubles linearD(const double *x, int rows, int in, const double *w,
                       int out) {
  Doubles y(size_t(rows) * out, 0.0);
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o)
      for (int i = 0; i < in; ++i)
        y[size_t(r) * out + o] += x[size_t(r) * in + i] * w[size_t(o) * in + i];
  return y;
}

/// SwiGLU on `rows` rows of x with one expert's gate/up [inter, hidden] and
/// down [hidden, inter].
inline Doubles swigluD(const double *x, int rows, int hidden,
                       const double *gate, const double *up, const double *down,
                       int inter) {
  Doubles g = linearD(x, rows, hidden, gate, inter);
  Doubles u = linearD(x, rows, hidden, up, inter);
  for (size_t i = 0; i < g.size(); ++i)
    g[i] = g[i] * sigmoidD(g[i]) * u[i];
  return linearD(g.data(), rows, inter, down, hidden);
}

inline Doubles softmaxD(const double *x, int n) {
  double maxValue = *std::max_element(x, x + n), sum = 0.0;
  Doubles p(n);
  for (int i = 0; i < n; ++i)
    sum += p[i] = std::exp(x[i] - maxValue);
  for (double &v : p)
    v /= sum;
  return p;
}

inline double logSumExpD(const double *x, int n) {
  double sum = 0.0;
  for (int i = 0; i < n; ++i)
    sum += std::exp(x[i]);
  return std::log(sum);
}

} // namespace moe::gradtest

#endif // MOE_TEST_RUNTIME_CPUGRADKERNELSTESTUTIL_H
