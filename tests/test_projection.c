/* The router projection stage (shaders/router_projection.comp): a route given W_router computes
 * its logits on the device. Each row routes fresh random hidden states twice on one router: from
 * W_router, and from the logits the CPU reference projects (reference/router_projection.c). The
 * projection is exact (f32, no fused multiply-add, in index order), so every output of the two
 * routes (ids, weights, slots, counts, dispatched rows, statistics, losses and dL/dlogits) must
 * be the same bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"
#include "route_check.h"

typedef struct projection_case {
    const char *name;
    uint32_t E, k, T, d;
    moevk_dtype hidden_type;
    moevk_routing_mode mode;
    int noise;             /* Gaussian noise, and the losses with the load loss */
    int weights_in_buffer; /* W_router from a moevk_buffer at an offset */
} projection_case;

static const projection_case CASES[] = {
    {"top2_of_8", .E = 8, .k = 2, .T = 500, .d = 32},
    {"zero_tokens", .E = 8, .k = 2, .T = 0, .d = 16},
    {"one_token", .E = 8, .k = 2, .T = 1, .d = 16},
    {"one_expert", .E = 1, .k = 1, .T = 77, .d = 9},
    {"k_equals_e", .E = 5, .k = 5, .T = 64, .d = 3},
    {"odd_sizes", .E = 13, .k = 3, .T = 1237, .d = 7},
    {"d_of_one", .E = 16, .k = 4, .T = 300, .d = 1},
    {"f16_hidden_odd_d", .E = 9, .k = 2, .T = 333, .d = 5, .hidden_type = MOEVK_DTYPE_F16},
    {"bf16_hidden", .E = 16, .k = 2, .T = 256, .d = 24, .hidden_type = MOEVK_DTYPE_BF16},
    {"1024_experts", .E = 1024, .k = 8, .T = 40, .d = 12},
    {"long_rows_d_4099", .E = 8, .k = 2, .T = 50, .d = 4099},
    {"three_token_chunks", .E = 16, .k = 2, .T = 40000, .d = 8},
    {"gaussian_noise_and_losses", .E = 32, .k = 4, .T = 700, .d = 16, .noise = 1},
    {"weights_in_a_buffer", .E = 12, .k = 3, .T = 400, .d = 20, .weights_in_buffer = 1},
    {"sinkhorn", .E = 16, .k = 2, .T = 300, .d = 8, .mode = MOEVK_MODE_SINKHORN},
    {"expert_choice", .E = 8, .k = 1, .T = 256, .d = 8, .mode = MOEVK_MODE_EXPERT_CHOICE},
};

typedef struct outputs {
    int32_t *ids, *slots;
    float *weights, *dispatched, *grad;
    uint32_t counts[MOEVK_MAX_EXPERTS], counts_before[MOEVK_MAX_EXPERTS];
    moevk_route_stats stats;
    moevk_losses losses;
} outputs;

static void store_hidden(void *hidden, uint64_t i, float value, moevk_dtype type) {
    if (type == MOEVK_DTYPE_F32) {
        ((float *)hidden)[i] = value;
        return;
    }
    uint32_t bits;
    memcpy(&bits, &value, 4);
    /* bf16: the high half (truncated); f16: a few exactly representable steps. */
    uint16_t half = type == MOEVK_DTYPE_BF16
                        ? (uint16_t)(bits >> 16)
                        : (uint16_t)(0x3C00 + ((int)(value * 64.0f) & 0x3FF)); /* in [1, 2) */
    ((uint16_t *)hidden)[i] = half;
}

