/* Reference of bucketing (bucket_count or scores_topk's counts, bucket_scan, bucket_assign,
 * score_select): slots handed out k-major (every token's rank-0 choice in token order, then
 * rank 1, ...), with the capacity limit applied by position or by score, or no limit (dropless). */
#include <stdlib.h>
#include <string.h>

#include "moevk_reference.h"

/* Ordering key of the score policy: higher weight first (-0 == +0), then lower choice index
 * (token * k + rank), the same key score_select.comp builds. */
static uint64_t score_key(float weight, uint32_t choice) {
    if (weight == 0.0f) weight = 0.0f;
    uint32_t bits;
    memcpy(&bits, &weight, 4);
    uint32_t ordered = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
    return ((uint64_t)~ordered << 32) | choice;
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

uint64_t ref_bucket(const moevk_router_info *info, uint32_t T, uint32_t capacity,
                    const int32_t *ids, const float *weights, int32_t *slots, int32_t *rows,
                    int32_t *row_token, uint32_t *counts_before, uint32_t *counts,
                    uint32_t *offsets) {
    uint32_t E = info->num_experts, K = info->top_k;
    int dropless = info->capacity_mode == MOEVK_CAPACITY_DROPLESS;
    int by_score = !dropless && info->drop_policy == MOEVK_DROP_SCORE;
    uint32_t pad = info->pad_multiple > 1 ? info->pad_multiple : 1;
    uint64_t n = (uint64_t)T * K;
    uint32_t *unlimited = malloc((n ? n : 1) * sizeof *unlimited);
    if (!unlimited) return 0;

    /* Slots without a limit, in k-major order. */
    memset(counts_before, 0, E * sizeof *counts_before);
    for (uint32_t j = 0; j < K; ++j)
        for (uint32_t t = 0; t < T; ++t) {
            uint64_t c = (uint64_t)t * K + j;
            if (ids[c] >= 0) unlimited[c] = counts_before[ids[c]]++;
        }
    uint64_t first_row[MOEVK_MAX_EXPERTS + 1];
    first_row[0] = 0;
    for (uint32_t e = 0; e < E; ++e)
        first_row[e + 1] = first_row[e] + (dropless ? (counts_before[e] + pad - 1) / pad * pad : 0);
    if (offsets)
        for (uint32_t e = 0; e <= E; ++e) offsets[e] = (uint32_t)first_row[e];
    uint64_t num_rows = dropless ? first_row[E] : (uint64_t)E * capacity;
    for (uint64_t r = 0; r < num_rows; ++r) row_token[r] = -1;

    /* Score policy: each expert's threshold key (the capacity-th best), all kept if it fits. */
    uint64_t *threshold = NULL;
    if (by_score) {
        threshold = malloc(E * sizeof *threshold);
        uint64_t *keys = malloc((n ? n : 1) * sizeof *keys);
        if (!threshold || !keys) {
            free(threshold);
            free(keys);
            free(unlimited);
            return 0;
        }
        for (uint32_t e = 0; e < E; ++e) {
            uint64_t m = 0;
            for (uint64_t c = 0; c < n; ++c)
                if (ids[c] == (int32_t)e) keys[m++] = score_key(weights[c], (uint32_t)c);
            threshold[e] = UINT64_MAX; /* fits: everything is kept */
            if (m > capacity && capacity > 0) {
                qsort(keys, m, sizeof *keys, compare_u64);
                threshold[e] = keys[capacity - 1];
            }
        }
        free(keys);
    }

    memset(counts, 0, E * sizeof *counts);
    for (uint32_t j = 0; j < K; ++j)
        for (uint32_t t = 0; t < T; ++t) {
            uint64_t c = (uint64_t)t * K + j;
            slots[c] = rows[c] = -1;
            if (ids[c] < 0) continue;
            uint32_t e = (uint32_t)ids[c];
            int keep;
            if (dropless)
                keep = 1;
            else if (by_score)
                keep = capacity > 0 && score_key(weights[c], (uint32_t)c) <= threshold[e];
            else
                keep = unlimited[c] < capacity;
            if (!keep) continue;
            /* Kept assignments take slots in (rank, token) order: this loop's order. */
            uint32_t slot = by_score ? counts[e] : unlimited[c];
            counts[e]++;
            uint64_t row = dropless ? first_row[e] + slot : (uint64_t)e * capacity + slot;
            slots[c] = (int32_t)slot;
            rows[c] = (int32_t)row;
            row_token[row] = (int32_t)t;
        }
    free(threshold);
    free(unlimited);
    return num_rows;
}
