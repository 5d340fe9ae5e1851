/* The routing profile and drift (moevk_route_output.profile and drift_profile) against the CPU
 * reference (reference/profile.c) on fresh random logits: each token's five measures binned as
 * the reference bins them (a token within rounding of a bin edge may fall either side), the
 * first batch's bounds, usage and co-selection exact, the same bits run to run; softmax and
 * sigmoid, temperatures, noise on and off, expert choice, ties, -inf experts and rows, NaN and
 * +inf rows, huge values, T = 0 and 1, E = 1, k = E, T = 4099 with E = 256; the drift statistics
 * against the reference's from the same counts; detection rates on synthetic routers; JSON round
 * trips and refusals; the history's drift warning. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "logit_patterns.h"
#include "moevk_reference.h"
#include "route_check.h"

typedef struct profile_case {
    const char *name;
    moevk_routing_mode mode;
    uint32_t E, k, T;
    logit_pattern logits;
    moevk_score_func score;
    float temperature;
    int noise, inference;
    moevk_dtype logits_type;
    uint32_t bins;
    int given_bounds; /* narrow bounds: many values fall below or above them */
} profile_case;

static const profile_case CASES[] = {
    {"softmax_top2_of_16", .E = 16, .k = 2, .T = 500},
    {"zero_tokens", .E = 8, .k = 2, .T = 0},
    {"one_token", .E = 8, .k = 2, .T = 1},
    {"one_expert", .E = 1, .k = 1, .T = 77},
    {"k_equals_e", .E = 5, .k = 5, .T = 64},
    {"ties", .E = 12, .k = 3, .T = 300, .logits = TIES},
    {"masked_experts_and_rows", .E = 10, .k = 2, .T = 300, .logits = MASKED},
    {"nan_and_inf_rows", .E = 9, .k = 2, .T = 300, .logits = NONFINITE},
    {"huge_values", .E = 8, .k = 2, .T = 200, .logits = HUGE_VALUES},
    {"sigmoid_temperature", .E = 16, .k = 4, .T = 333, .score = MOEVK_SCORE_SIGMOID,
     .temperature = 0.7f},
    {"softmax_temperature_2", .E = 16, .k = 2, .T = 333, .temperature = 2.0f},
    {"noisy_scores", .E = 16, .k = 2, .T = 400, .noise = 1},
    {"noise_off_in_inference", .E = 16, .k = 2, .T = 400, .noise = 1, .inference = 1},
    {"f16_logits", .E = 16, .k = 2, .T = 250, .logits_type = MOEVK_DTYPE_F16},
    {"expert_choice", .mode = MOEVK_MODE_EXPERT_CHOICE, .E = 8, .k = 2, .T = 256},
    {"sinkhorn", .mode = MOEVK_MODE_SINKHORN, .E = 16, .k = 2, .T = 300},
    {"one_bin", .E = 16, .k = 2, .T = 300, .bins = 1},
    {"most_bins_given_bounds", .E = 16, .k = 2, .T = 700, .bins = MOEVK_PROFILE_MAX_BINS,
     .given_bounds = 1},
    {"large_t_4099_e_256", .E = 256, .k = 8, .T = 4099},
};

static moevk_router_info case_info(const profile_case *c) {
    moevk_router_info info = route_case_info(c->mode, c->E, c->k, c->T ? c->T : 8, 0);
    info.score = c->score;
    if (c->temperature) info.temperature = c->temperature;
    info.logits_type = c->logits_type;
    if (c->noise) {
        info.noise = MOEVK_NOISE_GAUSSIAN;
        info.noise_amount = 0.5f;
        info.noise_seed = 99;
        info.noisy_scores = 1;
    }
    return info;
}

static moevk_profile *new_profile(const moevk_router *router, uint32_t bins, const float *lower,
                                  const float *upper) {
    moevk_profile_info info;
    moevk_profile_info_for_router(router, &info);
    info.bins = bins;
    if (lower) {
        info.given_bounds = 1;
        memcpy(info.lower, lower, sizeof info.lower);
        memcpy(info.upper, upper, sizeof info.upper);
    }
    moevk_profile *profile = NULL;
    return moevk_profile_create(&info, &profile) == MOEVK_SUCCESS ? profile : NULL;
}

/* The rounding a measure may carry: the device's float steps against the reference's double. */
static double slack(double x) { return 5e-5 * fmax(1.0, fabs(x)); }

/* Whether histogram counts [bins + 2] can be the reference values' bins: each bin holds at least
 * the tokens sure to fall in it and at most those that may; the totals agree. */
static int histogram_matches(const uint64_t *counts, const double *measures, uint32_t T,
                             uint32_t measure, const moevk_profile_info *info, char *why,
                             size_t why_size) {
    uint32_t bins = info->bins, words = bins + 2;
    uint64_t *sure = calloc(words, 8), *may = calloc(words, 8), total = 0, valid = 0;
    double lower = info->lower[measure], upper = info->upper[measure];
    for (uint32_t t = 0; t < T; ++t) {
        double x = measures[(uint64_t)t * REF_MEASURES + measure];
        if (isnan(x)) continue;
        ++valid;
        uint32_t low = ref_profile_bin(x - slack(x), lower, upper, bins);
        uint32_t high = ref_profile_bin(x + slack(x), lower, upper, bins);
        if (low == high) sure[low]++;
        for (uint32_t b = low; b <= high; ++b) may[b]++;
    }
    int ok = 1;
    for (uint32_t b = 0; b < words && ok; ++b) {
        total += counts[b];
        if (counts[b] < sure[b] || counts[b] > may[b]) {
            snprintf(why, why_size, "measure %u bin %u holds %llu; the reference %llu .. %llu",
                     measure, b, (unsigned long long)counts[b], (unsigned long long)sure[b],
                     (unsigned long long)may[b]);
            ok = 0;
        }
    }
    if (ok && total != valid) {
        snprintf(why, why_size, "measure %u holds %llu tokens, not %llu", measure,
                 (unsigned long long)total, (unsigned long long)valid);
        ok = 0;
    }
    free(sure), free(may);
    return ok;
}

