//===- CudaBf16StorageTest.cpp - The CUDA backend under bf16 storage ------===//
//
// Every tensor op of moe::rt::Backend, forward and backward, runs on the CUDA
// backend and on the CPU backend, both after setStorage(StorageType::BF16),
// on the same bf16 inputs, and CUDA's outputs are compared with the CPU's.
// The CPU backend is the reference of bf16 storage (Backend.h,
// cpu/CpuBackend.h): it widens its inputs, runs the fp32 kernel and rounds each
// output once to nearest even. The CUDA kernels load bf16, compute and
// accumulate in fp32 and round where they store; they may also round an
// intermediate that feeds a GEMM (the SwiGLU activation, a gradient) to bf16.
// Loss values are fp32 scalars on both sides. Also checked: the storage type
// sticks, and the device's fp32 <-> bf16 conversion rounds exactly as the
// host's (ties to even, signed zeros, subnormals, overflow to infinity).
//
// Inputs have odd sizes (37 tokens; hidden sizes from 3 to 130; head dims 16
// and 40 with 4 query heads on 2 kv heads, and 24 with value heads of 16),
// routing leaves experts empty and drops slots (padding rows), and the
// grouped SwiGLU runs over twice as many segments as experts, one of them
// empty. Every output starts as the same garbage on both sides, so a kernel
// that leaves an element unwritten, or accumulates into it, fails. One
// exception: groupedSwiglu's rows past its last segment, which the CPU
// leaves alone, may be left alone or zeroed.
//
// Tolerances, relative to the largest magnitude of the CPU's output
// (expectClose of CudaTestUtil.h). A bf16 value has 8 significant bits: its
// ulp is 2^-7 of its leading power of two, so at most 2^-7 = 7.8e-3 of the
// largest magnitude of its tensor.
//   - Exact (bit for bit) for pure copies (embedding, concat, the rows
//     permute gathers), for split (fp32 sums of the repeated rows in the
//     CPU's order, rounded once), for integer outputs (router indices, kept
//     ids, offsets, rowToSlot, expert counts, dropped slots), and for the
//     router's logits, whose dyadic inputs make every partial sum exact in
//     fp32 and in bf16.
//   - kRoundTol = 8e-3, one ulp at the largest magnitude, for ops without a
//     GEMM: rmsNorm, rope (interleaved too), add, attention,
//     unpermuteCombine, the losses' gradients and rmsNormGrad, ropeGrad,
//     embeddingGrad, permuteGrad, unpermuteGrad, attentionGrad. Both sides
//     compute nearly the same fp32 value (another summation order, another
//     expf) and round it once; two roundings of values much closer than an ulp
//     differ by at most one ulp.
//   - kGemmTol = 2e-2 for ops with GEMMs: linear, mlp, sharedExperts,
//     groupedSwiglu, the router's weights, and their gradients (routerGrad
//     included). The device may round the intermediates it feeds to a GEMM
//     to bf16 (2^-9 relative each), which adds to the final rounding's ulp.
//   - kLossTol = 1e-3 relative for the scalar losses, fp32 on both sides
//     from identical bf16 logits.
//
// Without a GPU every test skips ("skipped: no GPU").
//
//===----------------------------------------------------------------------===//

#include "CudaTestUtil.h"
#include "moe/Runtime/CudaBackend.h"

#include "moe/Runtime/BFloat16.h"
#include "moe/Runtime/Backend.h"
#include "moe/Runtime/CpuKernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::cuda::test {
namespace {

using Floats = std::vector<float>;
using Ids = std::vector<int32_t>;
using Offsets = std::vector<int64_t>;

constexpr double kRoundTol = 8e-3;
constexpr double kGemmTol = 2e-2;
constexpr double kLossTol = 1e-3;

// What every output holds before a call, on both sides (123 is a bf16).
constexpr float kGarbage = 123.0f;
constexpr int32_t kGarbageId = 12345;
constexpr int64_t kGarbageOffset = 777;

constexpr rt::StorageType kBf16 = rt::StorageType::BF16;
constexpr rt::StorageType kF32 = rt::StorageType::F32;

//===----------------------------------------------------------------------===//
// The same call on both backends
//===----------------------------------------------------------------------===//

enum Side { kCpu = 0, kCuda = 1 };

/// A tensor allocated on both backends; T is the element type of the Backend
/// parameter it is passed as (float for bf16 storage tensors too).
template <typename T> struct Tensor { size_t id; };

/// Tensors with the same contents on the CPU and the CUDA backend, a call
/// run on both, and the comparison of what it wrote. Storage tensors hold
/// bf16 bits; the others (ids, offsets, fp32 loss values) their bytes as
/// given. Everything is released with the TwinCall.
class TwinCall {
public:
  /// Maps a Tensor to its pointer on one backend.
  class Pointers {
  public:
    Pointers(const TwinCall &call, Side side) : call_(call), side_(side) {}
    template <typename T> T *operator()(Tensor<T> t) const {
      return static_cast<T *>(call_.buffers_[t.id].ptr[side_]);
    }

  private:
    const TwinCall &call_;
    Side side_;
  };

  TwinCall(rt::Backend &cpu, rt::Backend &cuda) : backends_{&cpu, &cuda} {}
  ~TwinCall() {
    // A device fault is reported by the call that met it; destructors must
    // not throw.
    try {
      for (const Buffer &b : buffers_)
        for (Side side : {kCpu, kCuda})
          backends_[side]->release(b.ptr[side]);
    } catch (const std::exception &) {
    }
  }
  TwinCall(const TwinCall &) = delete;
  TwinCall &operator=(const TwinCall &) = delete;

  /// A storage tensor holding `values` rounded to bf16.
  Tensor<float> bf16(const Floats &values) {
    std::vector<uint16_t> bits(values.size());
    rt::narrowToBf16(values.data(), bits.data(), int64_t(values.size()));
    return {add(bits.data(), bits.size() * sizeof(uint16_t), true)};
  }
  /// A storage output of `n` elements, each kGarbage.
  Tensor<float> output(size_t n) { return bf16(Floats(n, kGarbage)); }
  /// A tensor holding `values` as they are.
  template <typename T> Tensor<T> raw(const std::vector<T> &values) {
    return {add(values.data(), values.size() * sizeof(T), false)};
  }

  /// op(backend, at) on the CPU, then on CUDA; at(t) is t's pointer there.
  template <typename Op> void run(Op op) {
    for (Side side : {kCpu, kCuda}) {
      op(*backends_[side], Pointers(*this, side));
      backends_[side]->synchronize();
    }
  }

