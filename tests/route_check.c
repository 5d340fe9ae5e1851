#include "route_check.h"
#include "choice_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"

static float make_logit(logits_pattern pattern, uint32_t t, uint32_t e) {
    switch (pattern) {
    case LOGITS_TIES: return (float)(rng_u32() % 3) * 0.5f;
    case LOGITS_MASKED:
        if (t % 17 == 5) return -INFINITY;
        return rng_u32() % 3 == 0 ? -INFINITY : 2.0f * rng_normal();
    case LOGITS_NONFINITE:
        if (t % 13 == 3 && e == t % 7) return NAN;
        if (t % 19 == 7 && e == 0) return INFINITY;
        return 2.0f * rng_normal();
    case LOGITS_HUGE: {
        uint32_t r = rng_u32() % 4;
        return r == 0 ? 1e30f : r == 1 ? -1e30f : rng_normal();
    }
    case LOGITS_SKEWED: return rng_normal() + (e < 2 ? 3.0f : 0.0f);
    case LOGITS_COLLAPSED: return rng_normal() + (e == 0 ? 20.0f : 0.0f);
    case LOGITS_RANDOM: break;
    }
    return 2.0f * rng_normal();
}

static int close_enough(double got, double want, double relative) {
    if (isnan(want)) return isnan(got);
    if (isinf(want) || fabs(want) > 3.4e38) return isinf(got) || got == want;
    return fabs(got - want) <= relative * fabs(want) + 1e-30 + relative * 1e-6;
}

#define COMPARE_EXACT(what, got, want, n)                                                          \
    for (uint64_t i_ = 0, bad_ = 0; i_ < (uint64_t)(n) && bad_ < 5; ++i_)                          \
        if ((got)[i_] != (want)[i_]) {                                                             \
            ++bad_;                                                                                \
            test_fail(__FILE__, __LINE__, "%s: %s[%llu] is %lld, reference %lld", c->name, what,   \
                      (unsigned long long)i_, (long long)(got)[i_], (long long)(want)[i_]);        \
        }

typedef struct buffers {
    void *logits, *hidden, *dispatched, *ref_dispatched, *expert_out, *combined, *ref_combined;
    float *bias, *weights, *ref_weights, *learned_std;
    int32_t *ids, *ref_ids, *slots, *ref_slots, *ref_rows, *ref_row_token;
    uint32_t *counts, *counts_before, *offsets, *ref_counts, *ref_counts_before, *ref_offsets;
    ref_row_stats *row_stats;
} buffers;

static void free_buffers(buffers *b) {
    void **p = (void **)b;
    for (size_t i = 0; i < sizeof *b / sizeof(void *); ++i) free(p[i]);
}

static void fill_inputs(const route_case *c, buffers *b) {
    const moevk_router_info *info = &c->info;
    uint32_t T = c->num_tokens, E = info->num_experts;
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t e = 0; e < E; ++e)
            ref_store(b->logits, (uint64_t)t * E + e, info->logits_type,
                      make_logit(c->pattern, t, e));
    if (c->with_bias)
        for (uint32_t e = 0; e < E; ++e) b->bias[e] = rng_uniform(-0.5f, 0.5f);
    if (c->with_hidden)
        for (uint64_t i = 0; i < (uint64_t)T * info->hidden_size; ++i)
            ref_store(b->hidden, i, info->hidden_type, rng_uniform(-4.0f, 4.0f));
}

