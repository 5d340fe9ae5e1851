/* The layer (moevk_layer: router projection, route, experts, shared experts, combine) against
 * the CPU reference (reference/layer.c, double). Each row makes a layer with fresh random
 * weights and hidden states, runs it, and holds the router logits to the reference projection
 * bit for bit and every output within f32 rounding of the reference for the route the device
 * chose (the route itself is held to the reference by test_projection and test_routing), then
 * runs it again for the same bits. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"
#include "random_weights.h"
#include "route_check.h"

typedef struct layer_case {
    const char *name;
    uint32_t E, k, T, d, f;
    uint32_t shared_f; /* the shared experts' intermediate size (0: none) */
    moevk_activation activation;
    moevk_dtype weight_type, hidden_type;
    int biases, shared_gate;
    moevk_routing_mode mode;
    moevk_capacity_mode capacity_mode;
    int32_t capacity;      /* FIXED mode */
    uint32_t pad_multiple; /* DROPLESS mode */
    int renormalize;
    int weights_in_buffer; /* the weights from a moevk_buffer */
    int nan_token;         /* one token's hidden state holds a NaN */
    float hidden_scale;    /* 0: 1; huge values with a large one */
    int separate_down;     /* down projections in down_type (Q4_K_M: Q6_K beside Q4_K) */
    int host_weights;      /* the FFN weights in host memory (expert offload) */
    moevk_dtype down_type;
    uint32_t max_tokens; /* 0: T */
} layer_case;

#define SWIGLU MOEVK_ACTIVATION_SWIGLU
#define GELU MOEVK_ACTIVATION_GELU
#define GELU_TANH MOEVK_ACTIVATION_GELU_TANH
#define RELU MOEVK_ACTIVATION_RELU
#define F16 MOEVK_DTYPE_F16
#define BF16 MOEVK_DTYPE_BF16
#define Q8_0 MOEVK_DTYPE_Q8_0
#define Q4_0 MOEVK_DTYPE_Q4_0
#define Q4_K MOEVK_DTYPE_Q4_K
#define Q6_K MOEVK_DTYPE_Q6_K
#define Q5_0 MOEVK_DTYPE_Q5_0
#define Q5_K MOEVK_DTYPE_Q5_K
#define DROPLESS MOEVK_CAPACITY_DROPLESS
#define FIXED MOEVK_CAPACITY_FIXED