static int same_profiles(const moevk_profile *a, const moevk_profile *b) {
    moevk_profile_info ia, ib;
    moevk_profile_info_init(&ia), moevk_profile_info_init(&ib);
    moevk_profile_get_info(a, &ia), moevk_profile_get_info(b, &ib);
    if (memcmp(&ia, &ib, sizeof ia) || moevk_profile_tokens(a) != moevk_profile_tokens(b) ||
        moevk_profile_batches(a) != moevk_profile_batches(b))
        return 0;
    uint64_t E = ia.num_experts, words = ia.bins + 2;
    uint64_t *x = malloc(E * E * 8 + 8 * words), *y = malloc(E * E * 8 + 8 * words);
    int same = 1;
    moevk_profile_get_usage(a, x), moevk_profile_get_usage(b, y);
    same &= !memcmp(x, y, E * 8);
    moevk_profile_get_co_selection(a, x), moevk_profile_get_co_selection(b, y);
    same &= !memcmp(x, y, E * E * 8);
    for (int q = 0; q < MOEVK_MEASURES; ++q) {
        moevk_profile_get_histogram(a, q, x), moevk_profile_get_histogram(b, q, y);
        same &= !memcmp(x, y, words * 8);
    }
    moevk_drift_thresholds ta, tb;
    moevk_drift_thresholds_init(&ta), moevk_drift_thresholds_init(&tb);
    moevk_profile_get_thresholds(a, &ta), moevk_profile_get_thresholds(b, &tb);
    same &= !memcmp(&ta, &tb, sizeof ta);
    free(x), free(y);
    return same;
}

/* Routes the logits once, adding them to profile (or judging them against drift). */
static moevk_result route_batch_at(moevk_router *router, const void *logits, uint32_t T,
                                   int inference, moevk_profile *profile,
                                   const moevk_profile *drift, int32_t *ids,
                                   uint32_t *counts_before, moevk_route_stats *stats,
                                   uint32_t step) {
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.logits = moevk_host_tensor((void *)logits);
    input.step = step;
    input.inference = inference;
    moevk_route_output output;
    moevk_route_output_init(&output);
    if (ids) output.expert_ids = moevk_host_tensor(ids);
    if (counts_before) output.counts_before = moevk_host_tensor(counts_before);
    output.stats = stats;
    output.profile = profile;
    output.drift_profile = drift;
    return moevk_route(router, &input, &output);
}

/* At step 3, as the cases' reference calls take it. */
static moevk_result route_batch(moevk_router *router, const void *logits, uint32_t T, int inference,
                                moevk_profile *profile, const moevk_profile *drift, int32_t *ids,
                                uint32_t *counts_before, moevk_route_stats *stats) {
    return route_batch_at(router, logits, T, inference, profile, drift, ids, counts_before, stats,
                          3);
}

