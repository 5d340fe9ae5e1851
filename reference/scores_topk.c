/* Reference of shaders/scores_topk.comp: scores, top-k by logit + bias (ties to the lower
 * expert), weights without the bias, and the per-row values of the stats. */
#include <math.h>
#include <stdlib.h>

#include "moevk_reference.h"

uint32_t ref_kept_groups(const moevk_router_info *info, const float *keys) {
    uint32_t G = info->num_groups, kept = info->topk_groups;
    if (G <= 1) return 0xFFFFFFFFu;
    uint32_t size = info->num_experts / G;
    float best[32];
    int32_t best_group[32];
    for (uint32_t j = 0; j < kept; ++j) best_group[j] = -1;
    for (uint32_t g = 0; g < G; ++g) {
        float first = -INFINITY, second = -INFINITY;
        for (uint32_t e = g * size; e < (g + 1) * size; ++e) {
            if (keys[e] > first) {
                second = first;
                first = keys[e];
            } else if (keys[e] > second) {
                second = keys[e];
            }
        }
        float score = size > 1 ? first + second : first;
        if (best_group[kept - 1] >= 0 && !(score > best[kept - 1])) continue;
        uint32_t j = kept - 1;
        while (j > 0 && (best_group[j - 1] < 0 || score > best[j - 1])) {
            best[j] = best[j - 1];
            best_group[j] = best_group[j - 1];
            --j;
        }
        best[j] = score;
        best_group[j] = (int32_t)g;
    }
    uint32_t mask = 0;
    for (uint32_t j = 0; j < kept; ++j)
        if (best_group[j] >= 0) mask |= 1u << best_group[j];
    return mask;
}

void ref_insert_descending(double *keys, int32_t *ids, uint32_t n, double key, int32_t id) {
    if (!(key > keys[n - 1])) return;
    uint32_t j = n - 1;
    while (j > 0 && key > keys[j - 1]) {
        keys[j] = keys[j - 1];
        ids[j] = ids[j - 1];
        --j;
    }
    keys[j] = key;
    ids[j] = id;
}

int ref_group_kept(const moevk_router_info *info, uint32_t mask, uint32_t expert) {
    return info->num_groups <= 1 ||
           (mask >> (expert / (info->num_experts / info->num_groups)) & 1u);
}

/* The key top-k ranks: the noisy logit plus the bias, or with bias_on_scores (DeepSeek-V3) its
 * sigmoid score plus the bias, an infinite or NaN logit kept as it is. */
static float selection_key(const moevk_router_info *info, float noisy, float bias) {
    if (!info->bias_on_scores) return noisy + bias;
    if (isinf(noisy) || isnan(noisy)) return noisy;
    return 1.0f / (1.0f + expf(-(noisy / info->temperature))) + bias;
}

/* token: the noise counter's (the sequence's in SEQUENCE and BATCH modes); sinkhorn: the
 * factors that make the keys, or NULL. */
