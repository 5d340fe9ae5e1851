/* The layer's backward reference (reference/layer_backward.c) against central differences of
 * the layer's forward reference, in double: L = sum(output * DY) for a fixed route, with respect
 * to the hidden states, every parameter and the combine weights; and the whole chain through
 * the router (dL/dw -> the router's backward -> the projection) against differences of L with
 * the weights routed again from x W_g^T. A case table: every activation, biases, shared experts
 * with and without their gate, dropped choices, E = 1, k = E, T = 0 and 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"

typedef struct backward_case {
    const char *name;
    moevk_activation activation;
    uint32_t T, E, k, d, f, shared_f;
    int biases, shared_gate;
    int drop_every; /* every drop_every-th choice is dropped (slot -1); 0: none */
    moevk_score_func score;
} backward_case;

#define SWIGLU MOEVK_ACTIVATION_SWIGLU
#define GELU MOEVK_ACTIVATION_GELU
#define GELU_TANH MOEVK_ACTIVATION_GELU_TANH
#define RELU MOEVK_ACTIVATION_RELU
#define SIGMOID MOEVK_SCORE_SIGMOID
static const backward_case CASES[] = {
    {"swiglu", SWIGLU, 5, 4, 2, 6, 5, 0, 0, 0, 0, 0},
    {"swiglu_biases_shared_gated", SWIGLU, 4, 3, 2, 5, 4, 3, 1, 1, 0, 0},
    {"gelu_biases_shared", GELU, 4, 4, 2, 6, 5, 4, 1, 0, 0, 0},
    {"gelu_tanh_shared_gated_drops", GELU_TANH, 6, 4, 2, 5, 6, 3, 0, 1, 3, 0},
    {"relu_drops", RELU, 6, 4, 2, 6, 7, 0, 1, 0, 2, 0},
    {"one_expert", SWIGLU, 3, 1, 1, 4, 3, 0, 1, 0, 0, 0},
    {"k_equals_e_sigmoid", SWIGLU, 4, 3, 3, 5, 4, 0, 0, 0, 0, SIGMOID},
    {"one_token", GELU, 1, 4, 2, 6, 5, 3, 1, 1, 0, 0},
    {"no_tokens", SWIGLU, 0, 4, 2, 6, 5, 3, 1, 1, 0, 0},
};

/* One float array the loss depends on, with its analytic gradient. */
typedef struct parameter {
    const char *name;
    float *values;
    double *grad;
    uint64_t count;
} parameter;

typedef struct layer_data {
    moevk_router_info info;
    ref_layer layer;
    uint32_t T, choices;
    float *hidden, *router_weights, *weights;
    int32_t *ids, *slots;
    double *dy;
    parameter params[16];
    int param_count;
    ref_layer_grads grads;
    void *blocks[64];
    int block_count;
} layer_data;

static void *block(layer_data *data, size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    data->blocks[data->block_count++] = p;
    return p;
}

/* A float array of random values (times scale) and its gradient, registered as a parameter
 * (hidden states and combine weights too). */
static float *random_parameter(layer_data *data, const char *name, uint64_t count, float scale,
                               double **grad) {
    float *values = block(data, count * sizeof(float));
    for (uint64_t i = 0; i < count; ++i) values[i] = scale * rng_normal();
    *grad = block(data, count * sizeof(double));
    data->params[data->param_count++] = (parameter){name, values, *grad, count};
    return values;
}

