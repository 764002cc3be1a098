/*===- ModelABI.h - What a compiled model object exports -----------*- C
 *-*-===//
 *
 * `moec` lowers each function of a model module (today: `@forward`) to an
 * entry point with this C calling convention and embeds a JSON manifest that
 * describes it. The executable's driver (lib/Runtime/driver) links against
 * these two symbols and nothing else of the model.
 *
 *   extern const char moe_model_manifest[];  // NUL-terminated UTF-8 JSON
 *
 *   void moe_entry_forward(moert_context *ctx,
 *                          uint8_t *weights,      // weights_bytes, 64-aligned
 *                          uint8_t *arena,        // arena_bytes, 64-aligned
 *                          const int32_t *tokens, // [batch, seq]
 *                          const int32_t *labels, // [batch, seq]
 *                          float *logits,         // [batch, seq, vocab]
 *                          float *loss);          // scalar
 *
 * A model compiled with a training step (moec --train-step) also exports
 *
 *   void moe_entry_train_step(moert_context *ctx,
 *                             uint8_t *weights,      // as for forward
 *                             uint8_t *arena,        // train_step.arena_bytes
 *                             uint8_t *grads,        // laid out like weights
 *                             const int32_t *tokens, // as for forward
 *                             const int32_t *labels,
 *                             float *loss);          // global mean loss
 *
 * It writes the gradient of the loss with respect to every parameter the
 * loss depends on into that parameter's slot of `grads` and leaves the other
 * slots alone (the caller zeroes the blob first). On a mesh, a rank's slot
 * holds its block of the gradient of the global loss, already summed over
 * data-parallel replicas. The driver references it weakly: executables
 * without one still link, and `train` says how to get one.
 *
 * Beside it comes
 *
 *   void moe_entry_eval_step(moert_context *ctx, uint8_t *weights,
 *                            uint8_t *arena,     // eval_step.arena_bytes
 *                            const int32_t *tokens, const int32_t *labels,
 *                            float *loss);       // global mean loss
 *
 * the forward's loss without its logits, which `train` evaluates with (also
 * referenced weakly).
 *
 * A model compiled without a mesh also exports, for generation against a
 * key/value cache (moe-build-decode; moec --decode-batch N, --max-seq L),
 *
 *   void moe_entry_decode(moert_context *ctx, uint8_t *weights,
 *                         uint8_t *arena,        // decode.arena_bytes
 *                         uint8_t *cache,        // decode.cache_bytes
 *                         const int32_t *tokens,     // [N, 1]
 *                         const int32_t *positions,  // [N, 1], in [0, L)
 *                         float *logits);            // [N, 1, vocab]
 *
 * and moe_entry_prefill, the same with [N, P] tokens and positions (P
 * divides L). Each writes the keys and values of its tokens into `cache` at
 * their positions and attends to the cache up to each token's position; the
 * caller keeps `cache` between calls and writes every position before a
 * later token reads it. Both are referenced weakly: without them `generate`
 * runs the forward for every token.
 *
 * Every buffer is a bare pointer to dense row-major data. The entry writes its
 * results only through the output pointers and uses `arena` as scratch: the
 * compiler's memory plan placed every intermediate tensor at a fixed offset in
 * it. A runtime call that fails records the error in `ctx` and every later
 * call of that entry becomes a no-op; the caller checks moert_context_error().
 *
 * Manifest (format "moe-model/1"):
 *   {
 *     "format": "moe-model/1",
 *     "function": "forward", "entry": "moe_entry_forward",
 *     "weights_bytes": 123456, "arena_bytes": 65536,
 *     "unplanned_bytes": 262144,        // bytes without buffer reuse
 *     "params": [                        // in weights-blob order
 *       {"name": "model.embed_tokens.weight", "shape": [128, 64],
 *        "dtype": "F32", "offset": 0},
 *       {"name": "model.layers.0.mlp.experts.{e}.gate_proj.weight",
 *        "shape": [8, 32, 64], "dtype": "F32", "offset": 32768}
 *                                        // "{e}": slice e of dim 0 is the HF
 *                                        // tensor with e substituted
 *     ],
 *     "inputs":  [{"name": "tokens", "shape": [4, 16], "dtype": "I32"},
 *                 {"name": "labels", "shape": [4, 16], "dtype": "I32"}],
 *     "outputs": [{"name": "logits", "shape": [4, 16, 128], "dtype": "F32"},
 *                 {"name": "loss",   "shape": [],          "dtype": "F32"}],
 *     "ignore_index": -100,               // labels equal to it are skipped
 *     "vocab_chars": "\n !$&...",         // optional: token i is the i-th
 *                                         // character (character-level model)
 *     "mesh": {"dp": 1, "cp": 1, "tp": 1, "ep": 1},
 *     "zero_stage": 1,                    // optional (moec --zero 1): each
 *                                         // rank keeps AdamW state for one
 *                                         // slice of each weight
 *     "recompute": "full",                // optional (moec --recompute
 *                                         // full): the training step runs
 *                                         // each block's forward twice
 *     "forward_routing_calls": {"permute": 2, "drop": 0},
 *                                         // with "recompute": the routing
 *                                         // calls of one forward pass
 *     "train_step": {                     // optional: the training step
 *       "function": "train_step", "entry": "moe_entry_train_step",
 *       "arena_bytes": 98304, "unplanned_bytes": 524288,
 *       "inputs": [...],                  // exactly the forward's inputs
 *       "outputs": [{"name": "loss", "shape": [], "dtype": "F32"}]
 *     },
 *     "eval_step": {...},                 // optional, beside train_step: the
 *                                         // forward's loss alone, fields as
 *                                         // train_step's (moe_entry_eval_step)
 *     "decode": {                         // optional: moe_entry_decode
 *       "function": "decode", "entry": "moe_entry_decode",
 *       "arena_bytes": 1536, "unplanned_bytes": 4096,
 *       "inputs": [{"name": "tokens", "shape": [1, 1], "dtype": "I32"},
 *                  {"name": "positions", "shape": [1, 1], "dtype": "I32"}],
 *       "outputs": [{"name": "logits", "shape": [1, 1, 128], ...}],
 *       "cache_bytes": 8192,              // the cache blob
 *       "caches": [{"name": "layers.0.keys", "shape": [1, 16, 2, 16],
 *                   "dtype": "F32", "offset": 0}, ...]
 *     },
 *     "prefill": {...}                    // optional, beside decode: fields
 *                                         // as decode's, the same caches
 *   }
 *
 * A partitioned model adds "global_shape" and "split" (per dimension, the
 * mesh axes it is split over) to params, inputs and outputs; "shape" is then
 * one rank's block.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_MODELABI_H
#define MOE_RUNTIME_MODELABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The runtime state an entry point runs with (backend, first error). */
typedef struct moert_context moert_context;

moert_context *moert_context_create(void);
void moert_context_destroy(moert_context *ctx);
/* The first error a runtime call recorded since the last reset, or NULL. */
const char *moert_context_error(const moert_context *ctx);
void moert_context_reset_error(moert_context *ctx);

/* Byte alignment of the weights blob, the arena and every offset in them. */
#define MOE_BUFFER_ALIGNMENT 64

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_MODELABI_H */
