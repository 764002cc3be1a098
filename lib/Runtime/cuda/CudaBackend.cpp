//===- CudaBackend.cpp - Every runtime call on one GPU --------------------===//
//
// The Backend of a context that runs on CUDA: each method forwards to its
// moe::cuda kernel on the context's Device (one stream, one cuBLAS handle),
// so calls queue up and run in order without host synchronisation. Memory is
// cudaMalloc'ed device memory. Tensor calls run the kernels' instantiation
// for the storage type (fp32 or bf16); losses, sums of squares and AdamW
// are fp32 whatever the storage.
//
// Routing statistics need no synchronisation either: permute queues a copy
// of its offsets (and a capacity drop one of its count) into pinned host
// memory; takeExpertCounts() waits for the stream once and reads them all.
// Timing marks (Backend::mark) are events recorded on the stream, read the
// same way: resolveMarks() waits once and places them on the host clock.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CudaBackend.h"
#include "cuda/CudaKernels.h"
#include "moe/Runtime/Trace.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace moe::cuda {
namespace {

class CudaBackend final : public rt::Backend {
public:
  explicit CudaBackend(int device) : dev_(device) {}

  ~CudaBackend() override {
    // Errors are ignored: destructors must not throw.
    cudaStreamSynchronize(dev_.stream());
    if (pinned_)
      cudaFreeHost(pinned_);
    if (dropDevice_)
      cudaFree(dropDevice_);
    for (cudaEvent_t event : events_)
      cudaEventDestroy(event);
    if (now_)
      cudaEventDestroy(now_);
  }

  const char *name() const override { return "cuda"; }
  bool deviceMemory() const override { return true; }

