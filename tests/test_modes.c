/* The routing modes against the CPU reference: SEQUENCE and BATCH (one decision per sequence,
 * bit-exact), and SINKHORN (balanced selection; decisions agree outside near ties). Every case
 * also goes through bucketing, dispatch, combine and the statistics (route_check.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"
#include "route_check.h"

static moevk_router_info base(moevk_routing_mode mode, uint32_t E, uint32_t k, uint32_t T,
                              uint32_t d) {
    moevk_router_info info;
    moevk_router_info_init(&info);
    info.mode = mode;
    info.num_experts = E;
    info.top_k = k;
    info.max_tokens = T;
    info.hidden_size = d;
    info.sequence_length = 16;
    return info;
}

static void run(const char *name, moevk_router_info info, uint32_t T, logits_pattern pattern,
                int hidden) {
    route_case c = {.name = name,
                    .info = info,
                    .num_tokens = T,
                    .pattern = pattern,
                    .with_hidden = hidden,
                    .step = 3,
                    .layer = 1};
    check_route_case(&c);
}

/* ---- SEQUENCE and BATCH ---- */
static void test_sequence_random(void) {
    run("sequence 16", base(MOEVK_MODE_SEQUENCE, 8, 2, 640, 12), 640, LOGITS_RANDOM, 1);
}
static void test_sequence_last_one_shorter(void) {
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 13, 3, 1000, 5);
    info.sequence_length = 37; /* 1000 = 27 * 37 + 1 */
    run("sequence 37, odd sizes", info, 1000, LOGITS_RANDOM, 1);
}
static void test_sequence_masked_and_nonfinite_tokens(void) {
    run("sequence masked", base(MOEVK_MODE_SEQUENCE, 12, 4, 500, 4), 500, LOGITS_MASKED, 1);
    run("sequence nonfinite", base(MOEVK_MODE_SEQUENCE, 8, 2, 600, 4), 600, LOGITS_NONFINITE, 1);
}
static void test_sequence_ties_and_huge(void) {
    run("sequence ties", base(MOEVK_MODE_SEQUENCE, 6, 6, 300, 3), 300, LOGITS_TIES, 1);
    run("sequence huge", base(MOEVK_MODE_SEQUENCE, 10, 3, 400, 0), 400, LOGITS_HUGE, 0);
}
static void test_sequence_edges(void) {
    run("sequence T=0", base(MOEVK_MODE_SEQUENCE, 8, 2, 32, 4), 0, LOGITS_RANDOM, 1);
    run("sequence T=1", base(MOEVK_MODE_SEQUENCE, 8, 2, 32, 4), 1, LOGITS_RANDOM, 1);
    run("sequence E=1", base(MOEVK_MODE_SEQUENCE, 1, 1, 100, 4), 100, LOGITS_RANDOM, 1);
    moevk_router_info one = base(MOEVK_MODE_SEQUENCE, 9, 2, 300, 0);
    one.sequence_length = 1;
    run("sequence of 1", one, 300, LOGITS_RANDOM, 0);
}
static void test_sequence_f16_sigmoid_dropless(void) {
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 16, 4, 777, 6);
    info.logits_type = MOEVK_DTYPE_F16;
    info.score = MOEVK_SCORE_SIGMOID;
    info.renormalize = 1;
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    info.sequence_length = 100;
    run("sequence f16 sigmoid dropless", info, 777, LOGITS_RANDOM, 1);
}
static void test_sequence_jitter_is_exact(void) {
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 16, 2, 512, 0);
    info.noise = MOEVK_NOISE_JITTER;
    info.noise_amount = 0.3f;
    info.noise_seed = 0x1234567890ull;
    info.noisy_scores = 1;
    info.sequence_length = 8;
    run("sequence jitter", info, 512, LOGITS_TIES, 0);
    info.noise = MOEVK_NOISE_GAUSSIAN;
    info.noise_amount = 0.5f;
    run("sequence gaussian", info, 512, LOGITS_RANDOM, 0);
}
static void test_batch(void) {
    run("batch", base(MOEVK_MODE_BATCH, 8, 3, 999, 4), 999, LOGITS_RANDOM, 1);
    run("batch masked", base(MOEVK_MODE_BATCH, 8, 3, 300, 4), 300, LOGITS_MASKED, 1);
    run("batch T=1", base(MOEVK_MODE_BATCH, 8, 3, 16, 4), 1, LOGITS_RANDOM, 1);
}

