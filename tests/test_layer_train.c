/* The layer's backward on the device (moevk_layer_backward) against the backward reference
 * (reference/layer_backward.c, double, itself held to central differences by
 * test_layer_backward): for the route the device's forward chose, dL/dx, dL/dweights and every
 * weight's and bias's gradient within f32 rounding of the reference; the same bits on a second
 * backward; gradient accumulation over two micro-batches equal to the sum of each, bit for bit;
 * and what the backward refuses. A case table: every activation, f32, f16 and bf16 weights, bf16
 * hidden states, biases, the capacity layout with drops and the dropless one, E = 1, k = E,
 * T = 0, 1 and odd, decode sizes, and the sizes users run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"
#include "random_weights.h"
#include "route_check.h"

typedef struct train_case {
    const char *name;
    uint32_t E, k, T, d, f;
    moevk_activation activation;
    moevk_dtype weight_type, hidden_type;
    int biases;
    uint32_t shared_f; /* the shared experts' width (0: none) */
    int shared_gate;
    moevk_capacity_mode capacity_mode;
    float capacity_factor; /* FACTOR mode; 0: the default */
    uint32_t max_tokens;   /* 0: T */
    int nonfinite;         /* f32 hidden: a NaN in token 0 and +inf in token 2 (routed nowhere) */
} train_case;

#define SWIGLU MOEVK_ACTIVATION_SWIGLU
#define GELU MOEVK_ACTIVATION_GELU
#define GELU_TANH MOEVK_ACTIVATION_GELU_TANH
#define RELU MOEVK_ACTIVATION_RELU
#define F16 MOEVK_DTYPE_F16
#define BF16 MOEVK_DTYPE_BF16
#define DROPLESS MOEVK_CAPACITY_DROPLESS

static const train_case CASES[] = {
    {"swiglu", .E = 4, .k = 2, .T = 50, .d = 24, .f = 40},
    {"swiglu_biases_drops", .E = 6, .k = 2, .T = 97, .d = 33, .f = 21, .biases = 1,
     .capacity_factor = 0.5f},
    {"gelu_dropless", .E = 5, .k = 2, .T = 70, .d = 40, .f = 24, .activation = GELU,
     .capacity_mode = DROPLESS},
    {"gelu_tanh_f16_biases", .E = 4, .k = 2, .T = 64, .d = 32, .f = 48, .activation = GELU_TANH,
     .weight_type = F16, .biases = 1},
    {"relu_bf16_hidden_bf16", .E = 4, .k = 1, .T = 45, .d = 18, .f = 30, .activation = RELU,
     .weight_type = BF16, .hidden_type = BF16},
    {"one_expert", .E = 1, .k = 1, .T = 33, .d = 16, .f = 16, .biases = 1},
    {"k_equals_e_dropless_biases", .E = 3, .k = 3, .T = 40, .d = 20, .f = 12, .biases = 1,
     .capacity_mode = DROPLESS},
    {"one_token", .E = 8, .k = 2, .T = 1, .d = 64, .f = 32, .biases = 1, .max_tokens = 16},
    {"no_tokens", .E = 4, .k = 2, .T = 0, .d = 16, .f = 16, .biases = 1, .max_tokens = 8},
    {"decode_four_tokens_gelu", .E = 8, .k = 2, .T = 4, .d = 48, .f = 80, .activation = GELU,
     .max_tokens = 64},
    {"shared_experts_gated_biases", .E = 4, .k = 2, .T = 70, .d = 24, .f = 40, .biases = 1,
     .shared_f = 36, .shared_gate = 1},
    {"shared_experts_gelu_bf16_drops", .E = 5, .k = 2, .T = 90, .d = 20, .f = 28,
     .activation = GELU, .weight_type = BF16, .shared_f = 48, .capacity_factor = 0.6f},
    {"shared_gated_one_token", .E = 8, .k = 2, .T = 1, .d = 32, .f = 16, .shared_f = 24,
     .shared_gate = 1, .max_tokens = 8},
    /* Past one tile of rows and columns: 1031 tokens over 16 experts, d and f past 64. */
    {"t_1031_e_16_dropless", .E = 16, .k = 2, .T = 1031, .d = 96, .f = 160, .biases = 1,
     .capacity_mode = DROPLESS},
    {"t_300_shared_gated_relu", .E = 8, .k = 2, .T = 300, .d = 80, .f = 72, .activation = RELU,
     .biases = 1, .shared_f = 136, .shared_gate = 1},
    /* Rows the route leaves out add nothing to dW_g (0 * NaN must not reach it) and get dL/dx 0
     * (no shared experts: theirs would be NaN, as every framework's). */
    {"nan_and_inf_tokens", .E = 4, .k = 2, .T = 40, .d = 24, .f = 40, .biases = 1,
     .nonfinite = 1},
};

