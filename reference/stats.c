/* Reference of shaders/stats.comp and of the host's final formulas (engine/route.c), summed in
 * double. Valid rows only: non-finite and fully masked rows are left out of every mean. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moevk_reference.h"

int ref_stats(const moevk_router_info *info, const ref_call *call, uint32_t T, const void *logits,
              const ref_row_stats *row_stats, const uint32_t *counts_before,
              moevk_route_stats *stats) {
    uint32_t E = info->num_experts;
    /* SEQUENCE and BATCH modes: the scores come from the sequences' mean logits. */
    int by_sequence = info->mode == MOEVK_MODE_SEQUENCE || info->mode == MOEVK_MODE_BATCH;
    uint32_t S = ref_sequence_length(info, T);
    float *means = NULL;
    if (by_sequence) {
        means = malloc(((uint64_t)(T + S - 1) / S * E + 1) * sizeof *means);
        if (!means) return 0;
        ref_sequence_means(info, T, logits, means);
    }
    double probability_sum[MOEVK_MAX_EXPERTS] = {0};
    double lse_squared = 0, lse = 0, entropy = 0;
    uint32_t nonfinite = 0, masked = 0;
    for (uint32_t t = 0; t < T; ++t) {
        const ref_row_stats *row = &row_stats[t];
        nonfinite += row->flag == REF_ROW_NONFINITE;
        masked += row->flag == REF_ROW_MASKED;
        if (row->flag != REF_ROW_VALID) continue;
        lse_squared += (double)row->lse_raw * row->lse_raw;
        lse += row->lse_raw;
        entropy += row->entropy;
        for (uint32_t e = 0; e < E; ++e) {
            float raw = by_sequence ? means[(uint64_t)(t / S) * E + e]
                                    : ref_load(logits, (uint64_t)t * E + e, info->logits_type);
            float logit = ref_score_logit(info, call, raw, by_sequence ? t / S : t, e);
            float p = info->score == MOEVK_SCORE_SIGMOID
                          ? 1.0f / (1.0f + expf(-(logit / info->temperature)))
                          : expf((logit - row->max_logit) / info->temperature);
            probability_sum[e] += (double)(p * row->inv_norm);
        }
    }
    free(means);
    uint64_t assignments = 0;
    for (uint32_t e = 0; e < E; ++e) assignments += counts_before[e];
    memset(stats, 0, sizeof *stats);
    stats->assignments = assignments;
    stats->nonfinite_rows = nonfinite;
    stats->masked_rows = masked;
    uint32_t valid = T - nonfinite - masked;
    if (valid == 0) return 1;
    if (assignments > 0) {
        double sum = 0;
        for (uint32_t e = 0; e < E; ++e)
            sum += ((double)counts_before[e] / assignments) * (probability_sum[e] / valid);
        stats->aux_loss = E * sum;
    }
    stats->z_loss = lse_squared / valid;
    stats->mean_logsumexp = lse / valid;
    stats->entropy = entropy / valid;
    return 1;
}