  /// t on one side, widened from bf16 for a storage tensor.
  Floats floats(Tensor<float> t, Side side) const {
    if (!buffers_[t.id].bf16)
      return download<float>(t.id, side);
    std::vector<uint16_t> bits = download<uint16_t>(t.id, side);
    Floats wide(bits.size());
    rt::widenBf16(bits.data(), wide.data(), int64_t(bits.size()));
    return wide;
  }
  /// A raw tensor's elements on one side.
  template <typename T> std::vector<T> elements(Tensor<T> t, Side side) const {
    if (buffers_[t.id].bf16)
      throw std::logic_error("elements() of a bf16 tensor; use floats()");
    return download<T>(t.id, side);
  }

  /// CUDA's t within rtol times the largest magnitude of the CPU's t.
  void expectClose(Tensor<float> t, double rtol,
                   const std::string &what) const {
    moe::cuda::test::expectClose(floats(t, kCuda), floats(t, kCpu), rtol, what);
  }
  /// CUDA's t bit for bit the CPU's.
  template <typename T>
  void expectEqual(Tensor<T> t, const std::string &what) const {
    if (buffers_[t.id].bf16)
      expectSame(download<uint16_t>(t.id, kCuda),
                 download<uint16_t>(t.id, kCpu), what,
                 [](uint16_t bits) { return rt::bf16ToF32(bits); });
    else
      expectSame(download<T>(t.id, kCuda), download<T>(t.id, kCpu), what,
                 [](T v) { return v; });
  }

private:
  struct Buffer {
    void *ptr[2];
    size_t bytes;
    bool bf16;
  };

  size_t add(const void *host, size_t bytes, bool bf16) {
    Buffer b{{nullptr, nullptr}, bytes, bf16};
    for (Side side : {kCpu, kCuda}) {
      b.ptr[side] = backends_[side]->allocate(bytes);
      backends_[side]->upload(b.ptr[side], host, bytes);
    }
    buffers_.push_back(b);
    return buffers_.size() - 1;
  }

  template <typename E> std::vector<E> download(size_t id, Side side) const {
    const Buffer &b = buffers_[id];
    std::vector<E> host(b.bytes / sizeof(E));
    backends_[side]->download(host.data(), b.ptr[side], b.bytes);
    return host;
  }

  template <typename E, typename Show>
  static void expectSame(const std::vector<E> &actual,
                         const std::vector<E> &expected,
                         const std::string &what, Show show) {
    ASSERT_EQ(actual.size(), expected.size()) << what;
    auto diff = std::mismatch(actual.begin(), actual.end(), expected.begin());
    if (diff.first != actual.end())
      ADD_FAILURE() << what << ": element " << (diff.first - actual.begin())
                    << " is " << show(*diff.first) << ", the CPU's "
                    << show(*diff.second);
  }

  rt::Backend *backends_[2];
  std::vector<Buffer> buffers_;
};

using Pointers = TwinCall::Pointers;

//===----------------------------------------------------------------------===//
// Inputs
//===----------------------------------------------------------------------===//

std::string shape(std::initializer_list<int64_t> sizes) {
  std::string s;
  for (int64_t v : sizes)
    s += (s.empty() ? "" : "x") + std::to_string(v);
  return s;
}

Floats scaled(Floats v, float scale) {
  for (float &x : v)
    x *= scale;
  return v;
}

/// Multiples of 1/steps in [-1, 1].
Floats dyadic(size_t n, uint64_t seed, int32_t steps) {
  Ids ints = randomInts(n, seed, -steps, steps);
  Floats v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = float(ints[i]) / float(steps);
  return v;
}

/// `values` rounded to bf16, for host computations on what the backends see.
Floats rounded(Floats values) {
  for (float &v : values)
    v = rt::bf16ToF32(rt::f32ToBf16(v));
  return values;
}

/// The rowToSlot of a routing of `tokens` x `topK` slots over experts 0, 2,
/// 3 and 5 of 6 (1 and 4 get nothing), with the slots past `capacity` per
/// expert dropped (padding rows at the end).
Ids permutation(uint64_t seed, int64_t tokens, int64_t topK, int64_t capacity) {
  const int64_t experts = 6;
  Ids routed = distinctRouting(seed, tokens, topK, {0, 2, 3, 5});
  Ids kept(routed.size()), rowToSlot(routed.size());
  std::vector<int64_t> counts(experts);
  Offsets offsets(experts + 1);
  cpu::dropOverCapacity(routed.data(), tokens, topK, experts, capacity,
                        kept.data());
  cpu::permuteByExpert(kept.data(), tokens, topK, experts, counts.data(),
                       offsets.data(), rowToSlot.data());
  return rowToSlot;
}

/// SwiGLU operands: x and dy [rows, hidden], gate/up [experts, inter,
/// hidden], down [experts, hidden, inter], sharedGate [hidden]; weights
/// scaled by 1/sqrt(fan-in), so that activations stay of order 1.
struct SwigluInputs {
  Floats x, dy, gate, up, down, sharedGate;
  SwigluInputs(int64_t rows, int64_t hidden, int64_t inter, int64_t experts,
               uint64_t seed)
      : x(randomFloats(rows * hidden, seed)),
        dy(randomFloats(rows * hidden, seed + 1)),
        gate(scaled(randomFloats(experts * inter * hidden, seed + 2),
                    1.0f / std::sqrt(float(hidden)))),
        up(scaled(randomFloats(experts * inter * hidden, seed + 3),
                  1.0f / std::sqrt(float(hidden)))),
        down(scaled(randomFloats(experts * hidden * inter, seed + 4),
                    1.0f / std::sqrt(float(inter)))),
        sharedGate(randomFloats(hidden, seed + 5)) {}
};

std::string routerName(const moe::RouterConfig &cfg) {
  return "experts " + std::to_string(cfg.experts) + " topK " +
         std::to_string(cfg.topK) + (cfg.sigmoid ? " sigmoid" : " softmax") +
         (cfg.normTopkProb ? " norm" : "") + " routeScale " +
         std::to_string(cfg.routeScale) + " groups " +
         std::to_string(cfg.topkGroup) + "/" + std::to_string(cfg.nGroup);
}

//===----------------------------------------------------------------------===//
// The fixture
//===----------------------------------------------------------------------===//

/// A CPU and a CUDA backend, both storing bf16.
class CudaBf16Storage : public CudaTest {
protected:
  void SetUp() override {
    CudaTest::SetUp();
    if (IsSkipped())
      return;
    cpuBackend = rt::makeCpuBackend();
    cudaBackend = makeCudaBackend(0);
    cpuBackend->setStorage(kBf16);
    cudaBackend->setStorage(kBf16);
  }
  TwinCall twinCall() { return TwinCall(*cpuBackend, *cudaBackend); }