/* A sequence's tokens share one decision, and it is the top-k of their mean logits. */
static void test_sequence_tokens_share_the_decision(void) {
    enum { E = 4, S = 3, T = 6 };
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, E, 2, T, 0);
    info.sequence_length = S;
    /* Sequence 0: token 1 alone prefers expert 3, but the mean favours 0 then 2. Sequence 1:
     * token 4 is masked (routed nowhere, left out of the mean); the others average to 3, 1. */
    const float logits[T * E] = {
        4,      0, 3, 0, /**/ 1,    0,         1,         5,         /**/ 4, 0, 2, 0,
        /**/ 0, 2, 0, 1, -INFINITY, -INFINITY, -INFINITY, -INFINITY, /**/ 0, 2, 0, 4,
    };
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    int32_t ids[T * 2];
    moevk_route_stats stats;
    moevk_route_input input = {.num_tokens = T, .logits = logits};
    moevk_route_output output = {.expert_ids = ids, .stats = &stats};
    moevk_result r = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    const int32_t want[T * 2] = {0, 2, 0, 2, 0, 2, 3, 1, -1, -1, 3, 1};
    for (int i = 0; i < T * 2; ++i)
        CHECK(ids[i] == want[i], "ids[%d] is %d, expected %d", i, ids[i], want[i]);
    CHECK(stats.masked_rows == 1, "masked rows %u", stats.masked_rows);
}

/* ---- SINKHORN ---- */
static void test_sinkhorn_random(void) {
    run("sinkhorn", base(MOEVK_MODE_SINKHORN, 8, 2, 500, 8), 500, LOGITS_RANDOM, 1);
    run("sinkhorn odd", base(MOEVK_MODE_SINKHORN, 13, 3, 301, 5), 301, LOGITS_RANDOM, 1);
}
static void test_sinkhorn_edges(void) {
    run("sinkhorn masked", base(MOEVK_MODE_SINKHORN, 12, 3, 400, 4), 400, LOGITS_MASKED, 1);
    run("sinkhorn nonfinite", base(MOEVK_MODE_SINKHORN, 8, 2, 300, 4), 300, LOGITS_NONFINITE, 1);
    run("sinkhorn huge", base(MOEVK_MODE_SINKHORN, 6, 2, 200, 0), 200, LOGITS_HUGE, 0);
    run("sinkhorn ties", base(MOEVK_MODE_SINKHORN, 6, 6, 200, 3), 200, LOGITS_TIES, 1);
    run("sinkhorn T=0", base(MOEVK_MODE_SINKHORN, 8, 2, 16, 4), 0, LOGITS_RANDOM, 1);
    run("sinkhorn T=1", base(MOEVK_MODE_SINKHORN, 8, 2, 16, 4), 1, LOGITS_RANDOM, 1);
    run("sinkhorn E=1", base(MOEVK_MODE_SINKHORN, 1, 1, 100, 4), 100, LOGITS_RANDOM, 1);
}
static void test_sinkhorn_with_noise(void) {
    moevk_router_info info = base(MOEVK_MODE_SINKHORN, 8, 2, 300, 0);
    info.noise = MOEVK_NOISE_JITTER;
    info.noise_amount = 0.2f;
    info.noise_seed = 99;
    run("sinkhorn jitter", info, 300, LOGITS_RANDOM, 0);
}