static void make_ffn(layer_data *data, ref_ffn *ffn, ref_ffn_grads *g, const backward_case *c,
                     uint32_t experts, uint32_t f, const char *prefix) {
    uint32_t d = c->d;
    char *names = block(data, 6 * 32);
    const char *parts[6] = {"gate", "up", "down", "gate_bias", "up_bias", "down_bias"};
    for (int i = 0; i < 6; ++i) snprintf(names + 32 * i, 32, "%s%s", prefix, parts[i]);
    *ffn = (ref_ffn){.hidden_size = d,
                     .intermediate_size = f,
                     .activation = c->activation,
                     .weight_type = MOEVK_DTYPE_F32};
    float scale = 1.0f / sqrtf((float)d);
    uint64_t matrix = (uint64_t)experts * f * d;
    if (c->activation == SWIGLU) ffn->gate = random_parameter(data, names, matrix, scale, &g->gate);
    ffn->up = random_parameter(data, names + 32, matrix, scale, &g->up);
    ffn->down = random_parameter(data, names + 64, matrix, 1.0f / sqrtf((float)f), &g->down);
    if (!c->biases) return;
    if (c->activation == SWIGLU)
        ffn->gate_bias =
            random_parameter(data, names + 96, (uint64_t)experts * f, 0.3f, &g->gate_bias);
    ffn->up_bias = random_parameter(data, names + 128, (uint64_t)experts * f, 0.3f, &g->up_bias);
    ffn->down_bias =
        random_parameter(data, names + 160, (uint64_t)experts * d, 0.3f, &g->down_bias);
}

/* Logits in double, x W_g^T, for the routing the chain test redoes. */
static void logits_of(const layer_data *data, double *logits) {
    uint32_t d = data->info.hidden_size, E = data->info.num_experts;
    for (uint32_t t = 0; t < data->T; ++t)
        for (uint32_t e = 0; e < E; ++e) {
            double sum = 0.0;
            for (uint32_t k = 0; k < d; ++k)
                sum += (double)data->hidden[(uint64_t)t * d + k] *
                       data->router_weights[(uint64_t)e * d + k];
            logits[(uint64_t)t * E + e] = sum;
        }
}

static void make_layer(layer_data *data, const backward_case *c) {
    memset(data, 0, sizeof *data);
    moevk_router_info_init(&data->info);
    moevk_router_info *info = &data->info;
    info->num_experts = c->E;
    info->top_k = c->k;
    info->hidden_size = c->d;
    info->max_tokens = c->T ? c->T : 1;
    info->score = c->score;
    data->T = c->T;
    data->choices = c->k;
    uint32_t T = c->T, d = c->d, E = c->E;
    data->hidden = random_parameter(data, "hidden", (uint64_t)T * d, 1.0f, &data->grads.hidden);
    /* The router's weights are a parameter of the chain test only (their gradient comes from the
     * projection's backward). */
    data->router_weights = block(data, (uint64_t)E * d * sizeof(float));
    for (uint64_t i = 0; i < (uint64_t)E * d; ++i) data->router_weights[i] = rng_normal();
    make_ffn(data, &data->layer.experts, &data->grads.experts, c, E, c->f, "");
    if (c->shared_f)
        make_ffn(data, &data->layer.shared, &data->grads.shared, c, 1, c->shared_f, "shared_");
    if (c->shared_gate)
        data->layer.shared_expert_gate =
            random_parameter(data, "shared_expert_gate", d, 0.5f, &data->grads.shared_expert_gate);
    data->layer.router = info;
    data->layer.router_weights = data->router_weights;
    /* The route: the reference's own top-k of the logits; random combine weights (a parameter). */
    data->ids = block(data, (uint64_t)T * c->k * sizeof(int32_t));
    data->slots = block(data, (uint64_t)T * c->k * sizeof(int32_t));
    double *logits = block(data, (uint64_t)T * E * sizeof(double) + 8);
    logits_of(data, logits);
    moevk_loss_info none;
    moevk_loss_info_init(&none);
    ref_loss_forward(info, NULL, &none, T, logits, NULL, NULL, NULL, data->ids);
    for (uint64_t c_ = 0; c_ < (uint64_t)T * c->k; ++c_)
        data->slots[c_] = c->drop_every && c_ % (uint64_t)c->drop_every == 1 ? -1 : (int32_t)c_;
    data->weights = random_parameter(data, "combine_weights", (uint64_t)T * c->k, 0.5f,
                                     &data->grads.choice_weights);
    data->dy = block(data, (uint64_t)T * d * sizeof(double) + 8);
    for (uint64_t i = 0; i < (uint64_t)T * d; ++i) data->dy[i] = rng_normal();
}