static const layer_case CASES[] = {
    {"swiglu_top2_of_8", .E = 8, .k = 2, .T = 300, .d = 48, .f = 80},
    {"zero_tokens", .E = 8, .k = 2, .T = 0, .d = 16, .f = 32, .max_tokens = 8},
    {"one_token", .E = 8, .k = 2, .T = 1, .d = 16, .f = 32},
    {"one_expert", .E = 1, .k = 1, .T = 77, .d = 9, .f = 13},
    {"k_equals_e", .E = 5, .k = 5, .T = 64, .d = 17, .f = 23},
    {"odd_sizes_past_tiles", .E = 13, .k = 3, .T = 333, .d = 67, .f = 131},
    {"d_and_f_of_one", .E = 4, .k = 2, .T = 90, .d = 1, .f = 1},
    {"gelu", .E = 8, .k = 2, .T = 200, .d = 40, .f = 72, .activation = GELU},
    {"gelu_tanh", .E = 8, .k = 2, .T = 200, .d = 40, .f = 72, .activation = GELU_TANH},
    {"relu_with_biases", .E = 6, .k = 1, .T = 150, .d = 33, .f = 65, .activation = RELU,
     .biases = 1},
    {"swiglu_with_biases", .E = 7, .k = 2, .T = 120, .d = 30, .f = 50, .biases = 1},
    {"f16_weights", .E = 8, .k = 2, .T = 250, .d = 64, .f = 96, .weight_type = F16},
    {"bf16_weights_bf16_hidden", .E = 8, .k = 2, .T = 250, .d = 64, .f = 96, .weight_type = BF16,
     .hidden_type = BF16},
    {"f16_hidden_odd_d", .E = 9, .k = 2, .T = 111, .d = 21, .f = 35, .weight_type = F16,
     .hidden_type = F16},
    {"bf16_odd_f", .E = 4, .k = 2, .T = 100, .d = 16, .f = 33, .weight_type = BF16},
    {"dropless", .E = 16, .k = 4, .T = 400, .d = 32, .f = 48, .capacity_mode = DROPLESS,
     .renormalize = 1},
    {"dropless_padded", .E = 8, .k = 2, .T = 300, .d = 24, .f = 40, .capacity_mode = DROPLESS,
     .pad_multiple = 16},
    {"capacity_drops", .E = 8, .k = 2, .T = 400, .d = 24, .f = 40, .capacity_mode = FIXED,
     .capacity = 20},
    {"capacity_zero_shared_only", .E = 4, .k = 2, .T = 50, .d = 16, .f = 24, .capacity_mode = FIXED,
     .capacity = 0, .shared_f = 40},
    {"experts_without_tokens", .E = 64, .k = 1, .T = 10, .d = 16, .f = 24},
    {"shared_experts", .E = 16, .k = 4, .T = 200, .d = 32, .f = 24, .shared_f = 64,
     .capacity_mode = DROPLESS},
    {"shared_expert_gated", .E = 8, .k = 2, .T = 150, .d = 32, .f = 48, .shared_f = 80,
     .shared_gate = 1},
    {"shared_gated_biases_gelu_f16", .E = 8, .k = 2, .T = 99, .d = 20, .f = 28, .shared_f = 36,
     .shared_gate = 1, .biases = 1, .activation = GELU, .weight_type = F16},
    {"expert_choice", .E = 8, .k = 1, .T = 256, .d = 24, .f = 40, .mode = MOEVK_MODE_EXPERT_CHOICE},
    {"weights_in_buffers", .E = 6, .k = 2, .T = 100, .d = 24, .f = 40, .biases = 1, .shared_f = 32,
     .shared_gate = 1, .weights_in_buffer = 1},
    {"nan_token_stays", .E = 8, .k = 2, .T = 100, .d = 24, .f = 40, .shared_f = 16, .nan_token = 1},
    {"huge_values", .E = 8, .k = 2, .T = 100, .d = 24, .f = 40, .hidden_scale = 1e6f},
    {"large_t_4099_e_64", .E = 64, .k = 4, .T = 4099, .d = 40, .f = 56, .capacity_mode = DROPLESS},
    {"e_256_k_8_t_2049", .E = 256, .k = 8, .T = 2049, .d = 24, .f = 20, .shared_f = 16,
     .capacity_mode = DROPLESS, .renormalize = 1},
    {"deep_rows_d_2053_f_1031", .E = 4, .k = 2, .T = 70, .d = 2053, .f = 1031, .weight_type = BF16},
    {"fewer_tokens_than_max", .E = 8, .k = 2, .T = 37, .d = 24, .f = 40, .max_tokens = 300},
    /* Decode: calls of at most 8 tokens run the matrix-vector forms (ffn_matvec.glsl). */
    {"decode_8_tokens", .E = 8, .k = 2, .T = 8, .d = 64, .f = 96, .max_tokens = 512},
    {"decode_odd_sizes_shared_gated_biases", .E = 13, .k = 3, .T = 5, .d = 67, .f = 131,
     .shared_f = 37, .shared_gate = 1, .biases = 1, .max_tokens = 100},
    {"decode_f16_gelu", .E = 6, .k = 2, .T = 3, .d = 33, .f = 17, .activation = GELU,
     .weight_type = F16, .hidden_type = F16},
    {"decode_bf16_relu_k_equals_e", .E = 4, .k = 4, .T = 7, .d = 16, .f = 1, .activation = RELU,
     .weight_type = BF16, .hidden_type = BF16},
    {"decode_expert_choice", .E = 8, .k = 1, .T = 8, .d = 24, .f = 40,
     .mode = MOEVK_MODE_EXPERT_CHOICE},
    {"decode_capacity_drops_nan_token", .E = 4, .k = 2, .T = 6, .d = 24, .f = 40,
     .capacity_mode = FIXED, .capacity = 2, .shared_f = 16, .nan_token = 1},
    {"decode_deep_rows", .E = 4, .k = 2, .T = 2, .d = 2053, .f = 1031, .weight_type = F16},
    {"nine_tokens_take_the_tiles", .E = 8, .k = 2, .T = 9, .d = 40, .f = 56, .shared_f = 24},
    /* ggml's block formats, read in place: prefill (tiles) and decode (matrix-vector) forms,
     * shared experts, E = 1, k = E, drops; rows of 32 (Q8_0, Q4_0) or 256 (Q4_K, Q6_K). */
    {"q8_0", .E = 8, .k = 2, .T = 300, .d = 64, .f = 96, .weight_type = Q8_0, .shared_f = 32,
     .shared_gate = 1},
    {"q4_0_dropless", .E = 6, .k = 2, .T = 257, .d = 96, .f = 32, .weight_type = Q4_0,
     .capacity_mode = DROPLESS},
    {"q4_k", .E = 4, .k = 2, .T = 133, .d = 256, .f = 512, .weight_type = Q4_K, .shared_f = 256},
    {"q6_k_f16_hidden", .E = 4, .k = 2, .T = 77, .d = 512, .f = 256, .weight_type = Q6_K,
     .hidden_type = F16},
    {"q4_k_one_expert", .E = 1, .k = 1, .T = 40, .d = 256, .f = 256, .weight_type = Q4_K},
    {"q6_k_k_equals_e_capacity_drops", .E = 3, .k = 3, .T = 64, .d = 256, .f = 256,
     .weight_type = Q6_K, .capacity_mode = FIXED, .capacity = 20},
    {"decode_q8_0_gelu_biases", .E = 8, .k = 2, .T = 1, .d = 64, .f = 32, .weight_type = Q8_0,
     .activation = GELU, .biases = 1, .max_tokens = 64},
    {"decode_q4_0_bf16_hidden", .E = 8, .k = 2, .T = 4, .d = 32, .f = 64, .weight_type = Q4_0,
     .hidden_type = BF16, .shared_f = 32, .max_tokens = 64},
    {"decode_q4_k_one_token", .E = 8, .k = 2, .T = 1, .d = 256, .f = 256, .weight_type = Q4_K,
     .shared_f = 256, .shared_gate = 1},
    {"decode_q6_k", .E = 6, .k = 3, .T = 8, .d = 256, .f = 512, .weight_type = Q6_K,
     .max_tokens = 100},
    {"q4_k_from_buffers", .E = 3, .k = 2, .T = 50, .d = 256, .f = 256, .weight_type = Q4_K,
     .weights_in_buffer = 1, .shared_f = 256},
    /* A down type of its own: Q4_K_M's Q4_K gate and up beside a Q6_K (or Q8_0) down; f need
     * only be whole blocks of the down type (DeepSeek-V2-Lite's f = 1408 with a Q8_0 down). */
    {"q4_k_with_q6_k_down", .E = 4, .k = 2, .T = 100, .d = 256, .f = 512, .weight_type = Q4_K,
     .separate_down = 1, .down_type = Q6_K, .shared_f = 256, .shared_gate = 1},
    {"decode_q4_k_with_q6_k_down", .E = 8, .k = 2, .T = 1, .d = 256, .f = 256, .weight_type = Q4_K,
     .separate_down = 1, .down_type = Q6_K, .shared_f = 256},
    {"q4_k_with_q8_0_down_f_1408", .E = 4, .k = 2, .T = 30, .d = 256, .f = 1408,
     .weight_type = Q4_K, .separate_down = 1, .down_type = Q8_0, .capacity_mode = DROPLESS},
    {"f16_with_f32_down", .E = 5, .k = 2, .T = 70, .d = 24, .f = 40, .weight_type = F16,
     .separate_down = 1, .down_type = MOEVK_DTYPE_F32, .biases = 1},
    /* Q5_0 and Q5_K (Q5_K_M files; Q5_0 where rows are not whole 256-weight blocks). */
    {"q5_0_shared", .E = 6, .k = 2, .T = 150, .d = 64, .f = 96, .weight_type = Q5_0,
     .shared_f = 32},
    {"q5_k_with_q6_k_down", .E = 4, .k = 2, .T = 120, .d = 256, .f = 256, .weight_type = Q5_K,
     .separate_down = 1, .down_type = Q6_K, .shared_f = 256},
    {"decode_q5_0", .E = 8, .k = 2, .T = 3, .d = 64, .f = 96, .weight_type = Q5_0,
     .max_tokens = 64},
    {"decode_q5_k_with_q5_0_down_f_1408", .E = 4, .k = 2, .T = 1, .d = 256, .f = 1408,
     .weight_type = Q5_K, .separate_down = 1, .down_type = Q5_0},
    /* The sizes users run: 2049 tokens over 64 Q4_K experts, top-4, a Q6_K down. */
    {"q4_k_t_2049_e_64_k_4", .E = 64, .k = 4, .T = 2049, .d = 256, .f = 256, .weight_type = Q4_K,
     .separate_down = 1, .down_type = Q6_K, .capacity_mode = DROPLESS},
    /* Expert offload: the weights in host memory, read by the device in place. */
    {"host_weights_q4_k_shared", .E = 4, .k = 2, .T = 90, .d = 256, .f = 256, .weight_type = Q4_K,
     .shared_f = 256, .host_weights = 1, .weights_in_buffer = 1},
    {"decode_host_weights_f16", .E = 8, .k = 2, .T = 1, .d = 64, .f = 96, .weight_type = F16,
     .host_weights = 1, .max_tokens = 32},
};