  /// router on 37 tokens of hidden size 8: indices and logits bit for bit,
  /// weights within kGemmTol.
  void checkRouter(const moe::RouterConfig &cfg, bool withBias, uint64_t seed) {
    const int64_t tokens = 37, hidden = 8;
    const int64_t experts = cfg.experts, topK = cfg.topK;
    std::string what = routerName(cfg) + (withBias ? " bias" : "");
    // Quarters times eighths, 8 of them: every partial sum of a logit is a
    // multiple of 1/32 of magnitude at most 8, exact in fp32 and in bf16, so
    // both sides choose from the same logits and store them unrounded.
    Floats x = dyadic(tokens * hidden, seed, 4);
    for (int64_t t = 0; t < tokens; t += 5) // all of its logits tie
      std::fill_n(x.begin() + t * hidden, hidden, 0.0f);
    TwinCall call = twinCall();
    Tensor<float> xT = call.bf16(x);
    Tensor<float> gate = call.bf16(dyadic(experts * hidden, seed + 1, 8));
    Tensor<float> bias =
        call.bf16(randomFloats(experts, seed + 2, -0.3f, 0.3f));
    Tensor<float> weights = call.output(tokens * topK);
    Tensor<int32_t> indices = call.raw(Ids(tokens * topK, kGarbageId));
    Tensor<float> logits = call.output(tokens * experts);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.router(at(xT), at(gate), withBias ? at(bias) : nullptr, at(weights),
               at(indices), at(logits), tokens, hidden, cfg.experts, cfg.topK,
               cfg.sigmoid, cfg.normTopkProb, cfg.routeScale, cfg.nGroup,
               cfg.topkGroup, cfg.groupTop);
    });
    call.expectEqual(indices, "router indices " + what);
    call.expectEqual(logits, "router logits " + what);
    call.expectClose(weights, kGemmTol, "router weights " + what);
  }

  std::unique_ptr<rt::Backend> cpuBackend, cudaBackend;
};

//===----------------------------------------------------------------------===//
// Storage and conversion
//===----------------------------------------------------------------------===//

TEST_F(CudaBf16Storage, StorageIsWhatWasSet) {
  EXPECT_EQ(cudaBackend->storage(), kBf16);
  cudaBackend->setStorage(kF32);
  EXPECT_EQ(cudaBackend->storage(), kF32);
  cudaBackend->setStorage(kBf16);
  EXPECT_EQ(cudaBackend->storage(), kBf16);
}

uint32_t bitsOf(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

float fromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// fp32 -> bf16 -> fp32 on the device: the bf16 bits are rt::f32ToBf16's
// (BFloat16.h), the way back is exact, on both backends.
TEST_F(CudaBf16Storage, ConvertRoundsAsTheHost) {
  using Limits = std::numeric_limits<float>;
  Floats values = {
      1.0f, -2.0f, 0.0f, -0.0f, -3.14159f, 1e-3f, -7.5e4f,
      // Ties: 1 + 2^-8 to the even 1, 1 + 3 * 2^-8 to the even 1 + 2^-6.
      1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -(1.0f + 0x1p-8f),
      -(1.0f + 3 * 0x1p-8f),
      // Just past and just short of a tie.
      fromBits(0x3F808001u), fromBits(0x3F807FFFu),
      // The smallest normal, subnormals (bf16 has them too).
      Limits::min(), Limits::denorm_min(), 1e-39f, -2.5e-40f,
      // Large; past the largest bf16 (rounds to infinity); infinities.
      3.0e38f, Limits::max(), -Limits::max(), Limits::infinity(),
      -Limits::infinity()};
  Floats random = randomFloats(1000, 1, -100.0f, 100.0f);
  values.insert(values.end(), random.begin(), random.end());
  values.push_back(Limits::quiet_NaN()); // last: only NaN-ness is checked
  const int64_t n = int64_t(values.size());
  std::vector<uint16_t> want(n);
  rt::narrowToBf16(values.data(), want.data(), n);

  TwinCall call = twinCall();
  Tensor<float> src = call.raw(values), back = call.raw(Floats(n, kGarbage));
  Tensor<uint16_t> half = call.raw(std::vector<uint16_t>(n, 0xFFFF));
  call.run([&](rt::Backend &b, const Pointers &at) {
    b.convert(at(half), kBf16, at(src), kF32, n);
    b.convert(at(back), kF32, at(half), kBf16, n);
  });
  for (Side side : {kCpu, kCuda}) {
    const char *name = side == kCpu ? "cpu" : "cuda";
    std::vector<uint16_t> got = call.elements(half, side);
    Floats wide = call.floats(back, side);
    for (int64_t i = 0; i + 1 < n; ++i) {
      EXPECT_EQ(got[i], want[i])
          << name << " element " << i << " (" << values[i] << ")";
      EXPECT_EQ(bitsOf(wide[i]), uint32_t(want[i]) << 16)
          << name << " element " << i << " (" << values[i] << ")";
    }
    EXPECT_TRUE(std::isnan(rt::bf16ToF32(got[n - 1]))) << name;
    EXPECT_TRUE(std::isnan(wide[n - 1])) << name;
  }
}

//===----------------------------------------------------------------------===//
// Dense forward
//===----------------------------------------------------------------------===//

TEST_F(CudaBf16Storage, Embedding) {
  const int64_t n = 37, vocab = 50;
  for (int64_t hidden : {3, 130}) {
    TwinCall call = twinCall();
    Tensor<int32_t> tokens = call.raw(randomInts(n, 2, 0, vocab - 1));
    Tensor<float> table = call.bf16(randomFloats(vocab * hidden, 3));
    Tensor<float> out = call.output(n * hidden);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.embedding(at(tokens), at(table), at(out), n, vocab, hidden);
    });
    call.expectEqual(out, "embedding " + shape({n, vocab, hidden}));
  }
}

TEST_F(CudaBf16Storage, RmsNorm) {
  const int64_t rows = 37;
  for (int64_t dim : {3, 130}) {
    TwinCall call = twinCall();
    Tensor<float> x = call.bf16(randomFloats(rows * dim, 4, -2.f, 2.f));
    Tensor<float> w = call.bf16(randomFloats(dim, 5, 0.5f, 1.5f));
    Tensor<float> out = call.output(rows * dim);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.rmsNorm(at(x), at(w), at(out), rows, dim, 1e-6f);
    });
    call.expectClose(out, kRoundTol, "rmsNorm " + shape({rows, dim}));
  }
}

