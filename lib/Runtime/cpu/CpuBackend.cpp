//===- CpuBackend.cpp - The CPU backend -----------------------------------===//
//
// Forwards every Backend method to its fp32 moe::cpu kernel (CpuKernels.h,
// CpuGradKernels.h); under bf16 storage each call widens its inputs, runs the
// fp32 kernel and rounds its outputs once, which makes it the reference for
// the GPU's bf16 kernels. Memory is 64-byte aligned host memory.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Backend.h"
#include "moe/Runtime/BFloat16.h"
#include "moe/Runtime/CpuGradKernels.h"
#include "moe/Runtime/CpuKernels.h"
#include "moe/Runtime/Trace.h"

#include <cstdlib>
#include <deque>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>

namespace moe::rt {

Backend::~Backend() = default;

uint32_t Backend::mark() {
  hostMarks_.push_back(steadySeconds());
  return static_cast<uint32_t>(hostMarks_.size() - 1);
}

std::vector<double> Backend::resolveMarks() {
  return std::exchange(hostMarks_, {});
}

void Backend::copy2D(void *dst, size_t dstPitch, const void *src,
                     size_t srcPitch, size_t width, size_t rows) {
  for (size_t r = 0; r < rows; ++r)
    copy(static_cast<char *>(dst) + r * dstPitch,
         static_cast<const char *>(src) + r * srcPitch, width);
}

namespace {

/// Under bf16 storage the fp32 kernels run on widened copies: in() widens an
/// input, out() an output's current contents (so that what a kernel leaves
/// alone round-trips exactly), and store() rounds the outputs back once the
/// kernel succeeded. Under fp32 storage every pointer passes through.
class Widened {
public:
  explicit Widened(StorageType storage)
      : bf16_(storage == StorageType::BF16) {}

  const float *in(const float *p, int64_t n) {
    return bf16_ && p ? widen(p, n) : p;
  }
  float *out(float *p, int64_t n) {
    if (!bf16_ || !p)
      return p;
    float *copy = widen(p, n);
    outputs_.push_back({p, copy, n});
    return copy;
  }
  void store() {
    for (const Output &o : outputs_)
      narrowToBf16(o.copy, reinterpret_cast<uint16_t *>(o.target), o.n);
  }

private:
  float *widen(const float *p, int64_t n) {
    copies_.emplace_back(n > 0 ? n : 0);
    widenBf16(reinterpret_cast<const uint16_t *>(p), copies_.back().data(), n);
    return copies_.back().data();
  }
  struct Output {
    float *target;
    float *copy;
    int64_t n;
  };
  bool bf16_;
  std::deque<std::vector<float>> copies_;
  std::vector<Output> outputs_;
};

class CpuBackend final : public Backend {
public:
  const char *name() const override { return "cpu"; }
  bool deviceMemory() const override { return false; }

  void *allocate(size_t bytes) override {
    size_t rounded = (bytes + 63) / 64 * 64;
    void *ptr = std::aligned_alloc(64, rounded ? rounded : 64);
    if (!ptr)
      throw std::bad_alloc();
    std::memset(ptr, 0, rounded ? rounded : 64);
    return ptr;
  }
  void release(void *ptr) override { std::free(ptr); }
  void upload(void *dst, const void *src, size_t bytes) override {
    if (bytes)
      std::memmove(dst, src, bytes);
  }
  void download(void *dst, const void *src, size_t bytes) override {
    upload(dst, src, bytes);
  }
  void copy(void *dst, const void *src, size_t bytes) override {
    upload(dst, src, bytes);
  }
  void zero(void *ptr, size_t bytes) override {
    if (bytes)
      std::memset(ptr, 0, bytes);
  }
  void synchronize() override {}

  std::vector<std::vector<int64_t>> takeExpertCounts() override {
    return std::exchange(expertCounts_, {});
  }
  std::vector<int64_t> takeDroppedSlots() override {
    return std::exchange(droppedSlots_, {});
  }