static void check_stats(const route_case *c, const moevk_route_stats *got,
                        const moevk_route_stats *want) {
    CHECK(got->nonfinite_rows == want->nonfinite_rows, "%s: nonfinite rows %u, reference %u",
          c->name, got->nonfinite_rows, want->nonfinite_rows);
    CHECK(got->masked_rows == want->masked_rows, "%s: masked rows %u, reference %u", c->name,
          got->masked_rows, want->masked_rows);
    CHECK(got->assignments == want->assignments, "%s: assignments differ", c->name);
    CHECK(close_enough(got->aux_loss, want->aux_loss, 1e-5), "%s: aux_loss %.9g, reference %.9g",
          c->name, got->aux_loss, want->aux_loss);
    /* A mean of signed terms: within 1e-5 of the size of its terms (their RMS, sqrt(z_loss)),
     * since a mean near zero of large terms carries their rounding (E = 1, CI seed
     * 1796192294: 0.000338648891 against 0.000338652549, terms of size 2). A row's
     * max + log(sum) also cancels to near zero only where max is within log E of zero, so each
     * term carries a few float ulps of log E as absolute error (3 valid rows of lse 0.0026, CI
     * seed 1796684254: 0.00264072418 against 0.00264054537). */
    double lse_size = fmax(fabs(want->mean_logsumexp), sqrt(want->z_loss));
    double lse_ulps = 1e-6 * fmax(1.0, log((double)c->info.num_experts));
    CHECK(fabs(got->mean_logsumexp - want->mean_logsumexp) <= 1e-5 * lse_size + lse_ulps,
          "%s: mean_logsumexp %.9g, reference %.9g", c->name, got->mean_logsumexp,
          want->mean_logsumexp);
    /* The mean of squares: the same error times 2 |lse|. */
    double z_slack = 2.0 * sqrt(want->z_loss) * lse_ulps + lse_ulps * lse_ulps;
    CHECK(close_enough(got->z_loss, want->z_loss, 1e-5) ||
              fabs(got->z_loss - want->z_loss) <= 1e-5 * fabs(want->z_loss) + z_slack,
          "%s: z_loss %.9g, reference %.9g", c->name, got->z_loss, want->z_loss);
    /* An entropy near zero is a difference of near-equal logs (sigmoid with E = 1: log s - log s,
     * -5.96e-8 on lavapipe, CI seed 1796223456): within 1e-6 absolute too. */
    CHECK(fabs(got->entropy - want->entropy) <= 1e-5 * fabs(want->entropy) + 1e-6,
          "%s: entropy %.9g, reference %.9g", c->name, got->entropy, want->entropy);
}

/* What a route's statistics say must agree with itself: the counts with the assignments and
 * drops, the rows with T, and Sinkhorn's iterations with its error (a run that stopped before
 * the cap must have converged) and with the reference's count (within one: the sums' order
 * differs). */
static void check_stats_consistency(const route_case *c, const moevk_route_stats *stats,
                                    const buffers *b, uint32_t reference_iterations) {
    const moevk_router_info *info = &c->info;
    uint32_t T = c->num_tokens, E = info->num_experts;
    uint64_t before = 0, kept = 0;
    for (uint32_t e = 0; e < E; ++e) {
        before += b->counts_before[e];
        kept += b->counts[e];
        CHECK(b->counts[e] <= b->counts_before[e], "%s: expert %u keeps %u of %u", c->name, e,
              b->counts[e], b->counts_before[e]);
    }
    CHECK(stats->assignments == before, "%s: %llu assignments, counts say %llu", c->name,
          (unsigned long long)stats->assignments, (unsigned long long)before);
    CHECK(stats->dropped == before - kept, "%s: %llu dropped, counts say %llu", c->name,
          (unsigned long long)stats->dropped, (unsigned long long)(before - kept));
    CHECK((uint64_t)stats->nonfinite_rows + stats->masked_rows + stats->unrouted_tokens <= T,
          "%s: %u non-finite, %u masked and %u unrouted rows of %u", c->name, stats->nonfinite_rows,
          stats->masked_rows, stats->unrouted_tokens, T);
    int sinkhorn = info->mode == MOEVK_MODE_SINKHORN && !c->inference && T > 0;
    if (!sinkhorn) {
        CHECK(stats->sinkhorn_iterations == 0 && stats->sinkhorn_error == 0.0f,
              "%s: %u Sinkhorn iterations reported outside Sinkhorn", c->name,
              stats->sinkhorn_iterations);
        return;
    }
    uint32_t cap = info->sinkhorn_iterations ? info->sinkhorn_iterations : 100;
    uint32_t n = stats->sinkhorn_iterations;
    float error = stats->sinkhorn_error;
    CHECK(n >= 1 && n <= cap, "%s: %u Sinkhorn iterations, cap %u", c->name, n, cap);
    CHECK(isfinite(error) && error >= 0.0f, "%s: Sinkhorn error %g", c->name, (double)error);
    CHECK(n == cap || error < 1e-4f, "%s: stopped after %u of %u iterations with error %g", c->name,
          n, cap, (double)error);
    CHECK(n + 1 >= reference_iterations && n <= reference_iterations + 1,
          "%s: %u Sinkhorn iterations, reference %u", c->name, n, reference_iterations);
}

