//===- CpuKernelsTest.cpp - Dense CPU kernels against naive references ----===//
//
// Embedding, RMSNorm, linear, RoPE, attention, the SwiGLU FFNs and add, each
// compared with a reference written independently (CpuKernelsTestUtil.h) on
// random inputs from a fixed-seed generator.
//
//===----------------------------------------------------------------------===//

#include "CpuKernelsTestUtil.h"

#include <stdexcept>

using namespace moe;
using namespace moe::cputest;

namespace {

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

TEST(CpuKernels, EmbeddingCopiesRowsAndRejectsBadTokens) {
  std::mt19937 gen(1);
  const int vocab = 11, hidden = 5;
  Floats table = randomVector(gen, vocab * hidden);
  Ids tokens = {3, 0, 10, 3};
  Floats out(tokens.size() * hidden);
  cpu::embedding(tokens.data(), tokens.size(), table.data(), vocab, hidden,
                 out.data());
  for (size_t i = 0; i < tokens.size(); ++i)
    for (int j = 0; j < hidden; ++j)
      EXPECT_EQ(out[i * hidden + j], table[tokens[i] * hidden + j]);

  for (int32_t bad : {-1, vocab}) {
    Ids badTokens = {1, bad};
    EXPECT_THROW(cpu::embedding(badTokens.data(), 2, table.data(), vocab,
                                hidden, out.data()),
                 std::invalid_argument);
  }
  try {
    Ids badTokens = {vocab};
    cpu::embedding(badTokens.data(), 1, table.data(), vocab, hidden,
                   out.data());
    ADD_FAILURE() << "embedding accepted token id " << vocab;
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("embedding"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("11"), std::string::npos);
  }
}

TEST(CpuKernels, RmsNorm) {
  std::mt19937 gen(2);
  const int rows = 6, dim = 40;
  const float eps = 1e-6f;
  Floats x = randomVector(gen, rows * dim, -3.0f, 3.0f);
  Floats w = randomVector(gen, dim);
  Doubles ref(rows * dim);
  for (int r = 0; r < rows; ++r) {
    double meanSquare = 0.0;
    for (int i = 0; i < dim; ++i)
      meanSquare += double(x[r * dim + i]) * x[r * dim + i] / dim;
    for (int i = 0; i < dim; ++i)
      ref[r * dim + i] = x[r * dim + i] / std::sqrt(meanSquare + eps) * w[i];
  }
  Floats out(rows * dim);
  cpu::rmsNorm(x.data(), w.data(), rows, dim, eps, out.data());
  expectClose(out, ref, kTol, "rmsNorm");
}

TEST(CpuKernels, LinearWithAndWithoutBias) {
  std::mt19937 gen(3);
  const int rows = 7, in = 33, outFeatures = 19;
  Floats x = randomVector(gen, rows * in);
  Floats w = randomVector(gen, outFeatures * in);
  Floats bias = randomVector(gen, outFeatures);
  Floats out(rows * outFeatures);
  cpu::linear(x.data(), rows, in, w.data(), outFeatures, nullptr, out.data());
  expectClose(out, linearRef(x, rows, in, w, outFeatures), kTol, "linear");
  cpu::linear(x.data(), rows, in, w.data(), outFeatures, bias.data(),
              out.data());
  expectClose(out, linearRef(x, rows, in, w, outFeatures, &bias), kTol,
              "linear+bias");
  EXPECT_THROW(
      cpu::linear(x.data(), -1, in, w.data(), outFeatures, nullptr, out.data()),
      std::invalid_argument);
}

/// RoPE in double with the rotate-half pairing (i, i + D/2).
Doubles ropeRef(const Floats &x, const Ids *positions, int batch, int seq,
                int heads, int dim, double theta) {
  Doubles out(x.size());
  int half = dim / 2;
  for (int b = 0; b < batch; ++b)
    for (int s = 0; s < seq; ++s)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < half; ++i) {
          double pos = positions ? (*positions)[b * seq + s] : s;
          double angle = pos * std::pow(theta, -2.0 * i / dim);
          size_t base = ((size_t(b) * seq + s) * heads + h) * dim;
          double lo = x[base + i], hi = x[base + i + half];
          out[base + i] = lo * std::cos(angle) - hi * std::sin(angle);
          out[base + i + half] = hi * std::cos(angle) + lo * std::sin(angle);
        }
  return out;
}