static moevk_result route_once(moevk_router *router, const projection_case *c,
                               const moevk_route_input *input, outputs *o) {
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.expert_ids = moevk_host_tensor(o->ids);
    output.weights = moevk_host_tensor(o->weights);
    output.slots = moevk_host_tensor(o->slots);
    output.counts = moevk_host_tensor(o->counts);
    output.counts_before = moevk_host_tensor(o->counts_before);
    output.dispatched = moevk_host_tensor(o->dispatched);
    moevk_route_stats_init(&o->stats);
    output.stats = &o->stats;
    moevk_result r = moevk_route(router, input, &output);
    if (r != MOEVK_SUCCESS || !c->noise) return r;
    moevk_loss_info loss;
    moevk_loss_info_init(&loss);
    loss.aux_coef = 0.01f;
    loss.z_coef = 0.001f;
    loss.load_coef = 0.1f;
    moevk_losses_init(&o->losses);
    return moevk_router_losses(router, &loss, &o->losses, moevk_host_tensor(o->grad));
}

static int same_outputs(const outputs *a, const outputs *b, uint64_t TK, uint64_t rows_d,
                        uint32_t E, uint64_t TE, int losses) {
    return !memcmp(a->ids, b->ids, TK * 4) && !memcmp(a->weights, b->weights, TK * 4) &&
           !memcmp(a->slots, b->slots, TK * 4) && !memcmp(a->counts, b->counts, E * 4) &&
           !memcmp(a->counts_before, b->counts_before, E * 4) &&
           !memcmp(a->dispatched, b->dispatched, rows_d * 4) &&
           !memcmp(&a->stats, &b->stats, sizeof a->stats) &&
           (!losses || (!memcmp(&a->losses, &b->losses, sizeof a->losses) &&
                        !memcmp(a->grad, b->grad, TE * 4)));
}

static void run_case(const void *row) {
    const projection_case *c = row;
    moevk_router_info info = route_case_info(c->mode, c->E, c->k, c->T > 0 ? c->T : 1, c->d);
    info.hidden_type = c->hidden_type;
    info.router_projection = 1;
    if (c->noise) {
        info.noise = MOEVK_NOISE_GAUSSIAN;
        info.noise_amount = 0.4f;
        info.losses = 1;
    }
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    uint64_t T = c->T, E = c->E, d = c->d, TE = T * E;
    uint64_t TK = T * moevk_router_choices(router), rows = moevk_router_max_dispatched_rows(router);
    uint64_t element = c->hidden_type == MOEVK_DTYPE_F32 ? 4 : 2;
    void *hidden = malloc(T * d * element + 4);
    float *w = malloc(d * E * 4), *logits = malloc(TE * 4 + 4);
    outputs device = {0}, host = {0};
    outputs *both[2] = {&device, &host};
    for (int i = 0; i < 2; ++i) {
        both[i]->ids = malloc(TK * 4 + 4), both[i]->slots = malloc(TK * 4 + 4);
        both[i]->weights = malloc(TK * 4 + 4), both[i]->grad = malloc(TE * 4 + 4);
        both[i]->dispatched = calloc(rows * d + 1, 4);
    }
    for (uint64_t i = 0; i < T * d; ++i) store_hidden(hidden, i, rng_normal(), c->hidden_type);
    for (uint64_t i = 0; i < d * E; ++i) w[i] = rng_normal() / sqrtf((float)d);
    ref_router_projection(&info, c->T, hidden, w, logits);

    moevk_buffer *buffer = NULL;
    moevk_result r = MOEVK_SUCCESS;
    if (c->weights_in_buffer) {
        r = moevk_buffer_create(test_context(), d * E * 4 + 8, &buffer);
        if (r == MOEVK_SUCCESS) r = moevk_buffer_write(buffer, 8, w, d * E * 4);
    }
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = c->T;
    input.hidden = moevk_host_tensor(hidden);
    input.router_weights = buffer ? moevk_buffer_tensor(buffer, 8) : moevk_host_tensor(w);
    if (r == MOEVK_SUCCESS) r = route_once(router, c, &input, &device);
    input.router_weights = moevk_host_tensor(NULL);
    input.logits = moevk_host_tensor(logits);
    if (r == MOEVK_SUCCESS) r = route_once(router, c, &input, &host);
    uint64_t rows_d = (uint64_t)host.stats.dispatched_rows * d * element / 4;
    int same = r == MOEVK_SUCCESS && same_outputs(&device, &host, TK, rows_d, c->E, TE, c->noise);
    moevk_buffer_destroy(buffer);
    moevk_router_destroy(router);
    for (int i = 0; i < 2; ++i) {
        free(both[i]->ids), free(both[i]->slots), free(both[i]->weights), free(both[i]->grad);
        free(both[i]->dispatched);
    }
    free(hidden), free(w), free(logits);
    CHECK(r == MOEVK_SUCCESS, "%s: -> %s (%s)", c->name, moevk_result_string(r),
          moevk_context_last_error(test_context()));
    CHECK(same, "%s: the route from W_router differs from the route from the reference's logits",
          c->name);
}