/* The reference's selection key of (t, e): the noisy decision logit plus the bias (or its
 * sigmoid score plus the bias), or the Sinkhorn-balanced score. */
static double reference_key(const moevk_router_info *at_step, const ref_call *call,
                            const buffers *b, const float *bias, const float *means,
                            const ref_sinkhorn_factors *factors, uint32_t t, uint32_t e) {
    uint32_t E = at_step->num_experts, S = ref_sequence_length(at_step, 0);
    float logit = means ? means[(uint64_t)(t / S) * E + e]
                        : ref_load(b->logits, (uint64_t)t * E + e, at_step->logits_type);
    float noisy = ref_noisy_logit(at_step, call, logit, means ? t / S : t, e);
    if (factors) return ref_sinkhorn_key(factors, noisy, t, e);
    if (at_step->bias_on_scores && isfinite(noisy))
        return 1.0 / (1.0 + exp(-(double)noisy / at_step->temperature)) + (bias ? bias[e] : 0.0);
    return bias ? (double)noisy + bias[e] : noisy;
}

/* Noisy or Sinkhorn routes: the device's and the reference's choices may differ only where their
 * keys are within a relative margin (1e-5; Sinkhorn's iterated factors 1e-4); there the device's
 * weights stand in for the reference's. */
static void compare_near_ties(const route_case *c, const moevk_router_info *at_step,
                              const ref_call *call, buffers *b, const float *bias,
                              uint32_t *sinkhorn_iterations) {
    uint32_t T = c->num_tokens, E = at_step->num_experts, K = at_step->top_k;
    int sinkhorn = at_step->mode == MOEVK_MODE_SINKHORN && !c->inference;
    int by_sequence = at_step->mode == MOEVK_MODE_SEQUENCE || at_step->mode == MOEVK_MODE_BATCH;
    uint32_t S = ref_sequence_length(at_step, T);
    ref_sinkhorn_factors factors = {0};
    float *means = by_sequence ? malloc(((uint64_t)(T + S - 1) / S * E + 1) * sizeof *means) : NULL;
    if ((by_sequence && !means) ||
        (sinkhorn && !ref_sinkhorn(at_step, call, T, b->logits, &factors))) {
        test_fail(__FILE__, __LINE__, "%s: the reference ran out of memory", c->name);
        free(means);
        return;
    }
    moevk_router_info whole = *at_step;
    if (at_step->mode == MOEVK_MODE_BATCH) { /* ref_sequence_length(.., 0) must give T */
        whole.mode = MOEVK_MODE_SEQUENCE;
        whole.sequence_length = S;
    }
    if (means) ref_sequence_means(&whole, T, b->logits, means);
    double margin_allowed = sinkhorn ? 1e-4 : 1e-5;
    int failures = 0;
    for (uint32_t t = 0; t < T && failures < 5; ++t)
        for (uint32_t j = 0; j < K; ++j) {
            int32_t got = b->ids[t * K + j], want = b->ref_ids[t * K + j];
            if (got == want) continue;
            const ref_sinkhorn_factors *f = sinkhorn ? &factors : NULL;
            double key_got =
                got >= 0 ? reference_key(&whole, call, b, bias, means, f, t, (uint32_t)got) : 0;
            double key_want =
                want >= 0 ? reference_key(&whole, call, b, bias, means, f, t, (uint32_t)want) : 0;
            double margin =
                fabs(key_got - key_want) / fmax(fmax(fabs(key_got), fabs(key_want)), 1e-30);
            if (!(got >= 0 && want >= 0 && margin <= margin_allowed)) {
                ++failures;
                test_fail(__FILE__, __LINE__,
                          "%s: token %u choice %u: expert %d, reference %d, keys %.9g vs %.9g",
                          c->name, t, j, got, want, key_got, key_want);
            }
            for (uint32_t i = 0; i < K; ++i) b->ref_weights[t * K + i] = b->weights[t * K + i];
        }
    *sinkhorn_iterations = factors.iterations;
    free(means);
    free(factors.d0);
}

