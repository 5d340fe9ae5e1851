/* Reference of shaders/token_scores.comp: each token's energy in double from its own clean
 * logits, its routing distribution's entropy (the row stats') and its top-1 probability. */
#include <math.h>

#include "moevk_reference.h"

void ref_token_scores(const moevk_router_info *info, const ref_call *call, uint32_t T,
                      const void *logits, const ref_row_stats *row_stats, float *out) {
    uint32_t E = info->num_experts;
    for (uint32_t t = 0; t < T; ++t) {
        const ref_row_stats *row = &row_stats[t];
        float *o = out + 3 * (uint64_t)t;
        if (row->flag != REF_ROW_VALID) {
            int masked = row->flag == REF_ROW_MASKED;
            o[0] = masked ? INFINITY : NAN;
            o[1] = o[2] = masked ? 0.0f : NAN;
            continue;
        }
        double largest = -INFINITY, sum = 0.0;
        float top1 = 0.0f;
        for (uint32_t e = 0; e < E; ++e) {
            double logit = ref_load(logits, (uint64_t)t * E + e, info->logits_type);
            if (logit > largest) largest = logit;
        }
        for (uint32_t e = 0; e < E; ++e) {
            float raw = ref_load(logits, (uint64_t)t * E + e, info->logits_type);
            if (isinf(raw)) continue;
            sum += exp(((double)raw - largest) / info->temperature);
            float logit = ref_score_logit(info, call, raw, t, e);
            float p = info->score == MOEVK_SCORE_SIGMOID
                          ? 1.0f / (1.0f + expf(-(logit / info->temperature)))
                          : expf((logit - row->max_logit) / info->temperature);
            p *= row->inv_norm;
            if (p > top1) top1 = p;
        }
        o[0] = (float)(-(largest + info->temperature * log(sum)));
        o[1] = row->entropy;
        o[2] = top1;
    }
}
