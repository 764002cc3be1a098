/*===- FakeModel.c - A hand-written stand-in for a model object ---*- C -*-===//
 *
 * Exports what a model object from `moec` exports (ModelABI.h) for a model
 * small enough to predict by hand: batch 2, seq 8, vocab 16 (characters
 * 'a'..'p'), one parameter "model.embed_tokens.weight" [16, 16], and
 *   logits[b, s, :] = embed_tokens[tokens[b, s], :]
 *   loss = mean over labels != -100 of logsumexp(logits[b, s]) - logit[label]
 * (0 when every label is ignored, like the runtime's crossEntropy). Linked
 * with libMoERuntimeMain.a and libMoERuntime.a exactly as moec links a real
 * model, it lets DriverCliTest drive the real executable's command line.
 *
 * The training step (moe_entry_train_step) writes the gradient by hand:
 * d loss / d embed[v, :] = sum over the labelled positions with token v of
 * (softmax(logits) - onehot(label)) / (number of labelled positions). It
 * also "routes" each of its tokens to expert (token id mod 4) through
 * moert_permute, as one MoE layer of a real model would, so that the driver
 * sees expert counts.
 *
 * Built three times: `fake-model` with "vocab_chars"; `fake-model-ids`
 * (FAKE_MODEL_TOKEN_IDS) without, for the token-id prompt mode, and without
 * a training step; `fake-model-dp2` (FAKE_MODEL_DP2), the same model
 * partitioned as moe-partition would over mesh dp=2: each rank takes one row
 * of the batch and holds 8 of the 16 columns of the table, gathers the table
 * and the logits over dp, and all-reduces the loss and the gradient, of
 * which it keeps its own columns.
 *
 * Test hook: with FAKE_MODEL_FAIL set in the environment, the entry makes a
 * runtime call with an invalid size, so that the context records an error
 * the way a failing kernel of a real model does.
 *
 *===----------------------------------------------------------------------===*/

#include "moe/Runtime/CApi.h"
#include "moe/Runtime/ModelABI.h"

#include <math.h>
#include <stdlib.h>

enum { kBatch = 2, kSeq = 8, kVocab = 16, kIgnoreIndex = -100 };

#ifdef FAKE_MODEL_TOKEN_IDS
#define VOCAB_CHARS ""
#else
#define VOCAB_CHARS "\"vocab_chars\": \"abcdefghijklmnop\", "
#endif

#ifdef FAKE_MODEL_DP2
enum { kRanks = 2 };
#define PARAM_SHAPE                                                            \
  "\"shape\": [16, 8], \"global_shape\": [16, 16], \"split\": [[], [\"dp\"]]"
#define INPUT_SHAPE                                                            \
  "\"shape\": [1, 8], \"global_shape\": [2, 8], \"split\": [[\"dp\"], []]"
#define WEIGHTS_BYTES "512"
#define FORWARD_ARENA "2048"
#define MESH "{\"dp\": 2, \"cp\": 1, \"tp\": 1, \"ep\": 1}"
#else
enum { kRanks = 1 };
#define PARAM_SHAPE "\"shape\": [16, 16]"
#define INPUT_SHAPE "\"shape\": [2, 8]"
#define WEIGHTS_BYTES "1024"
#define FORWARD_ARENA "64"
#define MESH "{\"dp\": 1, \"cp\": 1, \"tp\": 1, \"ep\": 1}"
#endif
enum { kLocalRows = kBatch / kRanks * kSeq, kLocalColumns = kVocab / kRanks };

#define INPUTS                                                                 \
  "[{\"name\": \"tokens\", " INPUT_SHAPE ", \"dtype\": \"I32\"}, "             \
  "{\"name\": \"labels\", " INPUT_SHAPE ", \"dtype\": \"I32\"}]"

#ifdef FAKE_MODEL_TOKEN_IDS
#define TRAIN_STEP ""
#else
#define TRAIN_STEP                                                             \
  "\"train_step\": {\"function\": \"train_step\", "                            \
  "\"entry\": \"moe_entry_train_step\", \"arena_bytes\": 4096, "               \
  "\"unplanned_bytes\": 4096, \"inputs\": " INPUTS ", "                        \
  "\"outputs\": [{\"name\": \"loss\", \"shape\": [], \"dtype\": \"F32\"}]}, "
#endif

const char moe_model_manifest[] =
    "{\"format\": \"moe-model/1\", \"function\": \"forward\", "
    "\"entry\": \"moe_entry_forward\", "
    "\"weights_bytes\": " WEIGHTS_BYTES ", \"arena_bytes\": " FORWARD_ARENA ", "
    "\"unplanned_bytes\": 576, "
    "\"params\": [{\"name\": \"model.embed_tokens.weight\", " PARAM_SHAPE
    ", \"dtype\": \"F32\", \"offset\": 0}], "
    "\"inputs\": " INPUTS ", "
    "\"outputs\": ["
    "{\"name\": \"logits\", \"shape\": [2, 8, 16], \"dtype\": \"F32\"}, "
    "{\"name\": \"loss\", \"shape\": [], \"dtype\": \"F32\"}], "
    "\"ignore_index\": -100, " VOCAB_CHARS TRAIN_STEP "\"mesh\": " MESH "}";

static double logSumExp(const float *row) {
  double max = row[0], sum = 0.0;
  for (int v = 1; v < kVocab; ++v)
    if (row[v] > max)
      max = row[v];
  for (int v = 0; v < kVocab; ++v)
    sum += exp(row[v] - max);
  return max + log(sum);
}

