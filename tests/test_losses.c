/* Balancing losses and the router's backward: the device's loss values and dL/dlogits against
 * the CPU reference (double), the reference's gradient against central finite differences of
 * its own forward pass, the combine's backward, replay bit for bit, and the errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"

typedef enum special_rows {
    ROWS_PLAIN,
    ROWS_AWKWARD, /* -inf experts, a fully masked row, a NaN row, a +inf row, exact ties */
    ROWS_HUGE,    /* logits around +-1e3 */
} special_rows;

typedef struct loss_case {
    const char *name;
    moevk_router_info info;
    uint32_t num_tokens;
    moevk_loss_info loss;
    int with_bias, with_grad_weights;
    special_rows rows;
    uint32_t step, layer;
    int finite_differences; /* also check the reference against finite differences */
    int large;              /* no central differences in the stds either (too slow) */
    /* Set when, of many tokens with Gaussian noise, one or two were decided differently by the
     * reference: near ties of keys whose noise differs by an ulp (exp, log and cos are the
     * device's); the caller draws new inputs. More than two fail the test. */
    int *near_tie;
    enum { STD_ROUTER, STD_PER_EXPERT, STD_LEARNED } noise_std; /* the Gaussian noise's std */
} loss_case;

static moevk_router_info router_info(uint32_t E, uint32_t k, uint32_t T) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.num_experts = E;
    info.top_k = k;
    info.max_tokens = T > 0 ? T : 1;
    info.losses = 1;
    return info;
}

static moevk_loss_info all_losses(void) {
    moevk_loss_info loss = {0};
    loss.aux_coef = 0.01f;
    loss.z_coef = 0.001f;
    loss.importance_coef = 0.1f;
    loss.entropy_coef = -0.05f;
    return loss;
}

static void fill_logits(const loss_case *c, float *logits) {
    uint32_t T = c->num_tokens, E = c->info.num_experts;
    for (uint64_t i = 0; i < (uint64_t)T * E; ++i)
        logits[i] = c->rows == ROWS_HUGE ? 1000.0f * rng_normal() : 2.0f * rng_normal();
    if (c->rows != ROWS_AWKWARD) return;
    for (uint32_t t = 0; t < T; ++t) {
        float *row = logits + (uint64_t)t * E;
        if (E > 2 && t % 3 == 0) row[rng_u32() % E] = -INFINITY;
        if (E > 3 && t % 5 == 1) row[2] = row[1]; /* an exact tie */
    }
    if (T > 4) {
        for (uint32_t e = 0; e < E; ++e) logits[(uint64_t)2 * E + e] = -INFINITY;
        logits[(uint64_t)3 * E] = NAN;
        logits[(uint64_t)4 * E + E - 1] = INFINITY;
    }
}

/* logits as the router reads them (f16 rounds), in double. */
static void as_read(const moevk_router_info *info, const float *logits, uint64_t n, double *out,
                    uint16_t *halves) {
    for (uint64_t i = 0; i < n; ++i) {
        if (info->logits_type == MOEVK_DTYPE_F16) {
            halves[i] = ref_float_to_half(logits[i]);
            out[i] = ref_half_to_float(halves[i]);
        } else {
            out[i] = logits[i];
        }
    }
}

static int close_to(double got, double want, double tolerance) {
    if (isnan(got) || isnan(want)) return 0;
    return fabs(got - want) <= tolerance;
}

/* Central differences of the reference's forward pass at up to `samples` entries whose
 * selection does not change within the step. */
static void check_finite_differences(const loss_case *c, const ref_call *call, const double *logits,
                                     const float *bias, const double *grad_weights,
                                     const double *analytic) {
    const moevk_router_info *info = &c->info;
    uint32_t T = c->num_tokens, E = info->num_experts, K = info->top_k;
    uint64_t n = (uint64_t)T * E;
    double *moved = malloc(n * sizeof *moved);
    int32_t *ids = malloc(((uint64_t)T * K + 1) * sizeof *ids);
    int32_t *ids_moved = malloc(((uint64_t)T * K + 1) * sizeof *ids);
    CHECK(moved && ids && ids_moved, "out of memory");
    memcpy(moved, logits, n * sizeof *moved);
    ref_loss_forward(info, call, &c->loss, T, logits, bias, grad_weights, NULL, ids);
    int checked = 0;
    for (int attempt = 0; attempt < 200 && checked < 40 && n > 0; ++attempt) {
        uint64_t i = rng_u32() % n;
        if (!isfinite(logits[i])) continue;
        double h = 1e-6 * fmax(1.0, fabs(logits[i]));
        moved[i] = logits[i] + h;
        double up =
            ref_loss_forward(info, call, &c->loss, T, moved, bias, grad_weights, NULL, ids_moved);
        int same = !memcmp(ids, ids_moved, (uint64_t)T * K * sizeof *ids);
        moved[i] = logits[i] - h;
        double down =
            ref_loss_forward(info, call, &c->loss, T, moved, bias, grad_weights, NULL, ids_moved);
        same = same && !memcmp(ids, ids_moved, (uint64_t)T * K * sizeof *ids);
        moved[i] = logits[i];
        if (!same) continue; /* the step crossed a selection boundary */
        double numeric = (up - down) / (2.0 * h);
        if (!close_to(numeric, analytic[i], 1e-6 + 1e-5 * fabs(analytic[i]))) {
            test_fail(__FILE__, __LINE__,
                      "%s: finite difference at [%llu, %llu]: %.9g, analytic %.9g", c->name,
                      (unsigned long long)(i / E), (unsigned long long)(i % E), numeric,
                      analytic[i]);
            break;
        }
        ++checked;
    }
    if (n > 0 && checked == 0 && !test_failed())
        test_fail(__FILE__, __LINE__, "%s: no entry could be differentiated", c->name);
    free(moved);
    free(ids);
    free(ids_moved);
}