TEST(CpuKernels, RopeWithAndWithoutPositions) {
  std::mt19937 gen(4);
  const int batch = 2, seq = 5, heads = 3, dim = 8;
  const double theta = 10000.0;
  Floats x = randomVector(gen, batch * seq * heads * dim);
  Floats out(x.size());
  // The kernel rounds angles to fp32 as HF does: an absolute angle error of
  // about pos * 6e-8, well under the tolerance for positions below 64.
  cpu::rope(x.data(), nullptr, batch, seq, heads, dim, theta, out.data());
  expectClose(out, ropeRef(x, nullptr, batch, seq, heads, dim, theta), kTol,
              "rope");

  Ids positions = randomIds(gen, batch * seq, 64);
  cpu::rope(x.data(), positions.data(), batch, seq, heads, dim, theta,
            out.data());
  expectClose(out, ropeRef(x, &positions, batch, seq, heads, dim, theta), kTol,
              "rope(positions)");
}

TEST(CpuKernels, RopeYarnBlendsFrequenciesAndScales) {
  // YaRN (arXiv 2309.00071), written here in double: pair i's frequency is
  // theta^(-2i/D), divided by the factor F below the ramp's low end, kept
  // above its high end, blended linearly between; cos and sin times m.
  const int batch = 1, seq = 40, heads = 2, dim = 16;
  const double theta = 10000.0, F = 4.0, low = 2.0, high = 5.0, m = 1.25;
  std::mt19937 gen(9);
  Floats x = randomVector(gen, batch * seq * heads * dim);
  Doubles want(x.size());
  for (int s = 0; s < seq; ++s)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < dim / 2; ++i) {
        double f = std::pow(theta, -2.0 * i / dim);
        double r = std::clamp((i - low) / (high - low), 0.0, 1.0);
        double angle = s * (f / F * r + f * (1 - r));
        size_t base = (size_t(s) * heads + h) * dim;
        double lo = x[base + i], hi = x[base + i + dim / 2];
        want[base + i] = m * (lo * std::cos(angle) - hi * std::sin(angle));
        want[base + i + dim / 2] =
            m * (hi * std::cos(angle) + lo * std::sin(angle));
      }
  Floats out(x.size());
  cpu::rope(x.data(), nullptr, batch, seq, heads, dim, theta, out.data(),
            {F, low, high, m});
  expectClose(out, want, kTol, "rope with YaRN");

  // The backward is the transpose: <rope(x), y> = <x, ropeGrad(y)>.
  Floats y = randomVector(gen, x.size()), back(x.size());
  cpu::ropeGrad(y.data(), nullptr, batch, seq, heads, dim, theta, back.data(),
                {F, low, high, m});
  double lhs = 0, rhs = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    lhs += double(out[k]) * y[k];
    rhs += double(x[k]) * back[k];
  }
  EXPECT_NEAR(lhs, rhs, 1e-4 * std::abs(lhs));

  // Factor 1 is plain RoPE, bit for bit; a bad factor is an error.
  Floats plain(x.size()), one(x.size());
  cpu::rope(x.data(), nullptr, batch, seq, heads, dim, theta, plain.data());
  cpu::rope(x.data(), nullptr, batch, seq, heads, dim, theta, one.data(),
            {1.0, low, high, 1.0});
  EXPECT_EQ(plain, one);
  EXPECT_THROW(cpu::rope(x.data(), nullptr, batch, seq, heads, dim, theta,
                         out.data(), {0.5, 0.0, 1.0, 1.0}),
               std::invalid_argument);
}

TEST(CpuKernels, RopePairsFirstAndSecondHalf) {
  // One head of dim 4 at position 1: pairs (0, 2) and (1, 3) rotate by angles
  // 1 and 10000^(-1/2) = 0.01.
  Floats x = {1.0f, 2.0f, 3.0f, 4.0f};
  Ids positions = {1};
  Floats out(4);
  cpu::rope(x.data(), positions.data(), 1, 1, 1, 4, 10000.0, out.data());
  EXPECT_NEAR(out[0], 1 * std::cos(1.0) - 3 * std::sin(1.0), 1e-6);
  EXPECT_NEAR(out[2], 3 * std::cos(1.0) + 1 * std::sin(1.0), 1e-6);
  EXPECT_NEAR(out[1], 2 * std::cos(0.01) - 4 * std::sin(0.01), 1e-6);
  EXPECT_NEAR(out[3], 4 * std::cos(0.01) + 2 * std::sin(0.01), 1e-6);
}

