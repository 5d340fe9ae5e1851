/* A whole Mixture-of-Experts layer on the device: moevk_layer takes the hidden states and the
 * layer's weights (router W_g, each expert's SwiGLU FFN, one shared expert) and computes the
 * router projection, the route, the experts and the combine in one submission. The output is
 * checked against the same layer computed densely on the CPU, token by token. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "moevk.h"

enum { T = 512, E = 8, K = 2, D = 32, F = 48, FS = 64 };

static float frand(unsigned *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 16777216.0f - 0.5f;
}

/* down(silu(gate x) * up x) with gate, up [f, D] and down [D, f], as Hugging Face stores them. */
static void swiglu_ffn(const float *gate, const float *up, const float *down, int f, const float *x,
                       double *y) {
    double *h = malloc(sizeof(double) * (size_t)f);
    for (int n = 0; n < f; ++n) {
        double g = 0, u = 0;
        for (int i = 0; i < D; ++i) {
            g += (double)gate[n * D + i] * x[i];
            u += (double)up[n * D + i] * x[i];
        }
        h[n] = g / (1 + exp(-g)) * u;
    }
    for (int o = 0; o < D; ++o) {
        double acc = 0;
        for (int n = 0; n < f; ++n) acc += (double)down[o * f + n] * h[n];
        y[o] += acc;
    }
    free(h);
}

int main(void) {
    unsigned seed = 1;
    static float x[T * D], router_w[E * D], gate[E * F * D], up[E * F * D], down[E * D * F];
    static float shared_gate[FS * D], shared_up[FS * D], shared_down[D * FS], out[T * D];
    static float logits[T * E], weights[T * K];
    static int32_t ids[T * K], slots[T * K];
    for (int i = 0; i < T * D; ++i) x[i] = frand(&seed);
    for (int i = 0; i < E * D; ++i) router_w[i] = frand(&seed);
    for (int i = 0; i < E * F * D; ++i) {
        gate[i] = frand(&seed) * 0.3f;
        up[i] = frand(&seed) * 0.3f;
        down[i] = frand(&seed) * 0.3f;
    }
    for (int i = 0; i < FS * D; ++i) {
        shared_gate[i] = frand(&seed) * 0.3f;
        shared_up[i] = frand(&seed) * 0.3f;
        shared_down[i] = frand(&seed) * 0.3f;
    }

    moevk_context *context = NULL;
    moevk_layer *layer = NULL;
    moevk_result r = moevk_context_create(NULL, &context);
    moevk_router_info router_info;
    moevk_router_info_init(&router_info);
    router_info.num_experts = E;
    router_info.top_k = K;
    router_info.max_tokens = T;
    router_info.hidden_size = D;
    router_info.renormalize = 1;
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router_info;
    info.intermediate_size = F;
    info.activation = MOEVK_ACTIVATION_SWIGLU;
    info.shared_intermediate_size = FS;
    if (r == MOEVK_SUCCESS) r = moevk_layer_create(context, &info, &layer);
    struct {
        moevk_layer_weight which;
        uint32_t count;
        const float *data;
    } const weight_list[] = {
        {MOEVK_WEIGHT_ROUTER, 1, router_w},
        {MOEVK_WEIGHT_GATE, E, gate},
        {MOEVK_WEIGHT_UP, E, up},
        {MOEVK_WEIGHT_DOWN, E, down},
        {MOEVK_WEIGHT_SHARED_GATE, 1, shared_gate},
        {MOEVK_WEIGHT_SHARED_UP, 1, shared_up},
        {MOEVK_WEIGHT_SHARED_DOWN, 1, shared_down},
    };
    for (size_t i = 0; r == MOEVK_SUCCESS && i < sizeof weight_list / sizeof weight_list[0]; ++i)
        r = moevk_layer_set_weights(layer, weight_list[i].which, 0, weight_list[i].count,
                                    moevk_host_tensor((void *)weight_list[i].data));

    moevk_route_stats stats;
    moevk_route_stats_init(&stats);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.hidden = moevk_host_tensor(x);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.expert_ids = moevk_host_tensor(ids);
    route.weights = moevk_host_tensor(weights);
    route.slots = moevk_host_tensor(slots);
    route.stats = &stats;
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(out);
    output.router_logits = moevk_host_tensor(logits);
    output.route = &route;
    if (r == MOEVK_SUCCESS) r = moevk_layer_forward(layer, &input, &output);

    /* The same layer, densely: every token through its kept experts and the shared expert. */
    double worst = 0;
    for (int t = 0; r == MOEVK_SUCCESS && t < T; ++t) {
        double want[D] = {0}, expert_y[D];
        for (int j = 0; j < K; ++j) {
            if (slots[t * K + j] < 0) continue; /* dropped by the capacity limit */
            size_t e = (size_t)ids[t * K + j];
            for (int o = 0; o < D; ++o) expert_y[o] = 0;
            swiglu_ffn(gate + e * F * D, up + e * F * D, down + e * D * F, F, x + t * D, expert_y);
            for (int o = 0; o < D; ++o) want[o] += weights[t * K + j] * expert_y[o];
        }
        swiglu_ffn(shared_gate, shared_up, shared_down, FS, x + t * D, want);
        for (int o = 0; o < D; ++o) {
            double diff = fabs(out[t * D + o] - want[o]);
            if (diff > worst) worst = diff;
        }
    }
    if (r == MOEVK_SUCCESS)
        printf("MoE layer on the device: %d tokens, %d experts (SwiGLU, f %d) + a shared expert, "
               "top-%d,\ncapacity %u, %llu of %llu assignments dropped, aux loss %.4f; largest "
               "difference from the dense layer %.2e\n",
               T, E, F, K, stats.capacity, (unsigned long long)stats.dropped,
               (unsigned long long)stats.assignments, stats.aux_loss, worst);
    else
        fprintf(stderr, "moevk: %s\n", moevk_context_last_error(context));
    moevk_layer_destroy(layer);
    moevk_context_destroy(context);
    return r == MOEVK_SUCCESS && worst < 1e-4 ? 0 : 1;
}