/* Skewed logits: plain top-k piles onto the favoured experts; Sinkhorn spreads the load. */
static void test_sinkhorn_balances(void) {
    enum { E = 8, T = 512 };
    float *logits = malloc(sizeof(float) * T * E);
    CHECK(logits, "out of memory");
    for (int i = 0; i < T * E; ++i) logits[i] = rng_normal() + (i % E < 2 ? 3.0f : 0.0f);
    uint32_t counts[2][E];
    moevk_route_stats stats[2];
    for (int m = 0; m < 2; ++m) {
        moevk_router_info info = base(m ? MOEVK_MODE_SINKHORN : MOEVK_MODE_TOKEN, E, 2, T, 0);
        moevk_router *router = NULL;
        moevk_result r = moevk_router_create(test_context(), &info, &router);
        moevk_route_input input = {.num_tokens = T, .logits = logits};
        moevk_route_output output = {.counts_before = counts[m], .stats = &stats[m]};
        if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
        moevk_router_destroy(router);
        if (r != MOEVK_SUCCESS) free(logits);
        CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    }
    /* The reference's factors: the same iterations (or one apart, near the tolerance). */
    moevk_router_info info = base(MOEVK_MODE_SINKHORN, E, 2, T, 0);
    ref_sinkhorn_factors factors;
    int made = ref_sinkhorn(&info, NULL, T, logits, &factors);
    free(logits);
    CHECK(made, "out of memory");
    free(factors.d0);
    uint32_t max_count[2] = {0, 0};
    for (int m = 0; m < 2; ++m)
        for (int e = 0; e < E; ++e)
            if (counts[m][e] > max_count[m]) max_count[m] = counts[m][e];
    CHECK(max_count[0] > 300, "plain top-k should pile up: max %u", max_count[0]);
    CHECK(max_count[1] < 200, "Sinkhorn should balance (mean 128): max %u", max_count[1]);
    CHECK(stats[0].sinkhorn_iterations == 0, "token mode reports Sinkhorn iterations");
    uint32_t got = stats[1].sinkhorn_iterations, want = factors.iterations;
    CHECK(got > 1 && got + 1 >= want && got <= want + 1, "%u iterations, reference %u", got, want);
    CHECK(stats[1].sinkhorn_error < 1e-4f && stats[1].sinkhorn_error >= 0.0f, "error %g",
          (double)stats[1].sinkhorn_error);
}

/* The iteration cap holds; inference mode routes by the plain top-k. */
static void test_sinkhorn_cap_and_inference(void) {
    enum { E = 6, T = 200 };
    float logits[T * E];
    for (int i = 0; i < T * E; ++i) logits[i] = 2.0f * rng_normal();
    moevk_router_info info = base(MOEVK_MODE_SINKHORN, E, 2, T, 0);
    info.sinkhorn_iterations = 2;
    moevk_router_info plain = base(MOEVK_MODE_TOKEN, E, 2, T, 0);
    moevk_router *router = NULL, *token_router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_result r = moevk_router_create(test_context(), &plain, &token_router);
    int32_t ids[T * 2], token_ids[T * 2];
    float weights[T * 2], token_weights[T * 2];
    moevk_route_stats stats;
    moevk_route_input input = {.num_tokens = T, .logits = logits};
    moevk_route_output output = {.stats = &stats};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    uint32_t capped = stats.sinkhorn_iterations;
    input.inference = 1;
    output = (moevk_route_output){.expert_ids = ids, .weights = weights, .stats = &stats};
    if (r == MOEVK_SUCCESS) r = moevk_route(router, &input, &output);
    moevk_route_output token_output = {.expert_ids = token_ids, .weights = token_weights};
    if (r == MOEVK_SUCCESS) r = moevk_route(token_router, &input, &token_output);
    moevk_router_destroy(router);
    moevk_router_destroy(token_router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    CHECK(capped == 2, "%u iterations past a cap of 2", capped);
    CHECK(stats.sinkhorn_iterations == 0, "inference ran Sinkhorn");
    CHECK(!memcmp(ids, token_ids, sizeof ids) && !memcmp(weights, token_weights, sizeof weights),
          "inference differs from plain top-k");
}

/* Logits past max_binding_bytes: the modes' stages read them through device addresses. */
static void test_modes_through_addresses(void) {
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 8, 2, 700, 16);
    info.max_binding_bytes = 1024;
    run("sequence, addresses", info, 700, LOGITS_RANDOM, 1);
    info.mode = MOEVK_MODE_SINKHORN;
    run("sinkhorn, addresses", info, 700, LOGITS_RANDOM, 1);
}