/* A layer's host-side weights (what the reference reads) and its device object. */
typedef struct trained {
    moevk_router_info router;
    moevk_layer_info info;
    moevk_layer *layer;
    float *router_weights, *bias[3], *shared_bias[3], *shared_expert_gate;
    void *gate, *up, *down, *shared_gate, *shared_up, *shared_down;
    ref_layer ref;
} trained;

static void free_trained(trained *t) {
    moevk_layer_destroy(t->layer);
    free(t->router_weights), free(t->gate), free(t->up), free(t->down);
    free(t->shared_gate), free(t->shared_up), free(t->shared_down), free(t->shared_expert_gate);
    for (int i = 0; i < 3; ++i) free(t->bias[i]), free(t->shared_bias[i]);
}

static moevk_result make_trained(const train_case *c, trained *t) {
    memset(t, 0, sizeof *t);
    uint64_t E = c->E, d = c->d, f = c->f;
    t->router =
        route_case_info(MOEVK_MODE_TOKEN, c->E, c->k, c->max_tokens ? c->max_tokens : c->T, c->d);
    t->router.hidden_type = c->hidden_type;
    t->router.capacity_mode = c->capacity_mode;
    if (c->capacity_factor > 0.0f) t->router.capacity_factor = c->capacity_factor;
    moevk_layer_info_init(&t->info);
    t->info.router = &t->router;
    t->info.intermediate_size = c->f;
    t->info.activation = c->activation;
    t->info.weight_type = c->weight_type;
    t->info.biases = c->biases;
    t->info.shared_intermediate_size = c->shared_f;
    t->info.shared_gate = c->shared_gate;
    t->info.trainable = 1;
    moevk_result r = moevk_layer_create(test_context(), &t->info, &t->layer);
    if (r != MOEVK_SUCCESS) return r;
    int swiglu = c->activation == SWIGLU;
    t->router_weights = random_weights(E * d, MOEVK_DTYPE_F32, 1.0f / sqrtf((float)d));
    if (swiglu) t->gate = random_weights(E * f * d, c->weight_type, 1.0f / sqrtf((float)d));
    t->up = random_weights(E * f * d, c->weight_type, 1.0f / sqrtf((float)d));
    t->down = random_weights(E * d * f, c->weight_type, 1.0f / sqrtf((float)f));
    if (c->biases) {
        if (swiglu) t->bias[0] = random_weights(E * f, MOEVK_DTYPE_F32, 0.2f);
        t->bias[1] = random_weights(E * f, MOEVK_DTYPE_F32, 0.2f);
        t->bias[2] = random_weights(E * d, MOEVK_DTYPE_F32, 0.2f);
    }
    uint64_t fs = c->shared_f;
    if (fs) {
        if (swiglu) t->shared_gate = random_weights(fs * d, c->weight_type, 1.0f / sqrtf((float)d));
        t->shared_up = random_weights(fs * d, c->weight_type, 1.0f / sqrtf((float)d));
        t->shared_down = random_weights(d * fs, c->weight_type, 1.0f / sqrtf((float)fs));
        if (c->biases) {
            if (swiglu) t->shared_bias[0] = random_weights(fs, MOEVK_DTYPE_F32, 0.2f);
            t->shared_bias[1] = random_weights(fs, MOEVK_DTYPE_F32, 0.2f);
            t->shared_bias[2] = random_weights(d, MOEVK_DTYPE_F32, 0.2f);
        }
        if (c->shared_gate) t->shared_expert_gate = random_weights(d, MOEVK_DTYPE_F32, 0.4f);
    }
    const struct {
        moevk_layer_weight which;
        uint32_t experts;
        const void *data;
    } weights[] = {{MOEVK_WEIGHT_ROUTER, 1, t->router_weights},
                   {MOEVK_WEIGHT_GATE, c->E, t->gate},
                   {MOEVK_WEIGHT_UP, c->E, t->up},
                   {MOEVK_WEIGHT_DOWN, c->E, t->down},
                   {MOEVK_WEIGHT_GATE_BIAS, c->E, t->bias[0]},
                   {MOEVK_WEIGHT_UP_BIAS, c->E, t->bias[1]},
                   {MOEVK_WEIGHT_DOWN_BIAS, c->E, t->bias[2]},
                   {MOEVK_WEIGHT_SHARED_GATE, 1, t->shared_gate},
                   {MOEVK_WEIGHT_SHARED_UP, 1, t->shared_up},
                   {MOEVK_WEIGHT_SHARED_DOWN, 1, t->shared_down},
                   {MOEVK_WEIGHT_SHARED_GATE_BIAS, 1, t->shared_bias[0]},
                   {MOEVK_WEIGHT_SHARED_UP_BIAS, 1, t->shared_bias[1]},
                   {MOEVK_WEIGHT_SHARED_DOWN_BIAS, 1, t->shared_bias[2]},
                   {MOEVK_WEIGHT_SHARED_EXPERT_GATE, 1, t->shared_expert_gate}};
    for (size_t i = 0; i < sizeof weights / sizeof weights[0] && r == MOEVK_SUCCESS; ++i)
        if (weights[i].data)
            r = moevk_layer_set_weights(t->layer, weights[i].which, 0, weights[i].experts,
                                        moevk_host_tensor(weights[i].data));
    t->ref = (ref_layer){.router = &t->router, .router_weights = t->router_weights};
    t->ref.experts = (ref_ffn){.hidden_size = c->d,
                               .intermediate_size = c->f,
                               .activation = c->activation,
                               .weight_type = c->weight_type,
                               .gate = t->gate,
                               .up = t->up,
                               .down = t->down,
                               .gate_bias = t->bias[0],
                               .up_bias = t->bias[1],
                               .down_bias = t->bias[2]};
    t->ref.shared = t->ref.experts;
    t->ref.shared.intermediate_size = c->shared_f;
    t->ref.shared.gate = t->shared_gate;
    t->ref.shared.up = t->shared_up;
    t->ref.shared.down = t->shared_down;
    t->ref.shared.gate_bias = t->shared_bias[0];
    t->ref.shared.up_bias = t->shared_bias[1];
    t->ref.shared.down_bias = t->shared_bias[2];
    t->ref.shared_expert_gate = t->shared_expert_gate;
    return r;
}

