/* The demo's MoE layer: the demo batch's hidden states through a whole layer on the device
 * (router projection, route, SwiGLU experts, combine), timed, with a checksum of the output and
 * its largest difference from the CPU reference on the first tokens. */
#include "demo_layer.h"

#include <math.h>
#include <stdlib.h>

#include "monotonic_clock.h"
#include "moevk_reference.h"

#define CHECKED_TOKENS 64u /* the reference runs in double on one core: a sample */

double demo_seconds_now(void) { return monotonic_seconds(); }

static float *random_weights(size_t count, float scale, uint32_t *state) {
    float *w = malloc(count * sizeof *w + 4);
    for (size_t i = 0; w && i < count; ++i) {
        *state = *state * 1664525u + 1013904223u;
        w[i] = ((float)(*state >> 8) / 16777216.0f - 0.5f) * 2.0f * scale;
    }
    return w;
}

static moevk_result run(moevk_context *context, const moevk_router_info *router,
                        uint32_t intermediate, const float *hidden, const float *const w[4],
                        demo_layer_result *result, float *out, float *weights, int32_t *ids,
                        int32_t *slots) {
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = router;
    info.intermediate_size = intermediate;
    moevk_layer *layer = NULL;
    moevk_result r = moevk_layer_create(context, &info, &layer);
    const moevk_layer_weight which[4] = {MOEVK_WEIGHT_ROUTER, MOEVK_WEIGHT_GATE, MOEVK_WEIGHT_UP,
                                         MOEVK_WEIGHT_DOWN};
    for (int i = 0; r == MOEVK_SUCCESS && i < 4; ++i)
        r = moevk_layer_set_weights(layer, which[i], 0, i ? router->num_experts : 1,
                                    moevk_host_tensor(w[i]));
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = router->max_tokens;
    input.hidden = moevk_host_tensor(hidden);
    moevk_route_stats stats;
    moevk_route_stats_init(&stats);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.expert_ids = moevk_host_tensor(ids);
    route.weights = moevk_host_tensor(weights);
    route.slots = moevk_host_tensor(slots);
    route.counts = moevk_host_tensor(result->counts);
    route.stats = &stats;
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(out);
    output.route = &route;
    /* The first forward compiles nothing (the router did) but touches every page: time the
     * second. */
    for (int pass = 0; pass < 2 && r == MOEVK_SUCCESS; ++pass) {
        double start = demo_seconds_now();
        r = moevk_layer_forward(layer, &input, &output);
        result->seconds = demo_seconds_now() - start;
    }
    result->dropped = stats.dropped;
    moevk_layer_destroy(layer);
    return r;
}

moevk_result demo_layer(moevk_context *context, const moevk_router_info *router,
                        uint32_t intermediate, const float *hidden, demo_layer_result *result) {
    uint64_t T = router->max_tokens, E = router->num_experts, d = router->hidden_size;
    uint64_t f = intermediate, k = router->top_k;
    uint32_t state = 777u;
    float *w[4] = {random_weights(E * d, 1.0f / sqrtf((float)d), &state),
                   random_weights(E * f * d, 1.0f / sqrtf((float)d), &state),
                   random_weights(E * f * d, 1.0f / sqrtf((float)d), &state),
                   random_weights(E * d * f, 1.0f / sqrtf((float)f), &state)};
    float *out = malloc(T * d * 4 + 4), *weights = malloc(T * k * 4 + 4);
    int32_t *ids = malloc(T * k * 4 + 4), *slots = malloc(T * k * 4 + 4);
    uint32_t checked = T < CHECKED_TOKENS ? (uint32_t)T : CHECKED_TOKENS;
    double *want = malloc(checked * d * 8 + 8), *magnitude = malloc(checked * d * 8 + 8);
    result->counts = calloc(E + 1, 4);
    moevk_result r = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (w[0] && w[1] && w[2] && w[3] && out && weights && ids && slots && want && magnitude &&
        result->counts)
        r = run(context, router, intermediate, hidden, (const float *const *)w, result, out,
                weights, ids, slots);
    if (r == MOEVK_SUCCESS) {
        result->flops = 6.0 * (double)(T * k - result->dropped) * (double)d * (double)f;
        ref_layer layer = {.router = router,
                           .router_weights = w[0],
                           .experts = {(uint32_t)d, (uint32_t)f, MOEVK_ACTIVATION_SWIGLU,
                                       MOEVK_DTYPE_F32, w[1], w[2], w[3], NULL, NULL, NULL}};
        ref_layer_output(&layer, checked, hidden, ids, weights, slots, want, magnitude);
        result->worst = 0;
        for (uint64_t i = 0; i < checked * d; ++i) {
            double relative = fabs(out[i] - want[i]) / (magnitude[i] + 1e-30);
            if (relative > result->worst) result->worst = relative;
        }
        result->checksum = 0;
        for (uint64_t i = 0; i < T * d; ++i) result->checksum += out[i];
        result->checked_tokens = checked;
    }
    for (int i = 0; i < 4; ++i) free(w[i]);
    free(out), free(weights), free(ids), free(slots), free(want), free(magnitude);
    return r;
}