static void run_case(const void *row) {
    const profile_case *c = row;
    moevk_router_info info = case_info(c);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    uint64_t T = c->T, E = c->E, k = moevk_router_choices(router);
    size_t item = c->logits_type == MOEVK_DTYPE_F16 ? 2 : 4;
    void *logits = malloc(T * E * item + 4);
    for (uint64_t i = 0; i < T * E; ++i)
        ref_store(logits, i, c->logits_type,
                  pattern_logit(c->logits, (uint32_t)(i / E), (uint32_t)(i % E)));
    int32_t *ids = malloc(T * k * 4 + 4), *ref_ids = malloc(T * k * 4 + 4);
    uint32_t counts_before[MOEVK_MAX_EXPERTS];
    float *ref_weights = malloc(T * k * 4 + 4);
    ref_row_stats *rows = malloc(T * sizeof *rows + sizeof *rows);
    double *measures = malloc(T * REF_MEASURES * 8 + 8);
    uint64_t *counts = malloc((MOEVK_PROFILE_MAX_BINS + 2) * 8 + E * E * 8);
    uint64_t *pairs = calloc(E * E, 8);
    float lower[MOEVK_MEASURES] = {1.0f, 0.3f, 0.1f, -1.0f, -3.0f};
    float upper[MOEVK_MEASURES] = {2.0f, 0.6f, 0.4f, 3.0f, -2.0f};
    uint32_t bins = c->bins ? c->bins : 64;
    moevk_profile *profile = new_profile(router, c->bins, c->given_bounds ? lower : NULL, upper);
    moevk_profile *again = new_profile(router, c->bins, c->given_bounds ? lower : NULL, upper);
    moevk_route_stats stats, self;
    moevk_route_stats_init(&stats), moevk_route_stats_init(&self);
    moevk_result r = profile && again ? MOEVK_SUCCESS : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    if (r == MOEVK_SUCCESS)
        r = route_batch(router, logits, c->T, c->inference, profile, NULL, ids, counts_before,
                        &stats);
    if (r == MOEVK_SUCCESS)
        r = route_batch(router, logits, c->T, c->inference, again, NULL, NULL, NULL, NULL);
    /* The batch judged against its own profile. */
    if (r == MOEVK_SUCCESS && moevk_profile_tokens(profile) > 0)
        r = route_batch(router, logits, c->T, c->inference, NULL, profile, NULL, NULL, &self);
    moevk_router_info token_info = info;
    token_info.mode = MOEVK_MODE_TOKEN;
    ref_call call = {.step = 3, .inference = c->inference};
    int referenced =
        ref_scores_topk(&token_info, &call, c->T, logits, NULL, ref_ids, ref_weights, rows);
    if (referenced) ref_profile_measures(&info, &call, c->T, logits, rows, measures);
    char why[256] = "";
    int ok = r == MOEVK_SUCCESS && referenced;
    moevk_profile_info got;
    moevk_profile_info_init(&got);
    if (ok) moevk_profile_get_info(profile, &got);
    uint64_t valid = T - stats.nonfinite_rows - stats.masked_rows;
    if (ok && moevk_profile_tokens(profile) != valid)
        ok = 0,
        snprintf(why, sizeof why, "tokens %llu, valid rows %llu",
                 (unsigned long long)moevk_profile_tokens(profile), (unsigned long long)valid);
    if (ok && got.bins != bins) ok = 0, snprintf(why, sizeof why, "bins %u", got.bins);
    if (ok && moevk_profile_batches(profile) != 1) ok = 0, snprintf(why, sizeof why, "batches");
    if (ok && valid > 0 && !got.given_bounds) ok = 0, snprintf(why, sizeof why, "no bounds set");
    /* The first batch's bounds: the reference's extremes widened, within rounding. */
    for (int q = 0; ok && valid > 0 && !c->given_bounds && q < MOEVK_MEASURES; ++q) {
        double want_lower, want_upper;
        ref_profile_bounds(measures, c->T, q, &want_lower, &want_upper);
        double tol = 2e-4 * fmax(1.0, fmax(fabs(want_lower), fabs(want_upper)));
        if (fabs(got.lower[q] - want_lower) > tol || fabs(got.upper[q] - want_upper) > tol)
            ok = 0, snprintf(why, sizeof why,
                             "measure %d's bounds [%.9g, %.9g); the reference's "
                             "[%.9g, %.9g)",
                             q, got.lower[q], got.upper[q], want_lower, want_upper);
    }
    if (ok && c->given_bounds)
        for (int q = 0; q < MOEVK_MEASURES; ++q)
            if (got.lower[q] != lower[q] || got.upper[q] != upper[q]) ok = 0;
    for (int q = 0; ok && valid > 0 && q < MOEVK_MEASURES; ++q) {
        moevk_profile_get_histogram(profile, q, counts);
        ok = histogram_matches(counts, measures, c->T, q, &got, why, sizeof why);
    }
    if (ok) { /* usage: the counts before drops; pairs from the route's own choices */
        moevk_profile_get_usage(profile, counts);
        for (uint64_t e = 0; e < E; ++e)
            if (counts[e] != counts_before[e])
                ok = 0, snprintf(why, sizeof why, "usage of expert %llu", (unsigned long long)e);
        if (c->mode != MOEVK_MODE_EXPERT_CHOICE && c->k >= 2)
            ref_profile_pairs(c->E, c->k, c->T, ids, pairs);
        moevk_profile_get_co_selection(profile, counts);
        if (ok && memcmp(counts, pairs, E * E * 8))
            ok = 0, snprintf(why, sizeof why, "co-selection differs from the route's choices");
    }
    int same = ok && same_profiles(profile, again);
    /* Against itself: no drift in usage or the measures; the energy tail is the reference's
     * share of energies past the profile's 99th percentile (those within rounding of it may
     * count either way). */
    if (ok && valid > 0) {
        double p99 = moevk_profile_energy_p99(profile), sure = 0, may = 0;
        for (uint64_t t = 0; t < T; ++t) {
            double x = measures[t * REF_MEASURES + MOEVK_MEASURE_ENERGY];
            if (isnan(x)) continue;
            sure += x - slack(x) > p99;
            may += x + slack(x) > p99 || fabs(x - p99) <= slack(p99);
        }
        double tail = self.energy_tail * valid;
        if (self.usage_jsd != 0.0 || tail < sure - 0.5 || tail > may + 0.5 ||
            self.energy_p99 != p99)
            ok = 0, snprintf(why, sizeof why, "against itself: usage JSD %g, tail %g of %g .. %g",
                             self.usage_jsd, tail, sure, may);
        for (int q = 0; ok && q < MOEVK_MEASURES; ++q)
            if (self.psi[q] != 0.0) ok = 0, snprintf(why, sizeof why, "PSI %d %g", q, self.psi[q]);
        if (ok && self.drift_judged != (valid >= 256))
            ok = 0, snprintf(why, sizeof why, "judged %d", self.drift_judged);
    }
    moevk_profile_destroy(profile), moevk_profile_destroy(again);
    moevk_router_destroy(router);
    free(logits), free(ids), free(ref_ids), free(ref_weights), free(rows), free(measures);
    free(counts), free(pairs);
    CHECK(r == MOEVK_SUCCESS, "%s: route -> %s (%s)", c->name, moevk_result_string(r),
          moevk_context_last_error(test_context()));
    CHECK(referenced, "out of memory");
    CHECK(ok, "%s: %s", c->name, why);
    CHECK(same, "%s: a second run gave other counts", c->name);
}

/* A worked example: logits (0, ln 3) give p = (1/4, 3/4): entropy -(1/4 ln 1/4 + 3/4 ln 3/4)
 * = 0.5623, top-1 3/4, margin 1/2, logsumexp ln 4 = 1.386, energy -ln 4; with bounds [0, 1)
 * (logsumexp and energy [-2, 2)) over 5 bins they fall in bins 2, 3, 2, 4 and 0 (words 1 + bin),
 * none near an edge, and the co-selection of k = 2 is [[1, 1], [1, 1]]. */
static void test_worked_example(void) {
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 2, 2, 1, 0);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float logits[2] = {0.0f, logf(3.0f)};
    float lower[5] = {0, 0, 0, -2, -2}, upper[5] = {1, 1, 1, 2, 2};
    moevk_profile *profile = new_profile(router, 5, lower, upper);
    CHECK(profile, "no profile");
    CHECK_OK(route_batch(router, logits, 1, 0, profile, NULL, NULL, NULL, NULL));
    uint32_t want_word[5] = {3, 4, 3, 5, 1};
    uint64_t counts[7], pairs[4];
    for (int q = 0; q < 5; ++q) {
        moevk_profile_get_histogram(profile, q, counts);
        for (uint32_t b = 0; b < 7; ++b)
            CHECK(counts[b] == (b == want_word[q]), "measure %d word %u holds %llu", q, b,
                  (unsigned long long)counts[b]);
    }
    moevk_profile_get_co_selection(profile, pairs);
    CHECK(pairs[0] == 1 && pairs[1] == 1 && pairs[2] == 1 && pairs[3] == 1, "pairs");
    moevk_profile_destroy(profile);
    moevk_router_destroy(router);
}