Doubles attentionRef(const Floats &q, const Floats &k, const Floats &v,
                     int batch, int seq, int heads, int kvHeads, int dim,
                     int vDim, bool causal, double scale) {
  Doubles out(size_t(batch) * seq * heads * vDim, 0.0);
  auto at = [&](int b, int s, int h, int nh, int d) {
    return ((size_t(b) * seq + s) * nh + h) * d;
  };
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h) {
      int kvh = h / (heads / kvHeads);
      for (int s = 0; s < seq; ++s) {
        int visible = causal ? s + 1 : seq;
        Doubles p(visible);
        double maxScore = -INFINITY, sum = 0.0;
        for (int j = 0; j < visible; ++j) {
          double dot = 0.0;
          for (int d = 0; d < dim; ++d)
            dot += double(q[at(b, s, h, heads, dim) + d]) *
                   k[at(b, j, kvh, kvHeads, dim) + d];
          p[j] = dot * scale;
          maxScore = std::max(maxScore, p[j]);
        }
        for (double &pj : p)
          sum += pj = std::exp(pj - maxScore);
        for (int j = 0; j < visible; ++j)
          for (int d = 0; d < vDim; ++d)
            out[at(b, s, h, heads, vDim) + d] +=
                p[j] / sum * v[at(b, j, kvh, kvHeads, vDim) + d];
      }
    }
  return out;
}

TEST(CpuKernels, AttentionGqaAndMhaCausalAndNot) {
  const int batch = 2, seq = 7, dim = 8;
  // Value heads as wide as the query/key heads, narrower and wider (MLA).
  for (int vDim : {8, 6, 12}) {
    for (int kvHeads : {2, 4}) {
      for (bool causal : {false, true}) {
        const int heads = 4;
        SCOPED_TRACE("vDim=" + std::to_string(vDim) +
                     " kvHeads=" + std::to_string(kvHeads) +
                     " causal=" + std::to_string(causal));
        std::mt19937 gen(5 + kvHeads + vDim);
        Floats q = randomVector(gen, batch * seq * heads * dim, -2.0f, 2.0f);
        Floats k = randomVector(gen, batch * seq * kvHeads * dim, -2.0f, 2.0f);
        Floats v = randomVector(gen, batch * seq * kvHeads * vDim);
        float scale = 1.0f / std::sqrt(float(dim));
        Floats out(size_t(batch) * seq * heads * vDim);
        cpu::attention(q.data(), k.data(), v.data(), batch, seq, heads, kvHeads,
                       dim, vDim, causal, scale, out.data());
        expectClose(out,
                    attentionRef(q, k, v, batch, seq, heads, kvHeads, dim, vDim,
                                 causal, scale),
                    kTol, "attention");
      }
    }
  }
  Floats dummy(64);
  EXPECT_THROW(cpu::attention(dummy.data(), dummy.data(), dummy.data(), 1, 1, 4,
                              3, 4, 4, false, 1.0f, dummy.data()),
               std::invalid_argument);
}