/* The std's gradient: the device's against the reference's (summed per expert, or through
 * softplus' into W_noise), and the reference's against central differences of its forward
 * pass in each std (the step taken between the float stds actually reached). */
static void check_std_gradient(const loss_case *c, ref_call *call, const double *logits,
                               const float *bias, const double *grad_weights,
                               const double *want_std, const float *got, const float *hidden,
                               const float *noise_weights, float *stds) {
    const moevk_router_info *info = &c->info;
    uint32_t T = c->num_tokens, E = info->num_experts, K = info->top_k, d = info->hidden_size;
    int learned = c->noise_std == STD_LEARNED;
    uint32_t results = learned ? d * E : E;
    double want[MOEVK_MAX_EXPERTS * 16], scale = 1e-30;
    CHECK(results <= MOEVK_MAX_EXPERTS * 16, "too many results");
    for (uint32_t i = 0; i < results; ++i) {
        uint32_t e = i % E, j = i / E;
        double sum = 0.0;
        for (uint32_t t = 0; t < T; ++t) {
            double g = want_std[(uint64_t)t * E + e];
            if (learned) {
                double z = 0.0; /* softplus'(z) = sigmoid(z) */
                for (uint32_t m = 0; m < d; ++m)
                    z += (double)hidden[(uint64_t)t * d + m] * noise_weights[(uint64_t)m * E + e];
                g *= hidden[(uint64_t)t * d + j] / (1.0 + exp(-z));
            }
            sum += g;
        }
        want[i] = sum;
        scale = fmax(scale, fabs(sum));
    }
    for (uint32_t i = 0; i < results; ++i)
        CHECK(close_to(got[i], want[i], 1e-6 + 2e-4 * scale),
              "%s: dL/d%s[%u] = %.9g, reference %.9g", c->name, learned ? "W_noise" : "std", i,
              (double)got[i], want[i]);
    if (c->large) return;
    /* Central differences in the stds (per expert, or per token and expert). */
    uint64_t n = learned ? (uint64_t)T * E : E;
    int32_t *ids = malloc(((uint64_t)T * K + 1) * sizeof *ids);
    int32_t *moved_ids = malloc(((uint64_t)T * K + 1) * sizeof *ids);
    CHECK(ids && moved_ids, "out of memory");
    ref_loss_forward(info, call, &c->loss, T, logits, bias, grad_weights, NULL, ids);
    int checked = 0;
    for (int attempt = 0; attempt < 100 && checked < 20; ++attempt) {
        uint64_t i = learned ? rng_u32() % n : (uint64_t)attempt % n;
        float base = stds[i];
        float up = base * (1.0f + 1e-5f), down = base * (1.0f - 1e-5f);
        stds[i] = up;
        double f_up =
            ref_loss_forward(info, call, &c->loss, T, logits, bias, grad_weights, NULL, moved_ids);
        int same = !memcmp(ids, moved_ids, (uint64_t)T * K * sizeof *ids);
        stds[i] = down;
        double f_down =
            ref_loss_forward(info, call, &c->loss, T, logits, bias, grad_weights, NULL, moved_ids);
        same = same && !memcmp(ids, moved_ids, (uint64_t)T * K * sizeof *ids);
        stds[i] = base;
        if (!same) continue;
        double numeric = (f_up - f_down) / ((double)up - (double)down);
        double analytic = learned ? want_std[i] : 0.0;
        for (uint32_t t = 0; !learned && t < T; ++t) analytic += want_std[(uint64_t)t * E + i];
        if (!close_to(numeric, analytic, 1e-6 + 1e-4 * fabs(analytic))) {
            test_fail(__FILE__, __LINE__, "%s: finite difference in std %llu: %.9g, analytic %.9g",
                      c->name, (unsigned long long)i, numeric, analytic);
            break;
        }
        ++checked;
    }
    free(ids);
    free(moved_ids);
    CHECK(checked > 0 || test_failed(), "%s: no std could be differentiated", c->name);
}