/* The drift statistics of one batch against a profile of others, against the reference's from
 * the same counts (the batch's histograms taken by a profile of the drift profile's bounds). */
static void test_drift_statistics_against_the_reference(void) {
    uint32_t E = 32, k = 2, T = 1500;
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, E, k, T, 0);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    float *logits = malloc((size_t)T * E * 4);
    moevk_profile *profile = new_profile(router, 40, NULL, NULL);
    for (int batch = 0; batch < 3; ++batch) {
        for (uint32_t i = 0; i < T * E; ++i) logits[i] = 1.5f * rng_normal();
        CHECK_OK(route_batch(router, logits, T, 0, profile, NULL, NULL, NULL, NULL));
    }
    /* A shifted batch: sharper, and expert 3 favoured. */
    for (uint32_t i = 0; i < T * E; ++i) logits[i] = 2.2f * rng_normal() + (i % E == 3 ? 1.0f : 0);
    moevk_profile_info bounds;
    moevk_profile_info_init(&bounds);
    moevk_profile_get_info(profile, &bounds);
    moevk_profile *batch = new_profile(router, 40, bounds.lower, bounds.upper);
    moevk_route_stats stats;
    moevk_route_stats_init(&stats);
    uint32_t counts_before[32];
    CHECK_OK(route_batch(router, logits, T, 0, batch, NULL, NULL, NULL, NULL));
    CHECK_OK(route_batch(router, logits, T, 0, NULL, profile, NULL, counts_before, &stats));
    uint64_t a[42], b[42];
    double pa[42], pb[42];
    moevk_profile_get_usage(profile, a);
    for (uint32_t e = 0; e < E; ++e) pa[e] = (double)a[e], pb[e] = counts_before[e];
    double jsd = ref_usage_jsd(pa, pb, E);
    CHECK(fabs(stats.usage_jsd - jsd) <= 1e-12, "usage JSD %.17g; the reference %.17g",
          stats.usage_jsd, jsd);
    for (int q = 0; q < MOEVK_MEASURES; ++q) {
        moevk_profile_get_histogram(profile, q, a);
        moevk_profile_get_histogram(batch, q, b);
        for (int i = 0; i < 42; ++i) pa[i] = (double)a[i], pb[i] = (double)b[i];
        double want = ref_psi(pa, pb, 42);
        CHECK(fabs(stats.psi[q] - want) <= 1e-12, "PSI of measure %d %.17g; the reference %.17g", q,
              stats.psi[q], want);
        if (q == MOEVK_MEASURE_ENERGY) {
            double p99 = ref_histogram_quantile(pa, 40, bounds.lower[q], bounds.upper[q], 0.99);
            CHECK(fabs(stats.energy_p99 - p99) <= 1e-12 * fmax(1, fabs(p99)),
                  "p99 %.17g; the reference %.17g", stats.energy_p99, p99);
        }
    }
    CHECK(stats.gained_experts[0] == 3 && stats.gained_shares[0] > 0.02,
          "expert 3 gained most: %u %g", stats.gained_experts[0], stats.gained_shares[0]);
    CHECK(stats.lost_shares[0] < 0 && stats.lost_shares[0] <= stats.lost_shares[1] &&
              stats.lost_shares[1] <= stats.lost_shares[2],
          "losses in order");
    CHECK(stats.drift_judged && (stats.drift & MOEVK_DRIFT_USAGE) == 0 &&
              (stats.drift & (MOEVK_DRIFT_PSI(MOEVK_MEASURE_TOP1))),
          "drift bits %#x (JSD %g, PSI top-1 %g)", stats.drift, stats.usage_jsd, stats.psi[1]);
    moevk_profile_destroy(profile), moevk_profile_destroy(batch);
    moevk_router_destroy(router);
    free(logits);
}

/* ---- Detection on synthetic routers ---- */
/* Hidden states from four clusters in d = 32 through a fixed router projection W [E, d] give the
 * logits; a profile of 40 calibration batches; then 100 held-out batches of each kind. */
#define DETECT_D 32u
#define DETECT_CLUSTERS 5u /* the last is never seen in calibration */
#define DETECT_BATCHES 100

typedef struct detection_case {
    const char *name;
    moevk_routing_mode mode;
    uint32_t E, k, T;
    int noise;    /* Gaussian noise on (training routes), else inference */
    int asserted; /* the rates are held to 5% and 95%; else only reported */
} detection_case;

static const detection_case DETECTIONS[] = {
    {"E = 16, k = 2, T = 512", MOEVK_MODE_TOKEN, 16, 2, 512, 0, 1},
    {"E = 64, k = 4, T = 1024, Gaussian noise", MOEVK_MODE_TOKEN, 64, 4, 1024, 1, 1},
    /* Expert choice keeps every expert's usage at C by construction: only the measures can
     * move, and how far a shift moves them depends on the router drawn (reported only). */
    {"expert choice, E = 16, T = 512 (reported only)", MOEVK_MODE_EXPERT_CHOICE, 16, 2, 512, 0, 0},
};

typedef enum shift_kind {
    SHIFT_NONE,
    SHIFT_MEAN,        /* each expert's logit moved by +-1 (signs drawn once; logits' std ~1.7) */
    SHIFT_TEMPERATURE, /* logits scaled by 1.5 */
    SHIFT_COLLAPSE,    /* the least used expert becomes the first choice of half the tokens */
    SHIFT_UNSEEN,      /* hidden states from a cluster the calibration never saw */
    SHIFT_KINDS
} shift_kind;

static const char *const SHIFT_NAMES[SHIFT_KINDS] = {"none", "expert means", "temperature",
                                                     "collapsed expert", "unseen cluster"};

typedef struct synthetic {
    uint32_t E, T;
    float *w; /* [E, d] */
    float centers[DETECT_CLUSTERS * DETECT_D];
    float *mean_shift; /* [E] */
    uint32_t rarest;   /* the expert calibration used least */
} synthetic;

