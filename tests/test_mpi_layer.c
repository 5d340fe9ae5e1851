/* The expert-parallel layer (libmoevk_mpi) under mpirun: every rank makes the same random
 * layer and tokens (the seed is rank 0's), runs one process's moevk_layer_forward over all
 * ranks' tokens, and holds the expert-parallel forward of its own slice to it bit for bit:
 * output, router logits, choices, weights, global slots, counts; the statistics within the
 * rounding of summing in another order. A rank's failure is every rank's test failure; only
 * rank 0 prints (MOEVK_TEST_ALL_RANKS=1: every rank). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "harness.h"
#include "moevk_reference.h"
#include "moevk_mpi.h"
#include "random_weights.h"

static int rank, ranks;

typedef struct ep_case {
    const char *name;
    uint32_t experts_per_rank, k, d, f;
    uint32_t experts; /* else: E in all, split over the ranks (a power of two) */
    uint32_t tokens;  /* per rank, before `spread` */
    /* 0 a little uneven; 1 rank 0 has most; 2 rank 1 none; 3 none anywhere; 4 equal; 5 as 0,
     * `tokens` split over the ranks */
    int spread;
    moevk_activation activation;
    moevk_dtype weight_type, hidden_type;
    moevk_capacity_mode capacity_mode;
    float capacity_factor; /* FACTOR (0: 1.25) */
    int32_t capacity;      /* FIXED */
    uint32_t pad_multiple;
    uint32_t shared_f;
    int shared_gate, biases, renormalize, sigmoid;
    int skew;      /* a selection bias that sends most choices to the last rank's experts */
    int ties;      /* two experts with the same router row */
    int nan_token; /* one token (rank 0's first) holds a NaN */
    int drops;     /* the case must drop choices (its capacity bites) */
    uint32_t
        chunks; /* the exchange's chunks on the second run (the first runs one); 0: automatic */
    int train;  /* trainable: one run (one chunk), then the backward, twice (accumulating) */
    int losses; /* the backward with the aux, z and entropy losses */
    uint32_t sequence;      /* and the sequence loss over sequences of this length (0: without) */
    int importance;         /* and the importance loss */
    int load;               /* and the load loss (with Gaussian noise) */
    int score;              /* the SCORE drop policy (each expert keeps its C of highest weight) */
    uint32_t repeat_rows;   /* the batch's hidden rows cycle through this many (equal weights) */
    uint32_t sequence_mode; /* the SEQUENCE mode over sequences of this length (0: TOKEN) */
    moevk_noise_kind noise; /* in training (step 4, layer 1), with noisy_scores */
    float noise_amount;
} ep_case;

#define F16 MOEVK_DTYPE_F16
#define BF16 MOEVK_DTYPE_BF16
#define Q8_0 MOEVK_DTYPE_Q8_0
#define DROPLESS MOEVK_CAPACITY_DROPLESS
#define FIXED MOEVK_CAPACITY_FIXED