/* ---- EXPERT_CHOICE ---- */
typedef struct choice_buffers {
    void *logits, *hidden, *dispatched, *expert_out, *combined, *ref_combined;
    int32_t *ids, *slots, *rows;
    float *weights, *keys, *thresholds;
    uint32_t *counts, *counts_before;
    uint8_t *taken;
    ref_row_stats *row_stats;
} choice_buffers;

static void free_choice_buffers(choice_buffers *b) {
    void **p = (void **)b;
    for (size_t i = 0; i < sizeof *b / sizeof(void *); ++i) free(p[i]);
}

static float choice_logit(logits_pattern pattern, uint32_t t, uint32_t e) {
    switch (pattern) {
    case LOGITS_TIES: return (float)(rng_u32() % 3) * 0.5f;
    case LOGITS_MASKED: return t % 17 == 5 || rng_u32() % 3 == 0 ? -INFINITY : 2.0f * rng_normal();
    case LOGITS_NONFINITE: return t % 13 == 3 && e == t % 7 ? NAN : 2.0f * rng_normal();
    case LOGITS_HUGE: return rng_u32() % 4 == 0 ? 1e30f : rng_normal();
    default: return 2.0f * rng_normal();
    }
}

/* Device against reference: the taken sets agree except for keys within 1e-5 relative of the
 * expert's threshold (the keys are softmax scores: exp differs by ulps between devices); the
 * slots number each expert's tokens in token order; counts, weights, statistics, dispatch and
 * combine follow; a second run gives the same bits. */