  void *allocate(size_t bytes) override {
    dev_.makeCurrent();
    void *ptr = nullptr;
    size_t rounded = bytes ? (bytes + 255) / 256 * 256 : 256;
    check(cudaMalloc(&ptr, rounded), "cudaMalloc");
    check(cudaMemsetAsync(ptr, 0, rounded, dev_.stream()), "cudaMemsetAsync");
    return ptr;
  }
  void release(void *ptr) override {
    if (!ptr)
      return;
    dev_.makeCurrent();
    dev_.synchronize();
    check(cudaFree(ptr), "cudaFree");
  }
  void upload(void *dst, const void *src, size_t bytes) override {
    if (!bytes)
      return;
    dev_.makeCurrent();
    // From pageable memory the copy returns once the source is staged, so
    // the caller may reuse it at once.
    check(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, dev_.stream()),
        "cudaMemcpyAsync (to device)");
  }
  void download(void *dst, const void *src, size_t bytes) override {
    if (!bytes)
      return;
    dev_.makeCurrent();
    check(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, dev_.stream()),
        "cudaMemcpyAsync (to host)");
    dev_.synchronize();
  }
  void copy(void *dst, const void *src, size_t bytes) override {
    if (!bytes || dst == src)
      return;
    dev_.makeCurrent();
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                          dev_.stream()),
          "cudaMemcpyAsync (device to device)");
  }
  void copy2D(void *dst, size_t dstPitch, const void *src, size_t srcPitch,
              size_t width, size_t rows) override {
    if (!width || !rows)
      return;
    dev_.makeCurrent();
    check(cudaMemcpy2DAsync(dst, dstPitch, src, srcPitch, width, rows,
                            cudaMemcpyDeviceToDevice, dev_.stream()),
          "cudaMemcpy2DAsync (device to device)");
  }
  void zero(void *ptr, size_t bytes) override {
    if (!bytes)
      return;
    dev_.makeCurrent();
    check(cudaMemsetAsync(ptr, 0, bytes, dev_.stream()), "cudaMemsetAsync");
  }
  void synchronize() override {
    dev_.makeCurrent();
    dev_.synchronize();
  }

  void setStorage(rt::StorageType type) override { storage_ = type; }
  void convert(void *dst, rt::StorageType dstType, const void *src,
               rt::StorageType srcType, int64_t n) override {
    cuda::convertStorage(current(), dst, dstType == rt::StorageType::BF16, src,
                         srcType == rt::StorageType::BF16, n);
  }

  std::vector<std::vector<int64_t>> takeExpertCounts() override {
    harvest();
    return std::exchange(expertCounts_, {});
  }
  std::vector<int64_t> takeDroppedSlots() override {
    harvest();
    return std::exchange(droppedSlots_, {});
  }

  void embedding(const int32_t *tokens, const float *table, float *out,
                 int64_t n, int64_t vocab, int64_t hidden) override {
    onStorage([&](Device &d, auto s) {
      cuda::embedding(d, tokens, n, s(table), vocab, hidden, s(out));
    });
  }
  void rmsNorm(const float *x, const float *weight, float *out, int64_t rows,
               int64_t dim, float eps) override {
    onStorage([&](Device &d, auto s) {
      cuda::rmsNorm(d, s(x), s(weight), rows, dim, eps, s(out));
    });
  }
  void linear(const float *x, const float *weight, const float *bias,
              float *out, int64_t rows, int64_t in,
              int64_t outFeatures) override {
    onStorage([&](Device &d, auto s) {
      cuda::linear(d, s(x), rows, in, s(weight), outFeatures, s(bias), s(out));
    });
  }
  void rope(const float *x, const int32_t *positions, float *out, int64_t batch,
            int64_t seq, int64_t heads, int64_t headDim,
            double theta) override {
    onStorage([&](Device &d, auto s) {
      cuda::rope(d, s(x), positions, batch, seq, heads, headDim, theta, s(out));
    });
  }
  void attention(const float *q, const float *k, const float *v, float *out,
                 int64_t batch, int64_t seq, int64_t heads, int64_t kvHeads,
                 int64_t headDim, bool causal, float scale) override {
    onStorage([&](Device &d, auto s) {
      cuda::attention(d, s(q), s(k), s(v), batch, seq, heads, kvHeads, headDim,
                      causal, scale, s(out));
    });
  }
  void mlp(const float *x, const float *gate, const float *up,
           const float *down, float *out, int64_t rows, int64_t hidden,
           int64_t inter) override {
    onStorage([&](Device &d, auto s) {
      cuda::swigluMlp(d, s(x), rows, hidden, s(gate), s(up), s(down), inter,
                      s(out));
    });
  }
  void add(const float *a, const float *b, float *out, int64_t n) override {
    onStorage([&](Device &d, auto s) { cuda::add(d, s(a), s(b), n, s(out)); });
  }

  void router(const float *x, const float *gate, const float *expertBias,
              float *weights, int32_t *indices, float *logits, int64_t tokens,
              int64_t hidden, int64_t experts, int64_t topK, bool sigmoid,
              bool normTopkProb, float routeScale, int64_t nGroup,
              int64_t topkGroup) override {
    RouterConfig cfg = routerConfig(experts, topK, sigmoid, normTopkProb,
                                    routeScale, nGroup, topkGroup);
    onStorage([&](Device &d, auto s) {
      cuda::router(d, s(x), tokens, hidden, s(gate), s(expertBias), cfg,
                   s(weights), indices, s(logits));
    });
  }
  void dropOverCapacity(const int32_t *indices, int32_t *kept, int64_t tokens,
                        int64_t topK, int64_t experts,
                        int64_t capacity) override {
    Device &d = current();
    int64_t *count = dropCounter();
    cuda::dropOverCapacity(d, indices, tokens, topK, experts, capacity, kept,
                           count);
    queueStat(Stat::Dropped, count, 1, 0);
  }
  void permute(const float *x, const int32_t *indices, float *permuted,
               int64_t *offsets, int32_t *rowToSlot, int64_t tokens,
               int64_t topK, int64_t hidden, int64_t experts) override {
    cuda::permuteByExpert(current(), indices, tokens, topK, experts, offsets,
                          rowToSlot);
    onStorage([&](Device &d, auto s) {
      cuda::gatherRows(d, s(x), rowToSlot, tokens * topK, topK, hidden,
                       s(permuted));
    });
    queueStat(Stat::Counts, offsets, experts + 1, experts);
  }
  void groupedSwiglu(const float *permuted, const int64_t *offsets,
                     const float *gate, const float *up, const float *down,
                     float *out, int64_t rows, int64_t segments,
                     int64_t experts, int64_t hidden, int64_t inter) override {
    onStorage([&](Device &d, auto s) {
      cuda::groupedSwiGLUSegments(d, s(permuted), rows, offsets, segments,
                                  experts, hidden, inter, s(gate), s(up),
                                  s(down), s(out));
    });
  }
  void unpermuteCombine(const float *expertOut, const int32_t *rowToSlot,
                        const float *weights, float *out, int64_t tokens,
                        int64_t topK, int64_t hidden) override {
    onStorage([&](Device &d, auto s) {
      cuda::unpermuteCombine(d, s(expertOut), rowToSlot, s(weights), tokens,
                             topK, hidden, s(out));
    });
  }
  void sharedExperts(const float *x, const float *gate, const float *up,
                     const float *down, const float *sharedGate, float *out,
                     int64_t rows, int64_t hidden, int64_t inter) override {
    onStorage([&](Device &d, auto s) {
      cuda::sharedExperts(d, s(x), rows, hidden, s(gate), s(up), s(down), inter,
                          s(sharedGate), s(out));
    });
  }

  void crossEntropy(const float *logits, const int32_t *labels, float *out,
                    int64_t n, int64_t vocab, int64_t ignoreIndex) override {
    onStorage([&](Device &d, auto s) {
      cuda::crossEntropy(d, s(logits), labels, n, vocab, ignoreIndex, out);
    });
  }
  void auxLoss(const float *logits, const int32_t *indices, float *out,
               int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
               float coefficient) override {
    onStorage([&](Device &d, auto s) {
      cuda::auxLoss(d, s(logits), indices, tokens, experts, topK, sigmoid,
                    coefficient, out);
    });
  }
  void zLoss(const float *logits, float *out, int64_t tokens, int64_t experts,
             float coefficient) override {
    onStorage([&](Device &d, auto s) {
      cuda::zLoss(d, s(logits), tokens, experts, coefficient, out);
    });
  }

  void embeddingGrad(const float *dy, const int32_t *tokens, float *dtable,
                     int64_t n, int64_t vocab, int64_t hidden) override {
    onStorage([&](Device &d, auto s) {
      cuda::embeddingGrad(d, s(dy), tokens, n, vocab, hidden, s(dtable));
    });
  }
  void rmsNormGrad(const float *dy, const float *x, const float *weight,
                   float *dx, float *dweight, int64_t rows, int64_t dim,
                   float eps) override {
    onStorage([&](Device &d, auto s) {
      cuda::rmsNormGrad(d, s(dy), s(x), s(weight), rows, dim, eps, s(dx),
                        s(dweight));
    });
  }
  void linearGrad(const float *dy, const float *x, const float *weight,
                  float *dx, float *dweight, int64_t rows, int64_t in,
                  int64_t outFeatures) override {
    onStorage([&](Device &d, auto s) {
      cuda::linearGrad(d, s(dy), s(x), rows, in, s(weight), outFeatures, s(dx),
                       s(dweight));
    });
  }
  void ropeGrad(const float *dy, const int32_t *positions, float *dx,
                int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
                double theta) override {
    onStorage([&](Device &d, auto s) {
      cuda::ropeGrad(d, s(dy), positions, batch, seq, heads, headDim, theta,
                     s(dx));
    });
  }
  void attentionGrad(const float *dout, const float *q, const float *k,
                     const float *v, float *dq, float *dk, float *dv,
                     int64_t batch, int64_t seq, int64_t heads, int64_t kvHeads,
                     int64_t headDim, bool causal, float scale) override {
    onStorage([&](Device &d, auto s) {
      cuda::attentionGrad(d, s(dout), s(q), s(k), s(v), batch, seq, heads,
                          kvHeads, headDim, causal, scale, s(dq), s(dk), s(dv));
    });
  }
  void mlpGrad(const float *dy, const float *x, const float *gate,
               const float *up, const float *down, float *dx, float *dgate,
               float *dup, float *ddown, int64_t rows, int64_t hidden,
               int64_t inter) override {
    onStorage([&](Device &d, auto s) {
      cuda::swigluMlpGrad(d, s(dy), s(x), rows, hidden, s(gate), s(up), s(down),
                          inter, s(dx), s(dgate), s(dup), s(ddown));
    });
  }
  void sharedExpertsGrad(const float *dy, const float *x, const float *gate,
                         const float *up, const float *down,
                         const float *sharedGate, float *dx, float *dgate,
                         float *dup, float *ddown, float *dsharedGate,
                         int64_t rows, int64_t hidden, int64_t inter) override {
    onStorage([&](Device &d, auto s) {
      cuda::sharedExpertsGrad(d, s(dy), s(x), rows, hidden, s(gate), s(up),
                              s(down), inter, s(sharedGate), s(dx), s(dgate),
                              s(dup), s(ddown), s(dsharedGate));
    });
  }
  void routerGrad(const float *dweights, const float *dlogits, const float *x,
                  const float *gate, const float *logits,
                  const int32_t *indices, float *dx, float *dgate,
                  int64_t tokens, int64_t hidden, int64_t experts,
                  int64_t topK, bool sigmoid, bool normTopkProb,
                  float routeScale) override {
    RouterConfig cfg =
        routerConfig(experts, topK, sigmoid, normTopkProb, routeScale);
    onStorage([&](Device &d, auto s) {
      cuda::routerGrad(d, s(dweights), s(dlogits), s(x), tokens, hidden,
                       s(gate), s(logits), indices, cfg, s(dx), s(dgate));
    });
  }
  void permuteGrad(const float *dpermuted, const int32_t *rowToSlot, float *dx,
                   int64_t tokens, int64_t topK, int64_t hidden) override {
    onStorage([&](Device &d, auto s) {
      cuda::permuteGrad(d, s(dpermuted), rowToSlot, tokens, topK, hidden,
                        s(dx));
    });
  }
  void unpermuteGrad(const float *dout, const float *expertOut,
                     const int32_t *rowToSlot, const float *weights,
                     float *dexpertOut, float *dweights, int64_t tokens,
                     int64_t topK, int64_t hidden) override {
    onStorage([&](Device &d, auto s) {
      cuda::unpermuteCombineGrad(d, s(dout), s(expertOut), rowToSlot,
                                 s(weights), tokens, topK, hidden,
                                 s(dexpertOut), s(dweights));
    });
  }
  void groupedSwigluGrad(const float *dout, const float *permuted,
                         const int64_t *offsets, const float *gate,
                         const float *up, const float *down, float *dpermuted,
                         float *dgate, float *dup, float *ddown, int64_t rows,
                         int64_t segments, int64_t experts, int64_t hidden,
                         int64_t inter) override {
    onStorage([&](Device &d, auto s) {
      cuda::groupedSwiGLUSegmentsGrad(d, s(dout), s(permuted), rows, offsets,
                                      segments, experts, hidden, inter, s(gate),
                                      s(up), s(down), s(dpermuted), s(dgate),
                                      s(dup), s(ddown));
    });
  }
  void crossEntropyGrad(const float *logits, const int32_t *labels,
                        float *dlogits, int64_t n, int64_t vocab,
                        int64_t ignoreIndex) override {
    onStorage([&](Device &d, auto s) {
      cuda::crossEntropyGrad(d, s(logits), labels, n, vocab, ignoreIndex,
                             s(dlogits));
    });
  }
  void auxLossGrad(const float *logits, const int32_t *indices, float *dlogits,
                   int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
                   float coefficient) override {
    onStorage([&](Device &d, auto s) {
      cuda::auxLossGrad(d, s(logits), indices, tokens, experts, topK, sigmoid,
                        coefficient, s(dlogits));
    });
  }
  void zLossGrad(const float *logits, float *dlogits, int64_t tokens,
                 int64_t experts, float coefficient) override {
    onStorage([&](Device &d, auto s) {
      cuda::zLossGrad(d, s(logits), tokens, experts, coefficient, s(dlogits));
    });
  }

  void sumSquares(const float *x, double *out, int64_t n) override {
    cuda::sumSquares(current(), x, n, out);
  }
  void adamw(float *param, const float *grad, float *m, float *v, int64_t n,
             float lr, float beta1, float beta2, float eps, float weightDecay,
             float gradScale, int64_t step) override {
    cuda::adamw(current(), param, grad, m, v, n, lr, beta1, beta2, eps,
                weightDecay, gradScale, step);
  }

  uint32_t mark() override {
    dev_.makeCurrent();
    if (marksUsed_ == events_.size()) {
      cudaEvent_t event = nullptr;
      check(cudaEventCreate(&event), "cudaEventCreate (timing mark)");
      events_.push_back(event);
    }
    check(cudaEventRecord(events_[marksUsed_], dev_.stream()),
          "cudaEventRecord (timing mark)");
    return static_cast<uint32_t>(marksUsed_++);
  }
  std::vector<double> resolveMarks() override {
    std::vector<double> times(marksUsed_);
    if (marksUsed_ == 0)
      return times;
    dev_.makeCurrent();
    dev_.synchronize();
    // The stream is idle now: an event recorded on it completes at once, at
    // (just before) the host time read after waiting for it. Every mark is
    // placed on the host clock by its distance to that event.
    if (!now_)
      check(cudaEventCreate(&now_), "cudaEventCreate (timing mark)");
    check(cudaEventRecord(now_, dev_.stream()), "cudaEventRecord");
    check(cudaEventSynchronize(now_), "cudaEventSynchronize");
    double host = rt::steadySeconds();
    for (size_t i = 0; i < marksUsed_; ++i) {
      float ms = 0.0f;
      check(cudaEventElapsedTime(&ms, events_[i], now_),
            "cudaEventElapsedTime");
      times[i] = host - double(ms) * 1e-3;
    }
    marksUsed_ = 0;
    return times;
  }