/* Runs the route, then holds each stage to the reference; returns at the first failing check. */
static void compare_case(const route_case *c, moevk_router *router, buffers *b) {
    const moevk_router_info *info = &c->info;
    uint32_t T = c->num_tokens, E = info->num_experts, K = info->top_k, d = info->hidden_size;
    uint64_t TK = (uint64_t)T * K;
    uint64_t row_bytes = (uint64_t)d * (info->hidden_type == MOEVK_DTYPE_F32 ? 4 : 2);

    int dropless = info->capacity_mode == MOEVK_CAPACITY_DROPLESS;
    moevk_route_input input = {.num_tokens = T,
                               .logits = moevk_host_tensor(b->logits),
                               .bias = moevk_host_tensor(c->with_bias ? b->bias : NULL),
                               .hidden = moevk_host_tensor(c->with_hidden ? b->hidden : NULL),
                               .step = c->step,
                               .layer = c->layer,
                               .noise_row_offset = c->noise_row_offset,
                               .inference = c->inference,
                               .noise_std = moevk_host_tensor(c->noise_std),
                               .noise_weights = moevk_host_tensor(c->noise_weights)};
    input.struct_size = sizeof input; /* the fields since moevk 0.3 are read */
    moevk_route_stats stats = {0};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(b->ids),
                                 .weights = moevk_host_tensor(b->weights),
                                 .slots = moevk_host_tensor(b->slots),
                                 .counts = moevk_host_tensor(b->counts),
                                 .counts_before = moevk_host_tensor(b->counts_before),
                                 .offsets = moevk_host_tensor(dropless ? b->offsets : NULL),
                                 .dispatched =
                                     moevk_host_tensor(c->with_hidden ? b->dispatched : NULL),
                                 .stats = &stats};
    moevk_result r = moevk_route(router, &input, &output);
    CHECK(r == MOEVK_SUCCESS, "%s: route -> %s (%s)", c->name, moevk_result_string(r),
          moevk_context_last_error(test_context()));

    /* Stage 1: scores and top-k, from the same logits. */
    ref_call call = {.step = c->step,
                     .layer = c->layer,
                     .noise_row_offset = c->noise_row_offset,
                     .inference = c->inference,
                     .noise_std = c->noise_std};
    if (c->noise_weights) {
        ref_learned_noise_std(info, T, b->hidden, c->noise_weights, b->learned_std);
        call.noise_std = b->learned_std;
        call.std_per_token = 1;
    }
    moevk_router_info at_step = ref_at_step(info, c->step); /* schedules resolved */
    CHECK(ref_scores_topk(&at_step, &call, T, b->logits, (const float *)input.bias.host, b->ref_ids,
                          b->ref_weights, b->row_stats),
          "%s: the reference ran out of memory", c->name);
    /* Gaussian and Gumbel noise use exp/log/cos, Sinkhorn's factors exp and long sums, and keys
     * on the scores (bias_on_scores) a sigmoid:
     * decisions must agree wherever the competing keys differ by more than a small relative
     * margin; rows decided closer are skipped below. */
    int sinkhorn = info->mode == MOEVK_MODE_SINKHORN && !c->inference;
    int near_ties_allowed = info->noise == MOEVK_NOISE_GAUSSIAN ||
                            info->noise == MOEVK_NOISE_GUMBEL || sinkhorn || info->bias_on_scores;
    uint32_t reference_iterations = 0;
    if (near_ties_allowed) {
        compare_near_ties(c, &at_step, &call, b, (const float *)input.bias.host,
                          &reference_iterations);
        if (test_failed()) return;
    } else {
        COMPARE_EXACT("expert_ids", b->ids, b->ref_ids, TK);
    }
    /* 1e-6 relative; small weights within 1e-7 (times the scale) absolute, since a device's exp
     * and division may differ from the CPU's by a few ulp of the exponent argument. */
    double weight_floor = 1e-7 * fabs(info->scale);
    for (uint64_t i = 0, bad = 0; i < TK && bad < 5; ++i)
        if (fabs((double)b->weights[i] - b->ref_weights[i]) >
            1e-6 * fabs(b->ref_weights[i]) + weight_floor) {
            ++bad;
            test_fail(__FILE__, __LINE__, "%s: weights[%llu] is %.9g, reference %.9g", c->name,
                      (unsigned long long)i, b->weights[i], b->ref_weights[i]);
        }
    if (test_failed()) return;

    /* Stage 2: bucketing, from the device's own ids and weights. */
    uint32_t capacity = moevk_router_capacity(router, T, c->step);
    CHECK(dropless || capacity == ref_capacity(info, T, c->step), "%s: capacity %u, reference %u",
          c->name, capacity, ref_capacity(info, T, c->step));
    uint64_t rows =
        ref_bucket(info, T, capacity, b->ids, b->weights, b->ref_slots, b->ref_rows,
                   b->ref_row_token, b->ref_counts_before, b->ref_counts, b->ref_offsets);
    CHECK(stats.capacity == (dropless ? 0 : capacity), "%s: capacity %u, expected %u", c->name,
          stats.capacity, capacity);
    CHECK(stats.dispatched_rows == rows, "%s: dispatched rows %u, reference %llu", c->name,
          stats.dispatched_rows, (unsigned long long)rows);
    COMPARE_EXACT("slots", b->slots, b->ref_slots, TK);
    COMPARE_EXACT("counts_before", b->counts_before, b->ref_counts_before, E);
    COMPARE_EXACT("counts", b->counts, b->ref_counts, E);
    if (dropless) COMPARE_EXACT("offsets", b->offsets, b->ref_offsets, E + 1);
    uint64_t kept = 0;
    for (uint32_t e = 0; e < E; ++e) kept += b->ref_counts[e];
    CHECK(stats.dropped == stats.assignments - kept, "%s: dropped count", c->name);

    /* Stage 3: statistics. */
    moevk_route_stats want = {0};
    CHECK(ref_stats(&at_step, &call, T, b->logits, b->row_stats, b->ref_counts_before, &want),
          "%s: the reference ran out of memory", c->name);
    check_stats(c, &stats, &want);
    uint32_t unrouted = 0; /* valid rows none of whose choices was kept */
    for (uint32_t t = 0; t < T; ++t) {
        int kept = 0;
        for (uint32_t j = 0; j < K; ++j) kept |= b->slots[t * K + j] >= 0;
        unrouted += b->row_stats[t].flag == REF_ROW_VALID && !kept;
    }
    CHECK(stats.unrouted_tokens == unrouted, "%s: unrouted tokens %u, expected %u", c->name,
          stats.unrouted_tokens, unrouted);
    check_stats_consistency(c, &stats, b, reference_iterations);
    if (test_failed()) return;

    if (c->with_hidden && !test_failed()) {
        /* Stage 4: dispatch, bit for bit. */
        ref_dispatch(rows, row_bytes, b->ref_row_token, b->hidden, b->ref_dispatched);
        CHECK(memcmp(b->dispatched, b->ref_dispatched, rows * row_bytes) == 0,
              "%s: dispatched rows differ from the reference", c->name);
        /* Stage 5: combine of fresh expert outputs. */
        for (uint64_t i = 0; i < rows * d; ++i)
            ref_store(b->expert_out, i, info->hidden_type, rng_uniform(-2.0f, 2.0f));
        CHECK_OK(moevk_combine(router, moevk_host_tensor(b->expert_out),
                               moevk_host_tensor(b->combined)));
        ref_combine(info, T, b->ref_rows, b->weights, b->expert_out, b->ref_combined);
        double tolerance = info->hidden_type == MOEVK_DTYPE_F32 ? 1e-5 : 1e-2;
        for (uint64_t i = 0, bad = 0; i < (uint64_t)T * d && bad < 5; ++i) {
            double got = ref_load(b->combined, i, info->hidden_type);
            double want_value = ref_load(b->ref_combined, i, info->hidden_type);
            /* Relative to the size of the summed terms, so that cancellation is judged fairly. */
            uint64_t t = i / d;
            double magnitude = fabs(want_value);
            for (uint32_t j = 0; j < K; ++j) {
                int32_t row = b->ref_rows[t * K + j];
                if (row >= 0)
                    magnitude +=
                        fabs(b->weights[t * K + j] *
                             ref_load(b->expert_out, (uint64_t)row * d + i % d, info->hidden_type));
            }
            if (fabs(got - want_value) > tolerance * magnitude) {
                ++bad;
                test_fail(__FILE__, __LINE__, "%s: combined[%llu] is %.7g, reference %.7g", c->name,
                          (unsigned long long)i, got, want_value);
            }
        }
    }

    /* The same input again: the same bits. */
    if (!test_failed()) {
        int32_t *ids2 = malloc(TK * 4 + 4), *slots2 = malloc(TK * 4 + 4);
        float *weights2 = malloc(TK * 4 + 4);
        moevk_route_stats stats2;
        moevk_route_stats_init(&stats2);
        moevk_route_output again = {.expert_ids = moevk_host_tensor(ids2),
                                    .weights = moevk_host_tensor(weights2),
                                    .slots = moevk_host_tensor(slots2),
                                    .counts = moevk_host_tensor(NULL),
                                    .counts_before = moevk_host_tensor(NULL),
                                    .offsets = moevk_host_tensor(NULL),
                                    .dispatched = moevk_host_tensor(NULL),
                                    .stats = &stats2};
        r = moevk_route(router, &input, &again);
        if (r != MOEVK_SUCCESS || memcmp(ids2, b->ids, TK * 4) ||
            memcmp(weights2, b->weights, TK * 4) || memcmp(slots2, b->slots, TK * 4) ||
            stats2.aux_loss != stats.aux_loss || stats2.z_loss != stats.z_loss ||
            stats2.entropy != stats.entropy || stats2.dropped != stats.dropped)
            test_fail(__FILE__, __LINE__, "%s: a second run differs from the first", c->name);
        free(ids2);
        free(slots2);
        free(weights2);
    }
}