static void check_choice(choice_buffers *b, const char *name, moevk_router_info info, uint32_t T,
                         logits_pattern pattern, int noise_step) {
    uint32_t E = info.num_experts, d = info.hidden_size;
    uint64_t TE = (uint64_t)T * E;
    uint64_t row_bytes = (uint64_t)d * (info.hidden_type == MOEVK_DTYPE_F32 ? 4 : 2);
    for (uint64_t i = 0; i < TE; ++i) ((float *)b->logits)[i] = choice_logit(pattern, i / E, i % E);
    for (uint64_t i = 0; i < (uint64_t)T * d; ++i)
        ref_store(b->hidden, i, info.hidden_type, rng_uniform(-4, 4));
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    CHECK(moevk_router_choices(router) == E, "%s: %u choices per token", name,
          moevk_router_choices(router));
    uint32_t C = moevk_router_capacity(router, T, 0);
    moevk_route_stats stats, again;
    moevk_route_input input = {.num_tokens = T,
                               .logits = b->logits,
                               .hidden = d ? b->hidden : NULL,
                               .step = (uint32_t)noise_step};
    moevk_route_output output = {.expert_ids = b->ids,
                                 .weights = b->weights,
                                 .slots = b->slots,
                                 .counts = b->counts,
                                 .counts_before = b->counts_before,
                                 .dispatched = d ? b->dispatched : NULL,
                                 .stats = &stats};
    moevk_result r = moevk_route(router, &input, &output);
    if (r == MOEVK_SUCCESS && d) {
        for (uint64_t i = 0; i < (uint64_t)E * C * d; ++i)
            ref_store(b->expert_out, i, info.hidden_type, rng_uniform(-2, 2));
        r = moevk_combine(router, b->expert_out, b->combined);
    }
    /* The same input again: the same bits. */
    int32_t *ids2 = malloc(TE * 4 + 4);
    float *weights2 = malloc(TE * 4 + 4);
    moevk_route_output second = {.expert_ids = ids2, .weights = weights2, .stats = &again};
    if (r == MOEVK_SUCCESS && ids2 && weights2) r = moevk_route(router, &input, &second);
    int same =
        ids2 && weights2 && !memcmp(ids2, b->ids, TE * 4) && !memcmp(weights2, b->weights, TE * 4);
    free(ids2);
    free(weights2);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "%s: route -> %s (%s)", name, moevk_result_string(r),
          moevk_context_last_error(test_context()));
    CHECK(same, "%s: a second run differs", name);

    ref_call call = {.step = (uint32_t)noise_step};
    moevk_router_info token_info = info; /* the row stats of the scores stage */
    token_info.mode = MOEVK_MODE_TOKEN;
    token_info.top_k = 1;
    int32_t *scratch_ids = malloc((uint64_t)T * 4 + 4);
    float *scratch_weights = malloc((uint64_t)T * 4 + 4);
    int ok = scratch_ids && scratch_weights &&
             ref_scores_topk(&token_info, &call, T, b->logits, NULL, scratch_ids, scratch_weights,
                             b->row_stats);
    free(scratch_ids);
    free(scratch_weights);
    CHECK(ok, "%s: reference out of memory", name);
    ref_choice_keys(&info, &call, T, b->logits, b->row_stats, b->keys);
    CHECK(ref_expert_choice(&info, T, C, b->keys, b->taken, b->thresholds), "out of memory");

    /* Scores of noisy logits carry the noise's differences too: a device's log near 1 has an
     * absolute error bound, and -log(-log u) magnifies it for u near 1. */
    double tolerance = info.noisy_scores && info.noise >= MOEVK_NOISE_GAUSSIAN ? 3e-4 : 1e-6;
    uint32_t valid = 0, unrouted = 0;
    uint64_t taken_total = 0;
    for (uint32_t e = 0; e < E; ++e) {
        uint32_t next_slot = 0;
        for (uint32_t t = 0; t < T; ++t) {
            uint64_t i = (uint64_t)t * E + e;
            int got = b->ids[i] >= 0, want = b->taken[i];
            CHECK(b->ids[i] == (got ? (int32_t)e : -1), "%s: ids[%u, %u] is %d", name, t, e,
                  b->ids[i]);
            if (got != want) {
                double key = b->keys[i], thr = b->thresholds[e];
                CHECK(thr >= 0 && fabs(key - thr) <= 1e-5 * thr,
                      "%s: expert %u %s token %u, key %.9g, threshold %.9g", name, e,
                      got ? "took" : "left", t, key, thr);
            }
            if (!got) {
                CHECK(b->slots[i] == -1 && b->weights[i] == 0.0f, "%s: (%u, %u) not taken", name, t,
                      e);
                continue;
            }
            CHECK(b->slots[i] == (int32_t)next_slot, "%s: expert %u token %u slot %d, expected %u",
                  name, e, t, b->slots[i], next_slot);
            ++next_slot;
            float want_weight = ref_choice_weight(&info, &call, b->logits, &b->row_stats[t], t, e);
            CHECK(fabs(b->weights[i] - want_weight) <= tolerance * fabs(want_weight) + 1e-7,
                  "%s: weight (%u, %u) %.9g, reference %.9g", name, t, e, b->weights[i],
                  want_weight);
            if (d)
                CHECK(!memcmp((char *)b->dispatched + ((uint64_t)e * C + next_slot - 1) * row_bytes,
                              (char *)b->hidden + (uint64_t)t * row_bytes, row_bytes),
                      "%s: dispatched row of (%u, %u)", name, t, e);
        }
        CHECK(next_slot <= C && b->counts[e] == next_slot && b->counts_before[e] == next_slot,
              "%s: expert %u took %u of C = %u, counts %u / %u", name, e, next_slot, C,
              b->counts[e], b->counts_before[e]);
        /* Near-ties may swap tokens across the threshold, never change how many are taken:
         * eligibility (valid row, unmasked expert) is exact. */
        uint32_t want_taken = 0;
        for (uint32_t t = 0; t < T; ++t) want_taken += b->taken[(uint64_t)t * E + e];
        CHECK(next_slot == want_taken, "%s: expert %u took %u tokens, reference %u", name, e,
              next_slot, want_taken);
        taken_total += next_slot;
    }
    for (uint32_t t = 0; t < T; ++t) {
        if (b->row_stats[t].flag != REF_ROW_VALID) continue;
        ++valid;
        int any = 0;
        for (uint32_t e = 0; e < E; ++e) any |= b->ids[(uint64_t)t * E + e] >= 0;
        unrouted += !any;
    }
    CHECK(stats.assignments == taken_total && stats.dropped == 0, "%s: assignments %llu", name,
          (unsigned long long)stats.assignments);
    CHECK(stats.unrouted_tokens == unrouted, "%s: unrouted %u, expected %u", name,
          stats.unrouted_tokens, unrouted);
    CHECK(T - stats.nonfinite_rows - stats.masked_rows == valid, "%s: valid rows", name);
    CHECK(stats.capacity == C && stats.dispatched_rows == E * C, "%s: capacity", name);
    if (!d) return;
    for (uint64_t i = 0; i < TE; ++i)
        b->rows[i] = b->slots[i] >= 0 ? (int32_t)((i % E) * C + b->slots[i]) : -1;
    moevk_router_info wide = info;
    wide.top_k = E; /* ref_combine reads [T, top_k] */
    ref_combine(&wide, T, b->rows, b->weights, b->expert_out, b->ref_combined);
    float tolerance_combined = info.hidden_type == MOEVK_DTYPE_F32 ? 1e-5f : 1e-2f;
    for (uint64_t i = 0; i < (uint64_t)T * d; ++i) {
        float got = ref_load(b->combined, i, info.hidden_type);
        float want = ref_load(b->ref_combined, i, info.hidden_type);
        CHECK(fabsf(got - want) <= tolerance_combined * (fabsf(want) + 1.0f),
              "%s: combined[%llu] %.7g, %.7g", name, (unsigned long long)i, got, want);
    }
}

