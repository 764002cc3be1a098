//===- CudaDenseKernelsTest.cpp - Dense, loss and optimizer CUDA kernels --===//
//
// Every kernel of DenseKernels.cu, FfnKernels.cu, LossKernels.cu and
// Optimizer.cu against its moe::cpu twin on the same random inputs: odd
// sizes (rows not a multiple of the block size, hidden sizes 1, 3, 64, 130),
// RoPE with and without positions and an odd number of heads, interleaved
// RoPE with and without YaRN, concat and split with repeated rows, cross
// entropy with ignored labels and with all ignored, several AdamW steps.
// Outputs start as garbage, so a kernel that accumulates instead of
// overwriting fails.
//
// Tolerances (relative to the largest reference magnitude, expectClose):
//   - exact (0) where the device does the CPU's arithmetic in the CPU's
//     order: embedding and concat (copies), embeddingGrad (sums in
//     ascending token order), split (fp32 sums in ascending row order), add;
//   - 1e-4 (the default of CudaTestUtil.h) where cuBLAS and OpenBLAS sum
//     fp32 products in different orders: linear, SwiGLU, shared experts;
//   - 1e-5 where the sums are in double on both sides and only the order
//     or a transcendental's last ulp differs: rmsNorm, rope, the losses;
//   - 1e-6 for AdamW (the same fp32 operations, no FMA contraction) and
//     1e-12 for sumSquares (double sums in another order).
//
//===----------------------------------------------------------------------===//

#include "CudaTestUtil.h"
#include "cuda/CudaKernels.h"
#include "moe/Runtime/CudaBackend.h"