TEST_F(CudaBf16Storage, LinearWithAndWithoutBias) {
  const int64_t rows = 37;
  for (int64_t in : {3, 130})
    for (int64_t outFeatures : {5, 67})
      for (bool withBias : {false, true}) {
        TwinCall call = twinCall();
        Tensor<float> x = call.bf16(randomFloats(rows * in, 6));
        Tensor<float> w = call.bf16(scaled(randomFloats(outFeatures * in, 7),
                                           1.0f / std::sqrt(float(in))));
        Tensor<float> bias = call.bf16(randomFloats(outFeatures, 8));
        Tensor<float> out = call.output(rows * outFeatures);
        call.run([&](rt::Backend &b, const Pointers &at) {
          b.linear(at(x), at(w), withBias ? at(bias) : nullptr, at(out), rows,
                   in, outFeatures);
        });
        call.expectClose(out, kGemmTol,
                         "linear " + shape({rows, in, outFeatures}) +
                             (withBias ? " bias" : ""));
      }
}

TEST_F(CudaBf16Storage, RopeAndRopeGradWithAndWithoutPositions) {
  const int64_t batch = 2, seq = 5, heads = 3;
  for (int64_t headDim : {6, 130})
    for (bool withPositions : {false, true}) {
      std::string what = shape({batch, seq, heads, headDim}) +
                         (withPositions ? " positions" : "");
      const int64_t n = batch * seq * heads * headDim;
      TwinCall call = twinCall();
      Tensor<float> x = call.bf16(randomFloats(n, 9 + headDim));
      Tensor<int32_t> positions =
          call.raw(randomInts(batch * seq, 10, 0, 4095));
      Tensor<float> out = call.output(n), dx = call.output(n);
      call.run([&](rt::Backend &b, const Pointers &at) {
        const int32_t *pos = withPositions ? at(positions) : nullptr;
        b.rope(at(x), pos, at(out), batch, seq, heads, headDim, 1e4, 1.0, 0.0,
               0.0, 1.0, /*interleaved=*/false);
        b.ropeGrad(at(x), pos, at(dx), batch, seq, heads, headDim, 1e4, 1.0,
                   0.0, 0.0, 1.0, /*interleaved=*/false);
      });
      call.expectClose(out, kRoundTol, "rope " + what);
      call.expectClose(dx, kRoundTol, "ropeGrad " + what);
    }
}

// Interleaved pairs in (the gradient: out), plain and with YaRN.
TEST_F(CudaBf16Storage, InterleavedRopeWithAndWithoutYarn) {
  const int64_t batch = 2, seq = 5, heads = 3;
  for (int64_t headDim : {6, 64})
    for (bool yarn : {false, true}) {
      std::string what =
          shape({batch, seq, heads, headDim}) + (yarn ? " yarn" : "");
      const double factor = yarn ? 40.0 : 1.0, scale = yarn ? 1.25 : 1.0;
      const double low = yarn ? 3.0 : 0.0, high = yarn ? 11.0 : 0.0;
      const int64_t n = batch * seq * heads * headDim;
      TwinCall call = twinCall();
      Tensor<float> x = call.bf16(randomFloats(n, 17 + headDim));
      Tensor<int32_t> positions =
          call.raw(randomInts(batch * seq, 18, 0, 4095));
      Tensor<float> out = call.output(n), dx = call.output(n);
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.rope(at(x), at(positions), at(out), batch, seq, heads, headDim, 1e4,
               factor, low, high, scale, /*interleaved=*/true);
        b.ropeGrad(at(x), at(positions), at(dx), batch, seq, heads, headDim,
                   1e4, factor, low, high, scale, /*interleaved=*/true);
      });
      call.expectClose(out, kRoundTol, "interleaved rope " + what);
      call.expectClose(dx, kRoundTol, "interleaved ropeGrad " + what);
    }
}

/// Grouped-query attention: 4 query heads on 2 kv heads, 37 positions; q
/// and k heads of headDim, v and out heads of vDim.
struct AttentionShape {
  int64_t batch = 2, seq = 37, heads = 4, kvHeads = 2, headDim = 16, vDim = 16;
  int64_t queries() const { return batch * seq * heads * headDim; }
  int64_t keys() const { return batch * seq * kvHeads * headDim; }
  int64_t values() const { return batch * seq * kvHeads * vDim; }
  int64_t outputs() const { return batch * seq * heads * vDim; }
  float scale() const { return 1.0f / std::sqrt(float(headDim)); }
  std::string name(bool causal) const {
    return shape({batch, seq, heads, kvHeads, headDim, vDim}) +
           (causal ? " causal" : "");
  }
};

/// The (headDim, vDim) pairs the attention tests run: equal in two buckets,
/// and value heads narrower than the query/key heads.
const AttentionShape kAttentionShapes[] = {
    {2, 37, 4, 2, 16, 16}, {2, 37, 4, 2, 40, 40}, {2, 37, 4, 2, 24, 16}};

TEST_F(CudaBf16Storage, AttentionGroupedQuery) {
  for (const AttentionShape &s : kAttentionShapes)
    for (bool causal : {false, true}) {
      TwinCall call = twinCall();
      Tensor<float> q = call.bf16(randomFloats(s.queries(), 11, -2.f, 2.f));
      Tensor<float> k = call.bf16(randomFloats(s.keys(), 12, -2.f, 2.f));
      Tensor<float> v = call.bf16(randomFloats(s.values(), 13));
      Tensor<float> out = call.output(s.outputs());
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.attention(at(q), at(k), at(v), at(out), s.batch, s.seq, s.heads,
                    s.kvHeads, s.headDim, s.vDim, causal, s.scale());
      });
      call.expectClose(out, kRoundTol, "attention " + s.name(causal));
    }
}