static const ep_case CASES[] = {
    {"dropless", .experts_per_rank = 4, .k = 2, .d = 48, .f = 80, .tokens = 57,
     .capacity_mode = DROPLESS, .renormalize = 1, .chunks = 3},
    {"dropless_padded_ties", .experts_per_rank = 3, .k = 2, .d = 24, .f = 40, .tokens = 41,
     .capacity_mode = DROPLESS, .pad_multiple = 8, .ties = 1},
    {"capacity_global", .drops = 1, .experts_per_rank = 4, .k = 2, .d = 32, .f = 48, .tokens = 90,
     .capacity_factor = 1.0f},
    {"capacity_uneven_load", .drops = 1, .experts_per_rank = 2, .k = 2, .d = 32, .f = 40,
     .tokens = 120, .spread = 1, .skew = 1, .capacity_factor = 1.25f, .chunks = 16},
    {"capacity_fixed_unrouted", .drops = 1, .experts_per_rank = 2, .k = 1, .d = 16, .f = 24,
     .tokens = 60, .capacity_mode = FIXED, .capacity = 5, .shared_f = 32, .skew = 1},
    {"a_rank_without_tokens", .drops = 1, .experts_per_rank = 4, .k = 2, .d = 32, .f = 48,
     .tokens = 50, .spread = 2, .capacity_factor = 1.0f},
    {"no_tokens_anywhere", .experts_per_rank = 2, .k = 2, .d = 16, .f = 24, .tokens = 0,
     .spread = 3},
    {"one_expert_per_rank", .experts_per_rank = 1, .k = 1, .d = 33, .f = 65, .tokens = 70,
     .capacity_mode = DROPLESS, .activation = MOEVK_ACTIVATION_RELU, .biases = 1, .chunks = 5},
    {"k_equals_e_sigmoid", .experts_per_rank = 2, .k = 16, .d = 20, .f = 28, .tokens = 33,
     .sigmoid = 1, .renormalize = 1, .capacity_mode = DROPLESS},
    {"f16_gelu_shared_gate", .experts_per_rank = 4, .k = 2, .d = 64, .f = 96, .tokens = 75,
     .weight_type = F16, .hidden_type = F16, .activation = MOEVK_ACTIVATION_GELU, .shared_f = 64,
     .shared_gate = 1, .capacity_factor = 1.5f},
    {"bf16_swiglu_biases_nan_token", .experts_per_rank = 3, .k = 2, .d = 40, .f = 56, .tokens = 64,
     .weight_type = BF16, .hidden_type = BF16, .biases = 1, .nan_token = 1,
     .capacity_mode = DROPLESS, .chunks = 7},
    {"q8_0_experts", .experts_per_rank = 2, .k = 2, .d = 64, .f = 96, .tokens = 48,
     .weight_type = Q8_0, .capacity_mode = DROPLESS, .shared_f = 64},
    {"decode_matvec", .experts_per_rank = 4, .k = 2, .d = 64, .f = 96, .tokens = 1,
     .capacity_mode = DROPLESS, .shared_f = 32, .chunks = 16},
    /* The sizes users run: E = 256, top-8, over 4120 tokens at 4 ranks (past T = 4099). */
    {"large_e_256_k_8", .drops = 1, .experts = 256, .k = 8, .d = 32, .f = 32, .tokens = 1030,
     .capacity_factor = 1.0f, .skew = 1, .chunks = 3},
    {"large_t_1000_e_32", .drops = 1, .experts_per_rank = 8, .k = 4, .d = 64, .f = 64,
     .tokens = 1000, .capacity_factor = 1.0f, .skew = 1, .chunks = 4},
    /* Enough rows an expert (1100) that the automatic overlap degree splits them in two. */
    {"automatic_chunks", .experts_per_rank = 1, .k = 1, .d = 16, .f = 16, .tokens = 1100,
     .capacity_mode = DROPLESS},
    /* Training: the backward's outputs and gradients against one process's. */
    {"train_dropless_swiglu_biases_shared_losses", .train = 1, .losses = 1, .importance = 1,
     .experts_per_rank = 2, .k = 2, .d = 32, .f = 40, .tokens = 37, .capacity_mode = DROPLESS,
     .biases = 1, .shared_f = 24, .renormalize = 1},
    {"train_capacity_bf16_a_rank_without_tokens", .train = 1, .drops = 1, .experts_per_rank = 2,
     .k = 2, .d = 24, .f = 32, .tokens = 60, .spread = 2, .weight_type = BF16, .hidden_type = BF16,
     .capacity_factor = 1.0f, .skew = 1},
    {"train_decode_gelu_shared_gate", .train = 1, .experts_per_rank = 2, .k = 2, .d = 32, .f = 48,
     .tokens = 1, .capacity_mode = DROPLESS, .activation = MOEVK_ACTIVATION_GELU, .shared_f = 32,
     .shared_gate = 1},
    {"train_fixed_capacity_unrouted", .train = 1, .drops = 1, .experts_per_rank = 2, .k = 1,
     .d = 16, .f = 24, .tokens = 60, .capacity_mode = FIXED, .capacity = 5, .skew = 1,
     .activation = MOEVK_ACTIVATION_RELU, .biases = 1},
    {"train_e_64_k_4_drops_losses", .train = 1, .losses = 1, .importance = 1, .drops = 1,
     .experts = 64, .k = 4, .d = 32, .f = 32, .tokens = 400, .capacity_factor = 1.0f, .skew = 1},
    /* DeepSeek-V3's sequence-wise loss: each rank's T whole sequences of 8 (one rank none). */
    {"train_sequence_loss_a_rank_without_tokens", .train = 1, .losses = 1, .sequence = 8,
     .experts_per_rank = 2, .k = 2, .d = 24, .f = 32, .tokens = 48, .spread = 2,
     .capacity_mode = DROPLESS, .sigmoid = 1, .renormalize = 1},
    {"train_sequence_loss_capacity", .train = 1, .losses = 1, .importance = 1, .sequence = 16,
     .drops = 1, .experts_per_rank = 4, .k = 2, .d = 16, .f = 24, .tokens = 64, .spread = 4,
     .capacity_factor = 1.0f, .skew = 1},
    /* The SCORE drop policy: each expert's C best over the whole batch (ties: 7 distinct rows
     * give many tokens equal weights, the lower token kept). */
    {"capacity_score_ties", .drops = 1, .score = 1, .experts_per_rank = 4, .k = 2, .d = 32, .f = 48,
     .tokens = 90, .capacity_factor = 1.0f, .repeat_rows = 7, .skew = 1, .chunks = 3},
    {"capacity_fixed_score_unrouted", .drops = 1, .score = 1, .experts_per_rank = 2, .k = 1,
     .d = 16, .f = 24, .tokens = 60, .capacity_mode = FIXED, .capacity = 5, .skew = 1},
    {"score_e_64_k_4_uneven", .drops = 1, .score = 1, .experts = 64, .k = 4, .d = 32, .f = 32,
     .tokens = 300, .spread = 1, .capacity_factor = 1.0f, .skew = 1, .chunks = 4},
    {"train_score_drops_losses", .train = 1, .losses = 1, .importance = 1, .drops = 1, .score = 1,
     .experts_per_rank = 2, .k = 2, .d = 24, .f = 32, .tokens = 60, .capacity_factor = 1.0f,
     .skew = 1, .renormalize = 1},
    /* The SEQUENCE mode: each rank's T whole sequences (the last rank's ends 3 short), with
     * Gaussian noise, whose rows are the sequences, and drops. */
    {"sequence_mode_noise_capacity", .drops = 1, .experts_per_rank = 4, .k = 2, .d = 24, .f = 32,
     .tokens = 48, .spread = 6, .sequence_mode = 8, .capacity_factor = 1.0f,
     .noise = MOEVK_NOISE_GAUSSIAN, .noise_amount = 0.5f, .chunks = 2},
    {"sequence_mode_dropless_one_rank_none", .experts_per_rank = 2, .k = 2, .d = 16, .f = 24,
     .tokens = 40, .spread = 2, .sequence_mode = 5, .capacity_mode = DROPLESS},
    /* Noise in training: each rank draws its rows' noise as one process draws the batch's. */
    {"gaussian_noise_capacity", .drops = 1, .experts_per_rank = 4, .k = 2, .d = 24, .f = 32,
     .tokens = 80, .capacity_factor = 1.0f, .noise = MOEVK_NOISE_GAUSSIAN, .noise_amount = 1.0f,
     .chunks = 3},
    {"train_jitter_noisy_scores_losses", .train = 1, .losses = 1, .importance = 1,
     .experts_per_rank = 2, .k = 2, .d = 24, .f = 32, .tokens = 50, .capacity_mode = DROPLESS,
     .noise = MOEVK_NOISE_JITTER, .noise_amount = 0.3f, .renormalize = 1},
    /* Past 65536 tokens in all, one process's statistics blocks grow past 64 rows (65 here),
     * and cross the ranks' boundaries: the importance sums are still one process's bits. */
    {"train_importance_load_blocks_across_ranks", .train = 1, .losses = 1, .importance = 1,
     .load = 1, .experts_per_rank = 2, .k = 1, .d = 4, .f = 4, .tokens = 66000, .spread = 5,
     .capacity_mode = DROPLESS, .activation = MOEVK_ACTIVATION_RELU, .noise = MOEVK_NOISE_GAUSSIAN,
     .noise_amount = 0.5f},
    /* Shazeer et al.'s noisy top-k with both balancing losses, drops and the sequence loss. */
    {"train_load_importance_sequence_drops", .train = 1, .losses = 1, .importance = 1, .load = 1,
     .sequence = 10, .drops = 1, .experts_per_rank = 4, .k = 2, .d = 16, .f = 24, .tokens = 70,
     .spread = 4, .capacity_factor = 1.0f, .noise = MOEVK_NOISE_GAUSSIAN, .noise_amount = 1.0f},
};

static uint32_t experts_per_rank(const ep_case *c) {
    return c->experts ? c->experts / (uint32_t)ranks : c->experts_per_rank;
}

/* Each rank's tokens. The decode case keeps all ranks' together at most 8 (the decode path). */
static uint32_t tokens_of(const ep_case *c, int q) {
    switch (c->spread) {
    case 1: return q == 0 ? c->tokens : c->tokens / 16 + 1;
    case 2: return q == 1 ? 0 : c->tokens;
    case 3: return 0;
    case 4: return c->tokens; /* every rank the same */
    case 5: return c->tokens / (uint32_t)ranks + (uint32_t)q % 3;
    case 6: return c->tokens - (q == ranks - 1 ? 3 : 0); /* the last sequence short */
    default: return c->tokens + (uint32_t)q % 3;         /* a little uneven, odd sizes */
    }
}

static moevk_router_info router_info_of(const ep_case *c, uint32_t max_tokens) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = experts_per_rank(c) * (uint32_t)ranks;
    info.top_k = c->k < info.num_experts ? c->k : info.num_experts;
    info.max_tokens = max_tokens > 0 ? max_tokens : 1;
    info.hidden_size = c->d;
    info.hidden_type = c->hidden_type;
    info.capacity_mode = c->capacity_mode;
    if (c->capacity_factor > 0) info.capacity_factor = c->capacity_factor;
    info.capacity = c->capacity;
    info.pad_multiple = c->pad_multiple;
    info.renormalize = c->renormalize;
    if (c->sigmoid) info.score = MOEVK_SCORE_SIGMOID;
    if (c->score) info.drop_policy = MOEVK_DROP_SCORE;
    if (c->sequence_mode) {
        info.mode = MOEVK_MODE_SEQUENCE;
        info.sequence_length = c->sequence_mode;
    }
    info.noise = c->noise;
    info.noise_amount = c->noise_amount;
    info.noise_seed = 0x5eed;
    info.noisy_scores = c->noise != MOEVK_NOISE_NONE;
    return info;
}

static moevk_layer_info layer_info_of(const ep_case *c, const moevk_router_info *router) {
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = router;
    info.intermediate_size = c->f;
    info.activation = c->activation;
    info.weight_type = c->weight_type;
    info.biases = c->biases;
    info.shared_intermediate_size = c->shared_f;
    info.shared_gate = c->shared_gate;
    return info;
}