  void setStorage(StorageType type) override { storage_ = type; }
  void convert(void *dst, StorageType dstType, const void *src,
               StorageType srcType, int64_t n) override {
    if (n <= 0)
      return;
    if (dstType == srcType)
      std::memmove(dst, src, n * storageBytes(dstType));
    else if (dstType == StorageType::F32)
      widenBf16(static_cast<const uint16_t *>(src), static_cast<float *>(dst),
                n);
    else
      narrowToBf16(static_cast<const float *>(src),
                   static_cast<uint16_t *>(dst), n);
  }

  void embedding(const int32_t *tokens, const float *table, float *out,
                 int64_t n, int64_t vocab, int64_t hidden) override {
    Widened w(storage_);
    cpu::embedding(tokens, n, w.in(table, vocab * hidden), vocab, hidden,
                   w.out(out, n * hidden));
    w.store();
  }
  void rmsNorm(const float *x, const float *weight, float *out, int64_t rows,
               int64_t dim, float eps) override {
    Widened w(storage_);
    cpu::rmsNorm(w.in(x, rows * dim), w.in(weight, dim), rows, dim, eps,
                 w.out(out, rows * dim));
    w.store();
  }
  void linear(const float *x, const float *weight, const float *bias,
              float *out, int64_t rows, int64_t in,
              int64_t outFeatures) override {
    Widened w(storage_);
    cpu::linear(w.in(x, rows * in), rows, in, w.in(weight, outFeatures * in),
                outFeatures, w.in(bias, outFeatures),
                w.out(out, rows * outFeatures));
    w.store();
  }
  void rope(const float *x, const int32_t *positions, float *out, int64_t batch,
            int64_t seq, int64_t heads, int64_t headDim,
            double theta) override {
    Widened w(storage_);
    int64_t n = batch * seq * heads * headDim;
    cpu::rope(w.in(x, n), positions, batch, seq, heads, headDim, theta,
              w.out(out, n));
    w.store();
  }
  void attention(const float *q, const float *k, const float *v, float *out,
                 int64_t batch, int64_t seq, int64_t heads, int64_t kvHeads,
                 int64_t headDim, bool causal, float scale) override {
    Widened w(storage_);
    int64_t nq = batch * seq * heads * headDim;
    int64_t nkv = batch * seq * kvHeads * headDim;
    cpu::attention(w.in(q, nq), w.in(k, nkv), w.in(v, nkv), batch, seq, heads,
                   kvHeads, headDim, causal, scale, w.out(out, nq));
    w.store();
  }
  void mlp(const float *x, const float *gate, const float *up,
           const float *down, float *out, int64_t rows, int64_t hidden,
           int64_t inter) override {
    Widened w(storage_);
    int64_t nw = inter * hidden;
    cpu::swigluMlp(w.in(x, rows * hidden), rows, hidden, w.in(gate, nw),
                   w.in(up, nw), w.in(down, nw), inter,
                   w.out(out, rows * hidden));
    w.store();
  }
  void add(const float *a, const float *b, float *out, int64_t n) override {
    Widened w(storage_);
    cpu::add(w.in(a, n), w.in(b, n), n, w.out(out, n));
    w.store();
  }