static void check_loss_case(const loss_case *c) {
    const moevk_router_info *info = &c->info;
    uint32_t T = c->num_tokens, E = info->num_experts, K = info->top_k;
    uint64_t n = (uint64_t)T * E;
    float *logits = malloc((n + 1) * sizeof *logits);
    uint16_t *halves = malloc((n + 1) * sizeof *halves);
    double *logits_read = malloc((n + 1) * sizeof *logits_read);
    float *grad_weights = malloc(((uint64_t)T * K + 1) * sizeof *grad_weights);
    double *grad_weights_d = malloc(((uint64_t)T * K + 1) * sizeof *grad_weights_d);
    float *grad = malloc((n + 1) * sizeof *grad);
    float *grad_again = malloc((n + 1) * sizeof *grad_again);
    double *want = malloc((n + 1) * sizeof *want);
    double *want_std = malloc((n + 1) * sizeof *want_std);
    float *got_std = malloc(((uint64_t)E * (info->hidden_size + 1) + 1) * sizeof *got_std);
    int32_t *ids = malloc(((uint64_t)T * K + 1) * sizeof *ids);
    int32_t *ids_ref = malloc(((uint64_t)T * K + 1) * sizeof *ids_ref);
    /* A learned std: hidden states, W_noise and the reference's std [T, E]. */
    uint32_t d = c->noise_std == STD_LEARNED ? info->hidden_size : 0;
    float *hidden = malloc(((uint64_t)T * d + 1) * sizeof *hidden);
    float *noise_weights = malloc(((uint64_t)d * E + 1) * sizeof *noise_weights);
    float *learned_std = malloc((n + 1) * sizeof *learned_std);
    float expert_std[MOEVK_MAX_EXPERTS];
    moevk_router *router = NULL;
    float bias[MOEVK_MAX_EXPERTS];
    if (!logits || !halves || !logits_read || !grad_weights || !grad_weights_d || !grad ||
        !grad_again || !want || !ids || !ids_ref || !hidden || !noise_weights || !learned_std ||
        !want_std || !got_std) {
        test_fail(__FILE__, __LINE__, "out of memory");
        goto done;
    }
    fill_logits(c, logits);
    as_read(info, logits, n, logits_read, halves);
    for (uint32_t e = 0; e < E; ++e) bias[e] = 0.3f * rng_normal();
    for (uint32_t e = 0; e < E; ++e) expert_std[e] = rng_uniform(0.2f, 1.5f);
    for (uint64_t i = 0; i < (uint64_t)T * d; ++i) hidden[i] = rng_normal();
    for (uint64_t i = 0; i < (uint64_t)d * E; ++i) noise_weights[i] = 0.3f * rng_normal();
    if (d) ref_learned_noise_std(info, T, hidden, noise_weights, learned_std);
    for (uint64_t i = 0; i < (uint64_t)T * K; ++i) {
        grad_weights[i] = rng_normal();
        grad_weights_d[i] = grad_weights[i];
    }
    if (moevk_router_create(test_context(), info, &router) != MOEVK_SUCCESS) {
        test_fail(__FILE__, __LINE__, "%s: router: %s", c->name,
                  moevk_context_last_error(test_context()));
        goto done;
    }
    moevk_route_input input = {
        .num_tokens = T,
        .logits = moevk_host_tensor(info->logits_type == MOEVK_DTYPE_F16 ? (void *)halves
                                                                         : (void *)logits),
        .bias = moevk_host_tensor(c->with_bias ? bias : NULL),
        .step = c->step,
        .layer = c->layer,
        .noise_std = moevk_host_tensor(c->noise_std == STD_PER_EXPERT ? expert_std : NULL),
        .hidden = moevk_host_tensor(d ? hidden : NULL),
        .noise_weights = moevk_host_tensor(d ? noise_weights : NULL)};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(ids)};
    moevk_loss_info loss = c->loss;
    if (c->with_grad_weights) loss.grad_weights = moevk_host_tensor(grad_weights);
    if (c->noise_std == STD_PER_EXPERT) loss.grad_noise_std = moevk_host_tensor(got_std);
    if (c->noise_std == STD_LEARNED) loss.grad_noise_weights = moevk_host_tensor(got_std);
    moevk_losses got = {0}, got_again = {0}, expected = {0};
    if (moevk_route(router, &input, &output) != MOEVK_SUCCESS ||
        moevk_router_losses(router, &loss, &got, moevk_host_tensor(grad)) != MOEVK_SUCCESS ||
        moevk_router_losses(router, &loss, &got_again, moevk_host_tensor(grad_again)) !=
            MOEVK_SUCCESS) {
        test_fail(__FILE__, __LINE__, "%s: %s", c->name, moevk_context_last_error(test_context()));
        goto done;
    }
    if (memcmp(grad, grad_again, n * sizeof *grad) || memcmp(&got, &got_again, sizeof got)) {
        test_fail(__FILE__, __LINE__, "%s: a second call differs", c->name);
        goto done;
    }
    ref_call call = {.step = c->step,
                     .layer = c->layer,
                     .noise_std = c->noise_std == STD_PER_EXPERT ? expert_std
                                  : d                            ? learned_std
                                                                 : NULL,
                     .std_per_token = d > 0};
    const double *gw = c->with_grad_weights ? grad_weights_d : NULL;
    const float *b = c->with_bias ? bias : NULL;
    ref_loss_forward(info, &call, &c->loss, T, logits_read, b, NULL, &expected, ids_ref);
    if (memcmp(ids, ids_ref, (uint64_t)T * K * sizeof *ids)) {
        uint32_t differing = 0;
        for (uint32_t t = 0; t < T; ++t)
            differing +=
                memcmp(ids + (uint64_t)t * K, ids_ref + (uint64_t)t * K, K * sizeof *ids) != 0;
        if (c->near_tie && differing <= 2) {
            *c->near_tie = 1;
            goto done;
        }
        test_fail(__FILE__, __LINE__, "%s: the reference selects other experts for %u tokens",
                  c->name, differing);
        goto done;
    }
    if (!ref_loss_gradient(info, &call, &c->loss, T, logits_read, b, gw, want, want_std)) {
        test_fail(__FILE__, __LINE__, "out of memory");
        goto done;
    }
    const double values[][2] = {{got.aux, expected.aux},
                                {got.z, expected.z},
                                {got.importance, expected.importance},
                                {got.load, expected.load},
                                {got.entropy, expected.entropy},
                                {got.sequence, expected.sequence},
                                {got.total, expected.total}};
    const char *names[] = {"aux", "z", "importance", "load", "entropy", "sequence", "total"};
    for (int i = 0; i < 7; ++i)
        if (!close_to(values[i][0], values[i][1], 1e-5 + 2e-4 * fabs(values[i][1]))) {
            test_fail(__FILE__, __LINE__, "%s: %s loss %.9g, reference %.9g", c->name, names[i],
                      values[i][0], values[i][1]);
            goto done;
        }
    double scale = 0.0;
    for (uint64_t i = 0; i < n; ++i) scale = fmax(scale, fabs(want[i]));
    for (uint64_t i = 0; i < n; ++i)
        if (!close_to(grad[i], want[i], 1e-6 + 2e-4 * scale)) {
            test_fail(__FILE__, __LINE__, "%s: dL/dlogits[%llu, %llu] = %.9g, reference %.9g",
                      c->name, (unsigned long long)(i / E), (unsigned long long)(i % E),
                      (double)grad[i], want[i]);
            goto done;
        }
    if (c->finite_differences) check_finite_differences(c, &call, logits_read, b, gw, want);
    if (c->noise_std != STD_ROUTER && !test_failed())
        check_std_gradient(c, &call, logits_read, b, gw, want_std, got_std, hidden, noise_weights,
                           c->noise_std == STD_LEARNED ? learned_std : expert_std);