/* A weight of every expert (experts > 1) or of the layer, and its bytes per expert. */
typedef struct weight {
    moevk_layer_weight which;
    uint32_t experts;
    void *data;
    uint64_t expert_bytes;
} weight;

enum { WEIGHTS = 14 };

static void make_weights(const ep_case *c, uint32_t E, weight w[WEIGHTS]) {
    uint64_t d = c->d, f = c->f, fs = c->shared_f;
    moevk_dtype t = c->weight_type;
    int swiglu = c->activation == MOEVK_ACTIVATION_SWIGLU;
    float sd = 1.0f / sqrtf((float)d), sf = 1.0f / sqrtf((float)f);
    float sfs = fs ? 1.0f / sqrtf((float)fs) : 0.0f;
    weight all[WEIGHTS] = {
        {MOEVK_WEIGHT_ROUTER, 1, random_weights(E * d, MOEVK_DTYPE_F32, sd), E * d * 4},
        {MOEVK_WEIGHT_GATE, E, swiglu ? random_weights(E * f * d, t, sd) : NULL,
         weights_bytes(t, f * d)},
        {MOEVK_WEIGHT_UP, E, random_weights(E * f * d, t, sd), weights_bytes(t, f * d)},
        {MOEVK_WEIGHT_DOWN, E, random_weights(E * d * f, t, sf), weights_bytes(t, d * f)},
        {MOEVK_WEIGHT_GATE_BIAS, E,
         c->biases && swiglu ? random_weights(E * f, MOEVK_DTYPE_F32, 0.1f) : NULL, f * 4},
        {MOEVK_WEIGHT_UP_BIAS, E, c->biases ? random_weights(E * f, MOEVK_DTYPE_F32, 0.1f) : NULL,
         f * 4},
        {MOEVK_WEIGHT_DOWN_BIAS, E, c->biases ? random_weights(E * d, MOEVK_DTYPE_F32, 0.1f) : NULL,
         d * 4},
        {MOEVK_WEIGHT_SHARED_GATE, 1, fs && swiglu ? random_weights(fs * d, t, sd) : NULL,
         weights_bytes(t, fs * d)},
        {MOEVK_WEIGHT_SHARED_UP, 1, fs ? random_weights(fs * d, t, sd) : NULL,
         weights_bytes(t, fs * d)},
        {MOEVK_WEIGHT_SHARED_DOWN, 1, fs ? random_weights(d * fs, t, sfs) : NULL,
         weights_bytes(t, d * fs)},
        {MOEVK_WEIGHT_SHARED_GATE_BIAS, 1,
         fs && c->biases && swiglu ? random_weights(fs, MOEVK_DTYPE_F32, 0.1f) : NULL, fs * 4},
        {MOEVK_WEIGHT_SHARED_UP_BIAS, 1,
         fs && c->biases ? random_weights(fs, MOEVK_DTYPE_F32, 0.1f) : NULL, fs * 4},
        {MOEVK_WEIGHT_SHARED_DOWN_BIAS, 1,
         fs && c->biases ? random_weights(d, MOEVK_DTYPE_F32, 0.1f) : NULL, d * 4},
        {MOEVK_WEIGHT_SHARED_EXPERT_GATE, 1,
         c->shared_gate ? random_weights(d, MOEVK_DTYPE_F32, 0.3f) : NULL, d * 4},
    };
    if (c->ties && E > 1) memcpy((float *)all[0].data + d, all[0].data, d * 4);
    memcpy(w, all, sizeof all);
}

/* f32 elements of one expert's part of a weight's gradient. */
static uint64_t gradient_elements(const weight *w, moevk_dtype type) {
    int typed = w->which == MOEVK_WEIGHT_GATE || w->which == MOEVK_WEIGHT_UP ||
                w->which == MOEVK_WEIGHT_DOWN || w->which == MOEVK_WEIGHT_SHARED_GATE ||
                w->which == MOEVK_WEIGHT_SHARED_UP || w->which == MOEVK_WEIGHT_SHARED_DOWN;
    return w->expert_bytes / (typed && type != MOEVK_DTYPE_F32 ? 2 : 4);
}

/* One process's backward: what each rank's part is held to. */
typedef struct backward_want {
    float *grad_output, *grad_hidden, *grad_weights; /* [total, d], [total, d], [total, k] */
    float *gradients[WEIGHTS];                       /* every expert's, or the layer's */
    moevk_loss_info losses;
    moevk_losses values;
    /* After a second, accumulating backward: the optimizer step's weights and norm. */
    void *stepped[WEIGHTS];
    double grad_norm;
} backward_want;

/* A case's optimizer step: SGD with weight decay where it has losses (whose update follows
 * the gradient's rounding closely), else AdamW's first step (lr times about the sign). */
static moevk_optimizer_info case_step(const ep_case *c) {
    moevk_optimizer_info info;
    moevk_optimizer_info_init(&info);
    info.kind = c->losses ? MOEVK_OPTIMIZER_SGD : MOEVK_OPTIMIZER_ADAMW;
    info.learning_rate = c->losses ? 0.05f : 1e-3f;
    info.beta1 = 0.9f;
    info.beta2 = 0.999f;
    info.epsilon = 1e-8f;
    info.weight_decay = 0.01f;
    info.step = 1;
    return info;
}

/* How far a summed weight's step may go from one process's: SGD moves it by lr times its
 * (twice accumulated) gradient, summed in another order (1e-5 of the largest entry); AdamW's
 * first step by lr times about the gradient's sign, which that rounding may flip near 0. */
static double step_tolerance(const ep_case *c, const moevk_optimizer_info *step,
                             const float *gradient, uint64_t n) {
    if (!c->losses) return 2.5 * step->learning_rate;
    double largest = 0.0;
    for (uint64_t i = 0; i < n; ++i) largest = fmax(largest, fabs(gradient[i]));
    return step->learning_rate * 2.0 * 1e-5 * largest + 1e-7;
}

/* A stepped weight against one process's: within `absolute` plus 1e-5 of its size (f32), or
 * one rounding of a 16-bit type more. */
static int stepped_close(const void *got, const void *want, uint64_t n, moevk_dtype type,
                         double absolute, uint64_t *at) {
    double relative = type == MOEVK_DTYPE_F32 ? 1e-5 : type == F16 ? 2e-3 : 1.6e-2;
    for (uint64_t i = 0; i < n; ++i) {
        double a = ref_load(got, i, type), b = ref_load(want, i, type);
        if (!(fabs(a - b) <= absolute + relative * fabs(b))) {
            *at = i;
            return 0;
        }
    }
    return 1;
}

/* The losses a case's backward takes (NULL: none): those whose gradient is each token's. */
static const moevk_loss_info *case_losses(const ep_case *c, backward_want *want) {
    if (!c->losses) return NULL;
    moevk_loss_info_init(&want->losses);
    want->losses.aux_coef = 0.01f;
    want->losses.z_coef = 0.001f;
    want->losses.entropy_coef = 0.002f;
    if (c->sequence) {
        want->losses.sequence_coef = 0.003f;
        want->losses.sequence_length = c->sequence;
    }
    if (c->importance) want->losses.importance_coef = 0.004f;
    if (c->load) want->losses.load_coef = 0.005f;
    return &want->losses;
}

static void free_backward(backward_want *b) {
    free(b->grad_output), free(b->grad_hidden), free(b->grad_weights);
    for (int i = 0; i < WEIGHTS; ++i) free(b->gradients[i]), free(b->stepped[i]);
}