static void synthetic_batch(const synthetic *s, shift_kind kind, float *logits) {
    uint32_t E = s->E;
    for (uint32_t t = 0; t < s->T; ++t) {
        uint32_t cluster = kind == SHIFT_UNSEEN ? DETECT_CLUSTERS - 1 : rng_u32() % 4;
        float x[DETECT_D];
        for (uint32_t j = 0; j < DETECT_D; ++j)
            x[j] = s->centers[cluster * DETECT_D + j] + 0.8f * rng_normal();
        int collapsed = kind == SHIFT_COLLAPSE && rng_u32() % 2;
        float largest = -INFINITY;
        for (uint32_t e = 0; e < E; ++e) {
            double sum = 0;
            for (uint32_t j = 0; j < DETECT_D; ++j) sum += (double)s->w[e * DETECT_D + j] * x[j];
            float logit = (float)sum;
            if (kind == SHIFT_MEAN) logit += s->mean_shift[e];
            if (kind == SHIFT_TEMPERATURE) logit *= 1.5f;
            logits[t * E + e] = logit;
            largest = fmaxf(largest, logit);
        }
        if (collapsed) logits[t * E + s->rarest] = largest + 0.5f;
    }
}

/* The flagged batches of each kind (and the null's largest statistics) for one router. */
static int detect(const detection_case *c, int flagged[SHIFT_KINDS], double worst_null[3]) {
    moevk_router_info info = route_case_info(c->mode, c->E, c->k, c->T, 0);
    if (c->noise) {
        info.noise = MOEVK_NOISE_GAUSSIAN;
        info.noise_amount = 0.3f;
        info.noise_seed = 5;
    }
    moevk_router *router = NULL;
    if (moevk_router_create(test_context(), &info, &router) != MOEVK_SUCCESS) return 0;
    synthetic s = {.E = c->E, .T = c->T};
    s.w = malloc(sizeof(float) * c->E * DETECT_D);
    s.mean_shift = malloc(sizeof(float) * c->E);
    float *logits = malloc(sizeof(float) * c->T * c->E);
    uint64_t *usage = malloc(8 * c->E);
    moevk_profile *profile = new_profile(router, 0, NULL, NULL);
    int ok = s.w && s.mean_shift && logits && usage && profile;
    for (uint32_t i = 0; ok && i < c->E * DETECT_D; ++i) s.w[i] = rng_normal() / sqrtf(DETECT_D);
    for (uint32_t i = 0; ok && i < DETECT_CLUSTERS * DETECT_D; ++i)
        s.centers[i] = 1.5f * rng_normal();
    for (uint32_t e = 0; ok && e < c->E; ++e) s.mean_shift[e] = rng_u32() % 2 ? 1.0f : -1.0f;
    uint32_t step = 0;
    for (int b = 0; ok && b < 40; ++b) {
        synthetic_batch(&s, SHIFT_NONE, logits);
        ok = route_batch_at(router, logits, c->T, !c->noise, profile, NULL, NULL, NULL, NULL,
                            step++) == MOEVK_SUCCESS;
    }
    if (ok) moevk_profile_get_usage(profile, usage);
    for (uint32_t e = 1; ok && e < c->E; ++e)
        if (usage[e] < usage[s.rarest]) s.rarest = e;
    for (int kind = 0; ok && kind < SHIFT_KINDS; ++kind)
        for (int b = 0; ok && b < DETECT_BATCHES; ++b) {
            synthetic_batch(&s, (shift_kind)kind, logits);
            moevk_route_stats stats;
            moevk_route_stats_init(&stats);
            ok = route_batch_at(router, logits, c->T, !c->noise, NULL, profile, NULL, NULL, &stats,
                                step++) == MOEVK_SUCCESS &&
                 stats.drift_judged;
            flagged[kind] += stats.drift != 0;
            if (kind != SHIFT_NONE) continue;
            worst_null[0] = fmax(worst_null[0], stats.usage_jsd);
            for (int q = 0; q < MOEVK_MEASURES; ++q)
                worst_null[1] = fmax(worst_null[1], stats.psi[q]);
            worst_null[2] = fmax(worst_null[2], stats.energy_tail);
        }
    moevk_profile_destroy(profile);
    moevk_router_destroy(router);
    free(s.w), free(s.mean_shift), free(logits), free(usage);
    return ok;
}

/* At the default thresholds: at most 5% false alarms, at least 95% of each shift flagged. */
static void test_detection_rates(void) {
    for (size_t i = 0; i < sizeof DETECTIONS / sizeof DETECTIONS[0]; ++i) {
        const detection_case *c = &DETECTIONS[i];
        int flagged[SHIFT_KINDS] = {0};
        double worst_null[3] = {0};
        CHECK(detect(c, flagged, worst_null), "%s: a route failed (%s)", c->name,
              moevk_context_last_error(test_context()));
        printf("     %s, %d batches each: false alarms %d%% (largest JSD %.4f, PSI %.4f, tail "
               "%.4f)",
               c->name, DETECT_BATCHES, flagged[0], worst_null[0], worst_null[1], worst_null[2]);
        for (int kind = 1; kind < SHIFT_KINDS; ++kind)
            printf("; %s %d%%", SHIFT_NAMES[kind], flagged[kind]);
        printf("\n");
        if (!c->asserted) continue;
        CHECK(flagged[SHIFT_NONE] <= DETECT_BATCHES * 5 / 100, "%s: false alarms: %d of %d",
              c->name, flagged[SHIFT_NONE], DETECT_BATCHES);
        for (int kind = 1; kind < SHIFT_KINDS; ++kind)
            CHECK(flagged[kind] >= DETECT_BATCHES * 95 / 100, "%s: %s: %d of %d flagged", c->name,
                  SHIFT_NAMES[kind], flagged[kind], DETECT_BATCHES);
    }
}

/* ---- Files ---- */
static const char *temp_path(const char *name) {
    static char path[512];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/moevk-test-profile-%s", dir ? dir : "/tmp", name);
    return path;
}