// concat broadcasts rows of a part over `repeat` rows of out; split sums
// them back.
TEST_F(CudaBf16Storage, ConcatAndSplitWithRepeats) {
  const int64_t rows = 36;
  struct Repeats {
    int64_t a, b;
  };
  for (int64_t aWidth : {3, 130})
    for (Repeats repeat : {Repeats{1, 1}, Repeats{4, 1}, Repeats{3, 6}}) {
      const int64_t bWidth = 16, width = aWidth + bWidth;
      const int64_t aSize = rows / repeat.a * aWidth;
      const int64_t bSize = rows / repeat.b * bWidth;
      std::string what = shape({rows, aWidth, bWidth, repeat.a, repeat.b});
      TwinCall call = twinCall();
      Tensor<float> a = call.bf16(randomFloats(aSize, 19 + aWidth));
      Tensor<float> b = call.bf16(randomFloats(bSize, 20));
      Tensor<float> x = call.bf16(randomFloats(rows * width, 21 + aWidth));
      Tensor<float> out = call.output(rows * width);
      Tensor<float> splitA = call.output(aSize), splitB = call.output(bSize);
      call.run([&](rt::Backend &be, const Pointers &at) {
        be.concat(at(a), at(b), at(out), rows, aWidth, bWidth, repeat.a,
                  repeat.b);
        be.split(at(x), at(splitA), at(splitB), rows, aWidth, bWidth, repeat.a,
                 repeat.b);
      });
      call.expectEqual(out, "concat " + what);
      call.expectEqual(splitA, "split a " + what);
      call.expectEqual(splitB, "split b " + what);
    }
}

TEST_F(CudaBf16Storage, Mlp) {
  const int64_t rows = 37;
  for (int64_t hidden : {3, 65})
    for (int64_t inter : {5, 48}) {
      SwigluInputs in(rows, hidden, inter, 1, 14);
      TwinCall call = twinCall();
      Tensor<float> x = call.bf16(in.x), gate = call.bf16(in.gate),
                    up = call.bf16(in.up), down = call.bf16(in.down);
      Tensor<float> out = call.output(rows * hidden);
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.mlp(at(x), at(gate), at(up), at(down), at(out), rows, hidden, inter);
      });
      call.expectClose(out, kGemmTol, "mlp " + shape({rows, hidden, inter}));
    }
}

TEST_F(CudaBf16Storage, AddWithAndWithoutAliasing) {
  for (int64_t n : {1, 1001, 100003}) {
    TwinCall call = twinCall();
    Tensor<float> lhs = call.bf16(randomFloats(n, 15)),
                  rhs = call.bf16(randomFloats(n, 16)),
                  inPlace = call.bf16(randomFloats(n, 15));
    Tensor<float> out = call.output(n);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.add(at(lhs), at(rhs), at(out), n);
      // out aliases the first operand
      b.add(at(inPlace), at(rhs), at(inPlace), n);
    });
    call.expectClose(out, kRoundTol, "add " + std::to_string(n));
    call.expectClose(inPlace, kRoundTol, "add in place " + std::to_string(n));
  }
}

//===----------------------------------------------------------------------===//
// Router and experts forward
//===----------------------------------------------------------------------===//

TEST_F(CudaBf16Storage, RouterSoftmaxAndSigmoidWithAndWithoutBias) {
  uint64_t seed = 100;
  for (bool sigmoid : {false, true})
    for (bool withBias : {false, true})
      for (bool norm : {false, true}) {
        moe::RouterConfig cfg;
        cfg.experts = 8;
        cfg.topK = 2;
        cfg.sigmoid = sigmoid;
        cfg.normTopkProb = norm;
        cfg.routeScale = norm ? 2.5f : 1.0f;
        checkRouter(cfg, withBias, seed++);
      }
  // DeepSeek-V3-like: 2 of 4 groups eligible.
  moe::RouterConfig cfg;
  cfg.experts = 8;
  cfg.topK = 3;
  cfg.sigmoid = true;
  cfg.normTopkProb = true;
  cfg.routeScale = 2.5f;
  cfg.nGroup = 4;
  cfg.topkGroup = 2;
  checkRouter(cfg, /*withBias=*/true, seed++);
}

// dropOverCapacity then permute, each on its own side's outputs: the kept
// ids, offsets, rowToSlot and statistics are integers, the rows copies.
TEST_F(CudaBf16Storage, DropOverCapacityAndPermute) {
  const int64_t tokens = 37, topK = 3, experts = 6, slots = tokens * topK;
  // Experts 1 and 4 get no token.
  Ids routed = distinctRouting(200, tokens, topK, {0, 2, 3, 5});
  for (int64_t capacity : {1000, 20}) // nothing dropped; padding rows
    for (int64_t hidden : {5, 130}) {
      std::string what = shape({tokens, topK, experts, hidden}) + " capacity " +
                         std::to_string(capacity);
      TwinCall call = twinCall();
      Tensor<int32_t> indices = call.raw(routed);
      Tensor<int32_t> kept = call.raw(Ids(slots, kGarbageId));
      Tensor<float> x = call.bf16(randomFloats(tokens * hidden, 201));
      Tensor<float> permuted = call.output(slots * hidden);
      Tensor<int64_t> offsets = call.raw(Offsets(experts + 1, kGarbageOffset));
      Tensor<int32_t> rowToSlot = call.raw(Ids(slots, kGarbageId));
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.dropOverCapacity(at(indices), at(kept), tokens, topK, experts,
                           capacity);
        b.permute(at(x), at(kept), at(permuted), at(offsets), at(rowToSlot),
                  tokens, topK, hidden, experts);
      });
      call.expectEqual(kept, "kept " + what);
      call.expectEqual(offsets, "offsets " + what);
      call.expectEqual(rowToSlot, "rowToSlot " + what);
      call.expectEqual(permuted, "permuted rows " + what);
      EXPECT_EQ(cudaBackend->takeDroppedSlots(), cpuBackend->takeDroppedSlots())
          << what;
      EXPECT_EQ(cudaBackend->takeExpertCounts(), cpuBackend->takeExpertCounts())
          << what;
    }
}

/// Rows per segment g of groupedSwiglu, segment g belonging to expert
/// g % experts; the rows past the last segment are padding.
struct GroupedCase {
  int64_t rows, experts, hidden, inter;
  std::vector<int64_t> sizes;

  int64_t segments() const { return int64_t(sizes.size()); }
  Offsets offsets() const {
    Offsets o(sizes.size() + 1, 0);
    for (size_t g = 0; g < sizes.size(); ++g)
      o[g + 1] = o[g] + sizes[g];
    return o;
  }
  std::string name() const {
    return shape({rows, experts, hidden, inter}) + " segments " +
           std::to_string(segments());
  }
};

// segments = 2 * experts (two source ranks), an empty segment, padding rows;
// in the second, expert 1 has no rows at all; the third crosses 64-row tiles.
const GroupedCase kGroupedCases[] = {
    {13, 2, 3, 5, {3, 0, 4, 3}},
    {26, 3, 33, 20, {5, 0, 7, 2, 0, 9}},
    {150, 2, 64, 48, {0, 70, 65, 1}},
};

