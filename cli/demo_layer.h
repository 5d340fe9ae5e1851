/* The demo's MoE layer (cli/demo_layer.c). */
#ifndef MOEVK_CLI_DEMO_LAYER_H
#define MOEVK_CLI_DEMO_LAYER_H

#include "moevk.h"

typedef struct demo_layer_result {
    uint32_t *counts; /* [E]: rows kept per expert (free() it) */
    uint64_t dropped;
    double seconds;  /* the second forward's wall clock */
    double flops;    /* of the experts' products */
    double checksum; /* the sum of the output */
    double worst;    /* the largest difference from the reference, relative to its magnitude */
    uint32_t checked_tokens;
} demo_layer_result;

/* CLOCK_MONOTONIC in seconds: the demo's wall clock. */
double demo_seconds_now(void);
/* Runs the router's batch (hidden [T, d] f32, T = max_tokens) through a SwiGLU layer of width
 * intermediate with random weights. */
moevk_result demo_layer(moevk_context *context, const moevk_router_info *router,
                        uint32_t intermediate, const float *hidden, demo_layer_result *result);

#endif