static void free_layer(layer_data *data) {
    for (int i = 0; i < data->block_count; ++i) free(data->blocks[i]);
}

/* L = sum(output * DY) for the fixed route. */
static double fixed_route_loss(const layer_data *data) {
    uint64_t n = (uint64_t)data->T * data->info.hidden_size;
    double *out = malloc(2 * n * sizeof(double) + 8), sum = 0.0;
    ref_layer_output(&data->layer, data->T, data->hidden, data->ids, data->weights, data->slots,
                     out, out + n);
    for (uint64_t i = 0; i < n; ++i) sum += out[i] * data->dy[i];
    free(out);
    return sum;
}

/* The central difference of loss in values[i]; 0 where the two one-sided differences disagree
 * (a kink, as ReLU's at 0, lies between): *kink says so. */
static double central_difference(double (*loss)(const layer_data *), const layer_data *data,
                                 float *values, uint64_t i, int *kink) {
    float v = values[i], h = 1e-3f * fmaxf(fabsf(v), 0.1f);
    float above = v + h, below = v - h;
    double middle = loss(data);
    values[i] = above;
    double up = loss(data);
    values[i] = below;
    double down = loss(data);
    values[i] = v;
    double right = (up - middle) / ((double)above - v),
           left = (middle - down) / ((double)v - below);
    /* NaN: the loss has no derivative there (routed_loss: the step changed the top k). */
    *kink = !(fabs(right - left) <= 1e-2 * (fabs(right) + fabs(left) + 1e-3));
    return (up - down) / ((double)above - below);
}

/* Up to 12 random entries of each parameter against central differences: within 2e-5 of the
 * largest gradient entry of that parameter (the differences' own error is about h^2). */
static void check_parameters(layer_data *data, double (*loss)(const layer_data *),
                             int only_hidden) {
    for (int p = 0; p < data->param_count; ++p) {
        parameter *param = &data->params[p];
        if (only_hidden && strcmp(param->name, "hidden") != 0) continue;
        double largest = 0.0;
        for (uint64_t i = 0; i < param->count; ++i) largest = fmax(largest, fabs(param->grad[i]));
        for (int trial = 0; trial < 12 && param->count; ++trial) {
            uint64_t i = rng_u32() % param->count;
            int kink;
            double fd = central_difference(loss, data, param->values, i, &kink);
            if (kink) continue;
            double err = fabs(fd - param->grad[i]);
            CHECK(err <= 2e-5 * (largest + 1e-3) + 1e-6 * fabs(fd),
                  "%s[%llu]: analytic %.9g, central difference %.9g (largest %.3g)", param->name,
                  (unsigned long long)i, param->grad[i], fd, largest);
        }
    }
}

static void run_case(const void *row) {
    const backward_case *c = row;
    layer_data data;
    make_layer(&data, c);
    CHECK(ref_layer_backward(&data.layer, data.T, data.hidden, data.ids, data.weights, data.slots,
                             data.dy, &data.grads),
          "out of memory");
    /* A dropped choice: no gradient through its expert, and dL/dw 0. */
    for (uint64_t ch = 0; ch < (uint64_t)data.T * c->k; ++ch)
        CHECK(data.slots[ch] >= 0 || data.grads.choice_weights[ch] == 0.0,
              "dropped choice %llu has dL/dw %g", (unsigned long long)ch,
              data.grads.choice_weights[ch]);
    check_parameters(&data, fixed_route_loss, 0);
    free_layer(&data);
}

/* L with the combine weights routed again from x W_g^T, so that x moves L through the router
 * too: sum_tj w_tj(x) <DY_t, y_tj(x)> in double through the router's reference, plus the shared
 * experts' part; NaN where the step changed the top k (the selection must stay the route's: a
 * new one is a jump, not a derivative, however small). */