/* One forward and backward's host outputs. */
typedef struct pass {
    void *hidden, *output;
    int32_t *ids, *slots;
    float *weights, *dy, *grad_hidden, *grad_weights;
    float *logits;    /* [T, E]: the forward's x W_g^T */
    float *grads[14]; /* GRADIENT_WEIGHTS' (NULL: none) */
} pass;

/* Every parameter's gradient: the routed experts' (ref_ffn_grads' order), the router's, the
 * shared experts' (the same order) and their gate's. */
#define GRADIENTS 14
static const moevk_layer_weight GRADIENT_WEIGHTS[GRADIENTS] = {MOEVK_WEIGHT_GATE,
                                                               MOEVK_WEIGHT_UP,
                                                               MOEVK_WEIGHT_DOWN,
                                                               MOEVK_WEIGHT_GATE_BIAS,
                                                               MOEVK_WEIGHT_UP_BIAS,
                                                               MOEVK_WEIGHT_DOWN_BIAS,
                                                               MOEVK_WEIGHT_ROUTER,
                                                               MOEVK_WEIGHT_SHARED_GATE,
                                                               MOEVK_WEIGHT_SHARED_UP,
                                                               MOEVK_WEIGHT_SHARED_DOWN,
                                                               MOEVK_WEIGHT_SHARED_GATE_BIAS,
                                                               MOEVK_WEIGHT_SHARED_UP_BIAS,
                                                               MOEVK_WEIGHT_SHARED_DOWN_BIAS,
                                                               MOEVK_WEIGHT_SHARED_EXPERT_GATE};

static uint64_t gradient_count(const train_case *c, int i) {
    uint64_t E = c->E, d = c->d, f = c->f, fs = c->shared_f;
    int swiglu = c->activation == SWIGLU, b = c->biases;
    const uint64_t counts[GRADIENTS] = {swiglu ? E * f * d : 0,
                                        E * f * d,
                                        E * d * f,
                                        b && swiglu ? E * f : 0,
                                        b ? E * f : 0,
                                        b ? E * d : 0,
                                        E * d,
                                        swiglu ? fs * d : 0,
                                        fs * d,
                                        d * fs,
                                        b && swiglu ? fs : 0,
                                        b ? fs : 0,
                                        b && fs ? d : 0,
                                        c->shared_gate ? d : 0};
    return counts[i];
}

/* How many experts' worth a gradient read takes. */
static uint32_t gradient_experts(const train_case *c, int i) { return i < 6 ? c->E : 1; }

static void alloc_pass(const train_case *c, pass *p) {
    uint64_t T = c->T, d = c->d, k = c->k;
    uint64_t element = c->hidden_type == MOEVK_DTYPE_F32 ? 4 : 2;
    memset(p, 0, sizeof *p);
    p->hidden = random_weights(T * d + 2, c->hidden_type, 1.0f);
    if (c->nonfinite && T > 2) {
        ((float *)p->hidden)[3] = NAN;
        ((float *)p->hidden)[2 * d + 1] = INFINITY;
    }
    p->output = malloc(T * d * element + 4);
    p->ids = malloc(T * k * 4 + 4);
    p->slots = malloc(T * k * 4 + 4);
    p->weights = malloc(T * k * 4 + 4);
    p->dy = random_weights(T * d + 1, MOEVK_DTYPE_F32, 1.0f);
    p->grad_hidden = malloc(T * d * 4 + 4);
    p->grad_weights = malloc(T * k * 4 + 4);
    p->logits = malloc(T * c->E * 4 + 4);
    for (int i = 0; i < GRADIENTS; ++i)
        if (gradient_count(c, i)) p->grads[i] = malloc(gradient_count(c, i) * 4);
}

