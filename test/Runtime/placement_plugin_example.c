/*===- placement_plugin_example.c - Example placement plugin -------------===*\
 *
 * An example of a user-supplied placement policy (PlacementPlugin.h), and
 * the fixture ExpertPlacementTest loads through $MOE_PLACEMENT_PLUGIN.
 *
 * moe_place_experts ("reverse"): rank j holds the experts the static split
 * gives rank n-1-j, the extra slots empty. moe_split_tokens: all rows of an
 * expert go to its highest slot.
 *
 * For the error paths: both fail when $MOE_PLUGIN_FAIL is set, and
 * moe_place_experts fails for layer 99. With MOE_PLUGIN_FAIL=bad they
 * return 0 with a wrong answer instead (no expert placed, or no row sent).
 *
\*===----------------------------------------------------------------------===*/

#include "moe/Runtime/PlacementPlugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1: fail, 2: answer wrongly, 0: behave. */
static int failMode(void) {
  const char *value = getenv("MOE_PLUGIN_FAIL");
  if (!value)
    return 0;
  return strcmp(value, "bad") == 0 ? 2 : 1;
}

int moe_place_experts(const moe_placement_request *request,
                      int32_t *slot_experts, char *error, size_t error_size) {
  int64_t n = request->ranks, s = request->slots, e = request->experts;
  int mode = failMode();
  if (mode == 1 || request->layer == 99) {
    snprintf(error, error_size, "example plugin refuses layer %lld",
             (long long)request->layer);
    return 1;
  }
  if (e % n != 0 || s < e / n) {
    snprintf(error, error_size, "no static split of %lld experts, %lld ranks",
             (long long)e, (long long)n);
    return 1;
  }
  for (int64_t g = 0; g < n * s; ++g)
    slot_experts[g] = -1;
  if (mode == 2)
    return 0;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < e / n; ++i)
      slot_experts[j * s + i] = (int32_t)((n - 1 - j) * (e / n) + i);
  return 0;
}

int moe_split_tokens(const moe_dispatch_request *request, int64_t *split,
                     char *error, size_t error_size) {
  int64_t n = request->ranks, e = request->experts;
  int64_t total = n * request->slots;
  int mode = failMode();
  if (mode == 1) {
    snprintf(error, error_size, "example plugin refuses to split");
    return 1;
  }
  for (int64_t i = 0; i < n * total; ++i)
    split[i] = 0;
  if (mode == 2)
    return 0;
  for (int64_t x = 0; x < e; ++x) {
    int64_t last = -1;
    for (int64_t g = 0; g < total; ++g)
      if (request->slot_experts[g] == x)
        last = g;
    if (last < 0) {
      snprintf(error, error_size, "expert %lld has no slot", (long long)x);
      return 1;
    }
    for (int64_t s = 0; s < n; ++s)
      split[s * total + last] = request->counts[s * e + x];
  }
  return 0;
}