moevk_router_info route_case_info(moevk_routing_mode mode, uint32_t E, uint32_t k, uint32_t T,
                                  uint32_t d) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.mode = mode;
    info.num_experts = E;
    info.top_k = k;
    info.max_tokens = T;
    info.hidden_size = d;
    return info;
}

void check_route_case(const route_case *c) {
    const moevk_router_info *info = &c->info;
    uint32_t T = c->num_tokens, E = info->num_experts, K = info->top_k, d = info->hidden_size;
    uint64_t TK = (uint64_t)T * K;
    uint64_t row_bytes = (uint64_t)d * (info->hidden_type == MOEVK_DTYPE_F32 ? 4 : 2);
    uint64_t logit_bytes = (uint64_t)T * E * (info->logits_type == MOEVK_DTYPE_F32 ? 4 : 2);

    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), info, &router));
    uint64_t max_rows = moevk_router_max_dispatched_rows(router);
    buffers b = {0};
    b.logits = malloc(logit_bytes + 4);
    b.bias = malloc(E * 4);
    b.hidden = malloc((uint64_t)T * row_bytes + 4);
    b.dispatched = calloc(max_rows * row_bytes + 4, 1);
    b.ref_dispatched = calloc(max_rows * row_bytes + 4, 1);
    b.expert_out = malloc(max_rows * row_bytes + 4);
    b.combined = malloc((uint64_t)T * row_bytes + 4);
    b.ref_combined = malloc((uint64_t)T * row_bytes + 4);
    b.weights = malloc(TK * 4 + 4);
    b.ref_weights = malloc(TK * 4 + 4);
    b.ids = malloc(TK * 4 + 4);
    b.ref_ids = malloc(TK * 4 + 4);
    b.slots = malloc(TK * 4 + 4);
    b.ref_slots = malloc(TK * 4 + 4);
    b.ref_rows = malloc(TK * 4 + 4);
    b.ref_row_token = malloc(max_rows * 4 + 4);
    b.counts = malloc(E * 4);
    b.counts_before = malloc(E * 4);
    b.offsets = malloc(E * 4 + 4);
    b.ref_counts = malloc(E * 4);
    b.ref_counts_before = malloc(E * 4);
    b.ref_offsets = malloc(E * 4 + 4);
    b.row_stats = malloc((uint64_t)T * sizeof *b.row_stats + 1);
    b.learned_std = malloc((uint64_t)T * E * sizeof *b.learned_std + 1);
    fill_inputs(c, &b);
    compare_case(c, router, &b);
    free_buffers(&b);
    moevk_router_destroy(router);
}

