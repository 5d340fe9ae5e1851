/* Routes one expert-choice case on the device and holds it to the CPU reference: the taken
 * sets (outside near ties at a threshold), slots in token order, counts, weights, statistics,
 * dispatch, combine, and the same bits on a second run. */
#ifndef MOEVK_CHOICE_CHECK_H
#define MOEVK_CHOICE_CHECK_H

#include "moevk.h"
#include "route_check.h"

/* Runs the case (noise at step 5); failures go through the harness. */
void run_choice(const char *name, moevk_router_info info, uint32_t T, logits_pattern pattern);

#endif
