/* Expert-choice routes on the device held to the CPU reference (see choice_check.h). */
#include "choice_check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moevk_reference.h"

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
    moevk_route_stats stats = {0}, again = {0};
    moevk_route_input input = {.num_tokens = T,
                               .logits = moevk_host_tensor(b->logits),
                               .hidden = moevk_host_tensor(d ? b->hidden : NULL),
                               .step = (uint32_t)noise_step};
    moevk_route_output output = {.expert_ids = moevk_host_tensor(b->ids),
                                 .weights = moevk_host_tensor(b->weights),
                                 .slots = moevk_host_tensor(b->slots),
                                 .counts = moevk_host_tensor(b->counts),
                                 .counts_before = moevk_host_tensor(b->counts_before),
                                 .dispatched = moevk_host_tensor(d ? b->dispatched : NULL),
                                 .stats = &stats};
    moevk_result r = moevk_route(router, &input, &output);
    if (r == MOEVK_SUCCESS && d) {
        for (uint64_t i = 0; i < (uint64_t)E * C * d; ++i)
            ref_store(b->expert_out, i, info.hidden_type, rng_uniform(-2, 2));
        r = moevk_combine(router, moevk_host_tensor(b->expert_out), moevk_host_tensor(b->combined));
    }
    /* The same input again: the same bits. */
    int32_t *ids2 = malloc(TE * 4 + 4);
    float *weights2 = malloc(TE * 4 + 4);
    moevk_route_output second = {.expert_ids = moevk_host_tensor(ids2),
                                 .weights = moevk_host_tensor(weights2),
                                 .stats = &again};
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

void run_choice(const char *name, moevk_router_info info, uint32_t T, logits_pattern pattern) {
    uint32_t E = info.num_experts, d = info.hidden_size;
    /* Rows for the largest capacity the options give (a factor above 1 with few experts takes
     * C past T), as moevk_router_max_dispatched_rows would. */
    uint64_t C = info.capacity_mode == MOEVK_CAPACITY_FIXED
                     ? (uint64_t)info.capacity
                     : (uint64_t)ceil((double)info.capacity_factor * T / E);
    if (C < (uint64_t)info.min_capacity) C = (uint64_t)info.min_capacity;
    uint64_t TE = (uint64_t)T * E + 1, rows = (uint64_t)E * (C + T + 64) + 1;
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
