/* The expert-parallel backward's importance loss: its sums over the whole batch, which every
 * rank's dL/dlogits needs. Each rank's choices and weights are gathered in rank order (the
 * batch's token order) and added as one process adds them (moevk_parts_importance), so that
 * the gradient and the loss are one process's to the bit. */
#include <limits.h>
#include <stdlib.h>

#include "ep_internal.h"

moevk_result ep_importance_totals(moevk_ep_layer *layer, const forward_state *s,
                                  const uint32_t *tokens, float *totals, double *value) {
    int R = layer->ranks;
    uint32_t k = layer->top_k;
    int *counts = calloc((size_t)R, sizeof *counts);
    int *displacements = calloc((size_t)R, sizeof *displacements);
    uint64_t choices = 0;
    for (int q = 0; counts && displacements && q < R; ++q) {
        uint64_t mine = (uint64_t)tokens[q] * k;
        counts[q] = mine <= INT_MAX ? (int)mine : 0;
        displacements[q] = choices <= INT_MAX ? (int)choices : 0;
        choices += mine;
    }
    moevk_result r = MOEVK_SUCCESS;
    int32_t *ids = NULL;
    float *weights = NULL;
    if (!counts || !displacements)
        r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: the ranks' choices",
                    layer->rank);
    else if (choices > INT_MAX) /* every rank sees the same batch: every rank's error */
        r = ep_fail(layer, MOEVK_ERROR_TOO_LARGE,
                    "the importance loss gathers the batch's %llu choices: more than MPI's int",
                    (unsigned long long)choices);
    else {
        ids = malloc(choices * sizeof *ids + 4);
        weights = malloc(choices * sizeof *weights + 4);
        if (!ids || !weights)
            r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: the batch's %llu choices",
                        layer->rank, (unsigned long long)choices);
    }
    r = ep_agree_result(layer, r, "the importance loss");
    if (r == MOEVK_SUCCESS) {
        MPI_Request request;
        int started = MPI_Iallgatherv(s->ids, counts[layer->rank], MPI_INT32_T, ids, counts,
                                      displacements, MPI_INT32_T, layer->comm, &request);
        r = ep_wait(layer, started, &request, "gathering the batch's choices");
    }
    if (r == MOEVK_SUCCESS) {
        MPI_Request request;
        int started = MPI_Iallgatherv(s->weights, counts[layer->rank], MPI_FLOAT, weights, counts,
                                      displacements, MPI_FLOAT, layer->comm, &request);
        r = ep_wait(layer, started, &request, "gathering the batch's weights");
    }
    if (r == MOEVK_SUCCESS)
        r = ep_agree_result(
            layer,
            moevk_parts_importance(layer->home, s->total_tokens, ids, weights, totals, value),
            "the importance sums");
    if (!ep_abandon(layer, ids)) free(ids);
    if (!ep_abandon(layer, weights)) free(weights);
    free(counts);
    free(displacements);
    return r;
}
