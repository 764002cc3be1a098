//===- CpuLossGradKernelsTest.cpp - Losses, optimizer, entry points -------===//
//
// The gradients of the losses against central finite differences, the sum
// of squares and AdamW against torch.optim.AdamW's formulas, and the C
// entry points' operand checks.
//
//===----------------------------------------------------------------------===//

#include "CpuGradKernelsTestUtil.h"

using namespace moe;
using namespace moe::gradtest;

namespace {

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
  moert_cross_entropy_grad(ctx, logitsF.data(), labels.data(),
                           /*count=*/nullptr, dl2.data(), n, vocab,
                           ignoreIndex);
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
    moert_cross_entropy(ctx, logits.data(), labels.data(), /*count=*/nullptr,
                        &loss, 2, 3, -100);
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

} // namespace