moevk_router_info routing_case_info(const routing_case *c) {
    moevk_router_info info = route_case_info(c->mode, c->E, c->k, c->max_tokens, c->d);
    info.sequence_length = c->sequence_length ? c->sequence_length : 16;
    info.sinkhorn_iterations = c->sinkhorn_iterations;
    info.score = c->score;
    info.renormalize = c->renormalize;
    if (c->scale) info.scale = c->scale;
    if (c->temperature) info.temperature = c->temperature;
    info.logits_type = c->logits_type;
    info.hidden_type = c->hidden_type;
    info.capacity_mode = c->capacity_mode;
    if (c->capacity_factor) info.capacity_factor = c->capacity_factor;
    info.capacity = c->capacity;
    if (c->min_capacity) info.min_capacity = c->min_capacity;
    info.drop_policy = c->drop_policy;
    info.pad_multiple = c->pad_multiple;
    info.num_groups = c->groups;
    info.topk_groups = c->topk_groups;
    info.noise = c->noise;
    info.noise_amount = c->noise_amount;
    info.noise_seed = c->noise_seed;
    info.noisy_scores = c->noisy_scores;
    info.bias_on_scores = c->bias_on_scores;
    if (c->addressed) info.max_binding_bytes = 1024;
    info.selection_kernel = c->selection;
    info.choice_block_tokens = c->choice_block_tokens;
    return info;
}