/* W_router is [E, d], a model's gate weight: logits = x W_router^T. Worked by hand: W = [[0, 0, 5],
 * [1, 0, 0]] and x = (2, 1, 0) give logits (0, 2), so expert 1; read as [d, E] they would be
 * (5, 1), expert 0. */
static void test_weights_are_experts_by_hidden(void) {
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 2, 1, 1, 3);
    info.router_projection = 1;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    const float w[6] = {0, 0, 5, 1, 0, 0}, hidden[3] = {2, 1, 0};
    int32_t id = -1;
    float weight = 0.0f;
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = 1;
    input.hidden = moevk_host_tensor(hidden);
    input.router_weights = moevk_host_tensor(w);
    moevk_route_output output;
    moevk_route_output_init(&output);
    output.expert_ids = moevk_host_tensor(&id);
    output.weights = moevk_host_tensor(&weight);
    moevk_result r = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    double want = exp(2.0) / (1.0 + exp(2.0)); /* softmax of (0, 2) */
    CHECK(id == 1 && fabs(weight - want) < 1e-6, "expert %d, weight %.7f; want 1, %.7f", id,
          (double)weight, want);
}

static void test_projection_options_are_checked(void) {
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 8, 2, 16, 4);
    moevk_router *router = NULL;
    info.router_projection = 1;
    info.logits_type = MOEVK_DTYPE_F16;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a projection into f16 logits was taken");
    info.logits_type = MOEVK_DTYPE_F32;
    info.hidden_size = 0;
    CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a projection without hidden states was taken");
    info.hidden_size = 4;
    info.router_projection = 0;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float w[4 * 8] = {0}, hidden[16 * 4] = {0}, logits[16 * 8] = {0};
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = 16;
    input.hidden = moevk_host_tensor(hidden);
    input.router_weights = moevk_host_tensor(w);
    moevk_route_output output;
    moevk_route_output_init(&output);
    moevk_result without = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    info.router_projection = 1;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    input.logits = moevk_host_tensor(logits);
    moevk_result both = moevk_route(router, &input, &output);
    input.logits = moevk_host_tensor(NULL);
    input.hidden = moevk_host_tensor(NULL);
    moevk_result no_hidden = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    CHECK(without == MOEVK_ERROR_INVALID_ARGUMENT, "router_weights without router_projection");
    CHECK(both == MOEVK_ERROR_INVALID_ARGUMENT, "both logits and router_weights");
    CHECK(no_hidden == MOEVK_ERROR_INVALID_ARGUMENT, "router_weights without hidden states");
    moevk_device_info device = {0};
    moevk_context_device_info(test_context(), &device);
    if (strcmp(device.driver_name, "llvmpipe") == 0) {
        info.hidden_size = 32769; /* past the loop budget: one invocation loops over d */
        info.max_tokens = 1;
        CHECK(moevk_router_create(test_context(), &info, &router) == MOEVK_ERROR_TOO_LARGE,
              "on lavapipe a projection over d = 32769 was taken");
    }
}

static const test_case FUNCTIONS[] = {
    TEST(weights_are_experts_by_hidden),
    TEST(projection_options_are_checked),
};

int main(int argc, char **argv) {
    return test_main_with_table(CASES, sizeof CASES / sizeof CASES[0], sizeof CASES[0], run_case,
                                FUNCTIONS, sizeof FUNCTIONS / sizeof FUNCTIONS[0], argc, argv);
}
