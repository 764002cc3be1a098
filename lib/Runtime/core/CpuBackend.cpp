//===- CpuBackend.cpp - The fp32 CPU backend ------------------------------===//
//
// Forwards every Backend method to its moe::cpu kernel (CpuKernels.h,
// CpuGradKernels.h); memory is 64-byte aligned host memory.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Backend.h"
#include "moe/Runtime/CpuGradKernels.h"
#include "moe/Runtime/CpuKernels.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>

namespace moe::rt {

Backend::~Backend() = default;

void Backend::copy2D(void *dst, size_t dstPitch, const void *src,
                     size_t srcPitch, size_t width, size_t rows) {
  for (size_t r = 0; r < rows; ++r)
    copy(static_cast<char *>(dst) + r * dstPitch,
         static_cast<const char *>(src) + r * srcPitch, width);
}

namespace {

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

  void embedding(const int32_t *tokens, const float *table, float *out,
                 int64_t n, int64_t vocab, int64_t hidden) override {
    cpu::embedding(tokens, n, table, vocab, hidden, out);
  }
  void rmsNorm(const float *x, const float *weight, float *out, int64_t rows,
               int64_t dim, float eps) override {
    cpu::rmsNorm(x, weight, rows, dim, eps, out);
  }
  void linear(const float *x, const float *weight, const float *bias,
              float *out, int64_t rows, int64_t in,
              int64_t outFeatures) override {
    cpu::linear(x, rows, in, weight, outFeatures, bias, out);
  }
  void rope(const float *x, const int32_t *positions, float *out, int64_t batch,
            int64_t seq, int64_t heads, int64_t headDim,
            double theta) override {
    cpu::rope(x, positions, batch, seq, heads, headDim, theta, out);
  }
  void attention(const float *q, const float *k, const float *v, float *out,
                 int64_t batch, int64_t seq, int64_t heads, int64_t kvHeads,
                 int64_t headDim, bool causal, float scale) override {
    cpu::attention(q, k, v, batch, seq, heads, kvHeads, headDim, causal, scale,
                   out);
  }
  void mlp(const float *x, const float *gate, const float *up,
           const float *down, float *out, int64_t rows, int64_t hidden,
           int64_t inter) override {
    cpu::swigluMlp(x, rows, hidden, gate, up, down, inter, out);
  }
  void add(const float *a, const float *b, float *out, int64_t n) override {
    cpu::add(a, b, n, out);
  }

  void router(const float *x, const float *gate, const float *expertBias,
              float *weights, int32_t *indices, float *logits, int64_t tokens,
              int64_t hidden, const RouterConfig &cfg) override {
    cpu::router(x, tokens, hidden, gate, expertBias, cfg, weights, indices,
                logits);
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
    cpu::gatherRows(x, rowToSlot, tokens * topK, topK, hidden, permuted);
    expertCounts_.push_back(std::move(counts));
  }
  void groupedSwiglu(const float *permuted, const int64_t *offsets,
                     const float *gate, const float *up, const float *down,
                     float *out, int64_t rows, int64_t segments,
                     int64_t experts, int64_t hidden, int64_t inter) override {
    cpu::groupedSwiGLUSegments(permuted, rows, offsets, segments, experts,
                               hidden, inter, gate, up, down, out);
  }
  void unpermuteCombine(const float *expertOut, const int32_t *rowToSlot,
                        const float *weights, float *out, int64_t tokens,
                        int64_t topK, int64_t hidden) override {
    cpu::unpermuteCombine(expertOut, rowToSlot, weights, tokens, topK, hidden,
                          out);
  }
  void sharedExperts(const float *x, const float *gate, const float *up,
                     const float *down, const float *sharedGate, float *out,
                     int64_t rows, int64_t hidden, int64_t inter) override {
    cpu::sharedExperts(x, rows, hidden, gate, up, down, inter, sharedGate, out);
  }

  void crossEntropy(const float *logits, const int32_t *labels, float *out,
                    int64_t n, int64_t vocab, int64_t ignoreIndex) override {
    *out = cpu::crossEntropy(logits, labels, n, vocab, ignoreIndex);
  }
  void auxLoss(const float *logits, const int32_t *indices, float *out,
               int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
               float coefficient) override {
    *out = cpu::auxLoss(logits, indices, tokens, experts, topK, sigmoid,
                        coefficient);
  }
  void zLoss(const float *logits, float *out, int64_t tokens, int64_t experts,
             float coefficient) override {
    *out = cpu::zLoss(logits, tokens, experts, coefficient);
  }