static void run_choice(const char *name, moevk_router_info info, uint32_t T,
                       logits_pattern pattern) {
    uint32_t E = info.num_experts, d = info.hidden_size;
    uint64_t TE = (uint64_t)T * E + 1, rows = (uint64_t)E * (T + 64) + 1;
    choice_buffers b = {.logits = malloc(TE * 4),
                        .hidden = malloc((uint64_t)T * d * 4 + 4),
                        .dispatched = malloc(rows * d * 4 + 4),
                        .expert_out = malloc(rows * d * 4 + 4),
                        .combined = malloc((uint64_t)T * d * 4 + 4),
                        .ref_combined = malloc((uint64_t)T * d * 4 + 4),
                        .ids = malloc(TE * 4),
                        .slots = malloc(TE * 4),
                        .rows = malloc(TE * 4),
                        .weights = malloc(TE * 4),
                        .keys = malloc(TE * 4),
                        .thresholds = malloc(E * 4 + 4),
                        .counts = malloc(E * 4 + 4),
                        .counts_before = malloc(E * 4 + 4),
                        .taken = malloc(TE),
                        .row_stats = malloc((T + 1) * sizeof(ref_row_stats))};
    int allocated = 1;
    void **p = (void **)&b;
    for (size_t i = 0; i < sizeof b / sizeof(void *); ++i) allocated &= p[i] != NULL;
    if (allocated)
        check_choice(&b, name, info, T, pattern, 5);
    else
        test_fail(__FILE__, __LINE__, "%s: out of memory", name);
    free_choice_buffers(&b);
}

