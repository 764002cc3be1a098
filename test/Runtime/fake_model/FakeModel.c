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
 * Built twice: `fake-model` with "vocab_chars", and `fake-model-ids`
 * (FAKE_MODEL_TOKEN_IDS) without, for the token-id prompt mode.
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

const char moe_model_manifest[] =
    "{\"format\": \"moe-model/1\", \"function\": \"forward\", "
    "\"entry\": \"moe_entry_forward\", "
    "\"weights_bytes\": 1024, \"arena_bytes\": 64, \"unplanned_bytes\": 576, "
    "\"params\": [{\"name\": \"model.embed_tokens.weight\", "
    "\"shape\": [16, 16], \"dtype\": \"F32\", \"offset\": 0}], "
    "\"inputs\": ["
    "{\"name\": \"tokens\", \"shape\": [2, 8], \"dtype\": \"I32\"}, "
    "{\"name\": \"labels\", \"shape\": [2, 8], \"dtype\": \"I32\"}], "
    "\"outputs\": ["
    "{\"name\": \"logits\", \"shape\": [2, 8, 16], \"dtype\": \"F32\"}, "
    "{\"name\": \"loss\", \"shape\": [], \"dtype\": \"F32\"}], "
    "\"ignore_index\": -100, " VOCAB_CHARS
    "\"mesh\": {\"dp\": 1, \"cp\": 1, \"tp\": 1, \"ep\": 1}}";

static double logSumExp(const float *row) {
  double max = row[0], sum = 0.0;
  for (int v = 1; v < kVocab; ++v)
    if (row[v] > max)
      max = row[v];
  for (int v = 0; v < kVocab; ++v)
    sum += exp(row[v] - max);
  return max + log(sum);
}

void moe_entry_forward(moert_context *ctx, uint8_t *weights, uint8_t *arena,
                       const int32_t *tokens, const int32_t *labels,
                       float *logits, float *loss) {
  const float *table = (const float *)weights;
  double total = 0.0;
  int counted = 0;
  (void)arena;
  if (getenv("FAKE_MODEL_FAIL"))
    moert_embedding(ctx, tokens, table, logits, kBatch * kSeq, /*vocab=*/0,
                    kVocab);
  for (int t = 0; t < kBatch * kSeq; ++t) {
    float *row = logits + t * kVocab;
    for (int v = 0; v < kVocab; ++v)
      row[v] = table[tokens[t] * kVocab + v];
    if (labels[t] == kIgnoreIndex)
      continue;
    total += logSumExp(row) - row[labels[t]];
    ++counted;
  }
  *loss = counted ? (float)(total / counted) : 0.0f;
}