static void free_pass(pass *p) {
    free(p->hidden), free(p->output), free(p->ids), free(p->slots), free(p->weights);
    free(p->dy), free(p->grad_hidden), free(p->grad_weights), free(p->logits);
    for (int i = 0; i < GRADIENTS; ++i) free(p->grads[i]);
}

static moevk_result forward(const train_case *c, trained *t, pass *p) {
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = c->T;
    input.hidden = moevk_host_tensor(p->hidden);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.expert_ids = moevk_host_tensor(p->ids);
    route.weights = moevk_host_tensor(p->weights);
    route.slots = moevk_host_tensor(p->slots);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(p->output);
    output.router_logits = moevk_host_tensor(p->logits);
    output.route = &route;
    return moevk_layer_forward(t->layer, &input, &output);
}

/* The backward, with the balancing losses of `losses` (NULL: none) and their values. */
static moevk_result backward_with(const train_case *c, trained *t, pass *p, int accumulate,
                                  const moevk_loss_info *losses, moevk_losses *values) {
    moevk_layer_backward_info info;
    moevk_layer_backward_info_init(&info);
    info.grad_output = moevk_host_tensor(p->dy);
    info.grad_hidden = moevk_host_tensor(p->grad_hidden);
    info.grad_weights = moevk_host_tensor(p->grad_weights);
    info.accumulate = accumulate;
    info.losses = losses;
    info.loss_values = values;
    moevk_result r = moevk_layer_backward(t->layer, &info);
    for (int i = 0; i < GRADIENTS && r == MOEVK_SUCCESS; ++i)
        if (p->grads[i])
            r = moevk_layer_read_gradient(t->layer, GRADIENT_WEIGHTS[i], 0, gradient_experts(c, i),
                                          moevk_host_tensor(p->grads[i]));
    return r;
}

static moevk_result backward(const train_case *c, trained *t, pass *p, int accumulate) {
    return backward_with(c, t, p, accumulate, NULL, NULL);
}

/* The first entry off the reference by more than 1e-4 of the largest reference entry (f32
 * sums of terms of that size, in another order); -1 when none. */
static int64_t first_off(const float *got, const double *want, uint64_t n, double *largest) {
    *largest = 0.0;
    for (uint64_t i = 0; i < n; ++i) *largest = fmax(*largest, fabs(want[i]));
    for (uint64_t i = 0; i < n; ++i)
        if (!(fabs(got[i] - want[i]) <= 1e-4 * *largest + 1e-30)) return (int64_t)i;
    return -1;
}

/* The reference's gradients for the device's route: the experts' part, then dL/dlogits from
 * dL/dweights through the router's reference backward (on the device's own logits, so that its
 * selection is the device's), then the projection's part. */
static void check_against_reference(const train_case *c, trained *t, const pass *p,
                                    const moevk_loss_info *losses) {
    uint64_t T = c->T, d = c->d, k = c->k, E = c->E;
    enum { SLOTS = 2 + GRADIENTS };
    double *dy = malloc(T * d * sizeof(double) + 8);
    double *logits = malloc(T * E * sizeof(double) + 8);
    double *grad_logits = calloc(T * E + 1, sizeof(double));
    for (uint64_t i = 0; i < T * d; ++i) dy[i] = p->dy[i];
    for (uint64_t i = 0; i < T * E; ++i) logits[i] = p->logits[i];
    double *want[SLOTS] = {0};
    uint64_t counts[SLOTS] = {T * d, T * k};
    for (int i = 0; i < GRADIENTS; ++i) counts[2 + i] = gradient_count(c, i);
    for (int i = 0; i < SLOTS; ++i) want[i] = calloc(counts[i] + 1, sizeof(double));
    ref_layer_grads grads = {.hidden = want[0], .choice_weights = want[1]};
    double *g[GRADIENTS] = {0};
    for (int i = 0; i < GRADIENTS; ++i) g[i] = counts[2 + i] ? want[2 + i] : NULL;
    grads.experts = (ref_ffn_grads){g[0], g[1], g[2], g[3], g[4], g[5]};
    grads.shared = (ref_ffn_grads){g[7], g[8], g[9], g[10], g[11], g[12]};
    grads.shared_expert_gate = g[13];
    int ok = ref_layer_backward(&t->ref, c->T, p->hidden, p->ids, p->weights, p->slots, dy, &grads);
    moevk_loss_info none;
    moevk_loss_info_init(&none);
    ok = ok && ref_loss_gradient(&t->router, NULL, losses ? losses : &none, c->T, logits, NULL,
                                 want[1], grad_logits, NULL);
    if (ok)
        ref_router_projection_backward(&t->router, c->T, p->hidden, t->router_weights, grad_logits,
                                       want[2 + 6], want[0]);
    const char *names[SLOTS] = {
        "dL/dx",          "dL/dweights",    "dW_gate",        "dW_up",
        "dW_down",        "db_gate",        "db_up",          "db_down",
        "dW_g",           "dW_shared_gate", "dW_shared_up",   "dW_shared_down",
        "db_shared_gate", "db_shared_up",   "db_shared_down", "dw_shared_expert_gate"};
    const float *got[SLOTS] = {p->grad_hidden, p->grad_weights};
    for (int i = 0; i < GRADIENTS; ++i) got[2 + i] = p->grads[i];
    for (int i = 0; ok && i < SLOTS; ++i) {
        if (!counts[i]) continue;
        double largest;
        int64_t at = first_off(got[i], want[i], counts[i], &largest);
        if (at >= 0) {
            test_fail(__FILE__, __LINE__, "%s[%lld] = %.9g, the reference's %.9g (largest %.3g)",
                      names[i], (long long)at, got[i][at], want[i][at], largest);
            break;
        }
    }
    if (!ok) test_fail(__FILE__, __LINE__, "the reference ran out of memory");
    free(dy), free(logits), free(grad_logits);
    for (int i = 0; i < SLOTS; ++i) free(want[i]);
}