  void router(const float *x, const float *gate, const float *expertBias,
              float *weights, int32_t *indices, float *logits, int64_t tokens,
              int64_t hidden, int64_t experts, int64_t topK, bool sigmoid,
              bool normTopkProb, float routeScale, int64_t nGroup,
              int64_t topkGroup) override {
    RouterConfig cfg = routerConfig(experts, topK, sigmoid, normTopkProb,
                                    routeScale, nGroup, topkGroup);
    Widened w(storage_);
    cpu::router(w.in(x, tokens * hidden), tokens, hidden,
                w.in(gate, cfg.experts * hidden), w.in(expertBias, cfg.experts),
                cfg, w.out(weights, tokens * cfg.topK), indices,
                w.out(logits, tokens * cfg.experts));
    w.store();
  }
  void dropOverCapacity(const int32_t *indices, int32_t *kept, int64_t tokens,
                        int64_t topK, int64_t experts,
                        int64_t capacity) override {
    droppedSlots_.push_back(
        cpu::dropOverCapacity(indices, tokens, topK, experts, capacity, kept));
  }
  void permute(const float *x, const int32_t *indices, float *permuted,
               int64_t *offsets, int32_t *rowToSlot, int64_t tokens,
               int64_t topK, int64_t hidden, int64_t experts) override {
    std::vector<int64_t> counts(experts > 0 ? experts : 0);
    cpu::permuteByExpert(indices, tokens, topK, experts, counts.data(), offsets,
                         rowToSlot);
    Widened w(storage_);
    cpu::gatherRows(w.in(x, tokens * hidden), rowToSlot, tokens * topK, topK,
                    hidden, w.out(permuted, tokens * topK * hidden));
    w.store();
    expertCounts_.push_back(std::move(counts));
  }
  void groupedSwiglu(const float *permuted, const int64_t *offsets,
                     const float *gate, const float *up, const float *down,
                     float *out, int64_t rows, int64_t segments,
                     int64_t experts, int64_t hidden, int64_t inter) override {
    Widened w(storage_);
    int64_t nw = experts * inter * hidden;
    cpu::groupedSwiGLUSegments(w.in(permuted, rows * hidden), rows, offsets,
                               segments, experts, hidden, inter, w.in(gate, nw),
                               w.in(up, nw), w.in(down, nw),
                               w.out(out, rows * hidden));
    w.store();
  }
  void unpermuteCombine(const float *expertOut, const int32_t *rowToSlot,
                        const float *weights, float *out, int64_t tokens,
                        int64_t topK, int64_t hidden) override {
    Widened w(storage_);
    cpu::unpermuteCombine(w.in(expertOut, tokens * topK * hidden), rowToSlot,
                          w.in(weights, tokens * topK), tokens, topK, hidden,
                          w.out(out, tokens * hidden));
    w.store();
  }
  void sharedExperts(const float *x, const float *gate, const float *up,
                     const float *down, const float *sharedGate, float *out,
                     int64_t rows, int64_t hidden, int64_t inter) override {
    Widened w(storage_);
    int64_t nw = inter * hidden;
    cpu::sharedExperts(w.in(x, rows * hidden), rows, hidden, w.in(gate, nw),
                       w.in(up, nw), w.in(down, nw), inter,
                       w.in(sharedGate, hidden), w.out(out, rows * hidden));
    w.store();
  }

  // Loss values are fp32 scalars whatever the storage.
  void crossEntropy(const float *logits, const int32_t *labels, float *out,
                    int64_t n, int64_t vocab, int64_t ignoreIndex) override {
    Widened w(storage_);
    *out = cpu::crossEntropy(w.in(logits, n * vocab), labels, n, vocab,
                             ignoreIndex);
  }
  void auxLoss(const float *logits, const int32_t *indices, float *out,
               int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
               float coefficient) override {
    Widened w(storage_);
    *out = cpu::auxLoss(w.in(logits, tokens * experts), indices, tokens,
                        experts, topK, sigmoid, coefficient);
  }
  void zLoss(const float *logits, float *out, int64_t tokens, int64_t experts,
             float coefficient) override {
    Widened w(storage_);
    *out = cpu::zLoss(w.in(logits, tokens * experts), tokens, experts,
                      coefficient);
  }