TEST(CpuKernels, CachedAttentionTokenByTokenIsCausalAttention) {
  // A sequence fed into the cache in a prefill chunk of 3 and then one token
  // at a time sees what causal attention over the whole sequence sees, at
  // every position; two sequences of the batch stand at different
  // positions; the cache's rows past the sequence start as garbage.
  const int batch = 2, seq = 7, heads = 4, dim = 8, cacheLen = 9;
  for (int vDim : {8, 6}) {
    for (int kvHeads : {2, 4}) {
      SCOPED_TRACE("vDim=" + std::to_string(vDim) +
                   " kvHeads=" + std::to_string(kvHeads));
      std::mt19937 gen(31 + kvHeads + vDim);
      Floats q = randomVector(gen, batch * seq * heads * dim, -2.0f, 2.0f);
      Floats k = randomVector(gen, batch * seq * kvHeads * dim, -2.0f, 2.0f);
      Floats v = randomVector(gen, batch * seq * kvHeads * vDim);
      float scale = 1.0f / std::sqrt(float(dim));
      auto want = attentionRef(q, k, v, batch, seq, heads, kvHeads, dim, vDim,
                               /*causal=*/true, scale);
      Floats kCache(size_t(batch) * cacheLen * kvHeads * dim, 1e3f);
      Floats vCache(size_t(batch) * cacheLen * kvHeads * vDim, 1e3f);
      Floats got(want.size());
      // Rows [first, first + n) of sequence b of a [batch, seq, w] tensor.
      auto rows = [&](const Floats &x, int width, int first, int n) {
        Floats out;
        for (int b = 0; b < batch; ++b)
          out.insert(out.end(), x.begin() + (b * seq + first) * width,
                     x.begin() + (b * seq + first + n) * width);
        return out;
      };
      for (int first = 0; first < seq;) {
        int n = first == 0 ? 3 : 1;
        std::vector<int32_t> positions;
        for (int b = 0; b < batch; ++b)
          for (int t = 0; t < n; ++t)
            positions.push_back(first + t);
        Floats out(size_t(batch) * n * heads * vDim);
        cpu::cachedAttention(rows(q, heads * dim, first, n).data(),
                             rows(k, kvHeads * dim, first, n).data(),
                             rows(v, kvHeads * vDim, first, n).data(),
                             positions.data(), batch, n, cacheLen, heads,
                             kvHeads, dim, vDim, scale, kCache.data(),
                             vCache.data(), out.data());
        for (int b = 0; b < batch; ++b)
          std::copy_n(out.begin() + b * n * heads * vDim, n * heads * vDim,
                      got.begin() + (b * seq + first) * heads * vDim);
        first += n;
      }
      expectClose(got, want, kTol, "cachedAttention");
    }
  }
  // A position outside the cache is an error, not a write past it.
  Floats x(64), cache(64);
  std::vector<int32_t> outside = {4};
  EXPECT_THROW(cpu::cachedAttention(x.data(), x.data(), x.data(),
                                    outside.data(), 1, 1, 4, 1, 1, 4, 4, 1.0f,
                                    cache.data(), cache.data(), x.data()),
               std::invalid_argument);
}

TEST(CpuKernels, ConcatBroadcastsAndSplitSumsBack) {
  // [2, 3 heads, 4] beside [2, 1 head, 5] broadcast over the 3 heads.
  const int tokens = 2, heads = 3, aWidth = 4, bWidth = 5;
  const int rows = tokens * heads, width = aWidth + bWidth;
  std::mt19937 gen(11);
  Floats a = randomVector(gen, rows * aWidth);
  Floats b = randomVector(gen, tokens * bWidth);
  Floats out(rows * width);
  cpu::concat(a.data(), b.data(), rows, aWidth, bWidth, 1, heads, out.data());
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < width; ++i)
      EXPECT_EQ(out[r * width + i], i < aWidth
                                        ? a[r * aWidth + i]
                                        : b[(r / heads) * bWidth + i - aWidth])
          << "row " << r << " feature " << i;

  // Split is the transpose: a's part row by row, b's part summed over the
  // heads it was broadcast over.
  Floats x = randomVector(gen, rows * width);
  Floats da(rows * aWidth), db(tokens * bWidth);
  cpu::split(x.data(), rows, aWidth, bWidth, 1, heads, da.data(), db.data());
  Doubles wantA(da.size()), wantB(db.size(), 0.0);
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < width; ++i) {
      if (i < aWidth)
        wantA[r * aWidth + i] = x[r * width + i];
      else
        wantB[(r / heads) * bWidth + i - aWidth] += x[r * width + i];
    }
  expectClose(da, wantA, 0.0, "split lhs");
  expectClose(db, wantB, kTol, "split rhs (summed)");

  EXPECT_THROW(
      cpu::concat(a.data(), b.data(), rows, aWidth, bWidth, 1, 4, out.data()),
      std::invalid_argument); // 4 does not divide 6 rows
  EXPECT_THROW(
      cpu::split(x.data(), rows, aWidth, bWidth, 0, 1, da.data(), db.data()),
      std::invalid_argument);
}