done:
    moevk_router_destroy(router);
    free(logits);
    free(halves);
    free(logits_read);
    free(grad_weights);
    free(grad_weights_d);
    free(grad);
    free(grad_again);
    free(want);
    free(ids);
    free(ids_ref);
    free(hidden);
    free(noise_weights);
    free(learned_std);
    free(want_std);
    free(got_std);
}

/* One row of the losses' case table: the router and the losses past the defaults (a zero keeps
 * the default); all_losses() unless `only` names the losses the row takes instead. */
typedef struct loss_row {
    const char *name;
    uint32_t E, k, T;
    enum { ALL_LOSSES, ONLY_THESE } only;
    float load_coef, importance_coef, sequence_coef;
    uint32_t sequence_length;
    moevk_score_func score;
    int renormalize;
    float scale, temperature;
    moevk_dtype logits_type;
    moevk_noise_kind noise;
    float noise_amount;
    uint64_t noise_seed;
    int noisy_scores;
    uint32_t groups, topk_groups;
    uint32_t learned_d; /* a learned std over hidden states of this size (STD_LEARNED) */
    float noise_epsilon;
    int bias, grad_weights;
    special_rows rows;
    uint32_t step, layer;
    int finite_differences;
    int noise_std; /* STD_ROUTER, STD_PER_EXPERT, STD_LEARNED */
} loss_row;

#define SIZES(e, k_, t) .E = e, .k = k_, .T = t
#define FD .finite_differences = 1