  void embeddingGrad(const float *dy, const int32_t *tokens, float *dtable,
                     int64_t n, int64_t vocab, int64_t hidden) override {
    Widened w(storage_);
    cpu::embeddingGrad(w.in(dy, n * hidden), tokens, n, vocab, hidden,
                       w.out(dtable, vocab * hidden));
    w.store();
  }
  void rmsNormGrad(const float *dy, const float *x, const float *weight,
                   float *dx, float *dweight, int64_t rows, int64_t dim,
                   float eps) override {
    Widened w(storage_);
    int64_t n = rows * dim;
    cpu::rmsNormGrad(w.in(dy, n), w.in(x, n), w.in(weight, dim), rows, dim,
                     eps, w.out(dx, n), w.out(dweight, dim));
    w.store();
  }
  void linearGrad(const float *dy, const float *x, const float *weight,
                  float *dx, float *dweight, int64_t rows, int64_t in,
                  int64_t outFeatures) override {
    Widened w(storage_);
    int64_t nw = outFeatures * in;
    cpu::linearGrad(w.in(dy, rows * outFeatures), w.in(x, rows * in), rows, in,
                    w.in(weight, nw), outFeatures, w.out(dx, rows * in),
                    w.out(dweight, nw));
    w.store();
  }
  void ropeGrad(const float *dy, const int32_t *positions, float *dx,
                int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
                double theta) override {
    Widened w(storage_);
    int64_t n = batch * seq * heads * headDim;
    cpu::ropeGrad(w.in(dy, n), positions, batch, seq, heads, headDim, theta,
                  w.out(dx, n));
    w.store();
  }
  void attentionGrad(const float *dout, const float *q, const float *k,
                     const float *v, float *dq, float *dk, float *dv,
                     int64_t batch, int64_t seq, int64_t heads, int64_t kvHeads,
                     int64_t headDim, bool causal, float scale) override {
    Widened w(storage_);
    int64_t nq = batch * seq * heads * headDim;
    int64_t nkv = batch * seq * kvHeads * headDim;
    cpu::attentionGrad(w.in(dout, nq), w.in(q, nq), w.in(k, nkv), w.in(v, nkv),
                       batch, seq, heads, kvHeads, headDim, causal, scale,
                       w.out(dq, nq), w.out(dk, nkv), w.out(dv, nkv));
    w.store();
  }
  void mlpGrad(const float *dy, const float *x, const float *gate,
               const float *up, const float *down, float *dx, float *dgate,
               float *dup, float *ddown, int64_t rows, int64_t hidden,
               int64_t inter) override {
    Widened w(storage_);
    int64_t n = rows * hidden, nw = inter * hidden;
    cpu::swigluMlpGrad(w.in(dy, n), w.in(x, n), rows, hidden, w.in(gate, nw),
                       w.in(up, nw), w.in(down, nw), inter, w.out(dx, n),
                       w.out(dgate, nw), w.out(dup, nw), w.out(ddown, nw));
    w.store();
  }
  void sharedExpertsGrad(const float *dy, const float *x, const float *gate,
                         const float *up, const float *down,
                         const float *sharedGate, float *dx, float *dgate,
                         float *dup, float *ddown, float *dsharedGate,
                         int64_t rows, int64_t hidden, int64_t inter) override {
    Widened w(storage_);
    int64_t n = rows * hidden, nw = inter * hidden;
    cpu::sharedExpertsGrad(w.in(dy, n), w.in(x, n), rows, hidden,
                           w.in(gate, nw), w.in(up, nw), w.in(down, nw), inter,
                           w.in(sharedGate, hidden), w.out(dx, n),
                           w.out(dgate, nw), w.out(dup, nw), w.out(ddown, nw),
                           w.out(dsharedGate, hidden));
    w.store();
  }
  void routerGrad(const float *dweights, const float *dlogits, const float *x,
                  const float *gate, const float *logits,
                  const int32_t *indices, float *dx, float *dgate,
                  int64_t tokens, int64_t hidden, int64_t experts,
                  int64_t topK, bool sigmoid, bool normTopkProb,
                  float routeScale) override {
    RouterConfig cfg =
        routerConfig(experts, topK, sigmoid, normTopkProb, routeScale);
    Widened w(storage_);
    int64_t nl = tokens * cfg.experts, nw = cfg.experts * hidden;
    cpu::routerGrad(w.in(dweights, tokens * cfg.topK), w.in(dlogits, nl),
                    w.in(x, tokens * hidden), tokens, hidden, w.in(gate, nw),
                    w.in(logits, nl), indices, cfg,
                    w.out(dx, tokens * hidden), w.out(dgate, nw));
    w.store();
  }
  void permuteGrad(const float *dpermuted, const int32_t *rowToSlot, float *dx,
                   int64_t tokens, int64_t topK, int64_t hidden) override {
    Widened w(storage_);
    cpu::permuteGrad(w.in(dpermuted, tokens * topK * hidden), rowToSlot, tokens,
                     topK, hidden, w.out(dx, tokens * hidden));
    w.store();
  }
  void unpermuteGrad(const float *dout, const float *expertOut,
                     const int32_t *rowToSlot, const float *weights,
                     float *dexpertOut, float *dweights, int64_t tokens,
                     int64_t topK, int64_t hidden) override {
    Widened w(storage_);
    int64_t rows = tokens * topK * hidden;
    cpu::unpermuteCombineGrad(w.in(dout, tokens * hidden),
                              w.in(expertOut, rows), rowToSlot,
                              w.in(weights, tokens * topK), tokens, topK,
                              hidden, w.out(dexpertOut, rows),
                              w.out(dweights, tokens * topK));
    w.store();
  }
  void groupedSwigluGrad(const float *dout, const float *permuted,
                         const int64_t *offsets, const float *gate,
                         const float *up, const float *down, float *dpermuted,
                         float *dgate, float *dup, float *ddown, int64_t rows,
                         int64_t segments, int64_t experts, int64_t hidden,
                         int64_t inter) override {
    Widened w(storage_);
    int64_t n = rows * hidden, nw = experts * inter * hidden;
    cpu::groupedSwiGLUSegmentsGrad(
        w.in(dout, n), w.in(permuted, n), rows, offsets, segments, experts,
        hidden, inter, w.in(gate, nw), w.in(up, nw), w.in(down, nw),
        w.out(dpermuted, n), w.out(dgate, nw), w.out(dup, nw),
        w.out(ddown, nw));
    w.store();
  }
  void crossEntropyGrad(const float *logits, const int32_t *labels,
                        float *dlogits, int64_t n, int64_t vocab,
                        int64_t ignoreIndex) override {
    Widened w(storage_);
    cpu::crossEntropyGrad(w.in(logits, n * vocab), labels, n, vocab,
                          ignoreIndex, w.out(dlogits, n * vocab));
    w.store();
  }
  void auxLossGrad(const float *logits, const int32_t *indices, float *dlogits,
                   int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
                   float coefficient) override {
    Widened w(storage_);
    int64_t n = tokens * experts;
    cpu::auxLossGrad(w.in(logits, n), indices, tokens, experts, topK, sigmoid,
                     coefficient, w.out(dlogits, n));
    w.store();
  }
  void zLossGrad(const float *logits, float *dlogits, int64_t tokens,
                 int64_t experts, float coefficient) override {
    Widened w(storage_);
    int64_t n = tokens * experts;
    cpu::zLossGrad(w.in(logits, n), tokens, experts, coefficient,
                   w.out(dlogits, n));
    w.store();
  }