/* A value stored in a type, rounded to nearest (what a model file holds). */
static void store(void *data, uint64_t i, moevk_dtype type, float value) {
    ref_store(data, i, type, value);
}

static uint64_t bytes_of(moevk_dtype type) { return type == MOEVK_DTYPE_F32 ? 4 : 2; }

/* Fresh normal values times scale, in a type. */
static void *random_matrix(uint64_t count, moevk_dtype type, float scale) {
    return random_weights(count, type, scale);
}

/* The weights of one case, host copies the reference reads. */
typedef struct case_weights {
    float *router;
    void *gate, *up, *down, *shared_gate, *shared_up, *shared_down;
    float *bias[3], *shared_bias[3], *shared_expert_gate;
} case_weights;

static void make_weights(const layer_case *c, case_weights *w) {
    uint64_t E = c->E, d = c->d, f = c->f, fs = c->shared_f;
    memset(w, 0, sizeof *w);
    w->router = random_matrix(E * d, MOEVK_DTYPE_F32, 1.0f / sqrtf((float)d));
    int swiglu = c->activation == SWIGLU;
    if (swiglu) w->gate = random_matrix(E * f * d, c->weight_type, 1.0f / sqrtf((float)d));
    w->up = random_matrix(E * f * d, c->weight_type, 1.0f / sqrtf((float)d));
    moevk_dtype down = c->separate_down ? c->down_type : c->weight_type;
    w->down = random_matrix(E * d * f, down, 1.0f / sqrtf((float)f));
    if (c->biases) {
        if (swiglu) w->bias[0] = random_matrix(E * f, MOEVK_DTYPE_F32, 0.1f);
        w->bias[1] = random_matrix(E * f, MOEVK_DTYPE_F32, 0.1f);
        w->bias[2] = random_matrix(E * d, MOEVK_DTYPE_F32, 0.1f);
    }
    if (fs == 0) return;
    if (swiglu) w->shared_gate = random_matrix(fs * d, c->weight_type, 1.0f / sqrtf((float)d));
    w->shared_up = random_matrix(fs * d, c->weight_type, 1.0f / sqrtf((float)d));
    w->shared_down = random_matrix(d * fs, down, 1.0f / sqrtf((float)fs));
    if (c->biases) {
        if (swiglu) w->shared_bias[0] = random_matrix(fs, MOEVK_DTYPE_F32, 0.1f);
        w->shared_bias[1] = random_matrix(fs, MOEVK_DTYPE_F32, 0.1f);
        w->shared_bias[2] = random_matrix(d, MOEVK_DTYPE_F32, 0.1f);
    }
    if (c->shared_gate) w->shared_expert_gate = random_matrix(d, MOEVK_DTYPE_F32, 0.3f);
}