static void test_expert_choice_random(void) {
    run_choice("choice", base(MOEVK_MODE_EXPERT_CHOICE, 8, 2, 500, 12), 500, LOGITS_RANDOM);
    moevk_router_info odd = base(MOEVK_MODE_EXPERT_CHOICE, 13, 1, 1001, 5);
    odd.capacity_factor = 2.0f;
    run_choice("choice odd, factor 2", odd, 1001, LOGITS_RANDOM);
}
static void test_expert_choice_edges(void) {
    run_choice("choice masked", base(MOEVK_MODE_EXPERT_CHOICE, 12, 1, 400, 4), 400, LOGITS_MASKED);
    run_choice("choice nonfinite", base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 300, 4), 300,
               LOGITS_NONFINITE);
    run_choice("choice huge", base(MOEVK_MODE_EXPERT_CHOICE, 6, 1, 200, 0), 200, LOGITS_HUGE);
    run_choice("choice ties", base(MOEVK_MODE_EXPERT_CHOICE, 6, 1, 300, 3), 300, LOGITS_TIES);
    run_choice("choice T=0", base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 16, 4), 0, LOGITS_RANDOM);
    run_choice("choice T=1", base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 16, 4), 1, LOGITS_RANDOM);
    run_choice("choice E=1", base(MOEVK_MODE_EXPERT_CHOICE, 1, 1, 100, 4), 100, LOGITS_RANDOM);
    moevk_router_info fixed = base(MOEVK_MODE_EXPERT_CHOICE, 16, 1, 700, 0);
    fixed.capacity_mode = MOEVK_CAPACITY_FIXED;
    fixed.capacity = 700; /* C = T: every eligible token */
    run_choice("choice C=T", fixed, 700, LOGITS_RANDOM);
    fixed.capacity = 0;
    run_choice("choice C=0", fixed, 700, LOGITS_RANDOM);
}
static void test_expert_choice_sigmoid_and_noise(void) {
    moevk_router_info info = base(MOEVK_MODE_EXPERT_CHOICE, 10, 1, 600, 6);
    info.score = MOEVK_SCORE_SIGMOID;
    info.temperature = 0.7f;
    info.scale = 2.5f;
    run_choice("choice sigmoid", info, 600, LOGITS_RANDOM);
    info.score = MOEVK_SCORE_SOFTMAX;
    info.noise = MOEVK_NOISE_GUMBEL;
    info.noise_amount = 0.5f;
    info.noise_seed = 77;
    run_choice("choice gumbel", info, 600, LOGITS_RANDOM);
    info.noisy_scores = 1;
    run_choice("choice gumbel, noisy scores", info, 600, LOGITS_RANDOM);
}
static void test_expert_choice_16_bit_rows(void) {
    moevk_router_info info = base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 300, 7); /* odd d */
    info.hidden_type = MOEVK_DTYPE_BF16;
    run_choice("choice bf16, odd d", info, 300, LOGITS_RANDOM);
    info.hidden_type = MOEVK_DTYPE_F16;
    info.hidden_size = 16;
    run_choice("choice f16", info, 300, LOGITS_RANDOM);
}

static void test_expert_choice_addresses(void) {
    moevk_router_info info = base(MOEVK_MODE_EXPERT_CHOICE, 8, 1, 300, 16);
    info.max_binding_bytes = 1024;
    run_choice("choice, addresses", info, 300, LOGITS_RANDOM);
}

/* Equal keys go to the lower token: identical rows, so each expert takes tokens 0 .. C-1. */
static void test_expert_choice_ties_to_the_lower_token(void) {
    enum { E = 3, T = 10 };
    moevk_router_info info = base(MOEVK_MODE_EXPERT_CHOICE, E, 1, T, 0);
    info.capacity_mode = MOEVK_CAPACITY_FIXED;
    info.capacity = 4;
    float logits[T * E];
    for (int i = 0; i < T * E; ++i) logits[i] = (float)(i % E) * 0.25f;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    int32_t slots[T * E];
    moevk_route_stats stats;
    moevk_route_input input = {.num_tokens = T, .logits = logits};
    moevk_route_output output = {.slots = slots, .stats = &stats};
    moevk_result r = moevk_route(router, &input, &output);
    moevk_router_destroy(router);
    CHECK(r == MOEVK_SUCCESS, "route -> %s", moevk_result_string(r));
    for (int t = 0; t < T; ++t)
        for (int e = 0; e < E; ++e)
            CHECK(slots[t * E + e] == (t < 4 ? t : -1), "slot (%d, %d) is %d", t, e,
                  slots[t * E + e]);
    CHECK(stats.unrouted_tokens == T - 4, "unrouted %u", stats.unrouted_tokens);
}