static void route_row(const moevk_router_info *info, const ref_call *call, uint32_t token,
                      const float *logit_row, const float *bias,
                      const ref_sinkhorn_factors *sinkhorn, int32_t *ids, float *weights,
                      ref_row_stats *stats) {
    uint32_t E = info->num_experts, K = info->top_k;
    int sigmoid = info->score == MOEVK_SCORE_SIGMOID;
    float tau = info->temperature;
    double best_key[MOEVK_MAX_TOP_K]; /* f32 keys, held exactly */
    int32_t best[MOEVK_MAX_TOP_K];
    for (uint32_t j = 0; j < K; ++j) {
        best_key[j] = -INFINITY;
        best[j] = -1;
    }
    int nonfinite = 0;
    float max_raw = -INFINITY, max_score = -INFINITY;
    float noisy[MOEVK_MAX_EXPERTS], keys[MOEVK_MAX_EXPERTS] = {0}; /* zeroed: quiets gcc */
    for (uint32_t e = 0; e < E; ++e) {
        noisy[e] = ref_noisy_logit(info, call, logit_row[e], token, e);
        keys[e] = sinkhorn ? ref_sinkhorn_key(sinkhorn, noisy[e], token, e)
                           : selection_key(info, noisy[e], bias ? bias[e] : 0.0f);
    }
    uint32_t groups = ref_kept_groups(info, keys);
    for (uint32_t e = 0; e < E; ++e) {
        if (isnan(keys[e]) || keys[e] == INFINITY) nonfinite = 1;
        max_raw = fmaxf(max_raw, logit_row[e]);
        max_score = fmaxf(max_score, info->noisy_scores ? noisy[e] : logit_row[e]);
        if (ref_group_kept(info, groups, e))
            ref_insert_descending(best_key, best, K, keys[e], (int32_t)e);
    }
    if (nonfinite || isinf(max_raw)) {
        for (uint32_t j = 0; j < K; ++j) {
            ids[j] = -1;
            weights[j] = 0.0f;
        }
        *stats = (ref_row_stats){0, 0, 0, 0, nonfinite ? REF_ROW_NONFINITE : REF_ROW_MASKED};
        return;
    }
    /* The sums over the experts in double, rounded once: the device adds in an order of its own
     * (a tree of partial sums), which this is the exact value for. */
    double norm_total = 0.0, weighted_total = 0.0, raw_total = 0.0;
    for (uint32_t e = 0; e < E; ++e) {
        float raw = logit_row[e];
        if (isinf(raw)) continue;
        raw_total += expf(raw - max_raw);
        float logit = ref_score_logit(info, call, raw, token, e);
        if (sigmoid) {
            float s = 1.0f / (1.0f + expf(-(logit / tau)));
            norm_total += s;
            if (s > 0.0f) weighted_total += (double)(s * logf(s));
        } else {
            float shifted = (logit - max_score) / tau;
            float p = expf(shifted);
            norm_total += p;
            weighted_total += (double)(shifted * p);
        }
    }
    float norm_sum = (float)norm_total, weighted = (float)weighted_total;
    float raw_sum = (float)raw_total;
    stats->max_logit = max_score;
    stats->inv_norm = norm_sum > 0.0f ? 1.0f / norm_sum : 0.0f;
    stats->lse_raw = max_raw + logf(raw_sum);
    stats->entropy = norm_sum > 0.0f ? logf(norm_sum) - weighted / norm_sum : 0.0f;
    stats->flag = REF_ROW_VALID;

    float w[MOEVK_MAX_TOP_K], selected_sum = 0.0f;
    for (uint32_t j = 0; j < K; ++j) {
        w[j] = 0.0f;
        if (best[j] < 0) continue;
        float logit = ref_score_logit(info, call, logit_row[best[j]], token, (uint32_t)best[j]);
        w[j] = sigmoid ? 1.0f / (1.0f + expf(-(logit / tau)))
                       : expf((logit - max_score) / tau) / norm_sum;
        selected_sum += w[j];
    }
    int renormalize = info->renormalize && selected_sum > 0.0f;
    float denominator = selected_sum + (info->bias_on_scores ? 1e-20f : 0.0f); /* DeepSeek's */
    for (uint32_t j = 0; j < K; ++j) {
        float value = renormalize ? w[j] / denominator : w[j];
        ids[j] = best[j];
        weights[j] = best[j] < 0 ? 0.0f : value * info->scale;
    }
}

static void route_nowhere(const moevk_router_info *info, uint32_t flag, int32_t *ids,
                          float *weights, ref_row_stats *stats) {
    for (uint32_t j = 0; j < info->top_k; ++j) {
        ids[j] = -1;
        weights[j] = 0.0f;
    }
    *stats = (ref_row_stats){0, 0, 0, 0, flag};
}

int ref_scores_topk(const moevk_router_info *info, const ref_call *call, uint32_t T,
                    const void *logits, const float *bias, int32_t *ids, float *weights,
                    ref_row_stats *row_stats) {
    uint32_t E = info->num_experts, K = info->top_k;
    int by_sequence = info->mode == MOEVK_MODE_SEQUENCE || info->mode == MOEVK_MODE_BATCH;
    int sinkhorn = info->mode == MOEVK_MODE_SINKHORN && !(call && call->inference);
    uint32_t S = ref_sequence_length(info, T);
    float *means = NULL;
    ref_sinkhorn_factors factors = {0};
    if (by_sequence) {
        means = malloc(((uint64_t)(T + S - 1) / S * E + 1) * sizeof *means);
        if (!means) return 0;
        ref_sequence_means(info, T, logits, means);
    }
    if (sinkhorn && !ref_sinkhorn(info, call, T, logits, &factors)) return 0;
    float row[MOEVK_MAX_EXPERTS];
    for (uint32_t t = 0; t < T; ++t) {
        int32_t *row_ids = ids + (uint64_t)t * K;
        float *row_weights = weights + (uint64_t)t * K;
        if (by_sequence) {
            uint32_t flag = ref_row_validity(info, logits, t);
            if (flag != REF_ROW_VALID) {
                route_nowhere(info, flag, row_ids, row_weights, &row_stats[t]);
                continue;
            }
            route_row(info, call, t / S, means + (uint64_t)(t / S) * E, NULL, NULL, row_ids,
                      row_weights, &row_stats[t]);
            continue;
        }
        for (uint32_t e = 0; e < E; ++e)
            row[e] = ref_load(logits, (uint64_t)t * E + e, info->logits_type);
        route_row(info, call, t, row, bias, sinkhorn ? &factors : NULL, row_ids, row_weights,
                  &row_stats[t]);
    }
    free(means);
    free(factors.d0);
    return 1;
}