static int same_gradients(const train_case *c, const pass *a, const pass *b) {
    uint64_t T = c->T, d = c->d, k = c->k;
    int same = !memcmp(a->grad_hidden, b->grad_hidden, T * d * 4) &&
               !memcmp(a->grad_weights, b->grad_weights, T * k * 4);
    for (int i = 0; i < GRADIENTS; ++i)
        if (a->grads[i]) same &= !memcmp(a->grads[i], b->grads[i], gradient_count(c, i) * 4);
    return same;
}

static void run_case(const void *row) {
    const train_case *c = row;
    trained t;
    pass p, again;
    alloc_pass(c, &p);
    alloc_pass(c, &again);
    moevk_result r = make_trained(c, &t);
    if (r == MOEVK_SUCCESS) r = forward(c, &t, &p);
    if (r == MOEVK_SUCCESS) r = backward(c, &t, &p, 0);
    if (r != MOEVK_SUCCESS) {
        test_fail(__FILE__, __LINE__, "%s (%s)", moevk_result_string(r),
                  moevk_context_last_error(test_context()));
    } else {
        check_against_reference(c, &t, &p, NULL);
        /* The same input, the same bits. */
        memcpy(again.dy, p.dy, (uint64_t)c->T * c->d * 4);
        r = backward(c, &t, &again, 0);
        if (r != MOEVK_SUCCESS || !same_gradients(c, &p, &again))
            test_fail(__FILE__, __LINE__, "a second backward gave other bits (%s)",
                      moevk_result_string(r));
    }
    free_trained(&t);
    free_pass(&p);
    free_pass(&again);
}

/* Two micro-batches accumulated: each entry is the first's gradient plus the second's, added
 * in f32 in that order, bit for bit; a backward that does not accumulate starts afresh. */
static void test_accumulation_over_micro_batches(void) {
    const train_case c = {"accumulate", .E = 4, .k = 2, .T = 61, .d = 24, .f = 40, .biases = 1};
    trained t;
    pass a, b, both;
    alloc_pass(&c, &a);
    alloc_pass(&c, &b);
    alloc_pass(&c, &both);
    CHECK_OK(make_trained(&c, &t));
    CHECK_OK(forward(&c, &t, &a));
    CHECK_OK(backward(&c, &t, &a, 0));
    CHECK_OK(forward(&c, &t, &b));
    CHECK_OK(backward(&c, &t, &b, 0));
    /* a's forward and backward again, then b's accumulated. */
    memcpy(both.hidden, a.hidden, (uint64_t)c.T * c.d * 4);
    memcpy(both.dy, a.dy, (uint64_t)c.T * c.d * 4);
    CHECK_OK(forward(&c, &t, &both));
    CHECK_OK(backward(&c, &t, &both, 0));
    memcpy(both.hidden, b.hidden, (uint64_t)c.T * c.d * 4);
    memcpy(both.dy, b.dy, (uint64_t)c.T * c.d * 4);
    CHECK_OK(forward(&c, &t, &both));
    CHECK_OK(backward(&c, &t, &both, 1));
    for (int i = 0; i < GRADIENTS; ++i) {
        for (uint64_t j = 0; both.grads[i] && j < gradient_count(&c, i); ++j) {
            float sum = a.grads[i][j] + b.grads[i][j];
            CHECK(memcmp(&sum, &both.grads[i][j], 4) == 0, "gradient %d[%llu]: %.9g, not %.9g", i,
                  (unsigned long long)j, both.grads[i][j], sum);
        }
    }
    /* Zeroed: every gradient 0. */
    CHECK_OK(moevk_layer_zero_gradients(t.layer));
    CHECK_OK(moevk_layer_read_gradient(t.layer, MOEVK_WEIGHT_UP, 0, c.E,
                                       moevk_host_tensor(both.grads[1])));
    for (uint64_t j = 0; j < gradient_count(&c, 1); ++j)
        CHECK(both.grads[1][j] == 0.0f, "dW_up[%llu] = %g after zeroing", (unsigned long long)j,
              both.grads[1][j]);
    free_trained(&t);
    free_pass(&a), free_pass(&b), free_pass(&both);
}