/* The whole table: gathered over dp in the partitioned variant. */
static const float *wholeTable(moert_context *ctx, const uint8_t *weights,
                               uint8_t *arena) {
  if (kRanks == 1)
    return (const float *)weights;
  moert_all_gather(ctx, MOERT_GROUP_DP, MOERT_DTYPE_F32, weights, arena,
                   kVocab, kLocalColumns, 1);
  return (const float *)arena;
}

/* Logits of this rank's rows; returns the sum of their losses and counts the
 * labelled rows in `counted`. With `dtable`, adds d(sum)/d(table) to it. */
static double localLoss(const float *table, const int32_t *tokens,
                        const int32_t *labels, float *logits, int *counted,
                        float *dtable) {
  double total = 0.0;
  *counted = 0;
  for (int t = 0; t < kLocalRows; ++t) {
    float *row = logits + t * kVocab;
    for (int v = 0; v < kVocab; ++v)
      row[v] = table[tokens[t] * kVocab + v];
    if (labels[t] == kIgnoreIndex)
      continue;
    double lse = logSumExp(row);
    total += lse - row[labels[t]];
    ++*counted;
    if (dtable)
      for (int v = 0; v < kVocab; ++v)
        dtable[tokens[t] * kVocab + v] +=
            (float)(exp(row[v] - lse) - (v == labels[t] ? 1.0 : 0.0));
  }
  return total;
}

/* The global sum of the losses and the global count, in sums[0] and [1]. */
static void globalSums(moert_context *ctx, double total, int counted,
                       float sums[2]) {
  sums[0] = (float)total;
  sums[1] = (float)counted;
  if (kRanks > 1)
    moert_all_reduce_sum(ctx, MOERT_GROUP_DP, MOERT_DTYPE_F32, sums, sums, 2);
}

void moe_entry_forward(moert_context *ctx, uint8_t *weights, uint8_t *arena,
                       const int32_t *tokens, const int32_t *labels,
                       float *logits, float *loss) {
  const float *table = wholeTable(ctx, weights, arena);
  float *localLogits = kRanks == 1 ? logits : (float *)(arena + 1024);
  float sums[2];
  int counted = 0;
  if (getenv("FAKE_MODEL_FAIL"))
    moert_embedding(ctx, tokens, table, logits, kBatch * kSeq, /*vocab=*/0,
                    kVocab);
  double total = localLoss(table, tokens, labels, localLogits, &counted, NULL);
  if (kRanks > 1)
    moert_all_gather(ctx, MOERT_GROUP_DP, MOERT_DTYPE_F32, localLogits, logits,
                     1, kLocalRows * kVocab, 1);
  if (kRanks == 1) {
    *loss = counted ? (float)(total / counted) : 0.0f;
    return;
  }
  globalSums(ctx, total, counted, sums);
  *loss = sums[1] > 0 ? sums[0] / sums[1] : 0.0f;
}

#ifndef FAKE_MODEL_TOKEN_IDS
/* One MoE layer's routing, for the counts: token t goes to expert
 * tokens[t] % 4 (top-1, hidden size 1). Uses 320 bytes of `scratch`. */
static void routeTokens(moert_context *ctx, const int32_t *tokens,
                        uint8_t *scratch) {
  float *x = (float *)scratch;
  int32_t *experts = (int32_t *)(scratch + 64);
  float *permuted = (float *)(scratch + 128);
  int64_t *offsets = (int64_t *)(scratch + 192);
  int32_t *rowToSlot = (int32_t *)(scratch + 256);
  for (int t = 0; t < kLocalRows; ++t) {
    x[t] = (float)tokens[t];
    experts[t] = tokens[t] % 4;
  }
  moert_permute(ctx, x, experts, permuted, offsets, rowToSlot, kLocalRows,
                /*topK=*/1, /*hidden=*/1, /*experts=*/4);
}

void moe_entry_train_step(moert_context *ctx, uint8_t *weights, uint8_t *arena,
                          uint8_t *grads, const int32_t *tokens,
                          const int32_t *labels, float *loss) {
  const float *table = wholeTable(ctx, weights, arena);
  float *localLogits = (float *)(arena + 1024);
  float *dtable = (float *)(arena + 2048);
  float sums[2];
  int counted = 0;
  for (int i = 0; i < kVocab * kVocab; ++i)
    dtable[i] = 0.0f;
  routeTokens(ctx, tokens, arena + 3072);
  double total =
      localLoss(table, tokens, labels, localLogits, &counted, dtable);
  globalSums(ctx, total, counted, sums);
  *loss = sums[1] > 0 ? sums[0] / sums[1] : 0.0f;
  if (kRanks > 1)
    moert_all_reduce_sum(ctx, MOERT_GROUP_DP, MOERT_DTYPE_F32, dtable, dtable,
                         kVocab * kVocab);
  for (int i = 0; i < kVocab * kVocab; ++i)
    dtable[i] = sums[1] > 0 ? dtable[i] / sums[1] : 0.0f;
  if (kRanks > 1)
    moert_all_slice(ctx, MOERT_GROUP_DP, MOERT_DTYPE_F32, dtable, grads,
                    kVocab, kVocab, 1);
  else
    for (int i = 0; i < kVocab * kVocab; ++i)
      ((float *)grads)[i] = dtable[i];
}
#endif