static const loss_row CASES[] = {
    {"softmax", SIZES(16, 2, 200), .bias = 1, .grad_weights = 1, FD},
    {"softmax_temperature_renormalised_scaled", SIZES(16, 2, 37), .bias = 1, .grad_weights = 1, FD,
     .temperature = 0.6f, .renormalize = 1, .scale = 2.0f},
    {"sigmoid_odd_sizes_sequences_of_11", SIZES(7, 3, 33), .bias = 1, .grad_weights = 1, FD,
     .score = MOEVK_SCORE_SIGMOID, .renormalize = 1, .scale = 2.5f, .temperature = 0.7f,
     .sequence_coef = 0.2f, .sequence_length = 11},
    {"sigmoid_without_renormalisation", SIZES(7, 3, 33), .bias = 1, .grad_weights = 1, FD,
     .score = MOEVK_SCORE_SIGMOID, .scale = 2.5f, .temperature = 0.7f, .sequence_coef = 0.2f,
     .sequence_length = 11},
    {"sequence_wise_softmax", SIZES(12, 2, 96), .only = ONLY_THESE, .sequence_coef = 1.0f,
     .sequence_length = 32, FD},
    {"sequence_wise_sequences_of_one_token", SIZES(12, 2, 96), .only = ONLY_THESE,
     .sequence_coef = 1.0f, .sequence_length = 1, FD},
    {"load_per_expert_std", SIZES(8, 2, 64), .only = ONLY_THESE, .load_coef = 0.5f,
     .importance_coef = 0.2f, .noise = MOEVK_NOISE_GAUSSIAN, .noise_seed = 8, .step = 2, FD,
     .noise_std = STD_PER_EXPERT},
    {"load_per_expert_std_noisy_scores_sigmoid", SIZES(8, 2, 64), .only = ONLY_THESE,
     .load_coef = 0.5f, .importance_coef = 0.2f, .noise = MOEVK_NOISE_GAUSSIAN, .noise_seed = 8,
     .step = 2, FD, .noise_std = STD_PER_EXPERT, .noisy_scores = 1, .score = MOEVK_SCORE_SIGMOID,
     .grad_weights = 1},
    {"load_learned_std", SIZES(8, 2, 64), .only = ONLY_THESE, .load_coef = 0.5f,
     .importance_coef = 0.2f, .noise = MOEVK_NOISE_GAUSSIAN, .noise_seed = 8, .step = 2, FD,
     .noise_std = STD_LEARNED, .learned_d = 12, .noise_epsilon = 0.05f},
    {"load_learned_std_noisy_scores", SIZES(8, 2, 64), .only = ONLY_THESE, .load_coef = 0.5f,
     .importance_coef = 0.2f, .noise = MOEVK_NOISE_GAUSSIAN, .noise_seed = 8, .step = 2, FD,
     .noise_std = STD_LEARNED, .learned_d = 12, .noise_epsilon = 0.05f, .noisy_scores = 1,
     .bias = 1},
    {"load_and_importance_gaussian_noise", SIZES(8, 2, 64), .only = ONLY_THESE, .load_coef = 0.5f,
     .importance_coef = 0.5f, .bias = 1, .step = 5, .layer = 2, FD, .noise = MOEVK_NOISE_GAUSSIAN,
     .noise_amount = 0.5f, .noise_seed = 42},
    {"load_noisy_scores_k_equals_e", SIZES(4, 4, 50), .load_coef = 1.0f, .bias = 1, .step = 5,
     .layer = 2, FD, .noise = MOEVK_NOISE_GAUSSIAN, .noise_amount = 1.0f, .noisy_scores = 1,
     .grad_weights = 1},
    {"group_limited_load_with_gaussian_noise", SIZES(16, 3, 80), .bias = 1, .grad_weights = 1, FD,
     .groups = 4, .topk_groups = 2, .noise = MOEVK_NOISE_GAUSSIAN, .noise_amount = 0.4f,
     .load_coef = 0.3f},
    {"jitter_noisy_scores", SIZES(5, 2, 40), .grad_weights = 1, .step = 9, FD,
     .noise = MOEVK_NOISE_JITTER, .noise_amount = 0.2f, .noisy_scores = 1},
    {"one_expert", SIZES(1, 1, 9), .grad_weights = 1, FD, .noise = MOEVK_NOISE_GAUSSIAN,
     .noise_amount = 0.3f, .load_coef = 1.0f},
    {"one_token", SIZES(6, 2, 1), .grad_weights = 1, FD},
    {"zero_tokens", SIZES(6, 2, 0), .grad_weights = 1},
    {"zero_tokens_per_expert_std_and_its_gradient", SIZES(6, 2, 0), .grad_weights = 1,
     .noise_std = STD_PER_EXPERT, .noise = MOEVK_NOISE_GAUSSIAN, .load_coef = 0.5f},
    {"inf_experts_masked_and_nonfinite_rows_ties", SIZES(9, 2, 50), .bias = 1, .grad_weights = 1,
     .rows = ROWS_AWKWARD, FD},
    {"huge_logits", SIZES(9, 2, 50), .bias = 1, .grad_weights = 1, .rows = ROWS_HUGE},
    {"f16_logits", SIZES(9, 2, 50), .bias = 1, .grad_weights = 1, FD,
     .logits_type = MOEVK_DTYPE_F16},
};

