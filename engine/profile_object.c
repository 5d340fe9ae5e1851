/* moevk_profile: the counts of calibration routes (usage, the measures' histograms,
 * co-selection), their bounds and drift thresholds. Host only. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "profile_object.h"

static int invalid(char *error, size_t error_size, const char *format, ...) {
    if (error && error_size) {
        va_list args;
        va_start(args, format);
        vsnprintf(error, error_size, format, args);
        va_end(args);
    }
    return 1;
}

int profile_info_invalid(const moevk_profile_info *info, char *error, size_t size) {
    if (info->num_experts < 1 || info->num_experts > MOEVK_MAX_EXPERTS)
        return invalid(error, size, "num_experts is %u; it must be 1 .. %u", info->num_experts,
                       MOEVK_MAX_EXPERTS);
    if (info->top_k < 1 || info->top_k > MOEVK_MAX_TOP_K || info->top_k > info->num_experts)
        return invalid(error, size, "top_k is %u; it must be 1 .. min(E, %u)", info->top_k,
                       MOEVK_MAX_TOP_K);
    if (info->mode != MOEVK_MODE_TOKEN && info->mode != MOEVK_MODE_EXPERT_CHOICE &&
        info->mode != MOEVK_MODE_SINKHORN)
        return invalid(error, size,
                       "a profile needs the TOKEN, EXPERT_CHOICE or SINKHORN mode, not %d",
                       (int)info->mode);
    if (info->score != MOEVK_SCORE_SOFTMAX && info->score != MOEVK_SCORE_SIGMOID)
        return invalid(error, size, "score is %d; it must be SOFTMAX or SIGMOID", (int)info->score);
    if (!(info->temperature > 0.0f) || isinf(info->temperature))
        return invalid(error, size, "temperature is %g; it must be finite and > 0",
                       (double)info->temperature);
    if (info->bins > MOEVK_PROFILE_MAX_BINS)
        return invalid(error, size, "bins is %u; at most %u", info->bins, MOEVK_PROFILE_MAX_BINS);
    for (int q = 0; info->given_bounds && q < MOEVK_MEASURES; ++q) {
        float lower = info->lower[q], upper = info->upper[q];
        if (!isfinite(lower) || !isfinite(upper) || !(lower < upper) || isinf(upper - lower))
            return invalid(error, size,
                           "the bounds of measure %d are [%g, %g); they must be finite, "
                           "increasing and less than the float range apart",
                           q, (double)lower, (double)upper);
    }
    return 0;
}

moevk_profile *profile_new(const moevk_profile_info *info) {
    moevk_profile *profile = calloc(1, sizeof *profile);
    if (!profile) return NULL;
    profile->info = *info;
    if (!profile->info.given_bounds)
        for (int q = 0; q < MOEVK_MEASURES; ++q)
            profile->info.lower[q] = profile->info.upper[q] = 0;
    if (!profile->info.bins) profile->info.bins = PROFILE_DEFAULT_BINS;
    moevk_drift_thresholds_init(&profile->thresholds);
    uint64_t E = info->num_experts;
    profile->usage = calloc(E, sizeof(uint64_t));
    profile->histograms = calloc((uint64_t)MOEVK_MEASURES * (profile->info.bins + 2), 8);
    profile->co_selection = calloc(E * E, sizeof(uint64_t));
    if (!profile->usage || !profile->histograms || !profile->co_selection) {
        moevk_profile_destroy(profile);
        return NULL;
    }
    return profile;
}

void moevk_profile_info_for_router(const moevk_router *router, moevk_profile_info *info) {
    moevk_profile_info_init(info);
    if (!router) return;
    const moevk_router_info *r = &router->info;
    info->num_experts = r->num_experts;
    info->top_k = r->top_k;
    info->mode = r->mode;
    info->score = r->score;
    info->temperature = r->temperature;
}

moevk_result moevk_profile_create(const moevk_profile_info *caller_info, moevk_profile **out) {
    if (!out) return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    if (!caller_info) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_profile_info info;
    moevk_profile_info_init(&info);
    moevk_result r = SIZED_READ(NULL, moevk_profile_info, caller_info, &info);
    if (r != MOEVK_SUCCESS) return r;
    if (profile_info_invalid(&info, NULL, 0)) return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = profile_new(&info);
    return *out ? MOEVK_SUCCESS : MOEVK_ERROR_OUT_OF_HOST_MEMORY;
}

void moevk_profile_destroy(moevk_profile *profile) {
    if (!profile) return;
    free(profile->usage);
    free(profile->histograms);
    free(profile->co_selection);
    free(profile);
}

void moevk_profile_get_info(const moevk_profile *profile, moevk_profile_info *info) {
    if (!profile || !info) return;
    SIZED_WRITE(moevk_profile_info, info, &profile->info);
}

uint64_t moevk_profile_batches(const moevk_profile *profile) {
    return profile ? profile->batches : 0;
}

uint64_t moevk_profile_tokens(const moevk_profile *profile) {
    return profile ? profile->tokens : 0;
}

void moevk_profile_get_usage(const moevk_profile *profile, uint64_t *usage) {
    if (profile && usage) memcpy(usage, profile->usage, profile->info.num_experts * 8ull);
}

moevk_result moevk_profile_get_histogram(const moevk_profile *profile, moevk_measure measure,
                                         uint64_t *counts) {
    if (!profile || !counts || (unsigned)measure >= MOEVK_MEASURES)
        return MOEVK_ERROR_INVALID_ARGUMENT;
    memcpy(counts, profile_histogram(profile, measure), (profile->info.bins + 2) * 8ull);
    return MOEVK_SUCCESS;
}

void moevk_profile_get_co_selection(const moevk_profile *profile, uint64_t *counts) {
    if (!profile || !counts) return;
    uint64_t E = profile->info.num_experts;
    memcpy(counts, profile->co_selection, E * E * 8);
}

double profile_quantile(const moevk_profile *profile, uint32_t measure, double q) {
    const uint64_t *counts = profile_histogram(profile, measure);
    uint32_t bins = profile->info.bins;
    uint64_t total = 0;
    for (uint32_t b = 0; b < bins + 2; ++b) total += counts[b];
    if (total == 0) return NAN;
    double lower = profile->info.lower[measure], upper = profile->info.upper[measure];
    double wanted = q * (double)total, below = 0.0;
    if (wanted <= (double)counts[0]) return lower; /* below the span: its lower bound */
    below = (double)counts[0];
    double width = (upper - lower) / bins;
    for (uint32_t b = 1; b <= bins; ++b) {
        double here = (double)counts[b];
        if (here > 0 && below + here >= wanted)
            return lower + width * ((b - 1) + (wanted - below) / here);
        below += here;
    }
    return upper; /* at or above the span: its upper bound */
}

