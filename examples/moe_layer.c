/* A whole Mixture-of-Experts layer: moevk routes and dispatches the tokens, each expert (here a
 * small matrix product with a ReLU, on the CPU) transforms its rows, moevk combines the results,
 * and the output is checked against the same layer computed densely, token by token. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "moevk.h"

enum { T = 512, E = 8, K = 2, D = 32 };

static float frand(unsigned *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 16777216.0f - 0.5f;
}

/* Expert e: y = relu(x W_e). */
static void expert(const float *W, int e, const float *x, float *y) {
    for (int o = 0; o < D; ++o) {
        float acc = 0;
        for (int i = 0; i < D; ++i) acc += x[i] * W[((size_t)e * D + i) * D + o];
        y[o] = acc > 0 ? acc : 0;
    }
}

int main(void) {
    unsigned seed = 1;
    static float x[T * D], router_w[D * E], logits[T * E], W[E * D * D], combined[T * D];
    for (int i = 0; i < T * D; ++i) x[i] = frand(&seed);
    for (int i = 0; i < D * E; ++i) router_w[i] = frand(&seed);
    for (int i = 0; i < E * D * D; ++i) W[i] = frand(&seed) * 0.5f;
    /* The router's linear layer is the application's; moevk takes its logits. */
    for (int t = 0; t < T; ++t)
        for (int e = 0; e < E; ++e) {
            float acc = 0;
            for (int i = 0; i < D; ++i) acc += x[t * D + i] * router_w[i * E + e];
            logits[t * E + e] = acc;
        }

    moevk_context *context = NULL;
    moevk_router *router = NULL;
    moevk_result r = moevk_context_create(NULL, &context);
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.top_k = K;
    info.max_tokens = T;
    info.hidden_size = D;
    info.renormalize = 1;
    if (r == MOEVK_SUCCESS) r = moevk_router_create(context, &info, &router);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk: %s\n", moevk_result_string(r));
        moevk_context_destroy(context);
        return 1;
    }
    uint64_t max_rows = moevk_router_max_dispatched_rows(router);
    float *dispatched = calloc(max_rows * D, sizeof(float));
    float *expert_out = calloc(max_rows * D, sizeof(float));
    int32_t ids[T * K], slots[T * K];
    float weights[T * K];
    moevk_route_stats stats = {0};
    moevk_route_input input = {
        .num_tokens = T, .logits = moevk_host_tensor(logits), .hidden = moevk_host_tensor(x)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids),
                                 .weights = moevk_host_tensor(weights),
                                 .slots = moevk_host_tensor(slots),
                                 .dispatched = moevk_host_tensor(dispatched),
                                 .stats = &stats};
    r = moevk_route(router, &input, &output);

    /* The experts: each runs on its own block of C rows of the [E, C, D] buffer. */
    for (uint32_t row = 0; r == MOEVK_SUCCESS && row < stats.dispatched_rows; ++row)
        expert(W, (int)(row / stats.capacity), dispatched + (size_t)row * D,
               expert_out + (size_t)row * D);
    if (r == MOEVK_SUCCESS)
        r = moevk_combine(router, moevk_host_tensor(expert_out), moevk_host_tensor(combined));

    /* The same layer, densely: every token through its kept experts. */
    double worst = 0;
    for (int t = 0; r == MOEVK_SUCCESS && t < T; ++t) {
        float want[D] = {0}, y[D];
        for (int j = 0; j < K; ++j) {
            if (slots[t * K + j] < 0) continue; /* dropped by the capacity limit */
            expert(W, ids[t * K + j], x + t * D, y);
            for (int o = 0; o < D; ++o) want[o] += weights[t * K + j] * y[o];
        }
        for (int o = 0; o < D; ++o) {
            double diff = fabs(combined[t * D + o] - want[o]);
            if (diff > worst) worst = diff;
        }
    }
    if (r == MOEVK_SUCCESS)
        printf("MoE layer: %d tokens, %d experts, top-%d, capacity %u, %llu of %llu assignments "
               "dropped,\n"
               "aux loss %.4f; largest difference from the dense layer %.2e\n",
               T, E, K, stats.capacity, (unsigned long long)stats.dropped,
               (unsigned long long)stats.assignments, stats.aux_loss, worst);
    else
        fprintf(stderr, "moevk: %s\n", moevk_context_last_error(context));
    free(dispatched);
    free(expert_out);
    moevk_router_destroy(router);
    moevk_context_destroy(context);
    return r == MOEVK_SUCCESS && worst < 1e-4 ? 0 : 1;
}