  // The optimizer's operands are fp32 whatever the storage.
  void sumSquares(const float *x, double *out, int64_t n) override {
    *out = cpu::sumSquares(x, n);
  }
  void adamw(float *param, const float *grad, float *m, float *v, int64_t n,
             float lr, float beta1, float beta2, float eps, float weightDecay,
             float gradScale, int64_t step) override {
    cpu::adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay,
               gradScale, step);
  }

private:
  std::vector<std::vector<int64_t>> expertCounts_;
  std::vector<int64_t> droppedSlots_;
};

std::mutex &factoryMutex() {
  static std::mutex mutex;
  return mutex;
}
BackendFactory &cudaFactory() {
  static BackendFactory factory = nullptr;
  return factory;
}
DeviceCommFactory &deviceCommFactory() {
  static DeviceCommFactory factory = nullptr;
  return factory;
}

} // namespace

std::unique_ptr<Backend> makeCpuBackend() {
  return std::make_unique<CpuBackend>();
}

void registerCudaBackend(BackendFactory factory) {
  std::lock_guard<std::mutex> lock(factoryMutex());
  cudaFactory() = factory;
}

void registerDeviceCommunicator(DeviceCommFactory factory) {
  std::lock_guard<std::mutex> lock(factoryMutex());
  deviceCommFactory() = factory;
}

DeviceCommFactory deviceCommunicatorFactory() {
  std::lock_guard<std::mutex> lock(factoryMutex());
  return deviceCommFactory();
}

std::unique_ptr<Backend> makeBackend(const std::string &name, int device) {
  if (name == "cpu")
    return makeCpuBackend();
  if (name == "cuda") {
    BackendFactory factory;
    {
      std::lock_guard<std::mutex> lock(factoryMutex());
      factory = cudaFactory();
    }
    if (!factory)
      throw std::runtime_error(
          "backend 'cuda' is not in this executable (it was built without "
          "the CUDA toolkit; see docs/cuda.md)");
    return factory(device);
  }
  throw std::runtime_error("unknown backend '" + name +
                           "' (expected cpu or cuda)");
}

} // namespace moe::rt
