/* One skewed batch routed three ways: each token's top-2 (TOKEN), the Sinkhorn-balanced top-2,
 * and experts choosing their tokens (EXPERT_CHOICE), with the load each leaves on the experts.
 * Then expert choice through identity experts: each token comes back as its hidden state times
 * the sum of the scores of the experts that took it. Exit status 0 when that holds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "moevk.h"

enum { TOKENS = 512, EXPERTS = 8, DIM = 16 };

/* A small deterministic generator, so the example prints the same thing everywhere. */
static float next_uniform(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 16777216.0f;
}

static moevk_result route_mode(moevk_context *context, moevk_routing_mode mode, const float *logits,
                               uint32_t *load, moevk_route_stats *stats) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.mode = mode;
    info.num_experts = EXPERTS;
    info.top_k = 2;
    info.max_tokens = TOKENS;
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(context, &info, &router);
    moevk_route_input input = {.num_tokens = TOKENS, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {.counts = moevk_host_tensor(load), .stats = stats};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    return r;
}

/* Expert choice with identity experts: combined[t] = x[t] * (sum of t's weights). */
static int expert_choice_round_trip(moevk_context *context, const float *logits) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.mode = MOEVK_MODE_EXPERT_CHOICE;
    info.num_experts = EXPERTS;
    info.top_k = 1; /* unused: experts choose */
    info.max_tokens = TOKENS;
    info.hidden_size = DIM;
    static float hidden[TOKENS * DIM], weights[TOKENS * EXPERTS], combined[TOKENS * DIM];
    uint32_t state = 7;
    for (int i = 0; i < TOKENS * DIM; ++i) hidden[i] = next_uniform(&state) - 0.5f;
    moevk_router *router = NULL;
    moevk_result r = moevk_router_create(context, &info, &router);
    uint64_t rows = router ? moevk_router_max_dispatched_rows(router) : 0;
    float *dispatched = calloc(rows * DIM + 1, sizeof *dispatched);
    moevk_route_stats stats = {0};
    moevk_route_input input = {.num_tokens = TOKENS,
                               .logits = moevk_host_tensor(logits),
                               .hidden = moevk_host_tensor(hidden)};
    moevk_route_output output = {.weights = moevk_host_tensor(weights),
                                 .dispatched = moevk_host_tensor(dispatched),
                                 .stats = &stats};
    if (r == MOEVK_SUCCESS && !dispatched) r = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_host_tensor(dispatched),
                          moevk_host_tensor(combined)); /* identity experts */
    double worst = 0.0;
    for (int t = 0; r == MOEVK_SUCCESS && t < TOKENS; ++t) {
        float total = 0.0f; /* weights has one column per expert */
        for (int e = 0; e < EXPERTS; ++e) total += weights[t * EXPERTS + e];
        for (int i = 0; i < DIM; ++i)
            worst = fmax(worst, fabs(combined[t * DIM + i] - hidden[t * DIM + i] * total));
    }
    if (r == MOEVK_SUCCESS)
        printf("expert choice: C = %u tokens per expert, %u tokens taken by no expert; "
               "identity experts give x * sum of scores within %.1e\n",
               stats.capacity, stats.unrouted_tokens, worst);
    else
        fprintf(stderr, "expert choice: %s\n", moevk_context_last_error(context));
    free(dispatched);
    moevk_router_destroy(router);
    return r == MOEVK_SUCCESS && worst < 1e-5;
}

int main(void) {
    moevk_context *context = NULL;
    moevk_result r = moevk_context_create(NULL, &context);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "no device: %s\n", moevk_result_string(r));
        return 1;
    }
    /* Every token leans towards experts 0 and 1. */
    static float logits[TOKENS * EXPERTS];
    uint32_t state = 1;
    for (int i = 0; i < TOKENS * EXPERTS; ++i)
        logits[i] = 2.0f * next_uniform(&state) + (i % EXPERTS < 2 ? 2.0f : 0.0f);
    const struct {
        moevk_routing_mode mode;
        const char *name;
    } modes[] = {{MOEVK_MODE_TOKEN, "token top-2"},
                 {MOEVK_MODE_SINKHORN, "sinkhorn top-2"},
                 {MOEVK_MODE_EXPERT_CHOICE, "expert choice"}};
    int ok = 1;
    for (int m = 0; m < 3 && ok; ++m) {
        uint32_t load[EXPERTS];
        moevk_route_stats stats = {0};
        r = route_mode(context, modes[m].mode, logits, load, &stats);
        if (r != MOEVK_SUCCESS) {
            fprintf(stderr, "%s: %s\n", modes[m].name, moevk_context_last_error(context));
            ok = 0;
            break;
        }
        printf("%-15s kept per expert:", modes[m].name);
        for (int e = 0; e < EXPERTS; ++e) printf(" %4u", load[e]);
        printf("   dropped %5.1f%%", 100.0 * stats.drop_fraction);
        if (modes[m].mode == MOEVK_MODE_SINKHORN)
            printf("   (%u Sinkhorn iterations)", stats.sinkhorn_iterations);
        printf("\n");
    }
    ok = ok && expert_choice_round_trip(context, logits);
    moevk_context_destroy(context);
    return ok ? 0 : 1;
}
