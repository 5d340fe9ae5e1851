/* Reference of shaders/profile.comp (each token's measures, the bins, the pairs) and of
 * engine/drift.c (the statistics of a batch against a profile), in double, written from the
 * definitions in moevk.h and the README rather than from the engine's code. */
#include <math.h>
#include <stdlib.h>

#include "moevk_reference.h"

void ref_profile_measures(const moevk_router_info *info, const ref_call *call, uint32_t T,
                          const void *logits, const ref_row_stats *row_stats, double *out) {
    uint32_t E = info->num_experts;
    double tau = info->temperature;
    for (uint32_t t = 0; t < T; ++t) {
        double *o = out + (uint64_t)t * REF_MEASURES;
        if (row_stats[t].flag != REF_ROW_VALID) {
            for (int q = 0; q < REF_MEASURES; ++q) o[q] = NAN;
            continue;
        }
        double largest = -INFINITY, clean_sum = 0.0, raw_sum = 0.0;
        for (uint32_t e = 0; e < E; ++e) {
            double logit = ref_load(logits, (uint64_t)t * E + e, info->logits_type);
            if (logit > largest) largest = logit;
        }
        /* The routing distribution: softmax or normalised sigmoids of the scored logits. */
        double *p = malloc(E * sizeof *p), norm = 0.0, score_max = -INFINITY;
        for (uint32_t e = 0; e < E; ++e) {
            float raw = ref_load(logits, (uint64_t)t * E + e, info->logits_type);
            p[e] = ref_score_logit(info, call, raw, t, e);
            if (p[e] > score_max) score_max = p[e];
            if (isinf(raw)) continue;
            clean_sum += exp((raw - largest) / tau);
            raw_sum += exp(raw - largest);
        }
        for (uint32_t e = 0; e < E; ++e) {
            double s = p[e];
            p[e] = isinf(s) && s < 0                    ? 0.0
                   : info->score == MOEVK_SCORE_SIGMOID ? 1.0 / (1.0 + exp(-s / tau))
                                                        : exp((s - score_max) / tau);
            norm += p[e];
        }
        double top1 = 0.0, top2 = 0.0, entropy = 0.0;
        for (uint32_t e = 0; e < E; ++e) {
            double q = p[e] / norm;
            if (q > 0) entropy -= q * log(q);
            if (q > top1) {
                top2 = top1;
                top1 = q;
            } else if (q > top2) {
                top2 = q;
            }
        }
        free(p);
        o[0] = entropy;
        o[1] = top1;
        o[2] = top1 - top2;
        o[3] = largest + log(raw_sum);
        o[4] = -(largest + tau * log(clean_sum));
    }
}

uint32_t ref_profile_bin(double x, double lower, double upper, uint32_t bins) {
    if (!(x >= lower)) return 0;
    if (!(x < upper)) return bins + 1;
    double position = (x - lower) / (upper - lower) * bins;
    uint32_t bin = position >= 0 ? (uint32_t)position : 0;
    return 1 + (bin < bins - 1 ? bin : bins - 1);
}

void ref_profile_bounds(const double *measures, uint32_t T, uint32_t measure, double *lower,
                        double *upper) {
    double least = INFINITY, greatest = -INFINITY;
    for (uint32_t t = 0; t < T; ++t) {
        double x = measures[(uint64_t)t * REF_MEASURES + measure];
        if (isnan(x)) continue;
        if (x < least) least = x;
        if (x > greatest) greatest = x;
    }
    double span = greatest - least;
    *lower = span > 0 ? least - span / 4 : least - 0.5;
    *upper = span > 0 ? greatest + span / 4 : greatest + 0.5;
}

void ref_profile_pairs(uint32_t E, uint32_t k, uint32_t T, const int32_t *ids, uint64_t *pairs) {
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t i = 0; i < k; ++i) {
            int32_t a = ids[(uint64_t)t * k + i];
            if (a < 0) continue;
            pairs[(uint64_t)a * E + a]++;
            for (uint32_t j = 0; j < k; ++j) {
                int32_t b = ids[(uint64_t)t * k + j];
                if (j != i && b >= 0) pairs[(uint64_t)a * E + b]++;
            }
        }
}

static double total_of(const double *counts, uint32_t n) {
    double total = 0;
    for (uint32_t i = 0; i < n; ++i) total += counts[i];
    return total;
}

double ref_usage_jsd(const double *profile, const double *batch, uint32_t E) {
    double P = total_of(profile, E), Q = total_of(batch, E), sum = 0.0;
    if (P == 0 || Q == 0) return 0.0;
    for (uint32_t e = 0; e < E; ++e) {
        double p = profile[e] / P, q = batch[e] / Q, m = 0.5 * (p + q);
        sum += (p > 0 ? p * log(p / m) : 0) + (q > 0 ? q * log(q / m) : 0);
    }
    return 0.5 * sum;
}

/* Deciles of the profile: bin b goes to group g, the number of tenths (at most 9) that the
 * profile's mass before b has reached; groups no bin went to are none; a last group without
 * profile mass joins the group before it. */
double ref_psi(const double *profile, const double *batch, uint32_t n) {
    double P = total_of(profile, n), Q = total_of(batch, n);
    if (P == 0 || Q == 0) return 0.0;
    double gp[10] = {0}, gq[10] = {0}, before = 0;
    int used[10] = {0};
    for (uint32_t b = 0; b < n; ++b) {
        int g = 0;
        while (g < 9 && before >= (g + 1) * P / 10) ++g;
        gp[g] += profile[b];
        gq[g] += batch[b];
        used[g] = 1;
        before += profile[b];
    }
    int order[10], groups = 0;
    for (int g = 0; g < 10; ++g)
        if (used[g]) order[groups++] = g;
    if (groups > 1 && gp[order[groups - 1]] == 0) {
        gq[order[groups - 2]] += gq[order[groups - 1]];
        --groups;
    }
    double sum = 0;
    for (int i = 0; i < groups; ++i) {
        int g = order[i];
        double p = (gp[g] + 0.5) / (P + 0.5 * groups), q = (gq[g] + 0.5) / (Q + 0.5 * groups);
        sum += (q - p) * log(q / p);
    }
    return sum;
}

double ref_histogram_quantile(const double *counts, uint32_t bins, double lower, double upper,
                              double q) {
    double N = total_of(counts, bins + 2);
    if (N == 0) return NAN;
    double want = q * N, below = counts[0];
    if (want <= below) return lower;
    for (uint32_t b = 1; b <= bins; ++b) {
        if (counts[b] > 0 && below + counts[b] >= want)
            return lower + (upper - lower) / bins * ((b - 1) + (want - below) / counts[b]);
        below += counts[b];
    }
    return upper;
}
