//===- CpuGradKernelsTest.cpp - Dense backward kernels --------------------===//
//
// The gradients of the dense kernels (embedding, RMSNorm, linear, RoPE,
// attention, the SwiGLU FFNs) against central finite differences of
// double-precision forwards (CpuGradKernelsTestUtil.h).
//
//===----------------------------------------------------------------------===//

#include "CpuGradKernelsTestUtil.h"

using namespace moe;
using namespace moe::gradtest;

namespace {

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
                  dw.data(), /*dbias=*/nullptr);
  expectClose(dx, numericGrad(x, loss), kTol, "linearGrad dx");
  expectClose(dw, numericGrad(w, loss), kTol, "linearGrad dweight");

  // With a bias b, y = x w^T + b and the loss dy . y has d/db = dy summed
  // over the rows.
  Doubles b = toDoubles(randomVector(gen, out));
  auto biasLoss = [&] {
    Doubles y = linearD(x.data(), rows, in, w.data(), out);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o)
        y[r * out + o] += b[o];
    return dot(dy, y);
  };
  Floats db = garbage(out), dxb = garbage(rows * in), dwb = garbage(out * in);
  cpu::linearGrad(dyF.data(), xF.data(), rows, in, wF.data(), out, dxb.data(),
                  dwb.data(), db.data());
  expectClose(db, numericGrad(b, biasLoss), kTol, "linearGrad dbias");
  expectSame(dxb, dx, "linearGrad dx with a bias");

  Context ctx;
  Floats dx2 = garbage(dx.size()), dw2 = garbage(dw.size()), db2 = garbage(out);
  moert_linear_grad(ctx, dyF.data(), xF.data(), wF.data(), dx2.data(),
                    dw2.data(), db2.data(), rows, in, out);
  ctx.expectNoError();
  expectSame(dx2, dx, "linearGrad dx");
  expectSame(dw2, dw, "linearGrad dweight");
  expectSame(db2, db, "linearGrad dbias");
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
                    theta, 1.0, 0.0, 0.0, 1.0, /*interleaved=*/0);
    ctx.expectNoError();
    expectSame(dx2, dx, "ropeGrad");
  }
}

TEST(CpuGradKernels, AttentionGqaAndMhaCausalAndNot) {
  const int batch = 2, seq = 5, heads = 4, dim = 4;
  // Value heads as wide as the query/key heads, or wider (MLA's differ).
  for (int vDim : {4, 6}) {
    for (int kvHeads : {2, 4}) {
      for (bool causal : {false, true}) {
        SCOPED_TRACE("vDim=" + std::to_string(vDim) +
                     " kvHeads=" + std::to_string(kvHeads) +
                     " causal=" + std::to_string(causal));
        std::mt19937 gen(5 + kvHeads + causal + vDim);
        size_t qSize = size_t(batch) * seq * heads * dim;
        size_t kSize = size_t(batch) * seq * kvHeads * dim;
        size_t vSize = size_t(batch) * seq * kvHeads * vDim;
        size_t outSize = size_t(batch) * seq * heads * vDim;
        Floats qF = randomVector(gen, qSize, -1.5f, 1.5f);
        Floats kF = randomVector(gen, kSize, -1.5f, 1.5f);
        Floats vF = randomVector(gen, vSize),
               doutF = randomVector(gen, outSize);
        Doubles q = toDoubles(qF), k = toDoubles(kF), v = toDoubles(vF);
        Doubles dout = toDoubles(doutF);
        const float scale = 1.0f / std::sqrt(float(dim));
        auto loss = [&] {
          auto at = [&](int b, int s, int h, int nh, int d) {
            return ((size_t(b) * seq + s) * nh + h) * d;
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
                    acc += q[at(b, s, h, heads, dim) + d] *
                           k[at(b, j, kvh, kvHeads, dim) + d];
                  scores[j] = acc * scale;
                }
                Doubles p = softmaxD(scores.data(), visible);
                for (int j = 0; j < visible; ++j)
                  for (int d = 0; d < vDim; ++d)
                    total += dout[at(b, s, h, heads, vDim) + d] * p[j] *
                             v[at(b, j, kvh, kvHeads, vDim) + d];
              }
            }
          return total;
        };

        Floats dq = garbage(qSize), dk = garbage(kSize), dv = garbage(vSize);
        cpu::attentionGrad(doutF.data(), qF.data(), kF.data(), vF.data(), batch,
                           seq, heads, kvHeads, dim, vDim, causal, scale,
                           dq.data(), dk.data(), dv.data());
        expectClose(dq, numericGrad(q, loss), kTol, "attentionGrad dq");
        expectClose(dk, numericGrad(k, loss), kTol, "attentionGrad dk");
        expectClose(dv, numericGrad(v, loss), kTol, "attentionGrad dv");

        Context ctx;
        Floats dq2 = garbage(qSize), dk2 = garbage(kSize), dv2 = garbage(vSize);
        moert_attention_grad(ctx, doutF.data(), qF.data(), kF.data(), vF.data(),
                             dq2.data(), dk2.data(), dv2.data(), batch, seq,
                             heads, kvHeads, dim, vDim, causal, scale);
        ctx.expectNoError();
        expectSame(dq2, dq, "attentionGrad dq");
        expectSame(dk2, dk, "attentionGrad dk");
        expectSame(dv2, dv, "attentionGrad dv");
      }
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

} // namespace