TEST_F(CudaBf16Storage, GroupedSwigluOverSegments) {
  for (const GroupedCase &c : kGroupedCases) {
    SwigluInputs in(c.rows, c.hidden, c.inter, c.experts, 300);
    Offsets offsets = c.offsets();
    TwinCall call = twinCall();
    Tensor<float> permuted = call.bf16(in.x), gate = call.bf16(in.gate),
                  up = call.bf16(in.up), down = call.bf16(in.down);
    Tensor<int64_t> offsetsT = call.raw(offsets);
    Tensor<float> out = call.output(c.rows * c.hidden);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.groupedSwiglu(at(permuted), at(offsetsT), at(gate), at(up), at(down),
                      at(out), c.rows, c.segments(), c.experts, c.hidden,
                      c.inter);
    });
    // The segments' rows; past them the CPU leaves the output alone and the
    // device may zero it.
    Floats got = call.floats(out, kCuda), want = call.floats(out, kCpu);
    size_t end = size_t(offsets.back() * c.hidden);
    expectClose(Floats(got.begin(), got.begin() + end),
                Floats(want.begin(), want.begin() + end), kGemmTol,
                "groupedSwiglu " + c.name());
    for (size_t i = end; i < got.size(); ++i)
      if (got[i] != kGarbage && got[i] != 0.0f) {
        ADD_FAILURE() << "groupedSwiglu " << c.name() << ": padding element "
                      << i << " is " << got[i];
        break;
      }
  }
}

TEST_F(CudaBf16Storage, UnpermuteCombine) {
  const int64_t tokens = 37, topK = 3;
  for (int64_t capacity : {1000, 20})
    for (int64_t hidden : {5, 130}) {
      const int64_t slots = tokens * topK;
      TwinCall call = twinCall();
      Tensor<float> expertOut = call.bf16(randomFloats(slots * hidden, 400));
      Tensor<int32_t> rowToSlot =
          call.raw(permutation(401, tokens, topK, capacity));
      Tensor<float> weights = call.bf16(randomFloats(slots, 402, 0.f, 1.f));
      Tensor<float> out = call.output(tokens * hidden);
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.unpermuteCombine(at(expertOut), at(rowToSlot), at(weights), at(out),
                           tokens, topK, hidden);
      });
      call.expectClose(out, kRoundTol,
                       "unpermuteCombine " + shape({tokens, topK, hidden}) +
                           " capacity " + std::to_string(capacity));
    }
}

TEST_F(CudaBf16Storage, SharedExpertsWithAndWithoutGate) {
  const int64_t rows = 37, hidden = 65, inter = 48;
  for (bool withGate : {false, true}) {
    SwigluInputs in(rows, hidden, inter, 1, 500);
    TwinCall call = twinCall();
    Tensor<float> x = call.bf16(in.x), gate = call.bf16(in.gate),
                  up = call.bf16(in.up), down = call.bf16(in.down),
                  sharedGate = call.bf16(in.sharedGate);
    Tensor<float> out = call.output(rows * hidden);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.sharedExperts(at(x), at(gate), at(up), at(down),
                      withGate ? at(sharedGate) : nullptr, at(out), rows,
                      hidden, inter);
    });
    call.expectClose(out, kGemmTol,
                     std::string("sharedExperts") +
                         (withGate ? " gated" : " ungated"));
  }
}

//===----------------------------------------------------------------------===//
// Losses and their gradients
//===----------------------------------------------------------------------===//

TEST_F(CudaBf16Storage, CrossEntropyAndGradWithIgnoredLabels) {
  const int64_t n = 37, ignore = -100;
  for (int64_t vocab : {5, 1001}) {
    Ids labels = randomInts(n, 600, 0, int32_t(vocab - 1));
    for (int64_t t = 1; t < n; t += 3)
      labels[t] = int32_t(ignore);
    TwinCall call = twinCall();
    Tensor<float> logits = call.bf16(randomFloats(n * vocab, 601, -6.f, 6.f));
    Tensor<int32_t> labelsT = call.raw(labels);
    Tensor<float> loss = call.raw(Floats{kGarbage});
    Tensor<float> dlogits = call.output(n * vocab);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.crossEntropy(at(logits), at(labelsT), nullptr, at(loss), n, vocab,
                     ignore);
      b.crossEntropyGrad(at(logits), at(labelsT), nullptr, at(dlogits), n,
                         vocab, ignore);
    });
    std::string what = shape({n, vocab});
    call.expectClose(loss, kLossTol, "crossEntropy " + what);
    call.expectClose(dlogits, kRoundTol, "crossEntropyGrad " + what);
  }
}

TEST_F(CudaBf16Storage, AuxLossAndGrad) {
  const int64_t tokens = 37, experts = 8, topK = 2;
  const float coefficient = 0.01f;
  for (bool sigmoid : {false, true}) {
    TwinCall call = twinCall();
    Tensor<float> logits =
        call.bf16(randomFloats(tokens * experts, 700, -3.f, 3.f));
    Tensor<int32_t> indices =
        call.raw(distinctRouting(701, tokens, topK, {0, 1, 2, 3, 4, 5, 6, 7}));
    Tensor<float> loss = call.raw(Floats{kGarbage});
    Tensor<float> dlogits = call.output(tokens * experts);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.auxLoss(at(logits), at(indices), at(loss), tokens, experts, topK,
                sigmoid, coefficient);
      b.auxLossGrad(at(logits), at(indices), at(dlogits), tokens, experts, topK,
                    sigmoid, coefficient);
    });
    std::string what = sigmoid ? "sigmoid" : "softmax";
    call.expectClose(loss, kLossTol, "auxLoss " + what);
    call.expectClose(dlogits, kRoundTol, "auxLossGrad " + what);
  }
}

TEST_F(CudaBf16Storage, ZLossAndGrad) {
  const int64_t tokens = 37;
  const float coefficient = 1e-3f;
  for (int64_t experts : {9, 64}) {
    TwinCall call = twinCall();
    Tensor<float> logits =
        call.bf16(randomFloats(tokens * experts, 800, -5.f, 5.f));
    Tensor<float> loss = call.raw(Floats{kGarbage});
    Tensor<float> dlogits = call.output(tokens * experts);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.zLoss(at(logits), at(loss), tokens, experts, coefficient);
      b.zLossGrad(at(logits), at(dlogits), tokens, experts, coefficient);
    });
    std::string what = shape({tokens, experts});
    call.expectClose(loss, kLossTol, "zLoss " + what);
    call.expectClose(dlogits, kRoundTol, "zLossGrad " + what);
  }
}