  void embeddingGrad(const float *dy, const int32_t *tokens, float *dtable,
                     int64_t n, int64_t vocab, int64_t hidden) override {
    cpu::embeddingGrad(dy, tokens, n, vocab, hidden, dtable);
  }
  void rmsNormGrad(const float *dy, const float *x, const float *weight,
                   float *dx, float *dweight, int64_t rows, int64_t dim,
                   float eps) override {
    cpu::rmsNormGrad(dy, x, weight, rows, dim, eps, dx, dweight);
  }
  void linearGrad(const float *dy, const float *x, const float *weight,
                  float *dx, float *dweight, int64_t rows, int64_t in,
                  int64_t outFeatures) override {
    cpu::linearGrad(dy, x, rows, in, weight, outFeatures, dx, dweight);
  }
  void ropeGrad(const float *dy, const int32_t *positions, float *dx,
                int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
                double theta) override {
    cpu::ropeGrad(dy, positions, batch, seq, heads, headDim, theta, dx);
  }
  void attentionGrad(const float *dout, const float *q, const float *k,
                     const float *v, float *dq, float *dk, float *dv,
                     int64_t batch, int64_t seq, int64_t heads, int64_t kvHeads,
                     int64_t headDim, bool causal, float scale) override {
    cpu::attentionGrad(dout, q, k, v, batch, seq, heads, kvHeads, headDim,
                       causal, scale, dq, dk, dv);
  }
  void mlpGrad(const float *dy, const float *x, const float *gate,
               const float *up, const float *down, float *dx, float *dgate,
               float *dup, float *ddown, int64_t rows, int64_t hidden,
               int64_t inter) override {
    cpu::swigluMlpGrad(dy, x, rows, hidden, gate, up, down, inter, dx, dgate,
                       dup, ddown);
  }
  void sharedExpertsGrad(const float *dy, const float *x, const float *gate,
                         const float *up, const float *down,
                         const float *sharedGate, float *dx, float *dgate,
                         float *dup, float *ddown, float *dsharedGate,
                         int64_t rows, int64_t hidden, int64_t inter) override {
    cpu::sharedExpertsGrad(dy, x, rows, hidden, gate, up, down, inter,
                           sharedGate, dx, dgate, dup, ddown, dsharedGate);
  }
  void routerGrad(const float *dweights, const float *dlogits, const float *x,
                  const float *gate, const float *logits,
                  const int32_t *indices, float *dx, float *dgate,
                  int64_t tokens, int64_t hidden,
                  const RouterConfig &cfg) override {
    cpu::routerGrad(dweights, dlogits, x, tokens, hidden, gate, logits, indices,
                    cfg, dx, dgate);
  }
  void permuteGrad(const float *dpermuted, const int32_t *rowToSlot, float *dx,
                   int64_t tokens, int64_t topK, int64_t hidden) override {
    cpu::permuteGrad(dpermuted, rowToSlot, tokens, topK, hidden, dx);
  }
  void unpermuteGrad(const float *dout, const float *expertOut,
                     const int32_t *rowToSlot, const float *weights,
                     float *dexpertOut, float *dweights, int64_t tokens,
                     int64_t topK, int64_t hidden) override {
    cpu::unpermuteCombineGrad(dout, expertOut, rowToSlot, weights, tokens, topK,
                              hidden, dexpertOut, dweights);
  }
  void groupedSwigluGrad(const float *dout, const float *permuted,
                         const int64_t *offsets, const float *gate,
                         const float *up, const float *down, float *dpermuted,
                         float *dgate, float *dup, float *ddown, int64_t rows,
                         int64_t segments, int64_t experts, int64_t hidden,
                         int64_t inter) override {
    cpu::groupedSwiGLUSegmentsGrad(dout, permuted, rows, offsets, segments,
                                   experts, hidden, inter, gate, up, down,
                                   dpermuted, dgate, dup, ddown);
  }
  void crossEntropyGrad(const float *logits, const int32_t *labels,
                        float *dlogits, int64_t n, int64_t vocab,
                        int64_t ignoreIndex) override {
    cpu::crossEntropyGrad(logits, labels, n, vocab, ignoreIndex, dlogits);
  }
  void auxLossGrad(const float *logits, const int32_t *indices, float *dlogits,
                   int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
                   float coefficient) override {
    cpu::auxLossGrad(logits, indices, tokens, experts, topK, sigmoid,
                     coefficient, dlogits);
  }
  void zLossGrad(const float *logits, float *dlogits, int64_t tokens,
                 int64_t experts, float coefficient) override {
    cpu::zLossGrad(logits, tokens, experts, coefficient, dlogits);
  }

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