/* One forward's outputs. */
typedef struct outputs {
    void *output;
    float *logits, *weights;
    int32_t *ids, *slots;
    uint32_t *counts, *counts_before, *offsets;
    moevk_route_stats stats;
    moevk_route_output route;
    moevk_layer_output layer;
} outputs;

static int make_outputs(outputs *o, uint32_t T, const ep_case *c, uint32_t E, uint32_t k) {
    size_t hb = c->hidden_type == MOEVK_DTYPE_F32 ? 4 : 2;
    o->output = malloc((size_t)T * c->d * hb + 4);
    o->logits = malloc((size_t)T * E * 4 + 4);
    o->weights = malloc((size_t)T * k * 4 + 4);
    o->ids = malloc((size_t)T * k * 4 + 4);
    o->slots = malloc((size_t)T * k * 4 + 4);
    o->counts = calloc(3 * (size_t)E + 1, 4);
    o->counts_before = o->counts + E;
    o->offsets = o->counts + 2 * E;
    moevk_route_output_init(&o->route);
    o->route.expert_ids = moevk_host_tensor(o->ids);
    o->route.weights = moevk_host_tensor(o->weights);
    o->route.slots = moevk_host_tensor(o->slots);
    o->route.counts = moevk_host_tensor(o->counts);
    o->route.counts_before = moevk_host_tensor(o->counts_before);
    if (c->capacity_mode == DROPLESS) o->route.offsets = moevk_host_tensor(o->offsets);
    moevk_route_stats_init(&o->stats);
    o->route.stats = &o->stats;
    moevk_layer_output_init(&o->layer);
    o->layer.output = moevk_host_tensor(o->output);
    o->layer.router_logits = moevk_host_tensor(o->logits);
    o->layer.route = &o->route;
    return o->output && o->logits && o->weights && o->ids && o->slots && o->counts;
}

static void free_outputs(outputs *o) {
    free(o->output), free(o->logits), free(o->weights), free(o->ids), free(o->slots);
    free(o->counts);
}

static int close_to(double a, double b) { return fabs(a - b) <= 1e-5 * (1.0 + fabs(b)); }

/* An expert-parallel layer over every rank, waiting at most timeout_seconds for the others. */
static moevk_result create_chunked(moevk_router_info router, moevk_layer_info info,
                                   double timeout_seconds, uint32_t chunks, moevk_ep_layer **ep) {
    info.router = &router;
    moevk_ep_layer_info ep_info;
    moevk_ep_layer_info_init(&ep_info);
    ep_info.layer = &info;
    ep_info.comm = MPI_COMM_WORLD;
    ep_info.timeout_seconds = timeout_seconds;
    ep_info.exchange_chunks = chunks;
    *ep = NULL;
    return moevk_ep_layer_create(test_context(), &ep_info, ep);
}

static moevk_result create_with(moevk_router_info router, moevk_layer_info info,
                                double timeout_seconds, moevk_ep_layer **ep) {
    return create_chunked(router, info, timeout_seconds, 0, ep);
}