static void run_loss_row(const void *row) {
    const loss_row *r = row;
    loss_case c = {.name = r->name,
                   .info = router_info(r->E, r->k, r->T),
                   .num_tokens = r->T,
                   .with_bias = r->bias,
                   .with_grad_weights = r->grad_weights,
                   .rows = r->rows,
                   .step = r->step,
                   .layer = r->layer,
                   .finite_differences = r->finite_differences,
                   .noise_std = r->noise_std};
    moevk_loss_info_init(&c.loss);
    if (r->only == ALL_LOSSES) c.loss = all_losses();
    if (r->load_coef) c.loss.load_coef = r->load_coef;
    if (r->importance_coef) c.loss.importance_coef = r->importance_coef;
    c.loss.sequence_coef = r->sequence_coef;
    c.loss.sequence_length = r->sequence_length;
    c.info.score = r->score;
    c.info.renormalize = r->renormalize;
    if (r->scale) c.info.scale = r->scale;
    if (r->temperature) c.info.temperature = r->temperature;
    c.info.logits_type = r->logits_type;
    c.info.noise = r->noise;
    c.info.noise_amount = r->noise_amount;
    c.info.noise_seed = r->noise_seed;
    c.info.noisy_scores = r->noisy_scores;
    c.info.num_groups = r->groups;
    c.info.topk_groups = r->topk_groups;
    if (r->learned_d) {
        c.info.learned_noise = 1;
        c.info.hidden_size = r->learned_d;
    }
    if (r->noise_epsilon) c.info.noise_epsilon = r->noise_epsilon;
    check_loss_case(&c);
}

/* At the sizes users run: no invocation's loops may pass lavapipe's loop limit (LOOP_BUDGET):
 * sequences of 4096 tokens over 1024 experts, and the std's gradient summed over 65536 tokens
 * (four dispatches of TOKEN_CHUNK), per expert and learned. */
static void test_large_sizes(void) {
    loss_case c = {.name = "sequence-wise, E 1024, S 4096",
                   .info = router_info(1024, 8, 8192),
                   .num_tokens = 8192,
                   .large = 1};
    c.loss = all_losses();
    c.loss.sequence_coef = 1.0f;
    c.loss.sequence_length = 4096;
    check_loss_case(&c);
    int near_tie = 0;
    c = (loss_case){.name = "load, per-expert std, T 65536",
                    .info = router_info(16, 2, 65536),
                    .num_tokens = 65536,
                    .step = 1,
                    .noise_std = STD_PER_EXPERT,
                    .large = 1,
                    .near_tie = &near_tie};
    c.info.noise = MOEVK_NOISE_GAUSSIAN;
    c.info.noise_seed = 9;
    c.loss.load_coef = 0.5f;
    for (int learned = 0; learned < 2; ++learned) {
        if (learned) {
            c.name = "load, learned std, T 65536";
            c.noise_std = STD_LEARNED;
            c.info.learned_noise = 1;
            c.info.hidden_size = 3;
        }
        int draws = 0;
        do {
            if (near_tie) printf("  %s: a near tie decided differently; new inputs\n", c.name);
            near_tie = 0;
            check_loss_case(&c); /* fresh inputs each time */
        } while (near_tie && ++draws < 5 && !test_failed());
        CHECK(!near_tie, "%s: near ties in 5 draws running", c.name);
    }
}