/* ---- Options the modes refuse ---- */
static void test_mode_errors(void) {
    moevk_context *context = test_context();
    moevk_router *router = NULL;
    moevk_router_info info = base(MOEVK_MODE_SEQUENCE, 8, 2, 64, 0);
    info.sequence_length = 0;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "sequence_length 0 accepted");
    CHECK(strstr(moevk_context_last_error(context), "sequence_length"), "message: %s",
          moevk_context_last_error(context));
    info = base((moevk_routing_mode)7, 8, 2, 64, 0);
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "an unknown mode accepted");
    info = base(MOEVK_MODE_SINKHORN, 8, 2, 64, 0);
    info.num_groups = 2;
    info.topk_groups = 1;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "groups with Sinkhorn accepted");
    CHECK(router == NULL, "router left set after a failure");
    info = base(MOEVK_MODE_SINKHORN, 8, 2, 64, 0);
    info.sinkhorn_iterations = 10001;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "10001 Sinkhorn iterations accepted");
    info = base(MOEVK_MODE_EXPERT_CHOICE, 8, 2, 64, 0);
    info.capacity_mode = MOEVK_CAPACITY_DROPLESS;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a dropless expert choice accepted");
    info.capacity_mode = MOEVK_CAPACITY_FACTOR;
    info.renormalize = 1;
    CHECK(moevk_router_create(context, &info, &router) == MOEVK_ERROR_INVALID_ARGUMENT,
          "renormalize with expert choice accepted");

    info = base(MOEVK_MODE_BATCH, 8, 2, 64, 0);
    info.losses = 1;
    CHECK_OK(moevk_router_create(context, &info, &router));
    float logits[64 * 8], bias[8] = {0};
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    moevk_route_input input = {.num_tokens = 64, .logits = logits, .bias = bias};
    moevk_route_output output = {0};
    moevk_result with_bias = moevk_route(router, &input, &output);
    input.bias = NULL;
    moevk_result plain = moevk_route(router, &input, &output);
    moevk_loss_info loss = {.aux_coef = 1.0f};
    moevk_losses values;
    moevk_result losses = moevk_router_losses(router, &loss, &values, NULL, NULL);
    moevk_router_destroy(router);
    CHECK(with_bias == MOEVK_ERROR_INVALID_ARGUMENT, "a bias in BATCH mode accepted");
    CHECK(plain == MOEVK_SUCCESS, "route -> %s", moevk_result_string(plain));
    CHECK(losses == MOEVK_ERROR_INVALID_ARGUMENT, "losses in BATCH mode accepted");
}

static const test_case TESTS[] = {
    {"sequence_random", test_sequence_random},
    {"sequence_last_one_shorter", test_sequence_last_one_shorter},
    {"sequence_masked_and_nonfinite_tokens", test_sequence_masked_and_nonfinite_tokens},
    {"sequence_ties_and_huge", test_sequence_ties_and_huge},
    {"sequence_edges", test_sequence_edges},
    {"sequence_f16_sigmoid_dropless", test_sequence_f16_sigmoid_dropless},
    {"sequence_jitter_is_exact", test_sequence_jitter_is_exact},
    {"batch", test_batch},
    {"sequence_tokens_share_the_decision", test_sequence_tokens_share_the_decision},
    {"sinkhorn_random", test_sinkhorn_random},
    {"sinkhorn_edges", test_sinkhorn_edges},
    {"sinkhorn_with_noise", test_sinkhorn_with_noise},
    {"sinkhorn_balances", test_sinkhorn_balances},
    {"sinkhorn_cap_and_inference", test_sinkhorn_cap_and_inference},
    {"modes_through_addresses", test_modes_through_addresses},
    {"expert_choice_random", test_expert_choice_random},
    {"expert_choice_edges", test_expert_choice_edges},
    {"expert_choice_sigmoid_and_noise", test_expert_choice_sigmoid_and_noise},
    {"expert_choice_16_bit_rows", test_expert_choice_16_bit_rows},
    {"expert_choice_addresses", test_expert_choice_addresses},
    {"expert_choice_ties_to_the_lower_token", test_expert_choice_ties_to_the_lower_token},
    {"mode_errors", test_mode_errors},
};

int main(int argc, char **argv) {
    return test_main(TESTS, sizeof TESTS / sizeof TESTS[0], argc, argv);
}