//===----------------------------------------------------------------------===//
// Dense backward
//===----------------------------------------------------------------------===//

// Vocab 20 repeats tokens; vocab 1000 leaves most rows zero.
TEST_F(CudaBf16Storage, EmbeddingGrad) {
  const int64_t n = 37;
  for (int64_t vocab : {20, 1000})
    for (int64_t hidden : {3, 130}) {
      TwinCall call = twinCall();
      Tensor<float> dy = call.bf16(randomFloats(n * hidden, 900));
      Tensor<int32_t> tokens =
          call.raw(randomInts(n, 901, 0, int32_t(vocab - 1)));
      Tensor<float> dtable = call.output(vocab * hidden);
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.embeddingGrad(at(dy), at(tokens), at(dtable), n, vocab, hidden);
      });
      call.expectClose(dtable, kRoundTol,
                       "embeddingGrad " + shape({n, vocab, hidden}));
    }
}

TEST_F(CudaBf16Storage, RmsNormGrad) {
  const int64_t rows = 37;
  for (int64_t dim : {3, 130}) {
    TwinCall call = twinCall();
    Tensor<float> dy = call.bf16(randomFloats(rows * dim, 1000));
    Tensor<float> x = call.bf16(randomFloats(rows * dim, 1001, -2.f, 2.f));
    Tensor<float> w = call.bf16(randomFloats(dim, 1002, 0.5f, 1.5f));
    Tensor<float> dx = call.output(rows * dim), dw = call.output(dim);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.rmsNormGrad(at(dy), at(x), at(w), at(dx), at(dw), rows, dim, 1e-6f);
    });
    std::string what = shape({rows, dim});
    call.expectClose(dx, kRoundTol, "rmsNormGrad dx " + what);
    call.expectClose(dw, kRoundTol, "rmsNormGrad dweight " + what);
  }
}

TEST_F(CudaBf16Storage, LinearGrad) {
  const int64_t rows = 37;
  for (int64_t in : {3, 130})
    for (int64_t outFeatures : {5, 67}) {
      TwinCall call = twinCall();
      Tensor<float> dy = call.bf16(randomFloats(rows * outFeatures, 1100));
      Tensor<float> x = call.bf16(randomFloats(rows * in, 1101));
      Tensor<float> w = call.bf16(scaled(randomFloats(outFeatures * in, 1102),
                                         1.0f / std::sqrt(float(in))));
      Tensor<float> dx = call.output(rows * in),
                    dw = call.output(outFeatures * in);
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.linearGrad(at(dy), at(x), at(w), at(dx), at(dw), nullptr, rows, in,
                     outFeatures);
      });
      std::string what = shape({rows, in, outFeatures});
      call.expectClose(dx, kGemmTol, "linearGrad dx " + what);
      call.expectClose(dw, kGemmTol, "linearGrad dweight " + what);
    }
}

TEST_F(CudaBf16Storage, AttentionGradGroupedQuery) {
  for (const AttentionShape &s : kAttentionShapes)
    for (bool causal : {false, true}) {
      TwinCall call = twinCall();
      Tensor<float> dout = call.bf16(randomFloats(s.outputs(), 1200));
      Tensor<float> q = call.bf16(randomFloats(s.queries(), 1201, -2.f, 2.f));
      Tensor<float> k = call.bf16(randomFloats(s.keys(), 1202, -2.f, 2.f));
      Tensor<float> v = call.bf16(randomFloats(s.values(), 1203));
      Tensor<float> dq = call.output(s.queries()), dk = call.output(s.keys()),
                    dv = call.output(s.values());
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.attentionGrad(at(dout), at(q), at(k), at(v), at(dq), at(dk), at(dv),
                        s.batch, s.seq, s.heads, s.kvHeads, s.headDim, s.vDim,
                        causal, s.scale());
      });
      std::string what = s.name(causal);
      call.expectClose(dq, kRoundTol, "attentionGrad dq " + what);
      call.expectClose(dk, kRoundTol, "attentionGrad dk " + what);
      call.expectClose(dv, kRoundTol, "attentionGrad dv " + what);
    }
}

TEST_F(CudaBf16Storage, MlpGrad) {
  const int64_t rows = 37;
  for (int64_t hidden : {3, 65})
    for (int64_t inter : {5, 48}) {
      SwigluInputs in(rows, hidden, inter, 1, 1300);
      TwinCall call = twinCall();
      Tensor<float> dy = call.bf16(in.dy), x = call.bf16(in.x),
                    gate = call.bf16(in.gate), up = call.bf16(in.up),
                    down = call.bf16(in.down);
      Tensor<float> dx = call.output(rows * hidden),
                    dgate = call.output(inter * hidden),
                    dup = call.output(inter * hidden),
                    ddown = call.output(hidden * inter);
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.mlpGrad(at(dy), at(x), at(gate), at(up), at(down), at(dx), at(dgate),
                  at(dup), at(ddown), rows, hidden, inter);
      });
      std::string what = shape({rows, hidden, inter});
      call.expectClose(dx, kGemmTol, "mlpGrad dx " + what);
      call.expectClose(dgate, kGemmTol, "mlpGrad dgate " + what);
      call.expectClose(dup, kGemmTol, "mlpGrad dup " + what);
      call.expectClose(ddown, kGemmTol, "mlpGrad ddown " + what);
    }
}

//===----------------------------------------------------------------------===//
// Router and experts backward
//===----------------------------------------------------------------------===//

TEST_F(CudaBf16Storage, SharedExpertsGradWithAndWithoutGate) {
  const int64_t rows = 37, hidden = 65, inter = 48;
  for (bool withGate : {false, true}) {
    SwigluInputs in(rows, hidden, inter, 1, 1400);
    TwinCall call = twinCall();
    Tensor<float> dy = call.bf16(in.dy), x = call.bf16(in.x),
                  gate = call.bf16(in.gate), up = call.bf16(in.up),
                  down = call.bf16(in.down),
                  sharedGate = call.bf16(in.sharedGate);
    Tensor<float> dx = call.output(rows * hidden),
                  dgate = call.output(inter * hidden),
                  dup = call.output(inter * hidden),
                  ddown = call.output(hidden * inter),
                  dsharedGate = call.output(hidden);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.sharedExpertsGrad(
          at(dy), at(x), at(gate), at(up), at(down),
          withGate ? at(sharedGate) : nullptr, at(dx), at(dgate), at(dup),
          at(ddown), withGate ? at(dsharedGate) : nullptr, rows, hidden, inter);
    });
    std::string what =
        std::string("sharedExpertsGrad") + (withGate ? " gated " : " ungated ");
    call.expectClose(dx, kGemmTol, what + "dx");
    call.expectClose(dgate, kGemmTol, what + "dgate");
    call.expectClose(dup, kGemmTol, what + "dup");
    call.expectClose(ddown, kGemmTol, what + "ddown");
    if (withGate)
      call.expectClose(dsharedGate, kGemmTol, what + "dsharedGate");
  }
}