/* The forward's timings add up, and its bytes are what the rows' sizes say. */
static void check_timings(const moevk_ep_layer *ep, const ep_case *c, uint32_t chunks, uint32_t T,
                          const uint32_t *counts, uint32_t E) {
    moevk_ep_timings t;
    moevk_ep_timings_init(&t);
    moevk_result r = moevk_ep_layer_timings(ep, &t);
    /* (Before any check returns: every rank reduces.) Every byte a rank sends some rank receives:
     * the sums over the ranks agree. */
    uint64_t mine[3] = {t.bytes_to_others, t.bytes_from_others, t.bytes_to_self}, all[3];
    MPI_Allreduce(mine, all, 3, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    CHECK_OK(r);
    uint64_t rows = 0;
    for (uint32_t e = 0; e < E; ++e) rows += counts[e];
    uint64_t automatic = rows / E / MOEVK_EP_AUTO_CHUNK_ROWS;
    automatic = automatic < 1                          ? 1
                : automatic > MOEVK_EP_AUTO_MAX_CHUNKS ? MOEVK_EP_AUTO_MAX_CHUNKS
                                                       : automatic;
    CHECK(t.chunks == (chunks ? chunks : automatic), "chunks %u", t.chunks);
    CHECK(chunks || strcmp(c->name, "automatic_chunks") != 0 || t.chunks == 2,
          "automatic chunks %u", t.chunks);
    CHECK(t.forward_seconds > 0 && t.route_seconds >= 0 && t.combine_seconds >= 0 &&
              t.exchange_seconds >= 0 && t.experts_seconds >= 0 && t.exposed_seconds >= 0,
          "negative times");
    CHECK(t.route_seconds + t.exchange_seconds + t.combine_seconds <= t.forward_seconds * 1.0001,
          "the parts (%g, %g, %g s) pass the whole (%g s)", t.route_seconds, t.exchange_seconds,
          t.combine_seconds, t.forward_seconds);
    CHECK(t.experts_seconds + t.exposed_seconds <= t.exchange_seconds * 1.0001,
          "experts %g s and exposed %g s pass the exchange's %g s", t.experts_seconds,
          t.exposed_seconds, t.exchange_seconds);
    CHECK(all[0] == all[1], "%llu bytes sent, %llu received", (unsigned long long)all[0],
          (unsigned long long)all[1]);
    /* Each kept row goes out in hidden_type and comes back in f32, once. */
    uint64_t row = (uint64_t)c->d * ((c->hidden_type == F16 || c->hidden_type == BF16 ? 2 : 4) + 4);
    CHECK(all[0] + all[2] == rows * row, "%llu bytes exchanged for %llu kept rows of %llu bytes",
          (unsigned long long)(all[0] + all[2]), (unsigned long long)rows, (unsigned long long)row);
    CHECK(T > 0 || t.bytes_to_others + t.bytes_to_self == 0, "a rank without tokens sent");
}

/* Within the rounding of summing the ranks' parts in another order than one process's. */
static int close_in(const float *got, const float *want, size_t n, float scale, size_t *at) {
    float largest = 0;
    for (size_t i = 0; i < n; ++i) largest = fmaxf(largest, fabsf(want[i]));
    for (size_t i = 0; i < n; ++i) {
        double tolerance = 1e-5 * (fabs(want[i]) + largest) * scale + 1e-30;
        if (!(fabs((double)got[i] - scale * want[i]) <= tolerance)) {
            *at = i;
            return 0;
        }
    }
    return 1;
}

/* The expert-parallel backward of this rank's tokens against one process's, twice: the second
 * accumulating (every gradient then exactly twice the first's). dL/dx, dL/dweights and the
 * gradients of this rank's experts bit for bit; the router's and shared experts' (summed over
 * the ranks) within their rounding. */
static void check_backward(moevk_ep_layer *ep, const ep_case *c, const weight w[WEIGHTS],
                           const backward_want *want, uint32_t T, uint32_t base, uint32_t k,
                           uint32_t first, uint32_t count) {
    size_t d = c->d;
    float *gx = malloc((size_t)T * d * 4 + 4), *gw = malloc((size_t)T * k * 4 + 4);
    float *got[WEIGHTS] = {0};
    CHECK(gx && gw, "out of memory");
    for (int pass = 0; pass < 2; ++pass) {
        moevk_layer_backward_info info;
        moevk_layer_backward_info_init(&info);
        info.grad_output = moevk_host_tensor(want->grad_output + (size_t)base * d);
        info.grad_hidden = moevk_host_tensor(gx);
        info.grad_weights = moevk_host_tensor(gw);
        info.accumulate = pass;
        backward_want copy = *want;
        info.losses = case_losses(c, &copy);
        moevk_losses values;
        moevk_losses_init(&values);
        info.loss_values = info.losses ? &values : NULL;
        CHECK_OK(moevk_ep_layer_backward(ep, &info));
        CHECK(!info.losses ||
                  (close_to(values.aux, want->values.aux) && close_to(values.z, want->values.z) &&
                   close_to(values.entropy, want->values.entropy) &&
                   close_to(values.total, want->values.total)),
              "losses aux %.9g/%.9g z %.9g/%.9g entropy %.9g/%.9g total %.9g/%.9g", values.aux,
              want->values.aux, values.z, want->values.z, values.entropy, want->values.entropy,
              values.total, want->values.total);
        /* The sequences' totals summed as one process sums them: the same bits. */
        CHECK(!info.losses || values.sequence == want->values.sequence,
              "sequence loss %.17g, one process %.17g", values.sequence, want->values.sequence);
        CHECK(!c->sequence || values.sequence > 0.0, "no sequence loss");
        /* The importance sums added as one process adds them: the same bits. */
        CHECK(!info.losses || values.importance == want->values.importance,
              "importance loss %.17g, one process %.17g", values.importance,
              want->values.importance);
        CHECK(!c->importance || values.importance > 0.0, "no importance loss");
        CHECK(!info.losses || values.load == want->values.load,
              "load loss %.17g, one process %.17g", values.load, want->values.load);
        CHECK(!c->load || values.load > 0.0, "no load loss");
        CHECK(memcmp(gx, want->grad_hidden + (size_t)base * d, (size_t)T * d * 4) == 0,
              "pass %d: dL/dx differs from one process's", pass);
        CHECK(memcmp(gw, want->grad_weights + (size_t)base * k, (size_t)T * k * 4) == 0,
              "pass %d: dL/dweights differs from one process's", pass);
        /* Every rank reads the summed gradients (collective) before any check can return. */
        for (int i = 0; i < WEIGHTS; ++i) {
            if (!want->gradients[i]) continue;
            uint64_t n = gradient_elements(&w[i], c->weight_type);
            int routed = w[i].which >= MOEVK_WEIGHT_GATE && w[i].which <= MOEVK_WEIGHT_DOWN_BIAS;
            free(got[i]);
            got[i] = malloc((routed ? count : 1) * n * 4 + 4);
            CHECK(got[i], "out of memory");
            moevk_result r = routed ? moevk_ep_layer_read_gradient(ep, w[i].which, first, count,
                                                                   moevk_host_tensor(got[i]))
                                    : moevk_ep_layer_read_gradient(ep, w[i].which, 0, 1,
                                                                   moevk_host_tensor(got[i]));
            CHECK_OK(r);
        }
        for (int i = 0; i < WEIGHTS; ++i) {
            if (!want->gradients[i]) continue;
            uint64_t n = gradient_elements(&w[i], c->weight_type);
            int routed = w[i].which >= MOEVK_WEIGHT_GATE && w[i].which <= MOEVK_WEIGHT_DOWN_BIAS;
            const float *expected = want->gradients[i] + (routed ? (size_t)first * n : 0);
            size_t elements = (size_t)(routed ? count : 1) * n, at = 0;
            if (routed) {
                for (size_t e = 0; e < elements; ++e)
                    CHECK(got[i][e] == (pass + 1) * expected[e],
                          "pass %d: weight %d's gradient [%zu] %.9g, one process %.9g", pass,
                          (int)w[i].which, e, got[i][e], (pass + 1) * expected[e]);
            } else {
                CHECK(close_in(got[i], expected, elements, (float)(pass + 1), &at),
                      "pass %d: weight %d's summed gradient [%zu] %.9g, one process %.9g", pass,
                      (int)w[i].which, at, got[i][at], (pass + 1) * expected[at]);
            }
        }
    }
    free(gx), free(gw);
    for (int i = 0; i < WEIGHTS; ++i) free(got[i]);
    /* One step (collective): this rank's routed experts' weights one process's bit for bit; the
     * router's and shared experts' within their summed gradients' rounding (AdamW's first step
     * moves a weight by lr times about its gradient's sign, which rounding may flip near 0). */
    moevk_optimizer_info step = case_step(c);
    double norm = 0.0;
    CHECK_OK(moevk_ep_layer_optimizer_step(ep, &step, &norm));
    CHECK(close_to(norm, want->grad_norm), "grad_norm %.9g, one process %.9g", norm,
          want->grad_norm);
    for (int i = 0; i < WEIGHTS; ++i) {
        if (!want->stepped[i]) continue;
        int routed = w[i].which >= MOEVK_WEIGHT_GATE && w[i].which <= MOEVK_WEIGHT_DOWN_BIAS;
        uint64_t experts = routed ? count : 1, bytes = experts * w[i].expert_bytes;
        void *mine = malloc(bytes + 4);
        CHECK(mine, "out of memory");
        moevk_result r = moevk_ep_layer_read_weights(ep, w[i].which, routed ? first : 0,
                                                     (uint32_t)experts, moevk_host_tensor(mine));
        const char *expected =
            (const char *)want->stepped[i] + (routed ? first * w[i].expert_bytes : 0);
        int typed = w[i].which == MOEVK_WEIGHT_SHARED_GATE ||
                    w[i].which == MOEVK_WEIGHT_SHARED_UP || w[i].which == MOEVK_WEIGHT_SHARED_DOWN;
        uint64_t n = bytes / (typed && c->weight_type != MOEVK_DTYPE_F32 ? 2 : 4), at = 0;
        int same =
            r == MOEVK_SUCCESS &&
            (routed ? memcmp(mine, expected, bytes) == 0
                    : stepped_close(mine, expected, n, typed ? c->weight_type : MOEVK_DTYPE_F32,
                                    step_tolerance(c, &step, want->gradients[i], n), &at));
        free(mine);
        CHECK(same, "weight %d after the step differs from one process's (%s, at %llu)",
              (int)w[i].which, routed ? "routed" : "summed", (unsigned long long)at);
    }
    /* The step leaves the gradients the ranks hold as they were: the router's still sums to
     * twice one process's. */
    uint64_t n = gradient_elements(&w[0], c->weight_type), at = 0;
    float *router_grad = malloc(n * 4 + 4);
    CHECK(router_grad, "out of memory");
    moevk_result r =
        moevk_ep_layer_read_gradient(ep, MOEVK_WEIGHT_ROUTER, 0, 1, moevk_host_tensor(router_grad));
    int kept = r == MOEVK_SUCCESS && close_in(router_grad, want->gradients[0], n, 2.0f, &at);
    free(router_grad);
    CHECK(kept, "the router's gradient after the step [%llu] is not what the backward left",
          (unsigned long long)at);
}

/* One process's backward of its last forward, and its gradients. */
static void reference_backward(moevk_layer *single, const ep_case *c, const weight w[WEIGHTS],
                               uint32_t total, uint32_t k, backward_want *want) {
    size_t d = c->d;
    want->grad_output = random_weights((uint64_t)total * d + 1, MOEVK_DTYPE_F32, 1.0f);
    want->grad_hidden = malloc((size_t)total * d * 4 + 4);
    want->grad_weights = malloc((size_t)total * k * 4 + 4);
    CHECK(want->grad_output && want->grad_hidden && want->grad_weights, "out of memory");
    moevk_layer_backward_info info;
    moevk_layer_backward_info_init(&info);
    info.grad_output = moevk_host_tensor(want->grad_output);
    info.grad_hidden = moevk_host_tensor(want->grad_hidden);
    info.grad_weights = moevk_host_tensor(want->grad_weights);
    info.losses = case_losses(c, want);
    moevk_losses_init(&want->values);
    info.loss_values = &want->values;
    CHECK_OK(moevk_layer_backward(single, &info));
    for (int i = 0; i < WEIGHTS; ++i) {
        if (!w[i].data) continue;
        want->gradients[i] = malloc(w[i].experts * gradient_elements(&w[i], c->weight_type) * 4);
        CHECK(want->gradients[i], "out of memory");
        CHECK_OK(moevk_layer_read_gradient(single, w[i].which, 0, w[i].experts,
                                           moevk_host_tensor(want->gradients[i])));
    }
    /* The expert-parallel check backs up twice, the second accumulating; then one step. */
    info.accumulate = 1;
    CHECK_OK(moevk_layer_backward(single, &info));
    moevk_optimizer_info step = case_step(c);
    CHECK_OK(moevk_layer_optimizer_step(single, &step, &want->grad_norm));
    for (int i = 0; i < WEIGHTS; ++i) {
        if (!w[i].data) continue;
        want->stepped[i] = malloc(w[i].experts * w[i].expert_bytes + 4);
        CHECK(want->stepped[i], "out of memory");
        CHECK_OK(moevk_layer_read_weights(single, w[i].which, 0, w[i].experts,
                                          moevk_host_tensor(want->stepped[i])));
    }
}

/* Every rank's part of the test: the reference forward, the expert-parallel one, compared. */
static void check_case(const ep_case *c) {
    uint32_t per_rank = experts_per_rank(c), E = per_rank * (uint32_t)ranks, total = 0, base = 0,
             max_T = 0;
    for (int q = 0; q < ranks; ++q) {
        uint32_t n = tokens_of(c, q);
        if (q < rank) base += n;
        total += n;
        if (n > max_T) max_T = n;
    }
    uint32_t T = tokens_of(c, rank);
    moevk_router_info router = router_info_of(c, total);
    moevk_layer_info info = layer_info_of(c, &router);
    info.trainable = c->train;
    uint32_t k = router.top_k;
    weight w[WEIGHTS];
    make_weights(c, E, w);
    size_t hb = c->hidden_type == MOEVK_DTYPE_F32 ? 4 : 2, row = (size_t)c->d * hb;
    float *values = random_weights((uint64_t)total * c->d + 1, MOEVK_DTYPE_F32, 1.0f);
    void *hidden = malloc((size_t)total * row + 4);
    float bias[1024];
    for (uint32_t e = 0; e < E; ++e) bias[e] = c->skew && e >= E - per_rank ? 1.5f : 0;
    CHECK(values && hidden, "out of memory");
    for (uint64_t i = 0; i < (uint64_t)total * c->d; ++i)
        ref_store(hidden, i, c->hidden_type,
                  values[c->repeat_rows ? i % ((uint64_t)c->repeat_rows * c->d) : i]);
    if (c->nan_token && total > 0) {
        float nan = NAN;
        memcpy(hidden, &nan, 4); /* f32; the top bits of a NaN in 16-bit types too */
        if (hb == 2) ((uint16_t *)hidden)[0] = c->hidden_type == F16 ? 0x7e00 : 0x7fc0;
    }
    free(values);

    /* One process's layer over every rank's tokens. */
    moevk_layer *single = NULL;
    CHECK_OK(moevk_layer_create(test_context(), &info, &single));
    for (int i = 0; i < WEIGHTS; ++i)
        if (w[i].data)
            CHECK_OK(moevk_layer_set_weights(single, w[i].which, 0, w[i].experts,
                                             moevk_host_tensor(w[i].data)));
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = total;
    input.hidden = moevk_host_tensor(hidden);
    input.bias = moevk_host_tensor(c->sequence_mode ? NULL : bias); /* TOKEN mode only */
    if (c->noise) input.step = 4, input.layer = 1;
    outputs want, got;
    CHECK(make_outputs(&want, total, c, E, k) && make_outputs(&got, T, c, E, k), "out of memory");
    CHECK_OK(moevk_layer_forward(single, &input, &want.layer));
    backward_want backward = {0};
    if (c->train) reference_backward(single, c, w, total, k, &backward);
    moevk_layer_destroy(single);
    /* (The cases are sized for 2 and 4 ranks: at one, some have k = E and cannot drop.) */
    CHECK(!c->drops || k == E || want.stats.dropped > 0,
          "the capacity drops nothing: the case tests less");
    CHECK(c->capacity_mode != FIXED || want.stats.unrouted_tokens > 0, "no unrouted tokens");

    /* The expert-parallel layer, each rank its own tokens and experts. */
    router.max_tokens = T > 0 ? T : 1;
    input.num_tokens = T;
    input.hidden = moevk_host_tensor((char *)hidden + (size_t)base * row);
    /* Twice, on one chunk and on the case's: the same bits every run, whatever the overlap. */
    for (int run = 0; run < (c->train ? 1 : 2); ++run) {
        uint32_t chunks = run == 0 ? 1 : c->chunks;
        moevk_ep_layer *ep = NULL;
        CHECK_OK(create_chunked(router, info, 120, chunks, &ep));
        uint32_t first = 0, count = 0;
        CHECK_OK(moevk_ep_layer_experts(ep, NULL, NULL, &first, &count));
        CHECK(first == (uint32_t)rank * per_rank && count == per_rank, "rank %d owns [%u, +%u)",
              rank, first, count);
        for (int i = 0; i < WEIGHTS; ++i) {
            if (!w[i].data) continue;
            int routed = w[i].experts > 1 ||
                         (w[i].which >= MOEVK_WEIGHT_GATE && w[i].which <= MOEVK_WEIGHT_DOWN_BIAS);
            const char *data = w[i].data;
            if (routed)
                CHECK_OK(moevk_ep_layer_set_weights(
                    ep, w[i].which, first, count,
                    moevk_host_tensor(data + (size_t)first * w[i].expert_bytes)));
            else
                CHECK_OK(moevk_ep_layer_set_weights(ep, w[i].which, 0, 1, moevk_host_tensor(data)));
        }
        CHECK_OK(moevk_ep_layer_forward(ep, &input, &got.layer));
        CHECK(memcmp(got.output, (char *)want.output + (size_t)base * row, (size_t)T * row) == 0,
              "run %d: the layer's output differs from one process's", run);
        CHECK(memcmp(got.logits, want.logits + (size_t)base * E, (size_t)T * E * 4) == 0,
              "router logits differ");
        size_t at = (size_t)base * k, n = (size_t)T * k * 4;
        CHECK(memcmp(got.ids, want.ids + at, n) == 0, "expert_ids differ");
        CHECK(memcmp(got.weights, want.weights + at, n) == 0, "weights differ");
        for (size_t i = 0; i < (size_t)T * k; ++i)
            CHECK(got.slots[i] == want.slots[at + i], "slot of choice %zu: %d, one process %d", i,
                  got.slots[i], want.slots[at + i]);
        CHECK(memcmp(got.counts, want.counts, 2 * (size_t)E * 4) == 0, "counts differ");
        if (c->capacity_mode == DROPLESS)
            CHECK(memcmp(got.offsets, want.offsets, ((size_t)E + 1) * 4) == 0, "offsets differ");
        const moevk_route_stats *g = &got.stats, *s = &want.stats;
        CHECK(g->capacity == s->capacity && g->dispatched_rows == s->dispatched_rows &&
                  g->assignments == s->assignments && g->dropped == s->dropped &&
                  g->nonfinite_rows == s->nonfinite_rows && g->masked_rows == s->masked_rows &&
                  g->unrouted_tokens == s->unrouted_tokens,
              "stats: capacity %u/%u rows %u/%u assignments %llu/%llu dropped %llu/%llu "
              "non-finite %u/%u unrouted %u/%u",
              g->capacity, s->capacity, g->dispatched_rows, s->dispatched_rows,
              (unsigned long long)g->assignments, (unsigned long long)s->assignments,
              (unsigned long long)g->dropped, (unsigned long long)s->dropped, g->nonfinite_rows,
              s->nonfinite_rows, g->unrouted_tokens, s->unrouted_tokens);
        CHECK(close_to(g->aux_loss, s->aux_loss) && close_to(g->z_loss, s->z_loss) &&
                  close_to(g->mean_logsumexp, s->mean_logsumexp) &&
                  close_to(g->entropy, s->entropy) && g->drop_fraction == s->drop_fraction,
              "stats: aux %.9g/%.9g z %.9g/%.9g lse %.9g/%.9g entropy %.9g/%.9g", g->aux_loss,
              s->aux_loss, g->z_loss, s->z_loss, g->mean_logsumexp, s->mean_logsumexp, g->entropy,
              s->entropy);
        check_timings(ep, c, chunks, T, want.counts, E);
        if (c->train) check_backward(ep, c, w, &backward, T, base, k, first, count);
        moevk_ep_layer_destroy(ep);
    }
    free_backward(&backward);
    free_outputs(&want);
    free_outputs(&got);
    free(hidden);
    for (int i = 0; i < WEIGHTS; ++i) free(w[i].data);
}

/* The same result and message on every rank (rank 0's message against each one's). */
static void check_agreed(moevk_result r, moevk_result expected, const char *words) {
    char message[512] = {0}, first[512] = {0};
    snprintf(message, sizeof message, "%s", moevk_context_last_error(test_context()));
    memcpy(first, message, sizeof first);
    MPI_Bcast(first, sizeof first, MPI_CHAR, 0, MPI_COMM_WORLD);
    CHECK(r == expected, "rank %d: got %s (%s)", rank, moevk_result_string(r), message);
    CHECK(strstr(message, words) != NULL, "rank %d: '%s' does not say '%s'", rank, message, words);
    CHECK(strcmp(message, first) == 0, "rank %d: '%s', rank 0: '%s'", rank, message, first);
}

static const ep_case SMALL = {"small", .experts_per_rank = 2, .k = 2, .d = 16, .f = 24};

static void test_ranks_that_disagree_fail_alike(void) {
    moevk_router_info router = router_info_of(&SMALL, 8);
    moevk_layer_info info = layer_info_of(&SMALL, &router);
    moevk_ep_layer *ep = NULL;
    if (ranks < 2) return; /* one rank agrees with itself */
    if (rank == ranks - 1) router.top_k = 1;
    check_agreed(create_with(router, info, 60, &ep), MOEVK_ERROR_INVALID_ARGUMENT, "top_k");
    CHECK(ep == NULL, "no layer");
    router = router_info_of(&SMALL, 8);
    if (rank == 1) info.weight_type = F16;
    check_agreed(create_with(router, info, 60, &ep), MOEVK_ERROR_INVALID_ARGUMENT, "weight_type");
    info = layer_info_of(&SMALL, &router);
    if (rank == 0) router.capacity_factor = 2.0f;
    check_agreed(create_with(router, info, 60, &ep), MOEVK_ERROR_INVALID_ARGUMENT,
                 "capacity_factor");
}

static void test_experts_must_split_evenly(void) {
    moevk_router_info router = router_info_of(&SMALL, 8);
    moevk_layer_info info = layer_info_of(&SMALL, &router);
    moevk_ep_layer *ep = NULL;
    if (ranks < 2) return;
    router.num_experts = 2 * (uint32_t)ranks + 1;
    check_agreed(create_with(router, info, 60, &ep), MOEVK_ERROR_INVALID_ARGUMENT, "multiple of R");
}

static void test_what_is_not_offered_is_unsupported(void) {
    moevk_router_info router = router_info_of(&SMALL, 8);
    moevk_layer_info info = layer_info_of(&SMALL, &router);
    moevk_ep_layer *ep = NULL;
    router.mode = MOEVK_MODE_EXPERT_CHOICE;
    check_agreed(create_with(router, info, 60, &ep), MOEVK_ERROR_UNSUPPORTED,
                 "TOKEN and SEQUENCE modes only");
    /* The SEQUENCE mode: a sequence split over two ranks is refused on every rank. */
    router.mode = MOEVK_MODE_SEQUENCE;
    router.sequence_length = 4;
    CHECK_OK(create_with(router, info, 60, &ep));
    float hidden[8 * 16], out[8 * 16];
    for (int i = 0; i < 8 * 16; ++i) hidden[i] = rng_normal();
    moevk_route_input split;
    moevk_route_input_init(&split);
    split.num_tokens = rank == 0 && ranks > 1 ? 6 : 8;
    split.hidden = moevk_host_tensor(hidden);
    moevk_layer_output split_out;
    moevk_layer_output_init(&split_out);
    split_out.output = moevk_host_tensor(out);
    check_agreed(moevk_ep_layer_forward(ep, &split, &split_out),
                 ranks > 1 ? MOEVK_ERROR_INVALID_ARGUMENT : MOEVK_SUCCESS,
                 ranks > 1 ? "a multiple of sequence_length 4" : "");
    moevk_ep_layer_destroy(ep);
    /* A trainable layer's backward needs a forward first, and the load loss noise. */
    router = router_info_of(&SMALL, 8);
    info.trainable = 1;
    CHECK_OK(create_with(router, info, 60, &ep));
    moevk_layer_backward_info backward;
    moevk_layer_backward_info_init(&backward);
    check_agreed(moevk_ep_layer_backward(ep, &backward), MOEVK_ERROR_INVALID_ARGUMENT,
                 "forward first");
    moevk_route_input input;
    moevk_route_input_init(&input);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    CHECK_OK(moevk_ep_layer_forward(ep, &input, &output)); /* no tokens anywhere */
    moevk_loss_info losses;
    moevk_loss_info_init(&losses);
    losses.load_coef = 0.01f;
    backward.losses = &losses;
    check_agreed(moevk_ep_layer_backward(ep, &backward), MOEVK_ERROR_INVALID_ARGUMENT,
                 "the load loss needs the router's Gaussian noise");
    /* Losses whose gradient gathers over the ranks: asked for on some ranks only. */
    moevk_loss_info_init(&losses);
    losses.importance_coef = rank == 1 ? 0.01f : 0.0f;
    check_agreed(moevk_ep_layer_backward(ep, &backward), MOEVK_ERROR_INVALID_ARGUMENT,
                 "the ranks disagree on the importance loss: rank 1 asks for it, rank 0 does not");
    moevk_loss_info_init(&losses);
    losses.load_coef = rank == 1 ? 0.0f : 0.01f;
    check_agreed(moevk_ep_layer_backward(ep, &backward), MOEVK_ERROR_INVALID_ARGUMENT,
                 "the load loss needs the router's Gaussian noise");
    moevk_loss_info_init(&losses);
    losses.sequence_coef = rank == 1 ? 0.01f : 0.0f;
    losses.sequence_length = 4;
    check_agreed(moevk_ep_layer_backward(ep, &backward), MOEVK_ERROR_INVALID_ARGUMENT,
                 "the ranks disagree on the sequence loss: rank 1 asks for it");
    backward.losses = NULL;
    CHECK_OK(moevk_ep_layer_backward(ep, &backward));
    moevk_ep_layer_destroy(ep);
}

/* One rank's bad call fails every rank's forward with its message; the layer still works. */
static void test_a_rank_that_fails_fails_every_rank(void) {
    moevk_router_info router = router_info_of(&SMALL, 8);
    moevk_layer_info info = layer_info_of(&SMALL, &router);
    moevk_ep_layer *ep = NULL;
    CHECK_OK(create_with(router, info, 60, &ep));
    float hidden[9 * 16];
    for (int i = 0; i < 9 * 16; ++i) hidden[i] = rng_normal();
    float output[9 * 16];
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = rank == ranks - 1 ? 9 : 4; /* past max_tokens 8 */
    input.hidden = moevk_host_tensor(hidden);
    moevk_layer_output out;
    moevk_layer_output_init(&out);
    out.output = moevk_host_tensor(output);
    char words[64];
    snprintf(words, sizeof words, "rank %d: num_tokens 9", ranks - 1);
    check_agreed(moevk_ep_layer_forward(ep, &input, &out), MOEVK_ERROR_INVALID_ARGUMENT, words);
    input.num_tokens = 4;
    CHECK_OK(moevk_ep_layer_forward(ep, &input, &out));
    /* Experts of another rank are not this rank's to set. */
    uint32_t other = ((uint32_t)rank + 1) % (uint32_t)ranks * 2;
    if (ranks > 1)
        CHECK(moevk_ep_layer_set_weights(ep, MOEVK_WEIGHT_UP, other, 1,
                                         moevk_host_tensor(hidden)) == MOEVK_ERROR_INVALID_ARGUMENT,
              "another rank's expert");
    moevk_ep_layer_destroy(ep);
    /* The backward too: the last rank's bad call is every rank's, and the layer goes on. */
    info.trainable = 1;
    CHECK_OK(create_with(router, info, 60, &ep));
    CHECK_OK(moevk_ep_layer_forward(ep, &input, &out));
    float grad_hidden[9 * 16];
    moevk_layer_backward_info backward;
    moevk_layer_backward_info_init(&backward);
    backward.grad_output = moevk_host_tensor(rank == ranks - 1 ? NULL : hidden);
    backward.grad_hidden = moevk_host_tensor(grad_hidden);
    snprintf(words, sizeof words, "rank %d: an expert-parallel", ranks - 1);
    check_agreed(moevk_ep_layer_backward(ep, &backward), MOEVK_ERROR_INVALID_ARGUMENT, words);
    backward.grad_output = moevk_host_tensor(hidden);
    CHECK_OK(moevk_ep_layer_backward(ep, &backward));
    /* A routed expert's gradient is read on its own rank only. */
    if (ranks > 1)
        CHECK(moevk_ep_layer_read_gradient(ep, MOEVK_WEIGHT_UP, other, 1,
                                           moevk_host_tensor(hidden)) ==
                  MOEVK_ERROR_INVALID_ARGUMENT,
              "another rank's expert's gradient");
    moevk_ep_layer_destroy(ep);
}

/* A rank that does not come is waited for at most the timeout: the others get PEER, not a hang,
 * and so does the late rank when it comes (the others have given up). */
static void test_a_rank_that_does_not_answer_times_out(void) {
    if (ranks < 2) return;
    moevk_router_info router = router_info_of(&SMALL, 8);
    moevk_layer_info info = layer_info_of(&SMALL, &router);
    moevk_ep_layer *ep = NULL;
    CHECK_OK(create_with(router, info, 1.0, &ep));
    float hidden[4 * 16], output[4 * 16];
    for (int i = 0; i < 4 * 16; ++i) hidden[i] = rng_normal();
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = 4;
    input.hidden = moevk_host_tensor(hidden);
    moevk_layer_output out;
    moevk_layer_output_init(&out);
    out.output = moevk_host_tensor(output);
    if (rank == ranks - 1) {
        struct timespec pause = {2, 500000000};
        nanosleep(&pause, NULL);
    }
    moevk_result r = moevk_ep_layer_forward(ep, &input, &out);
    const char *message = moevk_context_last_error(test_context());
    CHECK(r == MOEVK_ERROR_PEER, "rank %d: %s (%s)", rank, moevk_result_string(r), message);
    CHECK(strstr(message, "no answer") != NULL, "rank %d: %s", rank, message);
    r = moevk_ep_layer_forward(ep, &input, &out);
    CHECK(r == MOEVK_ERROR_PEER, "a broken layer takes only destroy");
    /* By now the late rank has joined the first ranks' exchange (they free everything); its
     * own next one is never answered, so its layer's memory stays with MPI, on purpose. */
    MPI_Barrier(MPI_COMM_WORLD);
#if defined(__SANITIZE_ADDRESS__)
    if (rank == ranks - 1) __lsan_ignore_object(ep);
#endif
    moevk_ep_layer_destroy(ep);
}

/* A rank's failure is every rank's test failure (the counts agree across ranks). */
static void agree_on_failure(void) {
    int mine = test_failed(), any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any && !mine) test_fail(__FILE__, __LINE__, "another rank failed (MOEVK_TEST_ALL_RANKS=1)");
}