static void free_weights(case_weights *w) {
    free(w->router), free(w->gate), free(w->up), free(w->down);
    free(w->shared_gate), free(w->shared_up), free(w->shared_down), free(w->shared_expert_gate);
    for (int i = 0; i < 3; ++i) free(w->bias[i]), free(w->shared_bias[i]);
}

/* Sets one weight from host memory, or through a moevk_buffer at an odd offset. */
static moevk_result set_weight(moevk_layer *layer, const layer_case *c, moevk_layer_weight which,
                               uint32_t experts, const void *data, uint64_t bytes) {
    if (!data) return MOEVK_SUCCESS;
    if (!c->weights_in_buffer)
        return moevk_layer_set_weights(layer, which, 0, experts, moevk_host_tensor(data));
    moevk_buffer *buffer = NULL;
    moevk_result r = moevk_buffer_create(test_context(), bytes + 6, &buffer);
    if (r == MOEVK_SUCCESS) r = moevk_buffer_write(buffer, 6, data, bytes);
    /* Two halves, to exercise `first`. */
    uint32_t half = experts / 2;
    if (r == MOEVK_SUCCESS && half > 0)
        r = moevk_layer_set_weights(layer, which, 0, half, moevk_buffer_tensor(buffer, 6));
    if (r == MOEVK_SUCCESS)
        r = moevk_layer_set_weights(layer, which, half, experts - half,
                                    moevk_buffer_tensor(buffer, 6 + bytes / experts * half));
    moevk_buffer_destroy(buffer);
    return r;
}

static moevk_result set_weights(moevk_layer *layer, const layer_case *c, const case_weights *w) {
    uint64_t E = c->E, d = c->d, f = c->f, fs = c->shared_f;
    moevk_dtype t = c->weight_type, dt = c->separate_down ? c->down_type : t;
    const struct {
        moevk_layer_weight which;
        uint32_t experts;
        const void *data;
        uint64_t bytes;
    } all[] = {
        {MOEVK_WEIGHT_ROUTER, 1, w->router, E * d * 4},
        {MOEVK_WEIGHT_GATE, c->E, w->gate, weights_bytes(t, E * f * d)},
        {MOEVK_WEIGHT_UP, c->E, w->up, weights_bytes(t, E * f * d)},
        {MOEVK_WEIGHT_DOWN, c->E, w->down, weights_bytes(dt, E * d * f)},
        {MOEVK_WEIGHT_GATE_BIAS, c->E, w->bias[0], E * f * 4},
        {MOEVK_WEIGHT_UP_BIAS, c->E, w->bias[1], E * f * 4},
        {MOEVK_WEIGHT_DOWN_BIAS, c->E, w->bias[2], E * d * 4},
        {MOEVK_WEIGHT_SHARED_GATE, 1, w->shared_gate, weights_bytes(t, fs * d)},
        {MOEVK_WEIGHT_SHARED_UP, 1, w->shared_up, weights_bytes(t, fs * d)},
        {MOEVK_WEIGHT_SHARED_DOWN, 1, w->shared_down, weights_bytes(dt, d * fs)},
        {MOEVK_WEIGHT_SHARED_GATE_BIAS, 1, w->shared_bias[0], fs * 4},
        {MOEVK_WEIGHT_SHARED_UP_BIAS, 1, w->shared_bias[1], fs * 4},
        {MOEVK_WEIGHT_SHARED_DOWN_BIAS, 1, w->shared_bias[2], d * 4},
        {MOEVK_WEIGHT_SHARED_EXPERT_GATE, 1, w->shared_expert_gate, d * 4},
    };
    moevk_result r = MOEVK_SUCCESS;
    for (size_t i = 0; i < sizeof all / sizeof all[0] && r == MOEVK_SUCCESS; ++i)
        r = set_weight(layer, c, all[i].which, all[i].experts, all[i].data, all[i].bytes);
    return r;
}

