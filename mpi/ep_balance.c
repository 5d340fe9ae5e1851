/* The expert-parallel backward's importance and load losses: their sums over the whole batch,
 * which every rank's dL/dlogits needs. Each rank's choices and weights (and, for the load loss,
 * its tokens' load terms from its device) are gathered in rank order (the batch's token order)
 * and added as one process adds them (moevk_parts_balance_totals), so that the gradients and
 * the losses are one process's to the bit. */
#include <limits.h>
#include <stdlib.h>

#include "ep_internal.h"

moevk_result ep_balance_totals(moevk_ep_layer *layer, const forward_state *s,
                               const uint32_t *tokens, const moevk_loss_info *load, float *totals,
                               double *values) {
    int R = layer->ranks;
    uint32_t k = layer->top_k, E = layer->num_experts;
    uint64_t batch = s->total_tokens;
    uint32_t widest = load && E > k ? E : k; /* values a token gathers */
    int *counts = calloc((size_t)R, sizeof *counts);
    int *displacements = calloc((size_t)R, sizeof *displacements);
    moevk_result r = MOEVK_SUCCESS;
    int32_t *ids = NULL;
    float *weights = NULL, *terms = NULL, *all_terms = NULL;
    if (!counts || !displacements)
        r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: the ranks' choices",
                    layer->rank);
    else if (batch * widest > INT_MAX) /* every rank sees the same batch: every rank's error */
        r = ep_fail(layer, MOEVK_ERROR_TOO_LARGE,
                    "the balancing losses gather the batch's %llu tokens' %u values each: more "
                    "than MPI's int",
                    (unsigned long long)batch, widest);
    else {
        ids = malloc(batch * k * sizeof *ids + 4);
        weights = malloc(batch * k * sizeof *weights + 4);
        if (load) {
            terms = malloc((size_t)s->T * E * sizeof *terms + 4);
            all_terms = malloc(batch * E * sizeof *all_terms + 4);
        }
        if (!ids || !weights || (load && (!terms || !all_terms)))
            r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY,
                        "rank %d: the batch's %llu tokens' choices", layer->rank,
                        (unsigned long long)batch);
    }
    /* This rank's load terms, from its route (a rank without tokens has none). */
    if (r == MOEVK_SUCCESS && load && s->T > 0)
        r = moevk_parts_load_terms(layer->home, load, terms);
    r = ep_agree_result(layer, r, "the balancing losses");
    if (r == MOEVK_SUCCESS)
        r = ep_gather_choices(layer, s, tokens, ids, weights, counts, displacements);
    if (r == MOEVK_SUCCESS && load)
        r = ep_gather_rows(layer, tokens, E, terms, MPI_FLOAT, all_terms, counts, displacements,
                           "gathering the batch's load terms");
    if (r == MOEVK_SUCCESS)
        r = ep_agree_result(layer,
                            moevk_parts_balance_totals(layer->home, s->total_tokens, ids, weights,
                                                       all_terms, totals, values),
                            "the balancing losses' sums");
    void *memory[] = {ids, weights, terms, all_terms};
    for (size_t i = 0; i < sizeof memory / sizeof memory[0]; ++i)
        if (!ep_abandon(layer, memory[i])) free(memory[i]);
    free(counts);
    free(displacements);
    return r;
}
