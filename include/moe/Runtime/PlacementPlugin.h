/*===- PlacementPlugin.h - User-supplied placement policies ------*- C -*-===*\
 *
 * A user-supplied expert placement or token dispatch policy is a shared
 * library that exports one or both of the functions below (plain C, so any
 * compiler builds it). A compiled model's `train` loads it with
 * --placement-policy plugin:PATH or --dispatch-policy plugin:PATH.
 *
 * Slots are numbered globally: slot g = rank * slots + local slot, over the
 * n ranks of an EP group. Both functions must be deterministic: every rank
 * calls them with the same request and must produce the same answer (the
 * runtime checks the dispatch split across ranks, and validates both).
 * Return 0 on success; anything else fails the run with the message written
 * to `error` (at most error_size bytes, NUL-terminated).
 *
\*===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_PLACEMENTPLUGIN_H
#define MOE_RUNTIME_PLACEMENTPLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_placement_request {
  int64_t layer;                     /* the MoE layer, counted from 0 */
  int64_t experts;                   /* E */
  int64_t ranks;                     /* n, the EP group size */
  int64_t slots;                     /* slots per rank */
  const int32_t *current;            /* [ranks * slots], -1 = empty */
  const int64_t *expert_load;        /* [experts], token-slots in the window */
  const double *rank_expert_seconds; /* [ranks], expert compute seconds */
} moe_placement_request;

/* Writes the layer's next placement to slot_experts [ranks * slots]: the
 * expert each slot holds, or -1. Every expert needs a slot, and no rank may
 * hold an expert twice. */
int moe_place_experts(const moe_placement_request *request,
                      int32_t *slot_experts, char *error, size_t error_size);

typedef struct moe_dispatch_request {
  int64_t experts, ranks, slots;
  const int32_t *slot_experts; /* [ranks * slots] */
  const int64_t *counts;       /* [ranks][experts]: rows source s routes to e */
} moe_dispatch_request;

/* Writes split [ranks][ranks * slots]: how many of source s's rows for the
 * expert in slot g go to g. Per (s, e) the entries of e's slots sum to
 * counts[s][e]; a source's rows for e fill its slots in ascending order. */
int moe_split_tokens(const moe_dispatch_request *request, int64_t *split,
                     char *error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_PLACEMENTPLUGIN_H */