static moevk_router_info case_router_info(const layer_case *c) {
    moevk_router_info info =
        route_case_info(c->mode, c->E, c->k, c->max_tokens ? c->max_tokens : c->T, c->d);
    info.hidden_type = c->hidden_type;
    info.capacity_mode = c->capacity_mode;
    info.capacity = c->capacity;
    info.pad_multiple = c->pad_multiple;
    info.renormalize = c->renormalize;
    return info;
}

static moevk_layer_info case_layer_info(const layer_case *c, const moevk_router_info *router) {
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = router;
    info.intermediate_size = c->f;
    info.activation = c->activation;
    info.weight_type = c->weight_type;
    info.biases = c->biases;
    info.shared_intermediate_size = c->shared_f;
    info.shared_gate = c->shared_gate;
    info.separate_down_type = c->separate_down;
    info.host_weights = c->host_weights;
    info.down_weight_type = c->down_type;
    return info;
}

/* The layer's outputs of one run. */
typedef struct run_outputs {
    void *output;
    float *logits, *weights;
    int32_t *ids, *slots;
} run_outputs;

static moevk_result run_layer(moevk_layer *layer, const layer_case *c, const void *hidden,
                              run_outputs *o) {
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = c->T;
    input.hidden = moevk_host_tensor(hidden);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.expert_ids = moevk_host_tensor(o->ids);
    route.weights = moevk_host_tensor(o->weights);
    route.slots = moevk_host_tensor(o->slots);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(o->output);
    output.router_logits = moevk_host_tensor(o->logits);
    output.route = &route;
    return moevk_layer_forward(layer, &input, &output);
}

static int alloc_outputs(run_outputs *o, uint64_t T, uint64_t d, uint64_t E, uint64_t choices,
                         uint64_t element) {
    o->output = malloc(T * d * element + 4);
    o->logits = malloc(T * E * 4 + 4);
    o->weights = malloc(T * choices * 4 + 4);
    o->ids = malloc(T * choices * 4 + 4);
    o->slots = malloc(T * choices * 4 + 4);
    return o->output && o->logits && o->weights && o->ids && o->slots;
}

static void free_outputs(run_outputs *o) {
    free(o->output), free(o->logits), free(o->weights), free(o->ids), free(o->slots);
}

/* The first output element off the reference by more than f32 rounding of its terms' size
 * (the magnitude), plus the output type's rounding; -1 when none. */
static int64_t first_mismatch(const layer_case *c, const void *output, const double *want,
                              const double *magnitude, uint64_t count, double *got_out) {
    double rounding = c->hidden_type == MOEVK_DTYPE_BF16  ? 1.0 / 256
                      : c->hidden_type == MOEVK_DTYPE_F16 ? 1.0 / 2048
                                                          : 0.0;
    for (uint64_t i = 0; i < count; ++i) {
        double got = ref_load(output, i, c->hidden_type);
        *got_out = got;
        if (isnan(want[i]) || isnan(got)) {
            if (isnan(want[i]) != isnan(got)) return (int64_t)i;
            continue;
        }
        double tolerance = 1e-5 * magnitude[i] + rounding * fabs(want[i]) + 1e-30;
        if (c->hidden_type == MOEVK_DTYPE_F16 && fabs(want[i]) > 65504.0) continue; /* inf */
        if (!(fabs(got - want[i]) <= tolerance)) return (int64_t)i;
    }
    return -1;
}