static moevk_profile *calibrated(moevk_router *router, uint32_t E, uint32_t T, int batches) {
    float *logits = malloc((size_t)T * E * 4);
    moevk_profile *profile = new_profile(router, 24, NULL, NULL);
    for (int b = 0; profile && b < batches; ++b) {
        for (uint32_t i = 0; i < T * E; ++i) logits[i] = rng_normal();
        if (route_batch(router, logits, T, 0, profile, NULL, NULL, NULL, NULL) != MOEVK_SUCCESS) {
            moevk_profile_destroy(profile);
            profile = NULL;
        }
    }
    free(logits);
    return profile;
}

/* Profile files need cJSON, which a Windows build does without (its files are UNSUPPORTED). */
static int profile_files_supported(void) {
    moevk_profile *profile = NULL;
    if (moevk_profile_parse("{}", 2, &profile, NULL, 0) != MOEVK_ERROR_UNSUPPORTED) return 1;
    printf("     skipped: this libmoevk was built without cJSON (profile files UNSUPPORTED)\n");
    return 0;
}

static void test_json_round_trip(void) {
    if (!profile_files_supported()) return;
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 12, 3, 300, 0);
    info.score = MOEVK_SCORE_SIGMOID;
    info.temperature = 0.3f; /* not exact in decimal: its float must come back */
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_profile *profile = calibrated(router, 12, 300, 3);
    CHECK(profile, "no profile");
    moevk_drift_thresholds thresholds;
    moevk_drift_thresholds_init(&thresholds);
    thresholds.psi = 0.123456789;
    thresholds.min_tokens = 17;
    CHECK_OK(moevk_profile_set_thresholds(profile, &thresholds));
    char path[512], again_path[512], error[256];
    snprintf(path, sizeof path, "%s", temp_path("a.json"));
    snprintf(again_path, sizeof again_path, "%s", temp_path("b.json"));
    CHECK_OK(moevk_profile_save(profile, path));
    moevk_profile *loaded = NULL;
    moevk_result r = moevk_profile_load(path, &loaded, error, sizeof error);
    CHECK(r == MOEVK_SUCCESS, "load -> %s: %s", moevk_result_string(r), error);
    CHECK(same_profiles(profile, loaded), "the loaded profile differs");
    CHECK_OK(moevk_profile_save(loaded, again_path));
    CHECK(same_file_bytes(path, again_path), "saved twice, the files differ");
    /* The loaded profile judges as the original does. */
    float logits[300 * 12];
    for (int i = 0; i < 300 * 12; ++i) logits[i] = rng_normal();
    moevk_route_stats a, b;
    moevk_route_stats_init(&a), moevk_route_stats_init(&b);
    CHECK_OK(route_batch(router, logits, 300, 0, NULL, profile, NULL, NULL, &a));
    CHECK_OK(route_batch(router, logits, 300, 0, NULL, loaded, NULL, NULL, &b));
    CHECK(!memcmp(&a, &b, sizeof a), "the loaded profile judged otherwise");
    moevk_profile_destroy(loaded), moevk_profile_destroy(profile);
    moevk_router_destroy(router);
    remove(path), remove(again_path);
}

/* Broken files, each refused with its reason. */
static void test_malformed_files_are_refused(void) {
    if (!profile_files_supported()) return;
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 3, 2, 50, 0);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_profile *profile = calibrated(router, 3, 50, 1);
    CHECK(profile, "no profile");
    const char *path = temp_path("c.json");
    CHECK_OK(moevk_profile_save(profile, path));
    static char text[1 << 16];
    size_t length = read_text_file(path, text, sizeof text);
    CHECK(length > 0, "empty file");
    static const struct {
        const char *from, *to, *reason;
    } EDITS[] = {
        {"\"moevk-routing-profile\"", "\"something-else\"", "\"format\" must be"},
        {"\"version\":\t1", "\"version\":\t2", "version 2"},
        {"\"num_experts\":\t3", "\"num_experts\":\t3000", "num_experts"},
        {"\"num_experts\":\t3", "\"num_experts\":\t2", "\"usage\" holds 3 counts"},
        {"\"top_k\":\t2", "\"top_k\":\t4", "top_k is 4"},
        {"\"mode\":\t\"token\"", "\"mode\":\t\"sequence\"", "\"mode\" must be"},
        {"\"bins\":\t24", "\"bins\":\t0", "\"bins\" is 0"},
        {"\"bins\":\t24", "\"bins\":\t25", "holds 26 counts"},
        {"\"tokens\":\t50", "\"tokens\":\t51", "\"tokens\" says 51"},
        {"\"tokens\":\t50", "\"tokens\":\t50.5", "whole number"},
        {"\"temperature\":\t1", "\"temperature\":\t-1", "temperature"},
        {"\"bounds_set\":\ttrue", "\"bounds_set\":\tfalse", "\"bounds_set\" is false"},
        {"\"thresholds\"", "\"threshold\"", "\"thresholds\" is missing"},
        {"\"psi\":\t0.25", "\"psi\":\t-0.25", "\"psi\" is not"},
        {"{", "[", "not JSON"},
    };
    for (size_t i = 0; i < sizeof EDITS / sizeof EDITS[0]; ++i) {
        char *edited = malloc(length + 64);
        const char *at = strstr(text, EDITS[i].from);
        CHECK(at, "edit %zu: \"%s\" not in the file", i, EDITS[i].from);
        size_t before = (size_t)(at - text), from = strlen(EDITS[i].from);
        memcpy(edited, text, before);
        strcpy(edited + before, EDITS[i].to);
        strcpy(edited + before + strlen(EDITS[i].to), at + from);
        char error[256] = "";
        moevk_profile *loaded = (moevk_profile *)1;
        moevk_result r = moevk_profile_parse(edited, strlen(edited), &loaded, error, sizeof error);
        free(edited);
        CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT && !loaded && strstr(error, EDITS[i].reason),
              "edit %zu (%s): %s, \"%s\"", i, EDITS[i].to, moevk_result_string(r), error);
    }
    /* An asymmetric co-selection, and a diagonal that is not the usage. */
    char *co = strstr(text, "\"co_selection\"");
    CHECK(co, "no co_selection");
    moevk_profile *loaded = NULL;
    char error[256] = "";
    char *digit = co;
    while (*digit && (*digit < '0' || *digit > '9')) ++digit;
    *digit = *digit == '9' ? '8' : (char)(*digit + 1);
    moevk_result r = moevk_profile_parse(text, length, &loaded, error, sizeof error);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT && strstr(error, "co_selection"), "%s", error);
    r = moevk_profile_load(temp_path("missing.json"), &loaded, error, sizeof error);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT && strstr(error, "cannot open"), "%s", error);
    moevk_profile_destroy(profile);
    moevk_router_destroy(router);
    remove(path);
}

