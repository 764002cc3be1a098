//===- Main.cpp - main() of every compiled model executable ---------------===//
//
// The only file of the driver that names the model's symbols; `moec` links
// the model object, libMoERuntimeMain.a and libMoERuntime.a into one program.
// Compiled with MOE_HAVE_CUDA (libMoERuntimeMainCUDA.a), it also registers
// the CUDA backend, so that `--backend cuda` works, and with MOE_HAVE_NCCL
// the NCCL communicator, which then carries the GPUs' collectives.
// The training and evaluation steps and the decode and prefill entries are
// weak references: a model compiled without them (or a hand-written
// stand-in) still links, and `train` then says how to get one (or evaluates
// with the forward), and `generate` runs the forward for every token.
//
//===----------------------------------------------------------------------===//

#include "driver/cli/Driver.h"
#ifdef MOE_HAVE_CUDA
#include "moe/Runtime/CudaBackend.h"
#endif
#ifdef MOE_HAVE_NCCL
#include "moe/Runtime/NcclCommunicator.h"
#endif

extern "C" const char moe_model_manifest[];
extern "C" void moe_entry_forward(moert_context *ctx, uint8_t *weights,
                                  uint8_t *arena, const int32_t *tokens,
                                  const int32_t *labels, float *logits,
                                  float *loss);
extern "C" __attribute__((weak)) void
moe_entry_train_step(moert_context *ctx, uint8_t *weights, uint8_t *arena,
                     uint8_t *grads, const int32_t *tokens,
                     const int32_t *labels, float *loss);
extern "C" __attribute__((weak)) void
moe_entry_eval_step(moert_context *ctx, uint8_t *weights, uint8_t *arena,
                    const int32_t *tokens, const int32_t *labels, float *loss);

extern "C" __attribute__((weak)) void
moe_entry_decode(moert_context *ctx, uint8_t *weights, uint8_t *arena,
                 uint8_t *cache, const int32_t *tokens,
                 const int32_t *positions, float *logits);
extern "C" __attribute__((weak)) void
moe_entry_prefill(moert_context *ctx, uint8_t *weights, uint8_t *arena,
                  uint8_t *cache, const int32_t *tokens,
                  const int32_t *positions, float *logits);

#ifdef MOE_HAVE_NCCL
static std::unique_ptr<moe::rt::Communicator>
ncclOver(moe::rt::Communicator &bootstrap, int device,
         const moe::rt::CommOptions &options) {
  return moe::rt::ncclWorld(bootstrap, device, options);
}
#endif

int main(int argc, char **argv) {
#ifdef MOE_HAVE_CUDA
  moe::rt::registerCudaBackend(&moe::cuda::makeCudaBackend);
#endif
#ifdef MOE_HAVE_NCCL
  moe::rt::registerDeviceCommunicator(&ncclOver);
#endif
  moe::driver::Entries entries;
  entries.forward = moe_entry_forward;
  entries.trainStep = moe_entry_train_step;
  entries.evalStep = moe_entry_eval_step;
  entries.decode = moe_entry_decode;
  entries.prefill = moe_entry_prefill;
  return moe::driver::runDriver(argc, argv, moe_model_manifest, entries);
}