/* dL/dcombined and expert outputs give dL/dweights_tj = <dL/dcombined_t, expert_out row_tj>. */
static void test_combine_backward(void) {
    const uint32_t T = 30, E = 6, K = 2, d = 5;
    moevk_router_info info = router_info(E, K, T);
    info.hidden_size = d;
    info.capacity_factor = 1.0f;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float logits[30 * 6], hidden[30 * 5], grad_combined[30 * 5], combined[30 * 5];
    for (uint32_t i = 0; i < T * E; ++i) logits[i] = 2.0f * rng_normal();
    for (uint32_t i = 0; i < T * d; ++i) {
        hidden[i] = rng_normal();
        grad_combined[i] = rng_normal();
    }
    uint64_t rows = moevk_router_max_dispatched_rows(router);
    float *expert_out = malloc(rows * d * sizeof *expert_out);
    CHECK(expert_out, "out of memory");
    for (uint64_t i = 0; i < rows * d; ++i) expert_out[i] = rng_normal();
    int32_t ids[30 * 2], slots[30 * 2];
    moevk_route_stats stats = {0};
    moevk_route_input input = {
        .num_tokens = T, .logits = moevk_host_tensor(logits), .hidden = moevk_host_tensor(hidden)};
    moevk_route_output output = {
        .expert_ids = moevk_host_tensor(ids), .slots = moevk_host_tensor(slots), .stats = &stats};
    moevk_loss_info loss = {.grad_combined = moevk_host_tensor(grad_combined)};
    float grad[30 * 6];
    CHECK_OK(moevk_route(router, &input, &output));
    moevk_result early = moevk_router_losses(router, &loss, NULL, moevk_host_tensor(grad));
    CHECK(early == MOEVK_ERROR_INVALID_ARGUMENT, "grad_combined before a combine: %s",
          moevk_result_string(early));
    CHECK_OK(moevk_combine(router, moevk_host_tensor(expert_out), moevk_host_tensor(combined)));
    CHECK_OK(moevk_router_losses(router, &loss, NULL, moevk_host_tensor(grad)));
    double grad_weights[30 * 2], want[30 * 6], logits_d[30 * 6];
    for (uint32_t i = 0; i < T * E; ++i) logits_d[i] = logits[i];
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t j = 0; j < K; ++j) {
            double dot = 0.0;
            int32_t slot = slots[t * K + j];
            if (slot >= 0) {
                uint64_t row = (uint64_t)ids[t * K + j] * stats.capacity + (uint64_t)slot;
                for (uint32_t i = 0; i < d; ++i)
                    dot += (double)grad_combined[t * d + i] * expert_out[row * d + i];
            }
            grad_weights[t * K + j] = dot;
        }
    free(expert_out);
    moevk_loss_info none = {0};
    CHECK(ref_loss_gradient(&info, NULL, &none, T, logits_d, NULL, grad_weights, want, NULL),
          "memory");
    CHECK(stats.dropped > 0, "the case should drop some choices (C = %u)", stats.capacity);
    for (uint32_t i = 0; i < T * E; ++i)
        CHECK(close_to(grad[i], want[i], 1e-5 + 1e-4 * fabs(want[i])), "[%u]: %.9g, want %.9g", i,
              (double)grad[i], want[i]);
    moevk_router_destroy(router);
}

/* Device buffers in and out give the same bits as host memory. */
static void test_device_buffers(void) {
    const uint32_t T = 40, E = 8, K = 2;
    moevk_router_info info = router_info(E, K, T);
    moevk_router *router = NULL;
    moevk_buffer *grad_weights_buffer = NULL, *grad_logits_buffer = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    CHECK_OK(moevk_buffer_create(test_context(), T * K * 4, &grad_weights_buffer));
    CHECK_OK(moevk_buffer_create(test_context(), T * E * 4, &grad_logits_buffer));
    float logits[40 * 8], grad_weights[40 * 2], from_host[40 * 8], from_device[40 * 8];
    for (uint32_t i = 0; i < T * E; ++i) logits[i] = 2.0f * rng_normal();
    for (uint32_t i = 0; i < T * K; ++i) grad_weights[i] = rng_normal();
    CHECK_OK(moevk_buffer_write(grad_weights_buffer, 0, grad_weights, sizeof grad_weights));
    moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {0};
    CHECK_OK(moevk_route(router, &input, &output));
    moevk_loss_info loss = all_losses();
    loss.grad_weights = moevk_host_tensor(grad_weights);
    CHECK_OK(moevk_router_losses(router, &loss, NULL, moevk_host_tensor(from_host)));
    loss.grad_weights = moevk_buffer_tensor(grad_weights_buffer, 0);
    CHECK_OK(moevk_router_losses(router, &loss, NULL, moevk_buffer_tensor(grad_logits_buffer, 0)));
    CHECK_OK(moevk_buffer_read(grad_logits_buffer, 0, from_device, sizeof from_device));
    CHECK(!memcmp(from_host, from_device, sizeof from_host), "device buffers differ");
    moevk_buffer_destroy(grad_weights_buffer);
    moevk_buffer_destroy(grad_logits_buffer);
    moevk_router_destroy(router);
}