static void run_case(const void *row) {
    const layer_case *c = row;
    moevk_router_info router_info = case_router_info(c);
    moevk_layer_info info = case_layer_info(c, &router_info);
    moevk_layer *layer = NULL;
    CHECK_OK(moevk_layer_create(test_context(), &info, &layer));
    uint64_t T = c->T, E = c->E, d = c->d;
    uint64_t choices = moevk_router_choices(moevk_layer_router(layer));
    uint64_t element = bytes_of(c->hidden_type);
    case_weights w;
    make_weights(c, &w);
    float scale = c->hidden_scale ? c->hidden_scale : 1.0f;
    void *hidden = random_matrix(T * d, c->hidden_type, scale);
    if (c->nan_token && T > 3) store(hidden, 3 * d + d / 2, c->hidden_type, NAN);
    run_outputs first = {0}, second = {0};
    double *want = malloc(T * d * sizeof *want + 8), *magnitude = malloc(T * d * sizeof *want + 8);
    float *ref_logits = malloc(T * E * 4 + 4);
    int allocated = hidden && want && magnitude && ref_logits &&
                    alloc_outputs(&first, T, d, E, choices, element) &&
                    alloc_outputs(&second, T, d, E, choices, element);
    moevk_result r = allocated ? set_weights(layer, c, &w) : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (r == MOEVK_SUCCESS) r = run_layer(layer, c, hidden, &first);
    if (r == MOEVK_SUCCESS) r = run_layer(layer, c, hidden, &second);
    int64_t bad = -1, bad_logit = -1;
    double got = 0.0, want_bad = 0.0, magnitude_bad = 0.0;
    int same = 0;
    if (r == MOEVK_SUCCESS) {
        ref_router_projection(&router_info, c->T, hidden, w.router, ref_logits);
        for (uint64_t i = 0; i < T * E && bad_logit < 0; ++i)
            if (memcmp(&ref_logits[i], &first.logits[i], 4) &&
                !(isnan(ref_logits[i]) && isnan(first.logits[i])))
                bad_logit = (int64_t)i;
        ref_layer layer_ref = {
            .router = &router_info,
            .router_weights = w.router,
            .experts = {c->d, c->f, c->activation, c->weight_type, w.gate, w.up, w.down, w.bias[0],
                        w.bias[1], w.bias[2], c->separate_down, c->down_type},
            .shared = {c->d, c->shared_f, c->activation, c->weight_type, w.shared_gate, w.shared_up,
                       w.shared_down, w.shared_bias[0], w.shared_bias[1], w.shared_bias[2],
                       c->separate_down, c->down_type},
            .shared_expert_gate = w.shared_expert_gate};
        ref_layer_output(&layer_ref, c->T, hidden, first.ids, first.weights, first.slots, want,
                         magnitude);
        bad = first_mismatch(c, first.output, want, magnitude, T * d, &got);
        if (bad >= 0) want_bad = want[bad], magnitude_bad = magnitude[bad];
        same = !memcmp(first.output, second.output, T * d * element) &&
               !memcmp(first.ids, second.ids, T * choices * 4);
    }
    moevk_layer_destroy(layer);
    free_weights(&w);
    free(hidden), free(want), free(magnitude), free(ref_logits);
    free_outputs(&first), free_outputs(&second);
    CHECK(r == MOEVK_SUCCESS, "%s: -> %s (%s)", c->name, moevk_result_string(r),
          moevk_context_last_error(test_context()));
    CHECK(bad_logit < 0, "%s: router logit %lld differs from the reference projection", c->name,
          (long long)bad_logit);
    CHECK(bad < 0, "%s: output [%lld, %lld] is %.9g; the reference %.9g (magnitude %.3g)", c->name,
          (long long)(bad / (int64_t)(d ? d : 1)), (long long)(bad % (int64_t)(d ? d : 1)), got,
          want_bad, magnitude_bad);
    CHECK(same, "%s: a second run gave other bits", c->name);
}

/* A worked example: E = 2, k = 1, d = 2, f = 1, ReLU. W_g = [[1, 0], [0, 1]] routes x = (3, 1)
 * to expert 0 with weight softmax(3, 1)[0]; expert 0's up = [1, 1] gives relu(4) = 4, its down
 * [[2], [-1]] gives (8, -4), times the weight. */
static void test_worked_example(void) {
    moevk_router_info router = route_case_info(MOEVK_MODE_TOKEN, 2, 1, 1, 2);
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router;
    info.intermediate_size = 1;
    info.activation = MOEVK_ACTIVATION_RELU;
    moevk_layer *layer = NULL;
    CHECK_OK(moevk_layer_create(test_context(), &info, &layer));
    const float wg[4] = {1, 0, 0, 1}, up[4] = {1, 1, 0, 0}, down[4] = {2, -1, 0, 0};
    const float x[2] = {3, 1};
    float out[2] = {0, 0};
    moevk_result r =
        moevk_layer_set_weights(layer, MOEVK_WEIGHT_ROUTER, 0, 1, moevk_host_tensor(wg));
    if (r == MOEVK_SUCCESS)
        r = moevk_layer_set_weights(layer, MOEVK_WEIGHT_UP, 0, 2, moevk_host_tensor(up));
    if (r == MOEVK_SUCCESS)
        r = moevk_layer_set_weights(layer, MOEVK_WEIGHT_DOWN, 0, 2, moevk_host_tensor(down));
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = 1;
    input.hidden = moevk_host_tensor(x);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(out);
    if (r == MOEVK_SUCCESS) r = moevk_layer_forward(layer, &input, &output);
    moevk_layer_destroy(layer);
    CHECK(r == MOEVK_SUCCESS, "forward -> %s", moevk_result_string(r));
    double weight = exp(3.0) / (exp(3.0) + exp(1.0));
    CHECK(fabs(out[0] - 8 * weight) < 1e-5 && fabs(out[1] + 4 * weight) < 1e-5,
          "output (%g, %g); want (%g, %g)", (double)out[0], (double)out[1], 8 * weight,
          -4 * weight);
}