/* A profile of other options is refused by the route, as are both at once, an empty drift
 * profile, the modes without per-token logits, and recording. */
static void test_mismatches_are_refused(void) {
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 8, 2, 64, 0);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_profile_info base;
    moevk_profile_info_for_router(router, &base);
    float logits[64 * 8];
    for (int i = 0; i < 64 * 8; ++i) logits[i] = rng_normal();
    static const struct {
        const char *name, *reason;
        uint32_t E, k;
        moevk_score_func score;
        float temperature;
    } OTHERS[] = {
        {"other E", "E = 16, k = 2", .E = 16, .k = 2},
        {"other k", "E = 8, k = 3", .E = 8, .k = 3},
        {"other score", "score function", .E = 8, .k = 2, .score = MOEVK_SCORE_SIGMOID},
        {"other temperature", "temperature", .E = 8, .k = 2, .temperature = 2.0f},
    };
    for (size_t i = 0; i < sizeof OTHERS / sizeof OTHERS[0]; ++i) {
        moevk_profile_info other = base;
        other.num_experts = OTHERS[i].E;
        other.top_k = OTHERS[i].k;
        other.score = OTHERS[i].score;
        if (OTHERS[i].temperature) other.temperature = OTHERS[i].temperature;
        moevk_profile *profile = NULL;
        CHECK_OK(moevk_profile_create(&other, &profile));
        moevk_result r = route_batch(router, logits, 64, 0, profile, NULL, NULL, NULL, NULL);
        const char *error = moevk_context_last_error(test_context());
        moevk_profile_destroy(profile);
        CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT && strstr(error, OTHERS[i].reason), "%s: %s, %s",
              OTHERS[i].name, moevk_result_string(r), error);
    }
    moevk_profile *profile = NULL, *empty = NULL;
    CHECK_OK(moevk_profile_create(&base, &profile));
    CHECK_OK(moevk_profile_create(&base, &empty));
    CHECK(route_batch(router, logits, 64, 0, profile, empty, NULL, NULL, NULL) ==
                  MOEVK_ERROR_INVALID_ARGUMENT &&
              strstr(moevk_context_last_error(test_context()), "not both"),
          "both at once");
    CHECK(route_batch(router, logits, 64, 0, NULL, empty, NULL, NULL, NULL) ==
                  MOEVK_ERROR_INVALID_ARGUMENT &&
              strstr(moevk_context_last_error(test_context()), "no tokens"),
          "an empty drift profile");
    /* T = 0 adds a batch and no tokens. */
    CHECK_OK(route_batch(router, logits, 0, 0, profile, NULL, NULL, NULL, NULL));
    CHECK(moevk_profile_batches(profile) == 1 && moevk_profile_tokens(profile) == 0, "T = 0");
    moevk_profile_info bad = base;
    bad.bins = MOEVK_PROFILE_MAX_BINS + 1;
    moevk_profile *refused = (moevk_profile *)1;
    CHECK(moevk_profile_create(&bad, &refused) == MOEVK_ERROR_INVALID_ARGUMENT && !refused,
          "bins past the limit");
    bad = base;
    bad.given_bounds = 1; /* lower == upper == 0 */
    CHECK(moevk_profile_create(&bad, &refused) == MOEVK_ERROR_INVALID_ARGUMENT, "empty bounds");
    bad = base;
    bad.mode = MOEVK_MODE_SEQUENCE;
    CHECK(moevk_profile_create(&bad, &refused) == MOEVK_ERROR_INVALID_ARGUMENT, "SEQUENCE");
    moevk_drift_thresholds thresholds;
    moevk_drift_thresholds_init(&thresholds);
    thresholds.psi = -1;
    CHECK(moevk_profile_set_thresholds(profile, &thresholds) == MOEVK_ERROR_INVALID_ARGUMENT,
          "a negative threshold");
    moevk_drift_thresholds_init(&thresholds);
    moevk_profile_get_thresholds(profile, &thresholds);
    CHECK(thresholds.min_tokens == 256 && thresholds.usage_jsd == 0.05 && thresholds.psi == 0.25 &&
              thresholds.energy_tail == 0.05,
          "defaults");
    moevk_router_destroy(router);
    /* Modes that decide per sequence (the profile's mode check comes first: TOKEN's profile). */
    info = route_case_info(MOEVK_MODE_BATCH, 8, 2, 64, 0);
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_result r = route_batch(router, logits, 64, 0, profile, NULL, NULL, NULL, NULL);
    CHECK(r == MOEVK_ERROR_INVALID_ARGUMENT &&
              strstr(moevk_context_last_error(test_context()), "TOKEN, EXPERT_CHOICE or SINKHORN"),
          "BATCH: %s", moevk_result_string(r));
    moevk_router_destroy(router);
    moevk_profile_destroy(profile), moevk_profile_destroy(empty);
}