/* The balancing losses join dL/dlogits, so dL/dW_g and dL/dx: against the router's reference
 * backward of the same losses, and their values against its forward. */
static void test_balancing_losses_join_the_gradient(void) {
    const train_case c = {"losses",    .E = 6,         .k = 2,
                          .T = 80,     .d = 24,        .f = 32,
                          .biases = 1, .shared_f = 16, .capacity_factor = 0.75f};
    trained t;
    pass p;
    alloc_pass(&c, &p);
    CHECK_OK(make_trained(&c, &t));
    CHECK_OK(forward(&c, &t, &p));
    moevk_loss_info losses;
    moevk_loss_info_init(&losses);
    losses.aux_coef = 0.02f;
    losses.z_coef = 0.001f;
    losses.importance_coef = 0.05f;
    losses.entropy_coef = -0.01f;
    moevk_losses values;
    moevk_losses_init(&values);
    CHECK_OK(backward_with(&c, &t, &p, 0, &losses, &values));
    check_against_reference(&c, &t, &p, &losses);
    double *logits = malloc((uint64_t)c.T * c.E * sizeof(double));
    for (uint64_t i = 0; i < (uint64_t)c.T * c.E; ++i) logits[i] = p.logits[i];
    moevk_losses want;
    moevk_losses_init(&want);
    ref_loss_forward(&t.router, NULL, &losses, c.T, logits, NULL, NULL, &want, NULL);
    free(logits);
    const double got_values[4] = {values.aux, values.z, values.importance, values.entropy};
    const double want_values[4] = {want.aux, want.z, want.importance, want.entropy};
    for (int i = 0; i < 4; ++i)
        CHECK(fabs(got_values[i] - want_values[i]) <= 1e-4 * fabs(want_values[i]) + 1e-7,
              "loss %d: %.9g, the reference's %.9g", i, got_values[i], want_values[i]);
    /* Tensors of their own are refused: the layer gives dL/dweights. */
    losses.grad_weights = moevk_host_tensor(p.grad_weights);
    moevk_result r = backward_with(&c, &t, &p, 0, &losses, NULL);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT, "losses with their own grad_weights: %s",
          moevk_result_string(r));
    free_trained(&t);
    free_pass(&p);
}

/* A weight as f32 (the reference's master at the first step). */
static float *widened(const void *data, uint64_t n, moevk_dtype type) {
    float *out = malloc(n * 4 + 4);
    for (uint64_t i = 0; i < n; ++i) out[i] = ref_load(data, i, type);
    return out;
}

/* Two optimizer steps against the reference (PyTorch's formulas in f32): each stored weight
 * within one unit of the storage type of the reference's master (a rounding either side), and
 * the norm before clipping. */
/* One parameter of the optimizer's check: its weight, host values, type, size, gradient. */
typedef struct checked_param {
    moevk_layer_weight which;
    const void *data;
    moevk_dtype type;
    uint64_t n;
    const float *grad;
} checked_param;