TEST(CpuKernels, RopeInterleavedPairsAdjacentFeatures) {
  // DeepSeek's layout: pair i is (x[2i], x[2i + 1]), written to (i, i + D/2).
  const int batch = 1, seq = 6, heads = 2, dim = 8;
  const double theta = 10000.0;
  std::mt19937 gen(12);
  Floats x = randomVector(gen, batch * seq * heads * dim);
  Doubles want(x.size());
  for (int s = 0; s < seq; ++s)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < dim / 2; ++i) {
        double angle = s * std::pow(theta, -2.0 * i / dim);
        size_t base = (size_t(s) * heads + h) * dim;
        double even = x[base + 2 * i], odd = x[base + 2 * i + 1];
        want[base + i] = even * std::cos(angle) - odd * std::sin(angle);
        want[base + i + dim / 2] =
            odd * std::cos(angle) + even * std::sin(angle);
      }
  RopeVariant interleaved;
  interleaved.interleaved = true;
  Floats out(x.size());
  cpu::rope(x.data(), nullptr, batch, seq, heads, dim, theta, out.data(),
            interleaved);
  expectClose(out, want, kTol, "interleaved rope");

  // The backward is the transpose, with YaRN too.
  RopeVariant yarn{4.0, 1.0, 3.0, 1.2, true};
  cpu::rope(x.data(), nullptr, batch, seq, heads, dim, theta, out.data(), yarn);
  Floats y = randomVector(gen, x.size()), back(x.size());
  cpu::ropeGrad(y.data(), nullptr, batch, seq, heads, dim, theta, back.data(),
                yarn);
  double lhs = 0, rhs = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    lhs += double(out[k]) * y[k];
    rhs += double(x[k]) * back[k];
  }
  EXPECT_NEAR(lhs, rhs, 1e-5 * std::abs(lhs));
}

// The SiLU's vectorised exp over the whole float range the activations can
// take, element by element: x silu(x) for x from -120 to 120 (hidden = inter
// = 1 and unit weights, so the projections are exact).
TEST(CpuKernels, SwigluMlpSiluAcrossTheRange) {
  const int rows = 24001;
  Floats x(rows);
  for (int r = 0; r < rows; ++r)
    x[r] = -120.0f + 0.01f * float(r);
  Floats one = {1.0f}, out(rows);
  cpu::swigluMlp(x.data(), rows, 1, one.data(), one.data(), one.data(), 1,
                 out.data());
  for (int r = 0; r < rows; ++r) {
    double ref = double(x[r]) * sigmoidRef(x[r]) * double(x[r]);
    // A few ulps, or nothing visible next to the other terms of a sum where
    // the exact result is below float's normal range.
    EXPECT_LE(std::abs(out[r] - ref), 1e-6 * std::abs(ref) + 1e-30)
        << "x = " << x[r] << ": " << out[r] << " instead of " << ref;
  }
}

TEST(CpuKernels, SwigluMlpAndSharedExperts) {
  std::mt19937 gen(6);
  const int rows = 5, hidden = 16, inter = 24;
  ExpertWeights w(gen, 1, hidden, inter);
  Floats x = randomVector(gen, rows * hidden);
  Floats sharedGate = randomVector(gen, hidden);
  Doubles ref(rows * hidden), gatedRef(rows * hidden);
  for (int r = 0; r < rows; ++r) {
    Doubles y = swigluRowRef(x.data() + r * hidden, hidden, w.gate.data(),
                             w.up.data(), w.down.data(), inter);
    double g = 0.0;
    for (int i = 0; i < hidden; ++i)
      g += double(x[r * hidden + i]) * sharedGate[i];
    for (int i = 0; i < hidden; ++i) {
      ref[r * hidden + i] = y[i];
      gatedRef[r * hidden + i] = sigmoidRef(g) * y[i];
    }
  }
  Floats out(rows * hidden);
  cpu::swigluMlp(x.data(), rows, hidden, w.gate.data(), w.up.data(),
                 w.down.data(), inter, out.data());
  expectClose(out, ref, kTol, "swigluMlp");
  cpu::sharedExperts(x.data(), rows, hidden, w.gate.data(), w.up.data(),
                     w.down.data(), inter, nullptr, out.data());
  expectClose(out, ref, kTol, "sharedExperts");
  cpu::sharedExperts(x.data(), rows, hidden, w.gate.data(), w.up.data(),
                     w.down.data(), inter, sharedGate.data(), out.data());
  expectClose(out, gatedRef, kTol, "sharedExperts(gated)");
}

TEST(CpuKernels, Add) {
  std::mt19937 gen(7);
  Floats a = randomVector(gen, 13), b = randomVector(gen, 13), out(13);
  cpu::add(a.data(), b.data(), 13, out.data());
  for (int i = 0; i < 13; ++i)
    EXPECT_EQ(out[i], a[i] + b[i]);
}

} // namespace