#include "moe/Runtime/CpuKernels.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace moe::cuda::test {
namespace {

using Floats = std::vector<float>;
using Ids = std::vector<int32_t>;

constexpr double kGemmTol = 1e-4;
constexpr double kDoubleSumTol = 1e-5;
constexpr float kGarbage = 123.0f;

Floats garbage(size_t n) { return Floats(n, kGarbage); }

std::string shape(std::initializer_list<int64_t> sizes) {
  std::string s;
  for (int64_t v : sizes)
    s += (s.empty() ? "" : "x") + std::to_string(v);
  return s;
}

using CudaDenseKernels = CudaTest;

//===----------------------------------------------------------------------===//
// Dense forward
//===----------------------------------------------------------------------===//

// The backend's pitched device copy (the collectives' piece reordering):
// row r of src lands at row r of dst, the bytes between rows untouched.
TEST_F(CudaDenseKernels, BackendCopy2D) {
  std::unique_ptr<rt::Backend> backend = makeCudaBackend(0);
  const size_t rows = 5, width = 12, srcPitch = 20, dstPitch = 16;
  std::vector<uint8_t> src(rows * srcPitch);
  for (size_t i = 0; i < src.size(); ++i)
    src[i] = static_cast<uint8_t>(i * 7 + 1);
  std::vector<uint8_t> expected(rows * dstPitch, 0); // allocate zero-fills
  for (size_t r = 0; r < rows; ++r)
    for (size_t b = 0; b < width; ++b)
      expected[r * dstPitch + b] = src[r * srcPitch + b];
  void *dSrc = backend->allocate(src.size());
  void *dDst = backend->allocate(expected.size());
  backend->upload(dSrc, src.data(), src.size());
  backend->copy2D(dDst, dstPitch, dSrc, srcPitch, width, rows);
  std::vector<uint8_t> got(expected.size());
  backend->download(got.data(), dDst, got.size());
  backend->release(dSrc);
  backend->release(dDst);
  EXPECT_EQ(got, expected);
}

TEST_F(CudaDenseKernels, Embedding) {
  for (int64_t n : {0, 1, 37, 300})
    for (int64_t hidden : {1, 3, 64, 130}) {
      const int64_t vocab = 50;
      std::string what = "embedding " + shape({n, vocab, hidden});
      Ids tokens = randomInts(n, 1 + n, 0, vocab - 1);
      Floats table = randomFloats(vocab * hidden, 2 + hidden);
      Floats expected(n * hidden);
      cpu::embedding(tokens.data(), n, table.data(), vocab, hidden,
                     expected.data());
      DeviceBuffer<int32_t> dTokens(tokens);
      DeviceBuffer<float> dTable(table), dOut(garbage(n * hidden));
      embedding<float>(*dev, dTokens, n, dTable, vocab, hidden, dOut);
      expectClose(dOut.download(), expected, 0.0, what);
    }
}

TEST_F(CudaDenseKernels, RmsNorm) {
  for (int64_t rows : {1, 7, 300})
    for (int64_t dim : {1, 3, 64, 130, 1000}) {
      std::string what = "rmsNorm " + shape({rows, dim});
      Floats x = randomFloats(rows * dim, 3 + dim, -2.f, 2.f);
      Floats w = randomFloats(dim, 4 + dim, 0.5f, 1.5f);
      Floats expected(rows * dim);
      cpu::rmsNorm(x.data(), w.data(), rows, dim, 1e-6f, expected.data());
      DeviceBuffer<float> dX(x), dW(w), dOut(garbage(rows * dim));
      rmsNorm<float>(*dev, dX, dW, rows, dim, 1e-6f, dOut);
      expectClose(dOut.download(), expected, kDoubleSumTol, what);
    }
}

TEST_F(CudaDenseKernels, LinearWithAndWithoutBias) {
  for (int64_t rows : {1, 5, 300})
    for (int64_t in : {0, 1, 3, 64, 130})
      for (int64_t out : {1, 3, 130})
        for (bool withBias : {false, true}) {
          std::string what =
              "linear " + shape({rows, in, out}) + (withBias ? " bias" : "");
          Floats x = randomFloats(rows * in, 5 + in);
          Floats w = randomFloats(out * in, 6 + out);
          Floats b = randomFloats(out, 7 + out);
          const float *bias = withBias ? b.data() : nullptr;
          Floats expected(rows * out);
          cpu::linear(x.data(), rows, in, w.data(), out, bias, expected.data());
          DeviceBuffer<float> dX(x), dW(w), dB(b), dOut(garbage(rows * out));
          linear<float>(*dev, dX, rows, in, dW, out,
                        withBias ? dB.get() : nullptr, dOut);
          expectClose(dOut.download(), expected, kGemmTol, what);
        }
}

// Rotate-half RoPE and its backward, with and without positions, odd head
// counts, head dims whose half is odd, and one whose half exceeds the
// host-computed frequency table (the device computes those).
TEST_F(CudaDenseKernels, RopeAndRopeGrad) {
  const int64_t batch = 2, seq = 5;
  for (int64_t heads : {1, 3})
    for (int64_t headDim : {2, 6, 64, 130, 1100})
      for (bool withPositions : {false, true})
        for (double theta : {10000.0, 1e6}) {
          std::string what = shape({batch, seq, heads, headDim}) +
                             (withPositions ? " positions" : "") + " theta " +
                             std::to_string(theta);
          int64_t size = batch * seq * heads * headDim;
          Floats x = randomFloats(size, 8 + headDim + heads);
          Ids positions = randomInts(batch * seq, 9 + heads, 0, 4095);
          const int32_t *pos = withPositions ? positions.data() : nullptr;
          Floats expected(size), expectedGrad(size);
          cpu::rope(x.data(), pos, batch, seq, heads, headDim, theta,
                    expected.data());
          cpu::ropeGrad(x.data(), pos, batch, seq, heads, headDim, theta,
                        expectedGrad.data());
          DeviceBuffer<float> dX(x), dOut(garbage(size)), dGrad(garbage(size));
          DeviceBuffer<int32_t> dPos(positions);
          const int32_t *dPosPtr = withPositions ? dPos.get() : nullptr;
          rope<float>(*dev, dX, dPosPtr, batch, seq, heads, headDim, theta,
                      dOut);
          ropeGrad<float>(*dev, dX, dPosPtr, batch, seq, heads, headDim, theta,
                          dGrad);
          expectClose(dOut.download(), expected, kDoubleSumTol, "rope " + what);
          expectClose(dGrad.download(), expectedGrad, kDoubleSumTol,
                      "ropeGrad " + what);
        }
}

// Interleaved RoPE: the forward reads pair i at (2i, 2i + 1) and writes it
// at (i, i + headDim / 2), the gradient the other way round; plain and with
// YaRN frequencies and scale (the device computes the frequencies of the
// 1100 head dim, for which YaRN is refused).
TEST_F(CudaDenseKernels, InterleavedRopeAndRopeGrad) {
  const int64_t batch = 2, seq = 5;
  for (int64_t heads : {1, 3})
    for (int64_t headDim : {2, 6, 64, 130, 1100})
      for (bool withPositions : {false, true})
        for (bool yarn : {false, true}) {
          if (yarn && headDim > 1024)
            continue;
          RopeVariant variant;
          variant.interleaved = true;
          if (yarn) {
            variant.factor = 40.0;
            variant.low = 3.0;
            variant.high = 11.0;
            variant.scale = 1.25;
          }
          std::string what = shape({batch, seq, heads, headDim}) +
                             (withPositions ? " positions" : "") +
                             (yarn ? " yarn" : "");
          int64_t size = batch * seq * heads * headDim;
          Floats x = randomFloats(size, 50 + headDim + heads);
          Ids positions = randomInts(batch * seq, 51 + heads, 0, 4095);
          const int32_t *pos = withPositions ? positions.data() : nullptr;
          Floats expected(size), expectedGrad(size);
          cpu::rope(x.data(), pos, batch, seq, heads, headDim, 10000.0,
                    expected.data(), variant);
          cpu::ropeGrad(x.data(), pos, batch, seq, heads, headDim, 10000.0,
                        expectedGrad.data(), variant);
          DeviceBuffer<float> dX(x), dOut(garbage(size)), dGrad(garbage(size));
          DeviceBuffer<int32_t> dPos(positions);
          const int32_t *dPosPtr = withPositions ? dPos.get() : nullptr;
          rope<float>(*dev, dX, dPosPtr, batch, seq, heads, headDim, 10000.0,
                      dOut, variant);
          ropeGrad<float>(*dev, dX, dPosPtr, batch, seq, heads, headDim,
                          10000.0, dGrad, variant);
          expectClose(dOut.download(), expected, kDoubleSumTol,
                      "interleaved rope " + what);
          expectClose(dGrad.download(), expectedGrad, kDoubleSumTol,
                      "interleaved ropeGrad " + what);
        }
}

// concat copies (exact); split sums each part's repeated rows in fp32 in
// ascending order, as the CPU (exact too). Repeats of 1 (a plain split), of
// one part only, and of both parts; empty parts and no rows.
TEST_F(CudaDenseKernels, ConcatAndSplitWithRepeats) {
  struct Repeats {
    int64_t a, b;
  };
  for (int64_t rows : {0, 1, 12, 300})
    for (int64_t aWidth : {0, 3, 64})
      for (int64_t bWidth : {1, 130})
        for (Repeats repeat :
             {Repeats{1, 1}, Repeats{1, 4}, Repeats{3, 1}, Repeats{2, 6}}) {
          if (rows % repeat.a != 0 || rows % repeat.b != 0)
            continue;
          std::string what = shape({rows, aWidth, bWidth, repeat.a, repeat.b});
          const int64_t width = aWidth + bWidth;
          const int64_t aSize = rows / repeat.a * aWidth;
          const int64_t bSize = rows / repeat.b * bWidth;
          Floats a = randomFloats(aSize, 52 + rows + aWidth);
          Floats b = randomFloats(bSize, 53 + rows + bWidth);
          Floats x = randomFloats(rows * width, 54 + rows + width);
          Floats expected(rows * width), expectedA(aSize), expectedB(bSize);
          cpu::concat(a.data(), b.data(), rows, aWidth, bWidth, repeat.a,
                      repeat.b, expected.data());
          cpu::split(x.data(), rows, aWidth, bWidth, repeat.a, repeat.b,
                     expectedA.data(), expectedB.data());
          DeviceBuffer<float> dA(a), dB(b), dX(x), dOut(garbage(rows * width)),
              dSplitA(garbage(aSize)), dSplitB(garbage(bSize));
          concat<float>(*dev, dA, dB, rows, aWidth, bWidth, repeat.a, repeat.b,
                        dOut);
          split<float>(*dev, dX, rows, aWidth, bWidth, repeat.a, repeat.b,
                       dSplitA, dSplitB);
          expectClose(dOut.download(), expected, 0.0, "concat " + what);
          expectClose(dSplitA.download(), expectedA, 0.0, "split a " + what);
          expectClose(dSplitB.download(), expectedB, 0.0, "split b " + what);
        }
}

TEST_F(CudaDenseKernels, SwigluMlpAndSharedExperts) {
  for (int64_t rows : {1, 7, 300})
    for (int64_t hidden : {1, 3, 64, 130})
      for (int64_t inter : {1, 5, 96}) {
        std::string what = shape({rows, hidden, inter});
        Floats x = randomFloats(rows * hidden, 10 + rows);
        Floats gate = randomFloats(inter * hidden, 11 + inter);
        Floats up = randomFloats(inter * hidden, 12 + inter);
        Floats down = randomFloats(hidden * inter, 13 + hidden);
        Floats sharedGate = randomFloats(hidden, 14 + hidden);
        Floats expected(rows * hidden), expectedGated(rows * hidden);
        cpu::swigluMlp(x.data(), rows, hidden, gate.data(), up.data(),
                       down.data(), inter, expected.data());
        cpu::sharedExperts(x.data(), rows, hidden, gate.data(), up.data(),
                           down.data(), inter, sharedGate.data(),
                           expectedGated.data());
        DeviceBuffer<float> dX(x), dGate(gate), dUp(up), dDown(down),
            dShared(sharedGate), dOut(garbage(rows * hidden)),
            dPlain(garbage(rows * hidden)), dGated(garbage(rows * hidden));
        swigluMlp<float>(*dev, dX, rows, hidden, dGate, dUp, dDown, inter,
                         dOut);
        sharedExperts<float>(*dev, dX, rows, hidden, dGate, dUp, dDown, inter,
                             nullptr, dPlain);
        sharedExperts<float>(*dev, dX, rows, hidden, dGate, dUp, dDown, inter,
                             dShared, dGated);
        expectClose(dOut.download(), expected, kGemmTol, "swigluMlp " + what);
        expectClose(dPlain.download(), expected, kGemmTol,
                    "sharedExperts (no gate) " + what);
        expectClose(dGated.download(), expectedGated, kGemmTol,
                    "sharedExperts (gated) " + what);
      }
}

TEST_F(CudaDenseKernels, AddWithAndWithoutAliasing) {
  for (int64_t n : {1, 1000, 100003}) {
    Floats a = randomFloats(n, 15 + n), b = randomFloats(n, 16 + n);
    Floats expected(n);
    cpu::add(a.data(), b.data(), n, expected.data());
    DeviceBuffer<float> dA(a), dB(b), dOut(garbage(n));
    add<float>(*dev, dA, dB, n, dOut);
    expectClose(dOut.download(), expected, 0.0, "add " + std::to_string(n));
    add<float>(*dev, dA, dB, n, dA); // out aliases a
    expectClose(dA.download(), expected, 0.0,
                "add in place " + std::to_string(n));
  }
}

//===----------------------------------------------------------------------===//
// Dense backward
//===----------------------------------------------------------------------===//

// Deterministic: the device sums each token's rows in ascending order, as
// the CPU, so the result is exact; vocab 20 makes many repeats, vocab 1000
// leaves most rows zero.
TEST_F(CudaDenseKernels, EmbeddingGrad) {
  for (int64_t n : {0, 1, 300, 1000})
    for (int64_t vocab : {20, 1000})
      for (int64_t hidden : {1, 3, 64, 130}) {
        std::string what = "embeddingGrad " + shape({n, vocab, hidden});
        Ids tokens = randomInts(n, 17 + n, 0, vocab - 1);
        Floats dy = randomFloats(n * hidden, 18 + hidden);
        Floats expected(vocab * hidden);
        cpu::embeddingGrad(dy.data(), tokens.data(), n, vocab, hidden,
                           expected.data());
        DeviceBuffer<int32_t> dTokens(tokens);
        DeviceBuffer<float> dDy(dy), dTable(garbage(vocab * hidden));
        embeddingGrad<float>(*dev, dDy, dTokens, n, vocab, hidden, dTable);
        expectClose(dTable.download(), expected, 0.0, what);
      }
}

TEST_F(CudaDenseKernels, RmsNormGrad) {
  for (int64_t rows : {0, 1, 7, 300})
    for (int64_t dim : {1, 3, 64, 130, 1000}) {
      std::string what = shape({rows, dim});
      Floats x = randomFloats(rows * dim, 19 + dim, -2.f, 2.f);
      Floats w = randomFloats(dim, 20 + dim, 0.5f, 1.5f);
      Floats dy = randomFloats(rows * dim, 21 + rows);
      Floats dx(rows * dim), dw(dim);
      cpu::rmsNormGrad(dy.data(), x.data(), w.data(), rows, dim, 1e-6f,
                       dx.data(), dw.data());
      DeviceBuffer<float> dX(x), dW(w), dDy(dy), dDx(garbage(rows * dim)),
          dDw(garbage(dim));
      rmsNormGrad<float>(*dev, dDy, dX, dW, rows, dim, 1e-6f, dDx, dDw);
      expectClose(dDx.download(), dx, kDoubleSumTol, "rmsNormGrad dx " + what);
      expectClose(dDw.download(), dw, kDoubleSumTol,
                  "rmsNormGrad dweight " + what);
    }
}

TEST_F(CudaDenseKernels, LinearGrad) {
  for (int64_t rows : {0, 1, 5, 300})
    for (int64_t in : {1, 3, 64, 130})
      for (int64_t out : {1, 3, 130}) {
        std::string what = shape({rows, in, out});
        Floats x = randomFloats(rows * in, 22 + in);
        Floats w = randomFloats(out * in, 23 + out);
        Floats dy = randomFloats(rows * out, 24 + rows);
        Floats dx(rows * in), dw(out * in), db(out);
        cpu::linearGrad(dy.data(), x.data(), rows, in, w.data(), out, dx.data(),
                        dw.data(), db.data());
        DeviceBuffer<float> dX(x), dW(w), dDy(dy), dDx(garbage(rows * in)),
            dDw(garbage(out * in)), dDb(garbage(out));
        linearGrad<float>(*dev, dDy, dX, rows, in, dW, out, dDx, dDw, dDb);
        expectClose(dDx.download(), dx, kGemmTol, "linearGrad dx " + what);
        expectClose(dDw.download(), dw, kGemmTol, "linearGrad dweight " + what);
        expectClose(dDb.download(), db, kDoubleSumTol,
                    "linearGrad dbias " + what);
      }
}

TEST_F(CudaDenseKernels, SwigluMlpGradAndSharedExpertsGrad) {
  for (int64_t rows : {1, 7, 300})
    for (int64_t hidden : {1, 3, 64, 130})
      for (int64_t inter : {1, 5, 96}) {
        std::string what = shape({rows, hidden, inter});
        Floats x = randomFloats(rows * hidden, 25 + rows);
        Floats gate = randomFloats(inter * hidden, 26 + inter);
        Floats up = randomFloats(inter * hidden, 27 + inter);
        Floats down = randomFloats(hidden * inter, 28 + hidden);
        Floats sharedGate = randomFloats(hidden, 29 + hidden);
        Floats dy = randomFloats(rows * hidden, 30 + rows);
        DeviceBuffer<float> dX(x), dGate(gate), dUp(up), dDown(down),
            dShared(sharedGate), dDy(dy);
        for (int variant = 0; variant < 3; ++variant) {
          // 0: swigluMlpGrad, 1: sharedExpertsGrad without, 2: with a gate.
          std::string name = variant == 0   ? "swigluMlpGrad "
                             : variant == 1 ? "sharedExpertsGrad (no gate) "
                                            : "sharedExpertsGrad (gated) ";
          Floats dx(rows * hidden), dg(inter * hidden), du(inter * hidden),
              dd(hidden * inter), dsg(hidden);
          if (variant == 0)
            cpu::swigluMlpGrad(dy.data(), x.data(), rows, hidden, gate.data(),
                               up.data(), down.data(), inter, dx.data(),
                               dg.data(), du.data(), dd.data());
          else
            cpu::sharedExpertsGrad(dy.data(), x.data(), rows, hidden,
                                   gate.data(), up.data(), down.data(), inter,
                                   variant == 2 ? sharedGate.data() : nullptr,
                                   dx.data(), dg.data(), du.data(), dd.data(),
                                   variant == 2 ? dsg.data() : nullptr);
          DeviceBuffer<float> dDx(garbage(rows * hidden)),
              dDg(garbage(inter * hidden)), dDu(garbage(inter * hidden)),
              dDd(garbage(hidden * inter)), dDsg(garbage(hidden));
          if (variant == 0)
            swigluMlpGrad<float>(*dev, dDy, dX, rows, hidden, dGate, dUp, dDown,
                                 inter, dDx, dDg, dDu, dDd);
          else
            sharedExpertsGrad<float>(
                *dev, dDy, dX, rows, hidden, dGate, dUp, dDown, inter,
                variant == 2 ? dShared.get() : nullptr, dDx, dDg, dDu, dDd,
                variant == 2 ? dDsg.get() : nullptr);
          expectClose(dDx.download(), dx, kGemmTol, name + "dx " + what);
          expectClose(dDg.download(), dg, kGemmTol, name + "dgate " + what);
          expectClose(dDu.download(), du, kGemmTol, name + "dup " + what);
          expectClose(dDd.download(), dd, kGemmTol, name + "ddown " + what);
          if (variant == 2)
            expectClose(dDsg.download(), dsg, kGemmTol,
                        name + "dsharedGate " + what);
        }
      }
}

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

float downloadScalar(const DeviceBuffer<float> &buffer) {
  return buffer.download()[0];
}

TEST_F(CudaDenseKernels, CrossEntropyAndGrad) {
  const int64_t ignore = -100;
  for (int64_t n : {0, 1, 7, 300})
    for (int64_t vocab : {1, 5, 1000, 32001})
      for (int mode = 0; mode < 3; ++mode) {
        // 0: every label counts, 1: some ignored, 2: all ignored.
        std::string what = shape({n, vocab}) + " mode " + std::to_string(mode);
        Floats logits = randomFloats(n * vocab, 31 + vocab, -6.f, 6.f);
        Ids labels = randomInts(n, 32 + n, 0, int32_t(vocab - 1));
        for (int64_t t = 0; t < n; ++t)
          if (mode == 2 || (mode == 1 && t % 3 == 1))
            labels[t] = int32_t(ignore);
        float expected =
            cpu::crossEntropy(logits.data(), labels.data(), n, vocab, ignore);
        Floats expectedGrad(n * vocab);
        cpu::crossEntropyGrad(logits.data(), labels.data(), n, vocab, ignore,
                              expectedGrad.data());
        DeviceBuffer<float> dLogits(logits), dOut(garbage(1)),
            dGrad(garbage(n * vocab));
        DeviceBuffer<int32_t> dLabels(labels);
        crossEntropy<float>(*dev, dLogits, dLabels, n, vocab, ignore,
                            /*count=*/nullptr, dOut);
        crossEntropyGrad<float>(*dev, dLogits, dLabels, n, vocab, ignore,
                                /*count=*/nullptr, dGrad);
        float got = downloadScalar(dOut);
        if (mode == 2 || n == 0) {
          EXPECT_EQ(got, 0.0f) << "crossEntropy " << what;
        }
        expectClose({got}, {expected}, kDoubleSumTol, "crossEntropy " + what);
        expectClose(dGrad.download(), expectedGrad, kDoubleSumTol,
                    "crossEntropyGrad " + what);

        // One rank's share: divided by a count of labels on every rank.
        float count = cpu::labelCount(labels.data(), n, ignore) + 3.0f;
        DeviceBuffer<float> dCount(Floats{count}), dCounted(garbage(1));
        labelCount(*dev, dLabels, n, ignore, dCounted);
        EXPECT_EQ(downloadScalar(dCounted), count - 3.0f) << what;
        float share = cpu::crossEntropy(logits.data(), labels.data(), n, vocab,
                                        ignore, &count);
        cpu::crossEntropyGrad(logits.data(), labels.data(), n, vocab, ignore,
                              expectedGrad.data(), &count);
        crossEntropy<float>(*dev, dLogits, dLabels, n, vocab, ignore, dCount,
                            dOut);
        crossEntropyGrad<float>(*dev, dLogits, dLabels, n, vocab, ignore,
                                dCount, dGrad);
        expectClose({downloadScalar(dOut)}, {share}, kDoubleSumTol,
                    "crossEntropy share " + what);
        expectClose(dGrad.download(), expectedGrad, kDoubleSumTol,
                    "crossEntropyGrad share " + what);
      }
}

// The CPU throws on a label outside [0, vocab) that is not ignoreIndex; the
// device treats it as ignored: the same as the CPU with that label ignored.
TEST_F(CudaDenseKernels, CrossEntropyTreatsBadLabelsAsIgnored) {
  const int64_t n = 9, vocab = 17, ignore = -1;
  Floats logits = randomFloats(n * vocab, 33);
  Ids labels = randomInts(n, 34, 0, vocab - 1);
  Ids bad = labels, asIgnored = labels;
  bad[2] = int32_t(vocab);
  bad[5] = -7;
  asIgnored[2] = asIgnored[5] = int32_t(ignore);
  float expected =
      cpu::crossEntropy(logits.data(), asIgnored.data(), n, vocab, ignore);
  Floats expectedGrad(n * vocab);
  cpu::crossEntropyGrad(logits.data(), asIgnored.data(), n, vocab, ignore,
                        expectedGrad.data());
  DeviceBuffer<float> dLogits(logits), dOut(garbage(1)),
      dGrad(garbage(n * vocab));
  DeviceBuffer<int32_t> dLabels(bad);
  crossEntropy<float>(*dev, dLogits, dLabels, n, vocab, ignore, nullptr, dOut);
  crossEntropyGrad<float>(*dev, dLogits, dLabels, n, vocab, ignore, nullptr,
                          dGrad);
  expectClose({downloadScalar(dOut)}, {expected}, kDoubleSumTol,
              "crossEntropy with bad labels");
  expectClose(dGrad.download(), expectedGrad, kDoubleSumTol,
              "crossEntropyGrad with bad labels");
}

TEST_F(CudaDenseKernels, AuxLossAndGrad) {
  const float coefficient = 0.01f;
  for (int64_t tokens : {0, 1, 30, 300})
    for (int64_t experts : {4, 8, 64})
      for (int64_t topK : {1, 2})
        for (bool sigmoid : {false, true}) {
          std::string what = shape({tokens, experts, topK}) +
                             (sigmoid ? " sigmoid" : " softmax");
          Floats logits =
              randomFloats(tokens * experts, 35 + experts, -3.f, 3.f);
          Ids indices =
              randomInts(tokens * topK, 36 + tokens, 0, int32_t(experts - 1));
          float expected = cpu::auxLoss(logits.data(), indices.data(), tokens,
                                        experts, topK, sigmoid, coefficient);
          Floats expectedGrad(tokens * experts);
          cpu::auxLossGrad(logits.data(), indices.data(), tokens, experts, topK,
                           sigmoid, coefficient, expectedGrad.data());
          DeviceBuffer<float> dLogits(logits), dOut(garbage(1)),
              dGrad(garbage(tokens * experts));
          DeviceBuffer<int32_t> dIndices(indices);
          auxLoss<float>(*dev, dLogits, dIndices, tokens, experts, topK,
                         sigmoid, coefficient, dOut);
          auxLossGrad<float>(*dev, dLogits, dIndices, tokens, experts, topK,
                             sigmoid, coefficient, dGrad);
          expectClose({downloadScalar(dOut)}, {expected}, kDoubleSumTol,
                      "auxLoss " + what);
          expectClose(dGrad.download(), expectedGrad, kDoubleSumTol,
                      "auxLossGrad " + what);
        }
}

TEST_F(CudaDenseKernels, ZLossAndGrad) {
  const float coefficient = 1e-3f;
  for (int64_t tokens : {0, 1, 21, 300})
    for (int64_t experts : {1, 9, 64, 300}) {
      std::string what = shape({tokens, experts});
      Floats logits = randomFloats(tokens * experts, 37 + experts, -5.f, 5.f);
      float expected = cpu::zLoss(logits.data(), tokens, experts, coefficient);
      Floats expectedGrad(tokens * experts);
      cpu::zLossGrad(logits.data(), tokens, experts, coefficient,
                     expectedGrad.data());
      DeviceBuffer<float> dLogits(logits), dOut(garbage(1)),
          dGrad(garbage(tokens * experts));
      zLoss<float>(*dev, dLogits, tokens, experts, coefficient, dOut);
      zLossGrad<float>(*dev, dLogits, tokens, experts, coefficient, dGrad);
      expectClose({downloadScalar(dOut)}, {expected}, kDoubleSumTol,
                  "zLoss " + what);
      expectClose(dGrad.download(), expectedGrad, kDoubleSumTol,
                  "zLossGrad " + what);
    }
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

TEST_F(CudaDenseKernels, SumSquares) {
  for (int64_t n : {0, 1, 1000, 1000000}) {
    Floats x = randomFloats(n, 38 + n, -3.f, 3.f);
    double expected = cpu::sumSquares(x.data(), n);
    DeviceBuffer<float> dX(x);
    DeviceBuffer<double> dOut(std::vector<double>{-1.0});
    sumSquares(*dev, dX, n, dOut);
    double got = dOut.download()[0];
    EXPECT_NEAR(got, expected, 1e-12 * std::max(1.0, expected))
        << "sumSquares " << n;
  }
}

TEST_F(CudaDenseKernels, AdamWSeveralSteps) {
  for (int64_t n : {1, 1000, 100003}) {
    const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
    const float weightDecay = 0.1f, gradScale = 0.7f;
    Floats param = randomFloats(n, 39 + n), m(n, 0.0f), v(n, 0.0f);
    DeviceBuffer<float> dParam(param), dM(m), dV(v);
    for (int64_t step = 1; step <= 5; ++step) {
      Floats grad = randomFloats(n, 40 + n + step, -2.f, 2.f);
      cpu::adamw(param.data(), grad.data(), m.data(), v.data(), n, lr, beta1,
                 beta2, eps, weightDecay, gradScale, step);
      DeviceBuffer<float> dGrad(grad);
      adamw(*dev, dParam, dGrad, dM, dV, n, lr, beta1, beta2, eps, weightDecay,
            gradScale, step);
      std::string what = std::to_string(n) + " step " + std::to_string(step);
      expectClose(dParam.download(), param, 1e-6, "adamw param " + what);
      expectClose(dM.download(), m, 1e-6, "adamw m " + what);
      expectClose(dV.download(), v, 1e-6, "adamw v " + what);
    }
  }
}

//===----------------------------------------------------------------------===//
// Argument checks (on the host, before anything is queued)
//===----------------------------------------------------------------------===//

TEST_F(CudaDenseKernels, InvalidSizesThrow) {
  DeviceBuffer<float> buf(16);
  DeviceBuffer<int32_t> ids(16);
  DeviceBuffer<double> out(1);
  EXPECT_THROW(rmsNorm<float>(*dev, buf, buf, 1, 0, 1e-6f, buf),
               std::invalid_argument);
  EXPECT_THROW(embedding<float>(*dev, ids, -1, buf, 4, 4, buf),
               std::invalid_argument);
  EXPECT_THROW(linear<float>(*dev, buf, 1, -2, buf, 1, nullptr, buf),
               std::invalid_argument);
  EXPECT_THROW(rope<float>(*dev, buf, nullptr, 1, 1, 1, 3, 10000.0, buf),
               std::invalid_argument);
  EXPECT_THROW(ropeGrad<float>(*dev, buf, nullptr, 1, 1, 1, 2, 0.0, buf),
               std::invalid_argument);
  // Interleaved pairs move, so the rotation cannot be in place.
  RopeVariant interleaved;
  interleaved.interleaved = true;
  EXPECT_THROW(
      rope<float>(*dev, buf, nullptr, 1, 1, 1, 4, 10000.0, buf, interleaved),
      std::invalid_argument);
  // Repeats of 0, or that do not divide rows.
  EXPECT_THROW(concat<float>(*dev, buf, buf, 4, 1, 1, 0, 1, buf),
               std::invalid_argument);
  EXPECT_THROW(concat<float>(*dev, buf, buf, 4, 1, 1, 1, 3, buf),
               std::invalid_argument);
  EXPECT_THROW(split<float>(*dev, buf, 6, 1, 1, 4, 1, buf, buf),
               std::invalid_argument);
  EXPECT_THROW(split<float>(*dev, buf, 2, -1, 1, 1, 1, buf, buf),
               std::invalid_argument);
  EXPECT_THROW(swigluMlp<float>(*dev, buf, 1, 1, buf, buf, buf, -1, buf),
               std::invalid_argument);
  EXPECT_THROW(crossEntropy<float>(*dev, buf, ids, 1, 0, -100, nullptr, buf),
               std::invalid_argument);
  EXPECT_THROW(auxLoss<float>(*dev, buf, ids, 1, 4, 0, false, 0.01f, buf),
               std::invalid_argument);
  EXPECT_THROW(zLossGrad<float>(*dev, buf, -1, 4, 0.01f, buf),
               std::invalid_argument);
  EXPECT_THROW(sumSquares(*dev, buf, -1, out), std::invalid_argument);
  EXPECT_THROW(adamw(*dev, buf, buf, buf, buf, 4, 1e-3f, 0.9f, 0.999f, 1e-8f,
                     0.0f, 1.0f, 0),
               std::invalid_argument);
  dev->synchronize();
}

} // namespace
} // namespace moe::cuda::test