static double routed_loss(const layer_data *data) {
    uint32_t T = data->T, E = data->info.num_experts, k = data->choices;
    double *logits = malloc((uint64_t)T * E * sizeof(double) + 8);
    double *dots = calloc((uint64_t)T * k + 1, sizeof(double));
    float *no_weights = calloc((uint64_t)T * k + 1, sizeof(float));
    int32_t *ids = malloc((uint64_t)T * k * sizeof(int32_t) + 4);
    logits_of(data, logits);
    ref_layer_grads only_dots = {.choice_weights = dots};
    ref_layer_backward(&data->layer, T, data->hidden, data->ids, no_weights, data->slots, data->dy,
                       &only_dots);
    moevk_loss_info none;
    moevk_loss_info_init(&none);
    double loss = ref_loss_forward(&data->info, NULL, &none, T, logits, NULL, dots, NULL, ids);
    if (memcmp(ids, data->ids, (uint64_t)T * k * sizeof(int32_t)) != 0) loss = NAN;
    layer_data shared_only = *data;
    shared_only.weights = no_weights;
    loss += fixed_route_loss(&shared_only);
    free(logits), free(dots), free(no_weights), free(ids);
    return loss;
}

/* dL/dx = the experts' part for the routed weights + the projection's part of dL/dlogits from
 * the router's backward of dL/dw; and dL/dW_g. */
static void test_chain_through_the_router(void) {
    const backward_case c = {"chain", SWIGLU, 5, 4, 2, 6, 5, 3, 1, 1, 0, 0};
    layer_data data;
    make_layer(&data, &c);
    uint32_t T = c.T, E = c.E, d = c.d;
    /* The route's own weights at x (each as the routing's sum of a one-hot dL/dw times w). */
    double *logits = block(&data, (uint64_t)T * E * sizeof(double));
    double *one_hot = block(&data, (uint64_t)T * c.k * sizeof(double));
    logits_of(&data, logits);
    moevk_loss_info none;
    moevk_loss_info_init(&none);
    for (uint64_t ch = 0; ch < (uint64_t)T * c.k; ++ch) {
        one_hot[ch] = 1.0;
        data.weights[ch] =
            (float)ref_loss_forward(&data.info, NULL, &none, T, logits, NULL, one_hot, NULL, NULL);
        one_hot[ch] = 0.0;
    }
    CHECK(ref_layer_backward(&data.layer, T, data.hidden, data.ids, data.weights, data.slots,
                             data.dy, &data.grads),
          "out of memory");
    double *grad_logits = block(&data, (uint64_t)T * E * sizeof(double));
    CHECK(ref_loss_gradient(&data.info, NULL, &none, T, logits, NULL, data.grads.choice_weights,
                            grad_logits, NULL),
          "out of memory");
    double *grad_router = block(&data, (uint64_t)E * d * sizeof(double));
    ref_router_projection_backward(&data.info, T, data.hidden, data.router_weights, grad_logits,
                                   grad_router, data.grads.hidden);
    check_parameters(&data, routed_loss, 1);
    /* dL/dW_g against differences in each router weight. */
    double largest = 0.0;
    for (uint64_t i = 0; i < (uint64_t)E * d; ++i) largest = fmax(largest, fabs(grad_router[i]));
    for (int trial = 0; trial < 12; ++trial) {
        uint64_t i = rng_u32() % ((uint64_t)E * d);
        int kink;
        double fd = central_difference(routed_loss, &data, data.router_weights, i, &kink);
        /* A step that changes the top k (the loss routes again) is no derivative. */
        if (kink) continue;
        CHECK(fabs(fd - grad_router[i]) <= 2e-5 * (largest + 1e-3) + 1e-6 * fabs(fd),
              "W_g[%llu]: analytic %.9g, central difference %.9g", (unsigned long long)i,
              grad_router[i], fd);
    }
    free_layer(&data);
}

int main(int argc, char **argv) {
    static const test_case functions[] = {TEST(chain_through_the_router)};
    return test_main_with_table(CASES, sizeof CASES / sizeof CASES[0], sizeof CASES[0], run_case,
                                functions, sizeof functions / sizeof functions[0], argc, argv);
}
