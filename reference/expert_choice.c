/* Reference of EXPERT_CHOICE mode (shaders/scores_topk.comp's keys, expert_choice.comp): each
 * expert takes its top-C tokens by key, ties to the lower token; slots in token order. */
#include <math.h>
#include <stdlib.h>

#include "moevk_reference.h"

void ref_choice_keys(const moevk_router_info *info, const ref_call *call, uint32_t T,
                     const void *logits, const ref_row_stats *row_stats, float *keys) {
    uint32_t E = info->num_experts;
    int sigmoid = info->score == MOEVK_SCORE_SIGMOID;
    float tau = info->temperature;
    for (uint32_t t = 0; t < T; ++t) {
        float *row = keys + (uint64_t)t * E;
        if (row_stats[t].flag != REF_ROW_VALID) {
            for (uint32_t e = 0; e < E; ++e) row[e] = -1.0f;
            continue;
        }
        float noisy[MOEVK_MAX_EXPERTS], top = -INFINITY;
        double total = 0.0; /* in double, rounded once: the device adds in its own order */
        for (uint32_t e = 0; e < E; ++e) {
            float logit = ref_load(logits, (uint64_t)t * E + e, info->logits_type);
            noisy[e] = ref_noisy_logit(info, call, logit, t, e);
            top = fmaxf(top, noisy[e]);
        }
        for (uint32_t e = 0; e < E && !sigmoid; ++e)
            if (!isinf(noisy[e])) total += expf((noisy[e] - top) / tau);
        float sum = (float)total;
        for (uint32_t e = 0; e < E; ++e) {
            float key = sigmoid ? 1.0f / (1.0f + expf(-(noisy[e] / tau)))
                                : expf((noisy[e] - top) / tau) / sum;
            row[e] = isinf(noisy[e]) ? -1.0f : key;
        }
    }
}

float ref_choice_weight(const moevk_router_info *info, const ref_call *call, const void *logits,
                        const ref_row_stats *stats, uint32_t token, uint32_t expert) {
    float raw = ref_load(logits, (uint64_t)token * info->num_experts + expert, info->logits_type);
    float logit = ref_score_logit(info, call, raw, token, expert);
    float tau = info->temperature;
    if (info->score == MOEVK_SCORE_SIGMOID)
        return 1.0f / (1.0f + expf(-(logit / tau))) * info->scale;
    return expf((logit - stats->max_logit) / tau) * stats->inv_norm * info->scale;
}

typedef struct ranked {
    float key;
    uint32_t token;
} ranked;

static int by_key_then_token(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return x->token < y->token ? -1 : x->token > y->token;
}

int ref_expert_choice(const moevk_router_info *info, uint32_t T, uint32_t capacity,
                      const float *keys, uint8_t *taken, float *thresholds) {
    uint32_t E = info->num_experts;
    ranked *order = malloc((T ? T : 1) * sizeof *order);
    if (!order) return 0;
    for (uint32_t e = 0; e < E; ++e) {
        uint32_t n = 0;
        for (uint32_t t = 0; t < T; ++t) {
            taken[(uint64_t)t * E + e] = 0;
            float key = keys[(uint64_t)t * E + e];
            if (key >= 0.0f) order[n++] = (ranked){key, t};
        }
        qsort(order, n, sizeof *order, by_key_then_token);
        uint32_t take = n < capacity ? n : capacity;
        for (uint32_t i = 0; i < take; ++i) taken[(uint64_t)order[i].token * E + e] = 1;
        thresholds[e] = n > capacity && capacity > 0 ? order[capacity - 1].key : -1.0f;
    }
    free(order);
    return 1;
}