/* The asynchronous call gives what the waiting one does, once waited for. */
static void test_submitted_losses_match_the_call(void) {
    const uint32_t T = 60, E = 8, K = 2;
    moevk_router_info info = router_info(E, K, T);
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.noise_amount = 0.3f;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float logits[60 * 8], grad_weights[60 * 2], grad[60 * 8], grad_submitted[60 * 8];
    for (uint32_t i = 0; i < T * E; ++i) logits[i] = 2.0f * rng_normal();
    for (uint32_t i = 0; i < T * K; ++i) grad_weights[i] = rng_normal();
    moevk_route_input input = {.num_tokens = T, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {0};
    CHECK_OK(moevk_route(router, &input, &output));
    moevk_loss_info loss = all_losses();
    loss.load_coef = 0.5f;
    loss.grad_weights = moevk_host_tensor(grad_weights);
    moevk_losses waited, submitted;
    moevk_losses_init(&waited);
    moevk_losses_init(&submitted);
    memset(grad_submitted, 0, sizeof grad_submitted);
    moevk_result r = moevk_router_losses(router, &loss, &waited, moevk_host_tensor(grad));
    if (r == MOEVK_SUCCESS)
        r = moevk_router_losses_submit(router, &loss, &submitted,
                                       moevk_host_tensor(grad_submitted));
    double before_wait = submitted.total;
    if (r == MOEVK_SUCCESS) r = moevk_router_wait(router, UINT64_MAX);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "-> %s (%s)", moevk_result_string(r),
          moevk_context_last_error(test_context()));
    CHECK(before_wait == 0.0, "the losses were written before the wait");
    CHECK(!memcmp(&waited, &submitted, sizeof waited), "the losses differ");
    CHECK(!memcmp(grad, grad_submitted, sizeof grad), "dL/dlogits differs");
}

static void test_errors(void) {
    moevk_context *context = test_context();
    moevk_router_info info = router_info(4, 2, 8);
    moevk_router *router = NULL;
    moevk_loss_info loss = all_losses();
    float logits[8 * 4], grad[8 * 4];
    for (int i = 0; i < 32; ++i) logits[i] = rng_normal();
    CHECK_OK(moevk_router_create(context, &info, &router));
    CHECK(moevk_router_losses(router, &loss, NULL, moevk_host_tensor(grad)) ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "losses before a route");
    moevk_route_input input = {.num_tokens = 6, .logits = moevk_host_tensor(logits)};
    moevk_route_output output = {0};
    CHECK_OK(moevk_route(router, &input, &output));
    CHECK(moevk_router_losses(router, NULL, NULL, moevk_host_tensor(grad)) ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "NULL info");
    moevk_loss_info bad = loss;
    bad.load_coef = 1.0f;
    CHECK(moevk_router_losses(router, &bad, NULL, moevk_host_tensor(grad)) ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "load loss without Gaussian noise");
    CHECK(strstr(moevk_context_last_error(context), "Gaussian"), "message: %s",
          moevk_context_last_error(context));
    bad = loss;
    bad.sequence_coef = 1.0f;
    bad.sequence_length = 4;
    CHECK(moevk_router_losses(router, &bad, NULL, moevk_host_tensor(grad)) ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "T = 6 is no multiple of 4");
    bad = loss;
    bad.z_coef = NAN;
    CHECK(moevk_router_losses(router, &bad, NULL, moevk_host_tensor(grad)) ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "NaN coefficient");
    moevk_buffer *small = NULL;
    CHECK_OK(moevk_buffer_create(context, 16, &small));
    CHECK(moevk_router_losses(router, &loss, NULL, moevk_buffer_tensor(small, 0)) ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "small grad_logits buffer");
    moevk_buffer_destroy(small);
    float std_grad[64];
    bad = loss;
    bad.grad_noise_std = moevk_host_tensor(std_grad);
    CHECK(moevk_router_losses(router, &bad, NULL, moevk_host_tensor(grad)) ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "a std gradient without a per-expert std");
    bad = loss;
    bad.grad_noise_weights = moevk_host_tensor(std_grad);
    CHECK(moevk_router_losses(router, &bad, NULL, moevk_host_tensor(grad)) ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "a W_noise gradient without a learned std");
    CHECK(strstr(moevk_context_last_error(context), "learned_noise"), "message: %s",
          moevk_context_last_error(context));
    CHECK_OK(moevk_router_losses(router, &loss, NULL, moevk_host_tensor(grad)));
    moevk_router_destroy(router);
    info.losses = 0;
    CHECK_OK(moevk_router_create(context, &info, &router));
    CHECK_OK(moevk_route(router, &input, &output));
    CHECK(moevk_router_losses(router, &loss, NULL, moevk_host_tensor(grad)) ==
              MOEVK_ERROR_INVALID_ARGUMENT,
          "a router without losses");
    moevk_router_destroy(router);
}

int main(int argc, char **argv) {
    /* The table's rows, then the tests written as functions: what a row cannot say. */
    static const test_case functions[] = {
        TEST(large_sizes),    TEST(combine_backward),
        TEST(device_buffers), TEST(submitted_losses_match_the_call),
        TEST(errors),
    };
    return test_main_with_table(CASES, sizeof CASES / sizeof CASES[0], sizeof CASES[0],
                                run_loss_row, functions, sizeof functions / sizeof functions[0],
                                argc, argv);
}
