//===- CpuMoEGradKernelsTest.cpp - Router and expert backward -------------===//
//
// The gradients of the router, permute, unpermute and the grouped SwiGLU
// against central finite differences of double-precision forwards.
//
//===----------------------------------------------------------------------===//

#include "CpuGradKernelsTestUtil.h"

using namespace moe;
using namespace moe::gradtest;

namespace {

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

} // namespace