double moevk_profile_energy_p99(const moevk_profile *profile) {
    return profile ? profile_quantile(profile, MOEVK_MEASURE_ENERGY, 0.99) : NAN;
}

moevk_drift_thresholds profile_thresholds(const moevk_profile *profile) {
    moevk_drift_thresholds t = profile->thresholds;
    if (!t.min_tokens) t.min_tokens = 256;
    if (t.usage_jsd == 0.0) t.usage_jsd = 0.05;
    if (t.psi == 0.0) t.psi = 0.25;
    if (t.energy_tail == 0.0) t.energy_tail = 0.05;
    return t;
}

moevk_result moevk_profile_set_thresholds(moevk_profile *profile,
                                          const moevk_drift_thresholds *caller) {
    if (!profile || !caller) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_drift_thresholds t;
    moevk_drift_thresholds_init(&t);
    moevk_result r = SIZED_READ(NULL, moevk_drift_thresholds, caller, &t);
    if (r != MOEVK_SUCCESS) return r;
    if (!(t.usage_jsd >= 0.0) || !(t.psi >= 0.0) || !(t.energy_tail >= 0.0) || isinf(t.usage_jsd) ||
        isinf(t.psi) || isinf(t.energy_tail))
        return MOEVK_ERROR_INVALID_ARGUMENT;
    profile->thresholds = t;
    return MOEVK_SUCCESS;
}

void moevk_profile_get_thresholds(const moevk_profile *profile,
                                  moevk_drift_thresholds *thresholds) {
    if (!profile || !thresholds) return;
    moevk_drift_thresholds t = profile_thresholds(profile);
    SIZED_WRITE(moevk_drift_thresholds, thresholds, &t);
}