static void run_optimizer(moevk_optimizer_kind kind, moevk_dtype weight_type, float max_norm,
                          int shared) {
    const train_case c = {"optimizer",
                          .E = 4,
                          .k = 2,
                          .T = 50,
                          .d = 24,
                          .f = 40,
                          .biases = 1,
                          .weight_type = weight_type,
                          .shared_f = shared ? 36 : 0,
                          .shared_gate = shared};
    trained t;
    pass p;
    alloc_pass(&c, &p);
    CHECK_OK(make_trained(&c, &t));
    CHECK_OK(forward(&c, &t, &p));
    CHECK_OK(backward(&c, &t, &p, 0));
    moevk_optimizer_info info;
    moevk_optimizer_info_init(&info);
    info.kind = kind;
    info.learning_rate = 0.01f;
    info.beta1 = 0.9f;
    info.beta2 = 0.999f;
    info.epsilon = 1e-8f;
    info.weight_decay = 0.05f;
    info.max_grad_norm = max_norm;
    /* The reference: every parameter the layer has, each with its gradient. */
    uint64_t E = c.E, d = c.d, f = c.f, fs = c.shared_f;
    const checked_param all[] = {
        {MOEVK_WEIGHT_ROUTER, t.router_weights, MOEVK_DTYPE_F32, E * d, p.grads[6]},
        {MOEVK_WEIGHT_GATE, t.gate, weight_type, E * f * d, p.grads[0]},
        {MOEVK_WEIGHT_UP, t.up, weight_type, E * f * d, p.grads[1]},
        {MOEVK_WEIGHT_DOWN, t.down, weight_type, E * d * f, p.grads[2]},
        {MOEVK_WEIGHT_GATE_BIAS, t.bias[0], MOEVK_DTYPE_F32, E * f, p.grads[3]},
        {MOEVK_WEIGHT_UP_BIAS, t.bias[1], MOEVK_DTYPE_F32, E * f, p.grads[4]},
        {MOEVK_WEIGHT_DOWN_BIAS, t.bias[2], MOEVK_DTYPE_F32, E * d, p.grads[5]},
        {MOEVK_WEIGHT_SHARED_GATE, t.shared_gate, weight_type, fs * d, p.grads[7]},
        {MOEVK_WEIGHT_SHARED_UP, t.shared_up, weight_type, fs * d, p.grads[8]},
        {MOEVK_WEIGHT_SHARED_DOWN, t.shared_down, weight_type, d * fs, p.grads[9]},
        {MOEVK_WEIGHT_SHARED_GATE_BIAS, t.shared_bias[0], MOEVK_DTYPE_F32, fs, p.grads[10]},
        {MOEVK_WEIGHT_SHARED_UP_BIAS, t.shared_bias[1], MOEVK_DTYPE_F32, fs, p.grads[11]},
        {MOEVK_WEIGHT_SHARED_DOWN_BIAS, t.shared_bias[2], MOEVK_DTYPE_F32, d, p.grads[12]},
        {MOEVK_WEIGHT_SHARED_EXPERT_GATE, t.shared_expert_gate, MOEVK_DTYPE_F32, d, p.grads[13]}};
    enum { ALL = sizeof all / sizeof all[0] };
    checked_param params[ALL];
    int count = 0;
    for (int i = 0; i < ALL; ++i)
        if (all[i].data) params[count++] = all[i];
    double squares = 0.0;
    for (int i = 0; i < count; ++i)
        for (uint64_t j = 0; j < params[i].n; ++j)
            squares += (double)params[i].grad[j] * params[i].grad[j];
    float scale = ref_clip_scale(max_norm, sqrt(squares));
    float *master[ALL], *m[ALL], *v[ALL];
    for (int i = 0; i < count; ++i) {
        master[i] = widened(params[i].data, params[i].n, params[i].type);
        m[i] = calloc(params[i].n + 1, 4);
        v[i] = calloc(params[i].n + 1, 4);
    }
    void *stored = malloc(E * f * d * 4);
    for (uint32_t step = 1; step <= 2; ++step) {
        info.step = step;
        double norm = -1.0;
        CHECK_OK(moevk_layer_optimizer_step(t.layer, &info, &norm));
        CHECK(fabs(norm - sqrt(squares)) <= 1e-5 * sqrt(squares), "norm %.9g, the reference's %.9g",
              norm, sqrt(squares));
        for (int i = 0; i < count; ++i) {
            ref_optimizer_step(&info, scale, params[i].n, master[i], m[i], v[i], params[i].grad);
            moevk_layer_weight which = params[i].which;
            uint32_t experts =
                which >= MOEVK_WEIGHT_GATE && which <= MOEVK_WEIGHT_DOWN_BIAS ? c.E : 1;
            CHECK_OK(
                moevk_layer_read_weights(t.layer, which, 0, experts, moevk_host_tensor(stored)));
            for (uint64_t j = 0; j < params[i].n; ++j) {
                float got = ref_load(stored, j, params[i].type), want = master[i][j];
                /* One unit of the storage type's last place (f32's, or the 16-bit type's). */
                float unit = params[i].type == MOEVK_DTYPE_F32   ? 2.4e-7f
                             : params[i].type == MOEVK_DTYPE_F16 ? 9.8e-4f
                                                                 : 7.9e-3f;
                /* And f16's subnormal step below 2^-14; and a few f32 units of the step's
                 * size, which a device's division and square root (2.5 and 3 units in Vulkan)
                 * may move, whatever the weight's type. */
                float floor = params[i].type == MOEVK_DTYPE_F16 ? 6.0e-8f : 1e-30f;
                floor += 1e-6f * info.learning_rate;
                CHECK(fabsf(got - want) <= unit * fabsf(want) + floor,
                      "step %u, weight %d[%llu]: %.9g, the reference's %.9g", step, (int)which,
                      (unsigned long long)j, got, want);
            }
        }
    }
    for (int i = 0; i < count; ++i) free(master[i]), free(m[i]), free(v[i]);
    free(stored);
    free_trained(&t);
    free_pass(&p);
}

static void test_sgd_step(void) { run_optimizer(MOEVK_OPTIMIZER_SGD, MOEVK_DTYPE_F32, 0.0f, 0); }
static void test_adamw_steps_shared_experts(void) {
    run_optimizer(MOEVK_OPTIMIZER_ADAMW, MOEVK_DTYPE_F32, 0.0f, 1);
}
static void test_adamw_bf16_master_and_clipping(void) {
    run_optimizer(MOEVK_OPTIMIZER_ADAMW, BF16, 0.5f, 1);
}
static void test_sgd_f16_clipping(void) { run_optimizer(MOEVK_OPTIMIZER_SGD, F16, 0.25f, 0); }

