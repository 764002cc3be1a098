//===- CpuGradKernelsTest.cpp - Backward kernels vs finite differences ----===//
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

#include "moe/Runtime/CpuKernels.h"
#include "moe/Runtime/CApi.h"

#include <gtest/gtest.h>

#include <optional>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace moe;

namespace {

using Floats = std::vector<float>;
using Doubles = std::vector<double>;
using Ids = std::vector<int32_t>;

// fp32 kernels against double finite differences (their own error ~1e-9),
// relative to the largest gradient entry; the kernels agree to ~1e-6.
constexpr double kTol = 1e-4;
constexpr float kGarbage = 123.0f;

Floats randomVector(std::mt19937 &gen, size_t n, float lo = -1.0f,
                    float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats v(n);
  for (float &x : v)
    x = dist(gen);
  return v;
}

/// topK distinct experts per token, in random order.
Ids randomRouting(std::mt19937 &gen, int tokens, int experts, int topK) {
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

Doubles toDoubles(const Floats &v) { return Doubles(v.begin(), v.end()); }

Floats garbage(size_t n) { return Floats(n, kGarbage); }

/// Central differences of loss() with respect to every entry of `param`
/// (perturbed in place and restored).
Doubles numericGrad(Doubles &param, const std::function<double()> &loss,
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

double dot(const Doubles &a, const Doubles &b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    sum += a[i] * b[i];
  return sum;
}

/// Errors are measured against the largest expected magnitude (see
/// CpuKernelsTest.cpp).
void expectClose(const Floats &actual, const Doubles &expected, double relTol,
                 const std::string &what) {
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

void expectSame(const Floats &capi, const Floats &cpu,
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

double sigmoidD(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// y [rows, out] = x [rows, in] @ w[out, in]^T.
Doubles linearD(const double *x, int rows, int in, const double *w, int out) {
  Doubles y(size_t(rows) * out, 0.0);
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o)
      for (int i = 0; i < in; ++i)
        y[size_t(r) * out + o] += x[size_t(r) * in + i] * w[size_t(o) * in + i];
  return y;
}

/// SwiGLU on `rows` rows of x with one expert's gate/up [inter, hidden] and
/// down [hidden, inter].
Doubles swigluD(const double *x, int rows, int hidden, const double *gate,
                const double *up, const double *down, int inter) {
  Doubles g = linearD(x, rows, hidden, gate, inter);
  Doubles u = linearD(x, rows, hidden, up, inter);
  for (size_t i = 0; i < g.size(); ++i)
    g[i] = g[i] * sigmoidD(g[i]) * u[i];
  return linearD(g.data(), rows, inter, down, hidden);
}

Doubles softmaxD(const double *x, int n) {
  double maxValue = *std::max_element(x, x + n), sum = 0.0;
  Doubles p(n);
  for (int i = 0; i < n; ++i)
    sum += p[i] = std::exp(x[i] - maxValue);
  for (double &v : p)
    v /= sum;
  return p;
}

double logSumExpD(const double *x, int n) {
  double sum = 0.0;
  for (int i = 0; i < n; ++i)
    sum += std::exp(x[i]);
  return std::log(sum);
}

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

TEST(CpuGradKernels, EmbeddingScatterAddsRepeatedTokens) {
  std::mt19937 gen(1);
  const int vocab = 7, hidden = 4;
  Ids tokens = {2, 5, 2, 0, 6, 2};
  const int n = int(tokens.size());
  Doubles table = toDoubles(randomVector(gen, vocab * hidden));
  Doubles dy = toDoubles(randomVector(gen, n * hidden));
  Floats dyF(dy.begin(), dy.end());

  Floats dtable = garbage(vocab * hidden);
  cpu::embeddingGrad(dyF.data(), tokens.data(), n, vocab, hidden,
                     dtable.data());
  Doubles expected = numericGrad(table, [&] {
    double loss = 0.0;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < hidden; ++j)
        loss += dy[i * hidden + j] * table[tokens[i] * hidden + j];
    return loss;
  });
  expectClose(dtable, expected, kTol, "embeddingGrad");
  // Tokens 1, 3 and 4 do not occur.
  for (int v : {1, 3, 4})
    for (int j = 0; j < hidden; ++j)
      EXPECT_EQ(dtable[v * hidden + j], 0.0f);

  Context ctx;
  Floats capi = garbage(dtable.size());
  moert_embedding_grad(ctx, dyF.data(), tokens.data(), capi.data(), n, vocab,
                       hidden);
  ctx.expectNoError();
  expectSame(capi, dtable, "embeddingGrad");
}

TEST(CpuGradKernels, EmbeddingRejectsBadTokens) {
  const int vocab = 5, hidden = 3;
  Floats dy(2 * hidden, 1.0f), dtable(vocab * hidden);
  for (int32_t bad : {-1, vocab}) {
    Ids tokens = {1, bad};
    EXPECT_THROW(cpu::embeddingGrad(dy.data(), tokens.data(), 2, vocab, hidden,
                                    dtable.data()),
                 std::invalid_argument);
  }
  Ids tokens = {0, vocab};
  try {
    cpu::embeddingGrad(dy.data(), tokens.data(), 2, vocab, hidden,
                       dtable.data());
    ADD_FAILURE() << "embeddingGrad accepted token id " << vocab;
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("embeddingGrad"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("token id 5"), std::string::npos)
        << e.what();
  }

  // The C entry point records the error instead of throwing, and the next
  // call is a no-op.
  Context ctx;
  moert_embedding_grad(ctx, dy.data(), tokens.data(), dtable.data(), 2, vocab,
                       hidden);
  const char *error = moert_context_error(ctx);
  ASSERT_NE(error, nullptr);
  EXPECT_NE(std::string(error).find("embeddingGrad"), std::string::npos);
  Ids good = {0, 1};
  Floats untouched = garbage(dtable.size());
  moert_embedding_grad(ctx, dy.data(), good.data(), untouched.data(), 2, vocab,
                       hidden);
  EXPECT_EQ(untouched, garbage(dtable.size()));
}

TEST(CpuGradKernels, RmsNorm) {
  std::mt19937 gen(2);
  const int rows = 3, dim = 6;
  const float eps = 1e-5f;
  Floats xF = randomVector(gen, rows * dim, -2.0f, 2.0f);
  Floats wF = randomVector(gen, dim, 0.5f, 1.5f);
  Floats dyF = randomVector(gen, rows * dim);
  Doubles x = toDoubles(xF), w = toDoubles(wF), dy = toDoubles(dyF);
  auto loss = [&] {
    double total = 0.0;
    for (int r = 0; r < rows; ++r) {
      double meanSquare = 0.0;
      for (int i = 0; i < dim; ++i)
        meanSquare += x[r * dim + i] * x[r * dim + i] / dim;
      for (int i = 0; i < dim; ++i)
        total += dy[r * dim + i] * x[r * dim + i] /
                 std::sqrt(meanSquare + eps) * w[i];
    }
    return total;
  };

  Floats dx = garbage(rows * dim), dw = garbage(dim);
  cpu::rmsNormGrad(dyF.data(), xF.data(), wF.data(), rows, dim, eps, dx.data(),
                   dw.data());
  expectClose(dx, numericGrad(x, loss), kTol, "rmsNormGrad dx");
  expectClose(dw, numericGrad(w, loss), kTol, "rmsNormGrad dweight");

  Context ctx;
  Floats dx2 = garbage(dx.size()), dw2 = garbage(dw.size());
  moert_rms_norm_grad(ctx, dyF.data(), xF.data(), wF.data(), dx2.data(),
                      dw2.data(), rows, dim, eps);
  ctx.expectNoError();
  expectSame(dx2, dx, "rmsNormGrad dx");
  expectSame(dw2, dw, "rmsNormGrad dweight");
}

TEST(CpuGradKernels, Linear) {
  std::mt19937 gen(3);
  const int rows = 4, in = 5, out = 3;
  Floats xF = randomVector(gen, rows * in), wF = randomVector(gen, out * in);
  Floats dyF = randomVector(gen, rows * out);
  Doubles x = toDoubles(xF), w = toDoubles(wF), dy = toDoubles(dyF);
  auto loss = [&] {
    return dot(dy, linearD(x.data(), rows, in, w.data(), out));
  };

  Floats dx = garbage(rows * in), dw = garbage(out * in);
  cpu::linearGrad(dyF.data(), xF.data(), rows, in, wF.data(), out, dx.data(),
                  dw.data());
  expectClose(dx, numericGrad(x, loss), kTol, "linearGrad dx");
  expectClose(dw, numericGrad(w, loss), kTol, "linearGrad dweight");

  Context ctx;
  Floats dx2 = garbage(dx.size()), dw2 = garbage(dw.size());
  moert_linear_grad(ctx, dyF.data(), xF.data(), wF.data(), dx2.data(),
                    dw2.data(), rows, in, out);
  ctx.expectNoError();
  expectSame(dx2, dx, "linearGrad dx");
  expectSame(dw2, dw, "linearGrad dweight");
}

TEST(CpuGradKernels, RopeWithAndWithoutPositions) {
  std::mt19937 gen(4);
  const int batch = 2, seq = 3, heads = 2, dim = 8;
  const double theta = 10000.0;
  const size_t size = size_t(batch) * seq * heads * dim;
  Floats xF = randomVector(gen, size), dyF = randomVector(gen, size);
  Doubles x = toDoubles(xF), dy = toDoubles(dyF);
  Ids positions = {5, 0, 17, 3, 3, 40};
  for (bool withPositions : {false, true}) {
    SCOPED_TRACE("positions=" + std::to_string(withPositions));
    // Rotate-half pairs (i, i + dim/2); double angles differ from the
    // kernel's fp32 ones by ~pos * 6e-8, far under the tolerance.
    auto loss = [&] {
      double total = 0.0;
      int half = dim / 2;
      for (int b = 0; b < batch; ++b)
        for (int s = 0; s < seq; ++s)
          for (int h = 0; h < heads; ++h)
            for (int i = 0; i < half; ++i) {
              double pos = withPositions ? positions[b * seq + s] : s;
              double angle = pos * std::pow(theta, -2.0 * i / dim);
              size_t base = ((size_t(b) * seq + s) * heads + h) * dim;
              double lo = x[base + i], hi = x[base + i + half];
              total +=
                  dy[base + i] * (lo * std::cos(angle) - hi * std::sin(angle));
              total += dy[base + i + half] *
                       (hi * std::cos(angle) + lo * std::sin(angle));
            }
      return total;
    };
    const int32_t *pos = withPositions ? positions.data() : nullptr;
    Floats dx = garbage(size);
    cpu::ropeGrad(dyF.data(), pos, batch, seq, heads, dim, theta, dx.data());
    expectClose(dx, numericGrad(x, loss), kTol, "ropeGrad");

    Context ctx;
    Floats dx2 = garbage(size);
    moert_rope_grad(ctx, dyF.data(), pos, dx2.data(), batch, seq, heads, dim,
                    theta);
    ctx.expectNoError();
    expectSame(dx2, dx, "ropeGrad");
  }
}

TEST(CpuGradKernels, AttentionGqaAndMhaCausalAndNot) {
  const int batch = 2, seq = 5, heads = 4, dim = 4;
  for (int kvHeads : {2, 4}) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE("kvHeads=" + std::to_string(kvHeads) +
                   " causal=" + std::to_string(causal));
      std::mt19937 gen(5 + kvHeads + causal);
      size_t qSize = size_t(batch) * seq * heads * dim;
      size_t kvSize = size_t(batch) * seq * kvHeads * dim;
      Floats qF = randomVector(gen, qSize, -1.5f, 1.5f);
      Floats kF = randomVector(gen, kvSize, -1.5f, 1.5f);
      Floats vF = randomVector(gen, kvSize), doutF = randomVector(gen, qSize);
      Doubles q = toDoubles(qF), k = toDoubles(kF), v = toDoubles(vF);
      Doubles dout = toDoubles(doutF);
      const float scale = 1.0f / std::sqrt(float(dim));
      auto loss = [&] {
        auto at = [&](int b, int s, int h, int nh) {
          return ((size_t(b) * seq + s) * nh + h) * dim;
        };
        double total = 0.0;
        for (int b = 0; b < batch; ++b)
          for (int h = 0; h < heads; ++h) {
            int kvh = h / (heads / kvHeads);
            for (int s = 0; s < seq; ++s) {
              int visible = causal ? s + 1 : seq;
              Doubles scores(visible);
              for (int j = 0; j < visible; ++j) {
                double acc = 0.0;
                for (int d = 0; d < dim; ++d)
                  acc +=
                      q[at(b, s, h, heads) + d] * k[at(b, j, kvh, kvHeads) + d];
                scores[j] = acc * scale;
              }
              Doubles p = softmaxD(scores.data(), visible);
              for (int j = 0; j < visible; ++j)
                for (int d = 0; d < dim; ++d)
                  total += dout[at(b, s, h, heads) + d] * p[j] *
                           v[at(b, j, kvh, kvHeads) + d];
            }
          }
        return total;
      };

      Floats dq = garbage(qSize), dk = garbage(kvSize), dv = garbage(kvSize);
      cpu::attentionGrad(doutF.data(), qF.data(), kF.data(), vF.data(), batch,
                         seq, heads, kvHeads, dim, causal, scale, dq.data(),
                         dk.data(), dv.data());
      expectClose(dq, numericGrad(q, loss), kTol, "attentionGrad dq");
      expectClose(dk, numericGrad(k, loss), kTol, "attentionGrad dk");
      expectClose(dv, numericGrad(v, loss), kTol, "attentionGrad dv");

      Context ctx;
      Floats dq2 = garbage(qSize), dk2 = garbage(kvSize), dv2 = garbage(kvSize);
      moert_attention_grad(ctx, doutF.data(), qF.data(), kF.data(), vF.data(),
                           dq2.data(), dk2.data(), dv2.data(), batch, seq,
                           heads, kvHeads, dim, causal, scale);
      ctx.expectNoError();
      expectSame(dq2, dq, "attentionGrad dq");
      expectSame(dk2, dk, "attentionGrad dk");
      expectSame(dv2, dv, "attentionGrad dv");
    }
  }
}

TEST(CpuGradKernels, SwigluMlpAndSharedExperts) {
  std::mt19937 gen(6);
  const int rows = 3, hidden = 5, inter = 6;
  Floats xF = randomVector(gen, rows * hidden, -2.0f, 2.0f);
  Floats gateF = randomVector(gen, inter * hidden);
  Floats upF = randomVector(gen, inter * hidden);
  Floats downF = randomVector(gen, hidden * inter);
  Floats sgF = randomVector(gen, hidden);
  Floats dyF = randomVector(gen, rows * hidden);
  Doubles x = toDoubles(xF), gate = toDoubles(gateF), up = toDoubles(upF);
  Doubles down = toDoubles(downF), sg = toDoubles(sgF), dy = toDoubles(dyF);
  const size_t wSize = size_t(inter) * hidden;

  for (bool gated : {false, true}) {
    SCOPED_TRACE("gated=" + std::to_string(gated));
    auto loss = [&] {
      Doubles y = swigluD(x.data(), rows, hidden, gate.data(), up.data(),
                          down.data(), inter);
      if (gated)
        for (int r = 0; r < rows; ++r) {
          double z = 0.0;
          for (int i = 0; i < hidden; ++i)
            z += x[r * hidden + i] * sg[i];
          for (int i = 0; i < hidden; ++i)
            y[r * hidden + i] *= sigmoidD(z);
        }
      return dot(dy, y);
    };
    Floats dx = garbage(rows * hidden), dgate = garbage(wSize),
           dup = garbage(wSize), ddown = garbage(wSize), dsg = garbage(hidden);
    if (gated)
      cpu::sharedExpertsGrad(dyF.data(), xF.data(), rows, hidden, gateF.data(),
                             upF.data(), downF.data(), inter, sgF.data(),
                             dx.data(), dgate.data(), dup.data(), ddown.data(),
                             dsg.data());
    else
      cpu::swigluMlpGrad(dyF.data(), xF.data(), rows, hidden, gateF.data(),
                         upF.data(), downF.data(), inter, dx.data(),
                         dgate.data(), dup.data(), ddown.data());
    expectClose(dx, numericGrad(x, loss), kTol, "dx");
    expectClose(dgate, numericGrad(gate, loss), kTol, "dgate");
    expectClose(dup, numericGrad(up, loss), kTol, "dup");
    expectClose(ddown, numericGrad(down, loss), kTol, "ddown");
    if (gated)
      expectClose(dsg, numericGrad(sg, loss), kTol, "dsharedGate");

    // The C API: moert_mlp_grad and moert_shared_experts_grad are the same
    // function; the gated one adds dsharedGate.
    Context ctx;
    int variants = gated ? 1 : 2;
    for (int variant = 0; variant < variants; ++variant) {
      Floats dx2 = garbage(dx.size()), dgate2 = garbage(wSize),
             dup2 = garbage(wSize), ddown2 = garbage(wSize),
             dsg2 = garbage(hidden);
      if (gated)
        moert_shared_experts_grad(
            ctx, dyF.data(), xF.data(), gateF.data(), upF.data(), downF.data(),
            sgF.data(), dx2.data(), dgate2.data(), dup2.data(), ddown2.data(),
            dsg2.data(), rows, hidden, inter);
      else if (variant == 0)
        moert_mlp_grad(ctx, dyF.data(), xF.data(), gateF.data(), upF.data(),
                       downF.data(), dx2.data(), dgate2.data(), dup2.data(),
                       ddown2.data(), rows, hidden, inter);
      else
        moert_shared_experts_grad(ctx, dyF.data(), xF.data(), gateF.data(),
                                  upF.data(), downF.data(), nullptr, dx2.data(),
                                  dgate2.data(), dup2.data(), ddown2.data(),
                                  nullptr, rows, hidden, inter);
      ctx.expectNoError();
      expectSame(dx2, dx, "dx");
      expectSame(dgate2, dgate, "dgate");
      expectSame(dup2, dup, "dup");
      expectSame(ddown2, ddown, "ddown");
      if (gated)
        expectSame(dsg2, dsg, "dsharedGate");
    }
  }
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

struct RouterCase {
  bool sigmoid, normTopkProb;
  float routeScale;
  bool withDlogits;
};

TEST(CpuGradKernels, RouterThroughTheSelectedScores) {
  const int tokens = 6, hidden = 5, experts = 6, topK = 2;
  for (RouterCase c :
       {RouterCase{false, true, 1.0f, false},
        RouterCase{false, false, 1.0f, false},
        RouterCase{false, true, 1.0f, true},
        RouterCase{false, false, 1.0f, true},
        RouterCase{true, true, 2.5f, false}, RouterCase{true, true, 2.5f, true},
        RouterCase{true, false, 2.5f, true}}) {
    SCOPED_TRACE("sigmoid=" + std::to_string(c.sigmoid) +
                 " norm=" + std::to_string(c.normTopkProb) +
                 " routeScale=" + std::to_string(c.routeScale) +
                 " dlogits=" + std::to_string(c.withDlogits));
    std::mt19937 gen(7);
    Floats xF = randomVector(gen, tokens * hidden, -2.0f, 2.0f);
    Floats gateF = randomVector(gen, experts * hidden);
    Floats dwF = randomVector(gen, tokens * topK);
    Floats dlF = randomVector(gen, tokens * experts);
    Doubles x = toDoubles(xF), gate = toDoubles(gateF);
    Doubles dw = toDoubles(dwF), dl = toDoubles(dlF);

    // The forward router picks the indices; the gradient keeps them fixed.
    cpu::RouterConfig cfg;
    cfg.experts = experts;
    cfg.topK = topK;
    cfg.sigmoid = c.sigmoid;
    cfg.normTopkProb = c.normTopkProb;
    cfg.routeScale = c.routeScale;
    Floats weights(tokens * topK), logits(tokens * experts);
    Ids indices(tokens * topK);
    cpu::router(xF.data(), tokens, hidden, gateF.data(), nullptr, cfg,
                weights.data(), indices.data(), logits.data());

    auto loss = [&] {
      Doubles l = linearD(x.data(), tokens, hidden, gate.data(), experts);
      double total = c.withDlogits ? dot(dl, l) : 0.0;
      for (int t = 0; t < tokens; ++t) {
        const double *row = l.data() + t * experts;
        Doubles scores(experts);
        if (c.sigmoid)
          for (int e = 0; e < experts; ++e)
            scores[e] = sigmoidD(row[e]);
        else
          scores = softmaxD(row, experts);
        double sum = 0.0;
        for (int k = 0; k < topK; ++k)
          sum += scores[indices[t * topK + k]];
        for (int k = 0; k < topK; ++k) {
          double w = scores[indices[t * topK + k]] * c.routeScale;
          if (c.normTopkProb)
            w /= sum;
          total += dw[t * topK + k] * w;
        }
      }
      return total;
    };

    Floats dx = garbage(tokens * hidden), dgate = garbage(experts * hidden);
    cpu::routerGrad(dwF.data(), c.withDlogits ? dlF.data() : nullptr, xF.data(),
                    tokens, hidden, gateF.data(), logits.data(), indices.data(),
                    cfg, dx.data(), dgate.data());
    expectClose(dx, numericGrad(x, loss), kTol, "routerGrad dx");
    expectClose(dgate, numericGrad(gate, loss), kTol, "routerGrad dgate");

    Context ctx;
    Floats dx2 = garbage(dx.size()), dgate2 = garbage(dgate.size());
    moert_router_grad(ctx, dwF.data(), c.withDlogits ? dlF.data() : nullptr,
                      xF.data(), gateF.data(), logits.data(), indices.data(),
                      dx2.data(), dgate2.data(), tokens, hidden, experts, topK,
                      c.sigmoid, c.normTopkProb, c.routeScale);
    ctx.expectNoError();
    expectSame(dx2, dx, "routerGrad dx");
    expectSame(dgate2, dgate, "routerGrad dgate");
  }
}

/// permuteGrad and unpermuteCombineGrad against finite differences, for a
/// routing of 5 tokens top-2 over 4 experts, with slots dropped over
/// `capacity` when given (padding rows then take no part).
void checkPermuteGrads(std::optional<int64_t> capacity) {
  std::mt19937 gen(8);
  const int tokens = 5, topK = 2, experts = 4, hidden = 3;
  const int rows = tokens * topK;
  Ids indices = randomRouting(gen, tokens, experts, topK);
  if (capacity) {
    Ids kept(indices.size());
    ASSERT_GT(cpu::dropOverCapacity(indices.data(), tokens, topK, experts,
                                    *capacity, kept.data()),
              0);
    indices = kept;
  }
  std::vector<int64_t> counts(experts), offsets(experts + 1);
  Ids rowToSlot(rows);
  cpu::permuteByExpert(indices.data(), tokens, topK, experts, counts.data(),
                       offsets.data(), rowToSlot.data());

  // permuted[r] = x[rowToSlot[r] / topK].
  Floats xF = randomVector(gen, tokens * hidden);
  Floats dpermF = randomVector(gen, rows * hidden);
  Doubles x = toDoubles(xF), dperm = toDoubles(dpermF);
  Floats dx = garbage(tokens * hidden);
  cpu::permuteGrad(dpermF.data(), rowToSlot.data(), tokens, topK, hidden,
                   dx.data());
  expectClose(dx,
              numericGrad(x,
                          [&] {
                            double total = 0.0;
                            for (int r = 0; r < rows; ++r)
                              for (int i = 0; i < hidden && rowToSlot[r] >= 0;
                                   ++i)
                                total += dperm[r * hidden + i] *
                                         x[(rowToSlot[r] / topK) * hidden + i];
                            return total;
                          }),
              kTol, "permuteGrad");

  // out[t] = sum_k weights[t, k] * expertOut[row(t, k)].
  Floats yF = randomVector(gen, rows * hidden), wF = randomVector(gen, rows);
  Floats doutF = randomVector(gen, tokens * hidden);
  Doubles y = toDoubles(yF), w = toDoubles(wF), dout = toDoubles(doutF);
  auto loss = [&] {
    double total = 0.0;
    for (int r = 0; r < rows; ++r) {
      int slot = rowToSlot[r], t = slot / topK;
      if (slot < 0)
        continue;
      for (int i = 0; i < hidden; ++i)
        total += dout[t * hidden + i] * w[slot] * y[r * hidden + i];
    }
    return total;
  };
  Floats dy = garbage(rows * hidden), dw = garbage(rows);
  cpu::unpermuteCombineGrad(doutF.data(), yF.data(), rowToSlot.data(),
                            wF.data(), tokens, topK, hidden, dy.data(),
                            dw.data());
  expectClose(dy, numericGrad(y, loss), kTol, "unpermuteGrad dexpertOut");
  expectClose(dw, numericGrad(w, loss), kTol, "unpermuteGrad dweights");

  Context ctx;
  Floats dx2 = garbage(dx.size()), dy2 = garbage(dy.size()),
         dw2 = garbage(dw.size());
  moert_permute_grad(ctx, dpermF.data(), rowToSlot.data(), dx2.data(), tokens,
                     topK, hidden);
  moert_unpermute_grad(ctx, doutF.data(), yF.data(), rowToSlot.data(),
                       wF.data(), dy2.data(), dw2.data(), tokens, topK, hidden);
  ctx.expectNoError();
  expectSame(dx2, dx, "permuteGrad");
  expectSame(dy2, dy, "unpermuteGrad dexpertOut");
  expectSame(dw2, dw, "unpermuteGrad dweights");

  // A rowToSlot that is not a permutation is rejected.
  Ids bad = rowToSlot;
  bad[1] = bad[0];
  EXPECT_THROW(cpu::permuteGrad(dpermF.data(), bad.data(), tokens, topK, hidden,
                                dx.data()),
               std::invalid_argument);
}

TEST(CpuGradKernels, PermuteAndUnpermuteTopK2) {
  checkPermuteGrads(std::nullopt);
}

TEST(CpuGradKernels, PermuteAndUnpermuteWithDroppedSlots) {
  checkPermuteGrads(2);
}

TEST(CpuGradKernels, GroupedSwigluSegmentsWithIdleExpert) {
  std::mt19937 gen(9);
  const int experts = 3, segments = 2 * experts, hidden = 4, inter = 5;
  // Expert 0: segments 0 and 3; expert 1 (segments 1 and 4): no rows;
  // expert 2: segments 2 and 5. Offsets end at 10 of 13 rows.
  const std::vector<int64_t> offsets = {0, 2, 2, 5, 7, 7, 10};
  const int rows = 13, end = 10;
  const size_t wSize = size_t(inter) * hidden;
  Floats xF = randomVector(gen, rows * hidden, -2.0f, 2.0f);
  Floats gateF = randomVector(gen, experts * wSize);
  Floats upF = randomVector(gen, experts * wSize);
  Floats downF = randomVector(gen, experts * wSize);
  Floats doutF = randomVector(gen, rows * hidden);
  Doubles x = toDoubles(xF), gate = toDoubles(gateF), up = toDoubles(upF);
  Doubles down = toDoubles(downF), dout = toDoubles(doutF);
  auto loss = [&] {
    double total = 0.0;
    for (int g = 0; g < segments; ++g) {
      int first = int(offsets[g]), count = int(offsets[g + 1] - offsets[g]);
      size_t e = g % experts;
      Doubles y = swigluD(x.data() + first * hidden, count, hidden,
                          gate.data() + e * wSize, up.data() + e * wSize,
                          down.data() + e * wSize, inter);
      for (int i = 0; i < count * hidden; ++i)
        total += dout[first * hidden + i] * y[i];
    }
    return total;
  };

  Floats dx = garbage(rows * hidden), dgate = garbage(experts * wSize),
         dup = garbage(experts * wSize), ddown = garbage(experts * wSize);
  cpu::groupedSwiGLUSegmentsGrad(doutF.data(), xF.data(), rows, offsets.data(),
                                 segments, experts, hidden, inter, gateF.data(),
                                 upF.data(), downF.data(), dx.data(),
                                 dgate.data(), dup.data(), ddown.data());
  expectClose(dx, numericGrad(x, loss), kTol, "groupedSwiGLUGrad dpermuted");
  expectClose(dgate, numericGrad(gate, loss), kTol, "groupedSwiGLUGrad dgate");
  expectClose(dup, numericGrad(up, loss), kTol, "groupedSwiGLUGrad dup");
  expectClose(ddown, numericGrad(down, loss), kTol, "groupedSwiGLUGrad ddown");
  for (size_t i = 0; i < wSize; ++i) {
    ASSERT_EQ(dgate[wSize + i], 0.0f) << "idle expert's dgate";
    ASSERT_EQ(dup[wSize + i], 0.0f) << "idle expert's dup";
    ASSERT_EQ(ddown[wSize + i], 0.0f) << "idle expert's ddown";
  }
  for (int i = end * hidden; i < rows * hidden; ++i)
    ASSERT_EQ(dx[i], 0.0f) << "row past the offsets";

  Context ctx;
  Floats dx2 = garbage(dx.size()), dgate2 = garbage(dgate.size()),
         dup2 = garbage(dup.size()), ddown2 = garbage(ddown.size());
  moert_grouped_swiglu_grad(ctx, doutF.data(), xF.data(), offsets.data(),
                            gateF.data(), upF.data(), downF.data(), dx2.data(),
                            dgate2.data(), dup2.data(), ddown2.data(), rows,
                            segments, experts, hidden, inter);
  ctx.expectNoError();
  expectSame(dx2, dx, "groupedSwiGLUGrad dpermuted");
  expectSame(dgate2, dgate, "groupedSwiGLUGrad dgate");
  expectSame(dup2, dup, "groupedSwiGLUGrad dup");
  expectSame(ddown2, ddown, "groupedSwiGLUGrad ddown");

  std::vector<int64_t> pastRows = {0, 2, 2, 5, 7, 7, rows + 1};
  EXPECT_THROW(cpu::groupedSwiGLUSegmentsGrad(
                   doutF.data(), xF.data(), rows, pastRows.data(), segments,
                   experts, hidden, inter, gateF.data(), upF.data(),
                   downF.data(), dx.data(), dgate.data(), dup.data(),
                   ddown.data()),
               std::invalid_argument);
}

/// The SwiGLU FFN's backward by the chain rule, row by row in double:
/// y = (silu(g) * u) down^T with g = x gate^T, u = x up^T. Weight gradients
/// accumulate over the rows.
struct SwigluGrads {
  Doubles dx, dgate, dup, ddown;
};
SwigluGrads swigluGradD(const Doubles &dy, const Doubles &x, int rows,
                        int hidden, const double *gate, const double *up,
                        const double *down, int inter) {
  SwigluGrads out{Doubles(size_t(rows) * hidden, 0.0),
                  Doubles(size_t(inter) * hidden, 0.0),
                  Doubles(size_t(inter) * hidden, 0.0),
                  Doubles(size_t(hidden) * inter, 0.0)};
  for (int r = 0; r < rows; ++r) {
    const double *xr = x.data() + size_t(r) * hidden;
    const double *dyr = dy.data() + size_t(r) * hidden;
    Doubles g = linearD(xr, 1, hidden, gate, inter);
    Doubles u = linearD(xr, 1, hidden, up, inter);
    for (int j = 0; j < inter; ++j) {
      double s = sigmoidD(g[j]), act = g[j] * s * u[j], da = 0.0;
      for (int i = 0; i < hidden; ++i) {
        da += dyr[i] * down[size_t(i) * inter + j];
        out.ddown[size_t(i) * inter + j] += dyr[i] * act;
      }
      double dg = da * u[j] * s * (1.0 + g[j] * (1.0 - s)), du = da * g[j] * s;
      for (int i = 0; i < hidden; ++i) {
        out.dgate[size_t(j) * hidden + i] += dg * xr[i];
        out.dup[size_t(j) * hidden + i] += du * xr[i];
        out.dx[size_t(r) * hidden + i] +=
            dg * gate[size_t(j) * hidden + i] + du * up[size_t(j) * hidden + i];
      }
    }
  }
  return out;
}

// More rows than the kernels compute at once (kSwigluRowBlock = 1024, and not
// a multiple of it): the blocks cover every row once and the weight
// gradients sum over all of them, forward and backward, dense and grouped.
TEST(CpuGradKernels, SwigluLongerThanOneRowBlock) {
  std::mt19937 gen(21);
  const int rows = 1300, hidden = 8, inter = 6;
  const size_t wSize = size_t(inter) * hidden;
  Floats xF = randomVector(gen, rows * hidden, -2.0f, 2.0f);
  Floats gateF = randomVector(gen, wSize), upF = randomVector(gen, wSize);
  Floats downF = randomVector(gen, wSize),
         dyF = randomVector(gen, rows * hidden);
  Doubles x = toDoubles(xF), gate = toDoubles(gateF), up = toDoubles(upF);
  Doubles down = toDoubles(downF), dy = toDoubles(dyF);

  Floats y(rows * hidden);
  cpu::swigluMlp(xF.data(), rows, hidden, gateF.data(), upF.data(),
                 downF.data(), inter, y.data());
  expectClose(y,
              swigluD(x.data(), rows, hidden, gate.data(), up.data(),
                      down.data(), inter),
              kTol, "swigluMlp");

  SwigluGrads want = swigluGradD(dy, x, rows, hidden, gate.data(), up.data(),
                                 down.data(), inter);
  Floats dx = garbage(rows * hidden), dgate = garbage(wSize),
         dup = garbage(wSize), ddown = garbage(wSize);
  cpu::swigluMlpGrad(dyF.data(), xF.data(), rows, hidden, gateF.data(),
                     upF.data(), downF.data(), inter, dx.data(), dgate.data(),
                     dup.data(), ddown.data());
  expectClose(dx, want.dx, kTol, "swigluMlpGrad dx");
  expectClose(dgate, want.dgate, kTol, "swigluMlpGrad dgate");
  expectClose(dup, want.dup, kTol, "swigluMlpGrad dup");
  expectClose(ddown, want.ddown, kTol, "swigluMlpGrad ddown");

  // Every row to one expert of two, in one segment.
  const std::vector<int64_t> offsets = {0, rows, rows};
  Floats gate2(2 * wSize, 0.0f), up2(2 * wSize, 0.0f), down2(2 * wSize, 0.0f);
  std::copy(gateF.begin(), gateF.end(), gate2.begin());
  std::copy(upF.begin(), upF.end(), up2.begin());
  std::copy(downF.begin(), downF.end(), down2.begin());
  Floats out = garbage(rows * hidden);
  cpu::groupedSwiGLU(xF.data(), offsets.data(), 2, hidden, inter, gate2.data(),
                     up2.data(), down2.data(), out.data());
  expectSame(out, y, "groupedSwiGLU");
  Floats gdx = garbage(rows * hidden), gdgate = garbage(2 * wSize),
         gdup = garbage(2 * wSize), gddown = garbage(2 * wSize);
  cpu::groupedSwiGLUSegmentsGrad(dyF.data(), xF.data(), rows, offsets.data(), 2,
                                 2, hidden, inter, gate2.data(), up2.data(),
                                 down2.data(), gdx.data(), gdgate.data(),
                                 gdup.data(), gddown.data());
  expectClose(gdx, want.dx, kTol, "groupedSwiGLUGrad dpermuted");
  expectClose(Floats(gdgate.begin(), gdgate.begin() + wSize), want.dgate, kTol,
              "groupedSwiGLUGrad dgate");
  expectClose(Floats(gdup.begin(), gdup.begin() + wSize), want.dup, kTol,
              "groupedSwiGLUGrad dup");
  expectClose(Floats(gddown.begin(), gddown.begin() + wSize), want.ddown, kTol,
              "groupedSwiGLUGrad ddown");
}

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

TEST(CpuGradKernels, CrossEntropyWithIgnoredLabel) {
  std::mt19937 gen(10);
  const int n = 5, vocab = 7;
  const int64_t ignoreIndex = -100;
  Ids labels = {3, -100, 0, 6, 3};
  Floats logitsF = randomVector(gen, n * vocab, -3.0f, 3.0f);
  Doubles logits = toDoubles(logitsF);
  auto loss = [&] {
    double total = 0.0;
    int counted = 0;
    for (int t = 0; t < n; ++t) {
      if (labels[t] == ignoreIndex)
        continue;
      total += logSumExpD(logits.data() + t * vocab, vocab) -
               logits[t * vocab + labels[t]];
      ++counted;
    }
    return total / counted;
  };
  Floats dl = garbage(n * vocab);
  cpu::crossEntropyGrad(logitsF.data(), labels.data(), n, vocab, ignoreIndex,
                        dl.data());
  expectClose(dl, numericGrad(logits, loss), kTol, "crossEntropyGrad");
  for (int i = 0; i < vocab; ++i)
    EXPECT_EQ(dl[1 * vocab + i], 0.0f) << "ignored row";

  Context ctx;
  Floats dl2 = garbage(dl.size());
  moert_cross_entropy_grad(ctx, logitsF.data(), labels.data(), dl2.data(), n,
                           vocab, ignoreIndex);
  ctx.expectNoError();
  expectSame(dl2, dl, "crossEntropyGrad");

  // Every label ignored: the loss is the constant 0.
  Ids ignored(n, int32_t(ignoreIndex));
  cpu::crossEntropyGrad(logitsF.data(), ignored.data(), n, vocab, ignoreIndex,
                        dl.data());
  EXPECT_EQ(dl, Floats(n * vocab, 0.0f));
}

TEST(CpuGradKernels, AuxLossSoftmaxAndSigmoid) {
  const int tokens = 6, experts = 5, topK = 2;
  const float coefficient = 0.7f;
  for (bool sigmoid : {false, true}) {
    SCOPED_TRACE("sigmoid=" + std::to_string(sigmoid));
    std::mt19937 gen(11);
    Floats logitsF = randomVector(gen, tokens * experts, -2.0f, 2.0f);
    Ids indices = randomRouting(gen, tokens, experts, topK);
    Doubles logits = toDoubles(logitsF);
    // c * E * sum_e f_e * P_e with the fractions f_e from the fixed indices.
    auto loss = [&] {
      Doubles fraction(experts, 0.0), meanScore(experts, 0.0);
      for (int32_t e : indices)
        fraction[e] += 1.0 / (tokens * topK);
      for (int t = 0; t < tokens; ++t) {
        const double *row = logits.data() + t * experts;
        Doubles p(experts);
        if (sigmoid) {
          double sum = 0.0;
          for (int e = 0; e < experts; ++e)
            sum += p[e] = sigmoidD(row[e]);
          for (double &v : p)
            v /= sum;
        } else {
          p = softmaxD(row, experts);
        }
        for (int e = 0; e < experts; ++e)
          meanScore[e] += p[e] / tokens;
      }
      return coefficient * experts * dot(fraction, meanScore);
    };
    Floats dl = garbage(tokens * experts);
    cpu::auxLossGrad(logitsF.data(), indices.data(), tokens, experts, topK,
                     sigmoid, coefficient, dl.data());
    expectClose(dl, numericGrad(logits, loss), kTol, "auxLossGrad");

    Context ctx;
    Floats dl2 = garbage(dl.size());
    moert_aux_loss_grad(ctx, logitsF.data(), indices.data(), dl2.data(), tokens,
                        experts, topK, sigmoid, coefficient);
    ctx.expectNoError();
    expectSame(dl2, dl, "auxLossGrad");
  }
}

TEST(CpuGradKernels, ZLoss) {
  std::mt19937 gen(12);
  const int tokens = 4, experts = 5;
  const float coefficient = 0.3f;
  Floats logitsF = randomVector(gen, tokens * experts, -2.0f, 2.0f);
  Doubles logits = toDoubles(logitsF);
  auto loss = [&] {
    double total = 0.0;
    for (int t = 0; t < tokens; ++t) {
      double lse = logSumExpD(logits.data() + t * experts, experts);
      total += lse * lse;
    }
    return coefficient * total / tokens;
  };
  Floats dl = garbage(tokens * experts);
  cpu::zLossGrad(logitsF.data(), tokens, experts, coefficient, dl.data());
  expectClose(dl, numericGrad(logits, loss), kTol, "zLossGrad");

  Context ctx;
  Floats dl2 = garbage(dl.size());
  moert_z_loss_grad(ctx, logitsF.data(), dl2.data(), tokens, experts,
                    coefficient);
  ctx.expectNoError();
  expectSame(dl2, dl, "zLossGrad");
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

TEST(CpuGradKernels, SumSquares) {
  std::mt19937 gen(13);
  Floats x = randomVector(gen, 37, -3.0f, 3.0f);
  double expected = 0.0;
  for (float v : x)
    expected += double(v) * v;
  EXPECT_NEAR(cpu::sumSquares(x.data(), 37), expected, 1e-12 * expected);
  Context ctx;
  double out = -1.0;
  moert_sum_squares(ctx, x.data(), &out, 37);
  ctx.expectNoError();
  EXPECT_EQ(out, cpu::sumSquares(x.data(), 37));
}

TEST(CpuGradKernels, AdamWThreeStepsWithDecayAndClipping) {
  std::mt19937 gen(14);
  const int n = 10;
  const float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  const float weightDecay = 0.1f, gradScale = 0.5f;
  Floats param = randomVector(gen, n), m(n, 0.0f), v(n, 0.0f);
  Floats paramC = param, mC = m, vC = v; // through the C API
  Doubles paramRef = toDoubles(param), mRef(n, 0.0), vRef(n, 0.0);
  Context ctx;
  for (int step = 1; step <= 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    Floats grad = randomVector(gen, n, -2.0f, 2.0f);
    cpu::adamw(param.data(), grad.data(), m.data(), v.data(), n, lr, beta1,
               beta2, eps, weightDecay, gradScale, step);
    moert_adamw(ctx, paramC.data(), grad.data(), mC.data(), vC.data(), n, lr,
                beta1, beta2, eps, weightDecay, gradScale, step);
    ctx.expectNoError();
    // torch.optim.AdamW, written out in double.
    for (int i = 0; i < n; ++i) {
      double g = double(grad[i]) * gradScale;
      paramRef[i] -= double(lr) * weightDecay * paramRef[i];
      mRef[i] = beta1 * mRef[i] + (1.0 - beta1) * g;
      vRef[i] = beta2 * vRef[i] + (1.0 - beta2) * g * g;
      double mHat = mRef[i] / (1.0 - std::pow(double(beta1), step));
      double vHat = vRef[i] / (1.0 - std::pow(double(beta2), step));
      paramRef[i] -= lr * mHat / (std::sqrt(vHat) + eps);
    }
    expectClose(param, paramRef, 1e-5, "adamw param");
    expectClose(m, mRef, 1e-5, "adamw m");
    expectClose(v, vRef, 1e-5, "adamw v");
    expectSame(paramC, param, "adamw param");
    expectSame(mC, m, "adamw m");
    expectSame(vC, v, "adamw v");
  }
  EXPECT_THROW(cpu::adamw(param.data(), param.data(), m.data(), v.data(), n, lr,
                          beta1, beta2, eps, weightDecay, gradScale, 0),
               std::invalid_argument);
}

} // namespace

//===----------------------------------------------------------------------===//
// The entry points' checks (CApiForward.cpp, from the kinds in CApiCalls.def)
//===----------------------------------------------------------------------===//

TEST(CApiEntryPoints, CheckOperandKindsBeforeTheBackendRuns) {
  const int rows = 2, in = 3, outFeatures = 4;
  Floats x(rows * in, 1.0f), w(outFeatures * in, 0.5f), bias(outFeatures, 2.0f);
  Floats out(rows * outFeatures, -7.0f);
  auto error = [](moert_context *ctx) {
    const char *message = moert_context_error(ctx);
    return std::string(message ? message : "");
  };

  // An optional operand may be null; a given one is used.
  {
    Context ctx;
    moert_linear(ctx, x.data(), w.data(), nullptr, out.data(), rows, in,
                 outFeatures);
    ctx.expectNoError();
    EXPECT_FLOAT_EQ(out[0], 1.5f);
    moert_linear(ctx, x.data(), w.data(), bias.data(), out.data(), rows, in,
                 outFeatures);
    ctx.expectNoError();
    EXPECT_FLOAT_EQ(out[0], 3.5f);
  }
  // A required buffer that is null names the call and the operand, and
  // nothing is written.
  {
    Context ctx;
    std::fill(out.begin(), out.end(), -7.0f);
    moert_linear(ctx, x.data(), nullptr, nullptr, out.data(), rows, in,
                 outFeatures);
    EXPECT_EQ(error(ctx), "moert_linear: operand weight is null");
    EXPECT_EQ(out[0], -7.0f);
  }
  // A negative size likewise; an integer that is not a size (ignoreIndex)
  // may be negative.
  {
    Context ctx;
    moert_rms_norm(ctx, x.data(), w.data(), out.data(), -1, in, 1e-6f);
    EXPECT_EQ(error(ctx), "moert_rms_norm: operand rows is a size but is -1");
  }
  {
    Context ctx;
    Floats logits(2 * 3, 0.0f);
    Ids labels = {-100, 1};
    float loss = -1.0f;
    moert_cross_entropy(ctx, logits.data(), labels.data(), &loss, 2, 3, -100);
    ctx.expectNoError();
    EXPECT_NEAR(loss, std::log(3.0f), 1e-6f);
  }
  // The optional gradient of an absent operand may be null too, but a
  // required output may not.
  {
    Context ctx;
    Floats dy(rows * in, 1.0f), g(outFeatures * in, 0.1f);
    Floats dx(rows * in), dg(g.size()), du(g.size()), dd(g.size());
    moert_shared_experts_grad(ctx, dy.data(), x.data(), g.data(), g.data(),
                              g.data(), nullptr, dx.data(), dg.data(),
                              du.data(), dd.data(), nullptr, rows, in,
                              outFeatures);
    ctx.expectNoError();
    moert_shared_experts_grad(ctx, dy.data(), x.data(), g.data(), g.data(),
                              g.data(), nullptr, nullptr, dg.data(), du.data(),
                              dd.data(), nullptr, rows, in, outFeatures);
    EXPECT_EQ(error(ctx), "moert_shared_experts_grad: operand dx is null");
  }
}