/* A profiling layer's timings: the route's stages and then the layer's own (layer_ms); a plain
 * route afterwards reports no layer time. */
static void test_profiling_times_the_layer(void) {
    moevk_router_info router = route_case_info(MOEVK_MODE_TOKEN, 8, 2, 256, 64);
    router.profile = 1;
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router;
    info.intermediate_size = 96;
    moevk_layer *layer = NULL;
    CHECK_OK(moevk_layer_create(test_context(), &info, &layer));
    static float hidden[256 * 64], out[256 * 64];
    for (int i = 0; i < 256 * 64; ++i) hidden[i] = rng_normal();
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = 256;
    input.hidden = moevk_host_tensor(hidden);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(out);
    moevk_timings timings;
    moevk_timings_init(&timings);
    moevk_result r = moevk_layer_forward(layer, &input, &output);
    if (r == MOEVK_SUCCESS) r = moevk_router_timings(moevk_layer_router(layer), &timings);
    moevk_layer_destroy(layer);
    if (r == MOEVK_ERROR_UNSUPPORTED) return; /* a queue without timestamps */
    CHECK(r == MOEVK_SUCCESS, "-> %s", moevk_result_string(r));
    CHECK(timings.route_ms > 0 && timings.layer_ms > 0, "route %g ms, layer %g ms",
          timings.route_ms, timings.layer_ms);
    /* Its three parts, back to back: they add up to layer_ms. */
    double parts = timings.experts_ms + timings.shared_experts_ms + timings.layer_combine_ms;
    CHECK(timings.experts_ms > 0 && timings.shared_experts_ms >= 0 &&
              timings.layer_combine_ms > 0 &&
              fabs(parts - timings.layer_ms) <= 1e-6 * timings.layer_ms + 1e-9,
          "experts %g + shared %g + combine %g ms against layer %g ms", timings.experts_ms,
          timings.shared_experts_ms, timings.layer_combine_ms, timings.layer_ms);
}

