/* The SCORE drop policy over the ranks (moevk.h's MOEVK_DROP_SCORE): each expert keeps its C
 * assignments of highest weight over the whole batch (ties: the lower token, then the lower
 * choice rank; -0 and +0 equal), and the kept ones take slots in (choice rank, token) order.
 * Every rank gathers every rank's choices and weights and decides the same way (comparisons
 * alone: no float arithmetic, so the same bits as one process). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "ep_internal.h"

/* The batch's choices, for qsort's comparator (which takes no context). */
typedef struct ranked_choice {
    float weight;
    uint32_t choice; /* t * k + j in the batch: token order, then choice rank */
} ranked_choice;

/* Higher weight first, then the lower token and choice rank (the index, whose order is that). */
static int by_score(const void *a, const void *b) {
    const ranked_choice *x = a, *y = b;
    if (x->weight > y->weight) return -1;
    if (x->weight < y->weight) return 1;
    return x->choice < y->choice ? -1 : x->choice > y->choice;
}

/* kept[c] for each of the batch's n choices: its expert's C best hold it. */
static int decide(uint32_t E, uint64_t C, const int32_t *ids, const float *weights, uint64_t n,
                  uint8_t *kept) {
    uint64_t *first = calloc((size_t)E + 1, sizeof *first);
    ranked_choice *ranked = malloc(n * sizeof *ranked + 1);
    if (!first || !ranked) {
        free(first), free(ranked);
        return 0;
    }
    /* Each expert's choices together (a counting sort), then ranked. */
    for (uint64_t c = 0; c < n; ++c)
        if (ids[c] >= 0) first[ids[c] + 1]++;
    for (uint32_t e = 0; e < E; ++e) first[e + 1] += first[e];
    uint64_t *next = calloc((size_t)E, sizeof *next);
    if (!next) {
        free(first), free(ranked);
        return 0;
    }
    for (uint64_t c = 0; c < n; ++c)
        if (ids[c] >= 0) {
            uint32_t e = (uint32_t)ids[c];
            ranked[first[e] + next[e]++] = (ranked_choice){weights[c], (uint32_t)c};
        }
    memset(kept, 0, n);
    for (uint32_t e = 0; e < E; ++e) {
        uint64_t count = first[e + 1] - first[e];
        qsort(ranked + first[e], count, sizeof *ranked, by_score);
        for (uint64_t i = 0; i < count && i < C; ++i) kept[ranked[first[e] + i].choice] = 1;
    }
    free(first), free(ranked), free(next);
    return 1;
}

/* place_choices' outputs from the decisions: slots in (j, batch token) order among the kept. */
static void place(moevk_ep_layer *layer, forward_state *s, const uint32_t *tokens,
                  const int32_t *ids, const uint8_t *kept) {
    uint32_t E = layer->num_experts, k = layer->top_k, R = (uint32_t)layer->ranks;
    uint64_t start[MOEVK_MAX_EXPERTS] = {0};
    memset(s->kept, 0, (size_t)R * E * sizeof *s->kept);
    memset(s->counts_before, 0, (size_t)E * sizeof *s->counts_before);
    for (uint32_t j = 0; j < k; ++j) {
        uint64_t t0 = 0; /* rank q's first token in the batch */
        for (uint32_t q = 0; q < R; ++q) {
            uint32_t *runs = s->runs + ((size_t)j * R + q) * E;
            uint32_t *run_first = s->run_first + ((size_t)j * R + q) * E;
            for (uint32_t e = 0; e < E; ++e) run_first[e] = (uint32_t)start[e];
            for (uint32_t t = 0; t < tokens[q]; ++t) {
                uint64_t c = (t0 + t) * k + j;
                int32_t e = ids[c];
                int mine = q == (uint32_t)layer->rank;
                if (mine) s->slots[(size_t)t * k + j] = -1;
                if (e < 0) continue;
                s->counts_before[e]++;
                if (!kept[c]) continue;
                if (mine) s->slots[(size_t)t * k + j] = (int32_t)start[e];
                runs[e]++;
                s->kept[(size_t)q * E + (uint32_t)e]++;
                start[e]++;
            }
            for (uint32_t e = 0; e < E; ++e)
                if (!runs[e]) run_first[e] = 0;
            t0 += tokens[q];
        }
    }
    for (uint32_t e = 0; e < E; ++e) s->counts[e] = (uint32_t)start[e]; /* (no offsets: C) */
}

moevk_result ep_place_by_score(moevk_ep_layer *layer, forward_state *s, const uint32_t *tokens) {
    int R = layer->ranks;
    uint32_t k = layer->top_k, E = layer->num_experts;
    uint64_t n = (uint64_t)s->total_tokens * k;
    int *counts = calloc((size_t)R, sizeof *counts);
    int *displacements = calloc((size_t)R, sizeof *displacements);
    int32_t *ids = NULL;
    float *weights = NULL;
    uint8_t *kept = NULL;
    moevk_result r = MOEVK_SUCCESS;
    if (!tokens)
        r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: the ranks' tokens",
                    layer->rank);
    else if (n > INT_MAX) /* every rank sees the same batch: every rank's error */
        r = ep_fail(layer, MOEVK_ERROR_TOO_LARGE,
                    "the SCORE policy gathers the batch's %llu choices: more than MPI's int",
                    (unsigned long long)n);
    else {
        ids = malloc(n * sizeof *ids + 4);
        weights = malloc(n * sizeof *weights + 4);
        kept = malloc(n + 1);
        if (!counts || !displacements || !ids || !weights || !kept)
            r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: the batch's %llu choices",
                        layer->rank, (unsigned long long)n);
    }
    r = ep_agree_result(layer, r, "the SCORE policy");
    if (r == MOEVK_SUCCESS)
        r = ep_gather_choices(layer, s, tokens, ids, weights, counts, displacements);
    if (r == MOEVK_SUCCESS) {
        r = decide(E, s->capacity, ids, weights, n, kept)
                ? MOEVK_SUCCESS
                : ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: ranking the choices",
                          layer->rank);
        if (r == MOEVK_SUCCESS) place(layer, s, tokens, ids, kept);
        r = ep_agree_result(layer, r, "the SCORE policy's ranking");
    }
    void *memory[] = {ids, weights};
    for (size_t i = 0; i < sizeof memory / sizeof memory[0]; ++i)
        if (!ep_abandon(layer, memory[i])) free(memory[i]);
    free(kept);
    free(counts);
    free(displacements);
    return r;
}