int run_routing_table(const routing_case *rows, size_t count, const test_case *functions,
                      size_t function_count, int argc, char **argv) {
    /* The rows twice, then the second copy's names, in one block. */
    routing_case *table = malloc(2 * count * sizeof *table + count * 128);
    if (!table) return 1;
    char *names = (char *)(table + 2 * count);
    for (size_t i = 0; i < count; ++i) {
        table[i] = rows[i];
        table[count + i] = rows[i];
        snprintf(names + 128 * i, 128, "%s_subgroup_kernel", rows[i].name);
        table[count + i].name = names + 128 * i;
        table[count + i].selection = MOEVK_SELECTION_SUBGROUP;
    }
    int status = test_main_with_table(table, 2 * count, sizeof *table, run_routing_case, functions,
                                      function_count, argc, argv);
    free(table);
    return status;
}

void run_routing_case(const void *row) {
    const routing_case *c = row;
    if (c->selection == MOEVK_SELECTION_SUBGROUP && test_selection_lanes() == 0) {
        printf("  skipped: this device runs no subgroup kernel\n");
        return;
    }
    if (c->mode == MOEVK_MODE_EXPERT_CHOICE) {
        run_choice(c->name, routing_case_info(c), c->T, c->pattern);
        return;
    }
    route_case check = {.name = c->name,
                        .info = routing_case_info(c),
                        .num_tokens = c->T,
                        .pattern = c->pattern,
                        .with_bias = c->bias,
                        .with_hidden = c->hidden,
                        .step = c->step,
                        .layer = c->layer};
    check_route_case(&check);
}
