/* The expert-parallel layer's optimizer step (moevk_mpi.h): the router's and shared experts'
 * gradients summed over the ranks in rank order and written into each home half for its
 * update, the global norm from every half's squares, each half's update at the agreed scale,
 * and the ranks' own gradient parts put back. Also reading the weights. */
#include <math.h>
#include <stdlib.h>

#include "ep_internal.h"

#define REJECT(...) return ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

/* The home half's weights, whose gradients are each rank's tokens' part. */
static const moevk_layer_weight HOME_WEIGHTS[] = {
    MOEVK_WEIGHT_ROUTER,           MOEVK_WEIGHT_SHARED_GATE,       MOEVK_WEIGHT_SHARED_UP,
    MOEVK_WEIGHT_SHARED_DOWN,      MOEVK_WEIGHT_SHARED_GATE_BIAS,  MOEVK_WEIGHT_SHARED_UP_BIAS,
    MOEVK_WEIGHT_SHARED_DOWN_BIAS, MOEVK_WEIGHT_SHARED_EXPERT_GATE};
enum { HOME_COUNT = sizeof HOME_WEIGHTS / sizeof HOME_WEIGHTS[0] };

/* This rank's checks (the same on every rank: the configurations and, by contract, info agree). */
static moevk_result check_step(moevk_ep_layer *layer, const moevk_optimizer_info *info) {
    if (!layer->trainable) REJECT("the layer was created without `trainable`");
    if (!info) REJECT("info must not be NULL");
    if (info->struct_size < sizeof *info)
        REJECT("info must be this moevk's whole struct (moevk_optimizer_info_init)");
    return MOEVK_SUCCESS;
}

/* Each home weight's summed gradient written into the home half, this rank's own part saved
 * into own[i] (NULL where the half has no such weight). Collective. */
static moevk_result write_sums(moevk_ep_layer *layer, float *own[HOME_COUNT]) {
    moevk_result r = MOEVK_SUCCESS;
    for (int i = 0; i < HOME_COUNT && r == MOEVK_SUCCESS; ++i) {
        moevk_layer_weight which = HOME_WEIGHTS[i];
        if (!moevk_parts_has_weight(layer->home, which)) continue; /* the same on every rank */
        uint64_t bytes = 0;
        r = moevk_parts_gradient_bytes(layer->home, which, 0, 1, &bytes);
        own[i] = r == MOEVK_SUCCESS ? malloc(bytes + 4) : NULL;
        float *sum = r == MOEVK_SUCCESS ? malloc(bytes + 4) : NULL;
        if (r == MOEVK_SUCCESS && (!own[i] || !sum))
            r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: gradients", layer->rank);
        if (r == MOEVK_SUCCESS)
            r = moevk_layer_read_gradient(layer->home, which, 0, 1, moevk_host_tensor(own[i]));
        r = ep_agree_result(layer, r, "reading the gradients");
        if (r == MOEVK_SUCCESS) r = ep_summed_gradient(layer, which, 0, 1, sum);
        if (r == MOEVK_SUCCESS)
            r = ep_agree_result(layer, moevk_parts_write_gradient(layer->home, which, 0, 1, sum),
                                "writing the summed gradients");
        if (!ep_abandon(layer, sum)) free(sum);
    }
    return r;
}

/* The global norm: the home half's squares (its summed gradients: the same on every rank) plus
 * every rank's experts', in rank order. Collective. */
static moevk_result global_norm(moevk_ep_layer *layer, const moevk_optimizer_info *info,
                                double *norm) {
    double home = 0.0, experts = 0.0;
    moevk_result r = moevk_parts_gradient_squares(layer->home, info, &home);
    if (r == MOEVK_SUCCESS) r = moevk_parts_gradient_squares(layer->experts, info, &experts);
    double *all = calloc((size_t)layer->ranks, sizeof *all);
    if (r == MOEVK_SUCCESS && !all)
        r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: the norm", layer->rank);
    r = ep_agree_result(layer, r, "the gradients' norm");
    if (r == MOEVK_SUCCESS) {
        MPI_Request request;
        int started =
            MPI_Iallgather(&experts, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, layer->comm, &request);
        r = ep_wait(layer, started, &request, "gathering the gradients' squares");
    }
    if (r == MOEVK_SUCCESS) {
        double sum = home;
        for (int q = 0; q < layer->ranks; ++q) sum += all[q];
        *norm = sqrt(sum);
    }
    if (!ep_abandon(layer, all)) free(all);
    return r;
}

moevk_result moevk_ep_layer_optimizer_step(moevk_ep_layer *layer, const moevk_optimizer_info *info,
                                           double *grad_norm) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (layer->broken)
        return ep_fail(layer, MOEVK_ERROR_PEER,
                       "rank %d: an earlier exchange failed: the layer only takes destroy",
                       layer->rank);
    moevk_result r = ep_agree_result(layer, check_step(layer, info), "checking the step");
    float *own[HOME_COUNT] = {0};
    if (r == MOEVK_SUCCESS) r = write_sums(layer, own);
    double norm = 0.0;
    if (r == MOEVK_SUCCESS && (info->max_grad_norm > 0.0f || grad_norm))
        r = global_norm(layer, info, &norm);
    float scale = moevk_parts_clip_scale(info ? info->max_grad_norm : 0.0f, norm);
    if (r == MOEVK_SUCCESS) {
        moevk_result local = moevk_parts_optimizer_update(layer->home, info, scale);
        if (local == MOEVK_SUCCESS)
            local = moevk_parts_optimizer_update(layer->experts, info, scale);
        r = ep_agree_result(layer, local, "the update");
    }
    /* The ranks' own parts back: what they hold is what the backward left. */
    for (int i = 0; i < HOME_COUNT; ++i)
        if (own[i]) {
            moevk_result put =
                moevk_parts_write_gradient(layer->home, HOME_WEIGHTS[i], 0, 1, own[i]);
            if (r == MOEVK_SUCCESS) r = put;
            if (!ep_abandon(layer, own[i])) free(own[i]);
        }
    if (r == MOEVK_SUCCESS && grad_norm) *grad_norm = norm;
    return r;
}

moevk_result moevk_ep_layer_read_weights(moevk_ep_layer *layer, moevk_layer_weight which,
                                         uint32_t first, uint32_t count, moevk_tensor destination) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_layer *half = NULL;
    moevk_result r = ep_weight_half(layer, which, &first, count, &half);
    return r == MOEVK_SUCCESS ? moevk_layer_read_weights(half, which, first, count, destination)
                              : r;
}