static void test_layer_options_are_checked(void) {
    moevk_context *context = test_context();
    moevk_router_info router = route_case_info(MOEVK_MODE_TOKEN, 4, 2, 16, 8);
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    moevk_layer *layer = NULL;
    CHECK(moevk_layer_create(context, &info, &layer) == MOEVK_ERROR_INVALID_ARGUMENT && !layer,
          "a layer without routing options was taken");
    info.router = &router;
    CHECK(moevk_layer_create(context, &info, &layer) == MOEVK_ERROR_INVALID_ARGUMENT,
          "intermediate_size 0 was taken");
    info.intermediate_size = 8;
    info.activation = (moevk_activation)7;
    CHECK(moevk_layer_create(context, &info, &layer) == MOEVK_ERROR_INVALID_ARGUMENT,
          "activation 7 was taken");
    info.activation = MOEVK_ACTIVATION_GELU;
    info.shared_gate = 1;
    CHECK(moevk_layer_create(context, &info, &layer) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a shared gate without shared experts was taken");
    info.shared_gate = 0;
    /* Block formats: every row whole blocks (d = 8 is not 32 weights; f not 256 for Q4_K). */
    info.weight_type = MOEVK_DTYPE_Q8_0;
    CHECK(moevk_layer_create(context, &info, &layer) == MOEVK_ERROR_INVALID_ARGUMENT &&
              strstr(moevk_context_last_error(context), "hidden_size 8 is not whole blocks of 32"),
          "Q8_0 rows of 8 weights were taken: %s", moevk_context_last_error(context));
    router.hidden_size = 256;
    info.weight_type = MOEVK_DTYPE_Q4_K;
    info.intermediate_size = 1408; /* DeepSeek-V2-Lite's: 5.5 blocks */
    CHECK(moevk_layer_create(context, &info, &layer) == MOEVK_ERROR_INVALID_ARGUMENT &&
              strstr(moevk_context_last_error(context),
                     "intermediate_size 1408 is not whole blocks of 256"),
          "Q4_K with f = 1408 was taken: %s", moevk_context_last_error(context));
    info.weight_type = (moevk_dtype)9;
    CHECK(moevk_layer_create(context, &info, &layer) == MOEVK_ERROR_INVALID_ARGUMENT,
          "weight_type 9 was taken");
    /* A down type of its own: f need only be whole blocks of it (Q8_0's 32 for f = 1408). */
    info.weight_type = MOEVK_DTYPE_Q4_K;
    info.separate_down_type = 1;
    info.down_weight_type = MOEVK_DTYPE_Q8_0;
    CHECK_OK(moevk_layer_create(context, &info, &layer));
    moevk_layer_destroy(layer);
    layer = NULL;
    info.down_weight_type = (moevk_dtype)9;
    CHECK(moevk_layer_create(context, &info, &layer) == MOEVK_ERROR_INVALID_ARGUMENT,
          "down_weight_type 9 was taken");
    /* A 0.4 program's struct ends before them: they are not read. */
    info.struct_size = (uint32_t)offsetof(moevk_layer_info, separate_down_type);
    info.weight_type = MOEVK_DTYPE_F32;
    info.intermediate_size = 8;
    router.hidden_size = 8;
    CHECK_OK(moevk_layer_create(context, &info, &layer));
    moevk_layer_destroy(layer);
    layer = NULL;
    moevk_layer_info_init(&info);
    info.router = &router;
    info.activation = MOEVK_ACTIVATION_GELU;
    info.weight_type = MOEVK_DTYPE_F32;
    info.intermediate_size = 8;
    router.hidden_size = 0;
    CHECK(moevk_layer_create(context, &info, &layer) == MOEVK_ERROR_INVALID_ARGUMENT,
          "hidden_size 0 was taken");
    router.hidden_size = 8;
    CHECK_OK(moevk_layer_create(context, &info, &layer));
    float data[4 * 8 * 8] = {0}, hidden[16 * 8] = {0}, out[16 * 8];
    moevk_result gate = moevk_layer_set_weights(layer, MOEVK_WEIGHT_GATE, 0, 4,
                                                moevk_host_tensor(data)); /* GELU: no gate */
    moevk_result past =
        moevk_layer_set_weights(layer, MOEVK_WEIGHT_UP, 3, 2, moevk_host_tensor(data));
    moevk_result bias =
        moevk_layer_set_weights(layer, MOEVK_WEIGHT_UP_BIAS, 0, 1, moevk_host_tensor(data));
    moevk_result shared =
        moevk_layer_set_weights(layer, MOEVK_WEIGHT_SHARED_UP, 0, 1, moevk_host_tensor(data));
    moevk_result none =
        moevk_layer_set_weights(layer, MOEVK_WEIGHT_UP, 0, 1, moevk_host_tensor(NULL));
    moevk_result unknown =
        moevk_layer_set_weights(layer, (moevk_layer_weight)99, 0, 1, moevk_host_tensor(data));
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = 16;
    input.hidden = moevk_host_tensor(hidden);
    input.logits = moevk_host_tensor(data);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor(out);
    moevk_result with_logits = moevk_layer_forward(layer, &input, &output);
    input.logits = moevk_host_tensor(NULL);
    output.output = moevk_host_tensor(NULL);
    moevk_result no_output = moevk_layer_forward(layer, &input, &output);
    output.output = moevk_host_tensor(out);
    input.hidden = moevk_host_tensor(NULL);
    moevk_result no_hidden = moevk_layer_forward(layer, &input, &output);
    input.hidden = moevk_host_tensor(hidden);
    moevk_route_output route;
    moevk_route_output_init(&route);
    moevk_result plain_route =
        moevk_route(moevk_layer_router(layer), &input, &route); /* a layer's router */
    moevk_result fine = moevk_layer_forward(layer, &input, &output);
    moevk_layer_destroy(layer);
    CHECK(gate == MOEVK_ERROR_INVALID_ARGUMENT, "a GELU layer took gate weights");
    CHECK(past == MOEVK_ERROR_INVALID_ARGUMENT, "experts 3 and 4 of 4 were taken");
    CHECK(bias == MOEVK_ERROR_INVALID_ARGUMENT, "biases of a layer without them were taken");
    CHECK(shared == MOEVK_ERROR_INVALID_ARGUMENT, "shared weights of a layer without them");
    CHECK(none == MOEVK_ERROR_INVALID_ARGUMENT, "weights from no source were taken");
    CHECK(unknown == MOEVK_ERROR_INVALID_ARGUMENT, "weight 99 was taken");
    CHECK(with_logits == MOEVK_ERROR_INVALID_ARGUMENT, "a layer took logits");
    CHECK(no_output == MOEVK_ERROR_INVALID_ARGUMENT, "a forward without output was taken");
    CHECK(no_hidden == MOEVK_ERROR_INVALID_ARGUMENT, "a forward without hidden states");
    CHECK(plain_route == MOEVK_ERROR_INVALID_ARGUMENT, "moevk_route ran a layer's router");
    CHECK(fine == MOEVK_SUCCESS, "the forward after the refusals -> %s", moevk_result_string(fine));
}

static const test_case FUNCTIONS[] = {
    TEST(worked_example),
    TEST(profiling_times_the_layer),
    TEST(layer_options_are_checked),
};

int main(int argc, char **argv) {
    return test_main_with_table(CASES, sizeof CASES / sizeof CASES[0], sizeof CASES[0], run_case,
                                FUNCTIONS, sizeof FUNCTIONS / sizeof FUNCTIONS[0], argc, argv);
}