/* The optimizer's options, checked by name. */
static void test_optimizer_refusals(void) {
    const train_case c = {"refusals", .E = 4, .k = 2, .T = 8, .d = 16, .f = 16};
    trained t;
    CHECK_OK(make_trained(&c, &t));
    moevk_optimizer_info info;
    moevk_optimizer_info_init(&info);
    info.kind = MOEVK_OPTIMIZER_ADAMW;
    info.learning_rate = 0.001f;
    info.beta1 = 0.9f;
    info.beta2 = 0.999f;
    info.epsilon = 1e-8f;
    const struct {
        const char *word;
        float *field;
        float bad;
    } bad[] = {{"learning_rate", &info.learning_rate, 0.0f},
               {"beta1", &info.beta1, 1.0f},
               {"epsilon", &info.epsilon, 0.0f},
               {"weight_decay", &info.weight_decay, -1.0f},
               {"max_grad_norm", &info.max_grad_norm, NAN}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        float kept = *bad[i].field;
        *bad[i].field = bad[i].bad;
        info.step = 1;
        moevk_result r = moevk_layer_optimizer_step(t.layer, &info, NULL);
        *bad[i].field = kept;
        CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT &&
                  strstr(moevk_context_last_error(test_context()), bad[i].word),
              "%s %g: %s", bad[i].word, bad[i].bad, moevk_result_string(r));
    }
    info.step = 0;
    CHECK(moevk_layer_optimizer_step(t.layer, &info, NULL) == MOEVK_ERROR_INVALID_ARGUMENT,
          "AdamW at step 0");
    free_trained(&t);
}

/* What the backward refuses, by name. */
static void test_backward_refusals(void) {
    const train_case c = {"refusals", .E = 4, .k = 2, .T = 8, .d = 16, .f = 16};
    trained t;
    pass p;
    alloc_pass(&c, &p);
    CHECK_OK(make_trained(&c, &t));
    moevk_layer_backward_info info;
    moevk_layer_backward_info_init(&info);
    info.grad_output = moevk_host_tensor(p.dy);
    moevk_result r = moevk_layer_backward(t.layer, &info);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT &&
              strstr(moevk_context_last_error(test_context()), "forward"),
          "a backward before any forward: %s", moevk_result_string(r));
    CHECK_OK(forward(&c, &t, &p));
    info.grad_output = (moevk_tensor){0}; /* NONE */
    r = moevk_layer_backward(t.layer, &info);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT &&
              strstr(moevk_context_last_error(test_context()), "grad_output"),
          "no grad_output: %s", moevk_result_string(r));
    r = moevk_layer_read_gradient(t.layer, MOEVK_WEIGHT_UP_BIAS, 0, c.E, moevk_host_tensor(p.dy));
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT, "a bias the layer has not: %s",
          moevk_result_string(r));
    free_trained(&t);
    /* A layer made without `trainable`, block formats and expert choice. */
    moevk_router_info router = route_case_info(MOEVK_MODE_TOKEN, 4, 2, 8, 32);
    moevk_layer_info info_plain;
    moevk_layer_info_init(&info_plain);
    info_plain.router = &router;
    info_plain.intermediate_size = 32;
    moevk_layer *plain = NULL;
    CHECK_OK(moevk_layer_create(test_context(), &info_plain, &plain));
    r = moevk_layer_zero_gradients(plain);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT &&
              strstr(moevk_context_last_error(test_context()), "trainable"),
          "a layer without trainable: %s", moevk_result_string(r));
    moevk_layer_destroy(plain);
    info_plain.trainable = 1;
    info_plain.weight_type = MOEVK_DTYPE_Q8_0;
    r = moevk_layer_create(test_context(), &info_plain, &plain);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT && !plain, "trainable Q8_0: %s",
          moevk_result_string(r));
    info_plain.weight_type = MOEVK_DTYPE_F32;
    router = route_case_info(MOEVK_MODE_EXPERT_CHOICE, 4, 2, 8, 32);
    r = moevk_layer_create(test_context(), &info_plain, &plain);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT && !plain, "trainable expert choice: %s",
          moevk_result_string(r));
    free_pass(&p);
}

int main(int argc, char **argv) {
    static const test_case functions[] = {TEST(accumulation_over_micro_batches),
                                          TEST(balancing_losses_join_the_gradient),
                                          TEST(backward_refusals),
                                          TEST(sgd_step),
                                          TEST(adamw_steps_shared_experts),
                                          TEST(adamw_bf16_master_and_clipping),
                                          TEST(sgd_f16_clipping),
                                          TEST(optimizer_refusals)};
    return test_main_with_table(CASES, sizeof CASES / sizeof CASES[0], sizeof CASES[0], run_case,
                                functions, sizeof functions / sizeof functions[0], argc, argv);
}
