/* Routes one case on the device and holds every stage to the CPU reference. */
#ifndef MOEVK_ROUTE_CHECK_H
#define MOEVK_ROUTE_CHECK_H

#include "moevk.h"

typedef enum logits_pattern {
    LOGITS_RANDOM,    /* normal(0, 2) */
    LOGITS_TIES,      /* few distinct values: many exact ties */
    LOGITS_MASKED,    /* random with about a third of the experts at -inf, some rows all -inf */
    LOGITS_NONFINITE, /* random, with NaN and +inf in some rows */
    LOGITS_HUGE,      /* +-1e30 mixed with ordinary values */
    LOGITS_SKEWED,    /* a few experts preferred by most tokens: overflowing experts */
    LOGITS_COLLAPSED, /* every token's first choice is expert 0 */
} logits_pattern;

typedef struct route_case {
    const char *name;
    moevk_router_info info; /* completed from moevk_router_info_init */
    uint32_t num_tokens;
    logits_pattern pattern;
    int with_bias;
    int with_hidden;      /* dispatch and combine too (needs info.hidden_size) */
    uint32_t step, layer; /* the noise counter, when info.noise is set */
    int inference;
    const float *noise_std;     /* [E] Gaussian std per expert, or NULL */
    const float *noise_weights; /* [d, E] W_noise of a learned std (needs with_hidden), or NULL */
} route_case;

/* A router of the mode with E experts, top-k, max_tokens T and hidden size d; the rest
 * moevk_router_info_init's defaults. */
moevk_router_info route_case_info(moevk_routing_mode mode, uint32_t E, uint32_t k, uint32_t T,
                                  uint32_t d);

/* Runs the case; failures go through the harness. */
void check_route_case(const route_case *c);

#endif