static const ep_case *running;
static void run_case(const void *row) {
    running = row;
    check_case(running);
    agree_on_failure();
}

#define AGREED(name)                                                                               \
    static void agreed_##name(void) {                                                              \
        test_##name();                                                                             \
        agree_on_failure();                                                                        \
    }
AGREED(ranks_that_disagree_fail_alike)
AGREED(experts_must_split_evenly)
AGREED(what_is_not_offered_is_unsupported)
AGREED(a_rank_that_fails_fails_every_rank)
AGREED(a_rank_that_does_not_answer_times_out)

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    /* The same seed on every rank: rank 0's. */
    const char *seed_text = getenv("MOEVK_TEST_SEED");
    unsigned long long seed =
        seed_text ? strtoull(seed_text, NULL, 10) : (unsigned long long)time(NULL);
    MPI_Bcast(&seed, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    char text[32];
    snprintf(text, sizeof text, "%llu", seed);
    setenv("MOEVK_TEST_SEED", text, 1);
    const char *all = getenv("MOEVK_TEST_ALL_RANKS");
    if (rank != 0 && !(all && strcmp(all, "1") == 0)) (void)!freopen("/dev/null", "w", stdout);
    if (rank == 0) printf("# %d ranks\n", ranks);
    static const test_case functions[] = {
        {"ranks_that_disagree_fail_alike", agreed_ranks_that_disagree_fail_alike, NULL, NULL},
        {"experts_must_split_evenly", agreed_experts_must_split_evenly, NULL, NULL},
        {"what_is_not_offered_is_unsupported", agreed_what_is_not_offered_is_unsupported, NULL,
         NULL},
        {"a_rank_that_fails_fails_every_rank", agreed_a_rank_that_fails_fails_every_rank, NULL,
         NULL},
        {"a_rank_that_does_not_answer_times_out", agreed_a_rank_that_does_not_answer_times_out,
         NULL, NULL},
    };
    int status =
        test_main_with_table(CASES, sizeof CASES / sizeof CASES[0], sizeof CASES[0], run_case,
                             functions, sizeof functions / sizeof functions[0], argc, argv);
    MPI_Finalize();
    return status;
}