// The forward's logits and indices come from the CPU kernel on the same
// bf16 inputs; the gradient flows through the chosen scores only.
TEST_F(CudaBf16Storage, RouterGradWithAndWithoutDlogits) {
  const int64_t tokens = 29, hidden = 24;
  uint64_t seed = 1500;
  for (bool sigmoid : {false, true})
    for (bool norm : {false, true})
      for (bool withDlogits : {false, true}) {
        moe::RouterConfig cfg;
        cfg.experts = 8;
        cfg.topK = 3;
        cfg.sigmoid = sigmoid;
        cfg.normTopkProb = norm;
        cfg.routeScale = norm ? 2.5f : 1.0f;
        const int64_t experts = cfg.experts, topK = cfg.topK;
        Floats x = rounded(randomFloats(tokens * hidden, seed++));
        Floats gate = rounded(scaled(randomFloats(experts * hidden, seed++),
                                     1.0f / std::sqrt(float(hidden))));
        Floats bias = rounded(randomFloats(experts, seed++, -0.3f, 0.3f));
        Floats weights(tokens * topK), logits(tokens * experts);
        Ids indices(tokens * topK);
        cpu::router(x.data(), tokens, hidden, gate.data(), bias.data(), cfg,
                    weights.data(), indices.data(), logits.data());

        TwinCall call = twinCall();
        Tensor<float> dweights = call.bf16(randomFloats(tokens * topK, seed++));
        Tensor<float> dlogits =
            call.bf16(randomFloats(tokens * experts, seed++, -0.1f, 0.1f));
        Tensor<float> xT = call.bf16(x), gateT = call.bf16(gate),
                      logitsT = call.bf16(logits);
        Tensor<int32_t> indicesT = call.raw(indices);
        Tensor<float> dx = call.output(tokens * hidden),
                      dgate = call.output(experts * hidden);
        call.run([&](rt::Backend &b, const Pointers &at) {
          b.routerGrad(at(dweights), withDlogits ? at(dlogits) : nullptr,
                       at(xT), at(gateT), at(logitsT), at(indicesT), at(dx),
                       at(dgate), tokens, hidden, cfg.experts, cfg.topK,
                       cfg.sigmoid, cfg.normTopkProb, cfg.routeScale);
        });
        std::string what = routerName(cfg) + (withDlogits ? " dlogits" : "");
        call.expectClose(dx, kGemmTol, "routerGrad dx " + what);
        call.expectClose(dgate, kGemmTol, "routerGrad dgate " + what);
      }
}

TEST_F(CudaBf16Storage, PermuteGradAndUnpermuteGrad) {
  const int64_t tokens = 37, topK = 3;
  for (int64_t capacity : {1000, 20})
    for (int64_t hidden : {5, 130}) {
      const int64_t slots = tokens * topK;
      TwinCall call = twinCall();
      Tensor<float> dpermuted = call.bf16(randomFloats(slots * hidden, 1600));
      Tensor<float> expertOut = call.bf16(randomFloats(slots * hidden, 1601));
      Tensor<int32_t> rowToSlot =
          call.raw(permutation(1602, tokens, topK, capacity));
      Tensor<float> weights = call.bf16(randomFloats(slots, 1603, 0.f, 1.f));
      Tensor<float> dout = call.bf16(randomFloats(tokens * hidden, 1604));
      Tensor<float> dx = call.output(tokens * hidden),
                    dexpertOut = call.output(slots * hidden),
                    dweights = call.output(slots);
      call.run([&](rt::Backend &b, const Pointers &at) {
        b.permuteGrad(at(dpermuted), at(rowToSlot), at(dx), tokens, topK,
                      hidden);
        b.unpermuteGrad(at(dout), at(expertOut), at(rowToSlot), at(weights),
                        at(dexpertOut), at(dweights), tokens, topK, hidden);
      });
      std::string what = shape({tokens, topK, hidden}) + " capacity " +
                         std::to_string(capacity);
      call.expectClose(dx, kRoundTol, "permuteGrad " + what);
      call.expectClose(dexpertOut, kRoundTol,
                       "unpermuteGrad dexpertOut " + what);
      call.expectClose(dweights, kRoundTol, "unpermuteGrad dweights " + what);
    }
}

TEST_F(CudaBf16Storage, GroupedSwigluGradOverSegments) {
  for (const GroupedCase &c : kGroupedCases) {
    SwigluInputs in(c.rows, c.hidden, c.inter, c.experts, 1700);
    const int64_t weightSize = c.experts * c.inter * c.hidden;
    TwinCall call = twinCall();
    Tensor<float> dout = call.bf16(in.dy), permuted = call.bf16(in.x),
                  gate = call.bf16(in.gate), up = call.bf16(in.up),
                  down = call.bf16(in.down);
    Tensor<int64_t> offsets = call.raw(c.offsets());
    Tensor<float> dpermuted = call.output(c.rows * c.hidden),
                  dgate = call.output(weightSize),
                  dup = call.output(weightSize),
                  ddown = call.output(weightSize);
    call.run([&](rt::Backend &b, const Pointers &at) {
      b.groupedSwigluGrad(at(dout), at(permuted), at(offsets), at(gate), at(up),
                          at(down), at(dpermuted), at(dgate), at(dup),
                          at(ddown), c.rows, c.segments(), c.experts, c.hidden,
                          c.inter);
    });
    // dpermuted is 0 on the padding rows, an expert's weight gradients 0
    // when it has no rows.
    call.expectClose(dpermuted, kGemmTol,
                     "groupedSwigluGrad dpermuted " + c.name());
    call.expectClose(dgate, kGemmTol, "groupedSwigluGrad dgate " + c.name());
    call.expectClose(dup, kGemmTol, "groupedSwigluGrad dup " + c.name());
    call.expectClose(ddown, kGemmTol, "groupedSwigluGrad ddown " + c.name());
  }
}

} // namespace
} // namespace moe::cuda::test