private:
  /// Local ranks are threads sharing one GPU: every call makes the device
  /// current on the calling thread first.
  Device &current() {
    dev_.makeCurrent();
    return dev_;
  }

  /// The Backend's `float *` tensors as pointers to the storage element T.
  template <typename T> struct Stored {
    const T *operator()(const float *p) const {
      return reinterpret_cast<const T *>(p);
    }
    T *operator()(float *p) const { return reinterpret_cast<T *>(p); }
  };

  /// Runs f(device, stored) with `stored` the view of this call's storage
  /// type, so that f picks the kernels' fp32 or bf16 instantiation.
  template <typename F> void onStorage(F &&f) {
    Device &d = current();
    if (storage_ == rt::StorageType::BF16)
      f(d, Stored<bf16>{});
    else
      f(d, Stored<float>{});
  }

  enum class Stat { Counts, Dropped };
  struct PendingStat {
    Stat kind;
    size_t at;       // first int64 in pinned_
    int64_t experts; // Counts: the offsets have experts + 1 entries
  };

  /// Queues the copy of `n` device int64 values at `src` into pinned host
  /// memory, to be read by harvest().
  void queueStat(Stat kind, const int64_t *src, int64_t n, int64_t experts) {
    if (n <= 0)
      return;
    if (pinnedUsed_ + size_t(n) > pinnedCapacity_) {
      harvest(); // reads every queued value, then the slab is free again
      if (size_t(n) > pinnedCapacity_) {
        if (pinned_)
          check(cudaFreeHost(pinned_), "cudaFreeHost");
        pinned_ = nullptr;
        pinnedCapacity_ = 0;
        size_t capacity = std::max<size_t>(4096, size_t(n));
        check(cudaMallocHost(reinterpret_cast<void **>(&pinned_),
                             capacity * sizeof(int64_t)),
              "cudaMallocHost");
        pinnedCapacity_ = capacity;
      }
    }
    check(cudaMemcpyAsync(pinned_ + pinnedUsed_, src, n * sizeof(int64_t),
                          cudaMemcpyDeviceToHost, dev_.stream()),
          "cudaMemcpyAsync (routing statistics)");
    pending_.push_back({kind, pinnedUsed_, experts});
    pinnedUsed_ += size_t(n);
  }

  /// A device int64 for one capacity drop's count, valid until harvest().
  int64_t *dropCounter() {
    constexpr size_t kSlots = 1024;
    if (!dropDevice_)
      check(cudaMalloc(reinterpret_cast<void **>(&dropDevice_),
                       kSlots * sizeof(int64_t)),
            "cudaMalloc (drop counters)");
    if (dropUsed_ == kSlots)
      harvest();
    return dropDevice_ + dropUsed_++;
  }

  /// Waits for the stream and moves every queued statistic to the host
  /// lists, in program order.
  void harvest() {
    dev_.makeCurrent();
    dev_.synchronize();
    for (const PendingStat &p : pending_) {
      const int64_t *v = pinned_ + p.at;
      if (p.kind == Stat::Dropped) {
        droppedSlots_.push_back(v[0]);
        continue;
      }
      std::vector<int64_t> counts(p.experts);
      for (int64_t e = 0; e < p.experts; ++e)
        counts[e] = v[e + 1] - v[e];
      expertCounts_.push_back(std::move(counts));
    }
    pending_.clear();
    pinnedUsed_ = 0;
    dropUsed_ = 0;
  }

  Device dev_;
  int64_t *pinned_ = nullptr;
  size_t pinnedCapacity_ = 0, pinnedUsed_ = 0;
  int64_t *dropDevice_ = nullptr;
  size_t dropUsed_ = 0;
  std::vector<PendingStat> pending_;
  std::vector<std::vector<int64_t>> expertCounts_;
  std::vector<int64_t> droppedSlots_;
  // Timing marks: events_[0, marksUsed_) are recorded and not yet resolved;
  // the events are reused after each resolveMarks().
  std::vector<cudaEvent_t> events_;
  size_t marksUsed_ = 0;
  cudaEvent_t now_ = nullptr;
};

} // namespace

std::unique_ptr<rt::Backend> makeCudaBackend(int device) {
  return std::make_unique<CudaBackend>(device);
}

} // namespace moe::cuda