/* The drift flag reaches a history's reports, warnings and files. */
static void test_history_reports_drift(void) {
    moevk_router_info info = route_case_info(MOEVK_MODE_TOKEN, 8, 2, 400, 0);
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &info, &router));
    moevk_profile *profile = calibrated(router, 8, 400, 5);
    CHECK(profile, "no profile");
    moevk_history_info hinfo;
    moevk_history_info_init(&hinfo);
    hinfo.num_experts = 8;
    moevk_history *history = NULL;
    CHECK_OK(moevk_history_create(&hinfo, &history));
    float logits[400 * 8];
    uint32_t before[8], kept[8];
    for (int step = 0; step < 2; ++step) {
        for (int i = 0; i < 400 * 8; ++i) logits[i] = rng_normal() * (step ? 4.0f : 1.0f);
        moevk_route_stats stats;
        moevk_route_stats_init(&stats);
        moevk_route_input input = {.num_tokens = 400, .logits = moevk_host_tensor(logits)};
        moevk_route_output output;
        moevk_route_output_init(&output);
        output.stats = &stats;
        output.counts_before = moevk_host_tensor(before);
        output.counts = moevk_host_tensor(kept);
        output.drift_profile = profile;
        CHECK_OK(moevk_route(router, &input, &output));
        CHECK_OK(moevk_history_add(history, (uint32_t)step, &stats, before, kept));
        uint32_t warnings = moevk_history_warnings(history);
        CHECK(((warnings & MOEVK_WARNING_DRIFT) != 0) == (step == 1), "step %d: warnings %#x", step,
              warnings);
    }
    moevk_step_report report;
    moevk_step_report_init(&report);
    CHECK_OK(moevk_history_get(history, 1, &report, NULL, NULL));
    CHECK(report.drift_judged && report.drift && report.max_psi > 0.25, "report %#x %g",
          report.drift, report.max_psi);
    const char *csv = temp_path("h.csv"), *json_path = NULL;
    CHECK_OK(moevk_history_write_csv(history, csv));
    static char text[1 << 16];
    read_text_file(csv, text, sizeof text);
    CHECK(strstr(text, "drift,usage_jsd,max_psi,energy_tail"), "CSV header: %.200s", text);
    remove(csv);
    json_path = temp_path("h.json");
    CHECK_OK(moevk_history_write_json(history, json_path));
    read_text_file(json_path, text, sizeof text);
    CHECK(strstr(text, "\"drift\"") && strstr(text, "\"max_psi\""), "JSON: %.300s", text);
    remove(json_path);
    moevk_history_destroy(history);
    moevk_profile_destroy(profile);
    moevk_router_destroy(router);
}

/* A layer's route fills a profile as a plain route of its router logits does, bit for bit. */
static void test_layer_routes_fill_profiles(void) {
    enum { E = 8, K = 2, D = 16, F = 8, T = 300 };
    moevk_router_info router_info = route_case_info(MOEVK_MODE_TOKEN, E, K, T, D);
    moevk_layer_info info;
    moevk_layer_info_init(&info);
    info.router = &router_info;
    info.intermediate_size = F;
    moevk_layer *layer = NULL;
    CHECK_OK(moevk_layer_create(test_context(), &info, &layer));
    static float w_g[E * D], up[E * F * D], gate[E * F * D], down[E * D * F], hidden[T * D];
    static float output[T * D], logits[T * E];
    for (int i = 0; i < E * D; ++i) w_g[i] = rng_normal();
    for (int i = 0; i < E * F * D; ++i) up[i] = rng_normal(), gate[i] = rng_normal();
    for (int i = 0; i < E * D * F; ++i) down[i] = rng_normal();
    for (int i = 0; i < T * D; ++i) hidden[i] = rng_normal();
    CHECK_OK(moevk_layer_set_weights(layer, MOEVK_WEIGHT_ROUTER, 0, 1, moevk_host_tensor(w_g)));
    CHECK_OK(moevk_layer_set_weights(layer, MOEVK_WEIGHT_GATE, 0, E, moevk_host_tensor(gate)));
    CHECK_OK(moevk_layer_set_weights(layer, MOEVK_WEIGHT_UP, 0, E, moevk_host_tensor(up)));
    CHECK_OK(moevk_layer_set_weights(layer, MOEVK_WEIGHT_DOWN, 0, E, moevk_host_tensor(down)));
    moevk_profile *from_layer = new_profile(moevk_layer_router(layer), 0, NULL, NULL);
    moevk_route_input input;
    moevk_route_input_init(&input);
    input.num_tokens = T;
    input.hidden = moevk_host_tensor(hidden);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.profile = from_layer;
    moevk_layer_output out;
    moevk_layer_output_init(&out);
    out.output = moevk_host_tensor(output);
    out.router_logits = moevk_host_tensor(logits);
    out.route = &route;
    CHECK_OK(moevk_layer_forward(layer, &input, &out));
    router_info.hidden_size = 0;
    moevk_router *router = NULL;
    CHECK_OK(moevk_router_create(test_context(), &router_info, &router));
    moevk_profile *from_logits = new_profile(router, 0, NULL, NULL);
    CHECK_OK(route_batch(router, logits, T, 0, from_logits, NULL, NULL, NULL, NULL));
    int same = same_profiles(from_layer, from_logits);
    uint64_t tokens = moevk_profile_tokens(from_layer);
    moevk_profile_destroy(from_layer), moevk_profile_destroy(from_logits);
    moevk_router_destroy(router);
    moevk_layer_destroy(layer);
    CHECK(tokens == T, "the layer's profile holds %llu tokens", (unsigned long long)tokens);
    CHECK(same, "the layer's profile differs from its logits' route's");
}

static const test_case FUNCTIONS[] = {
    TEST(layer_routes_fill_profiles),
    TEST(worked_example),
    TEST(drift_statistics_against_the_reference),
    TEST(detection_rates),
    TEST(json_round_trip),
    TEST(malformed_files_are_refused),
    TEST(mismatches_are_refused),
    TEST(history_reports_drift),
};

int main(int argc, char **argv) {
    return test_main_with_table(CASES, sizeof CASES / sizeof CASES[0], sizeof CASES[0], run_case,
                                FUNCTIONS, sizeof FUNCTIONS / sizeof FUNCTIONS[0], argc, argv);
}
