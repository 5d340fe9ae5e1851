/* `moevk layer --expert-parallel`: see layer_expert_parallel.h. */
#include "layer_expert_parallel.h"

#include <stdio.h>
#include <stdlib.h>

#include "layer_gradients.h"
#include "moevk_mpi.h"

static moevk_result set_ep_weights(void *layer, moevk_layer_weight which, uint32_t first,
                                   uint32_t count, moevk_tensor source) {
    return moevk_ep_layer_set_weights(layer, which, first, count, source);
}

/* How the T tokens split over the ranks: in units of `unit` tokens (whole sequences for the
 * sequence loss, which needs each sequence on one rank; else 1), the last rank the rest. */
typedef struct token_split {
    uint64_t T, unit;
    int ranks;
} token_split;

/* Rank q's tokens: [first(q), first(q + 1)). */
static uint32_t first_token(const token_split *split, int q) {
    if (q >= split->ranks) return (uint32_t)split->T;
    uint64_t units = split->T / split->unit;
    return (uint32_t)(split->unit * (units * (uint64_t)q / (uint64_t)split->ranks));
}

/* Every rank's rows of one per-token array (row_bytes each) into rank 0's. */
static int gather_rows(void *data, size_t row_bytes, const token_split *split, int rank,
                       int *counts, int *displs) {
    if (!data || row_bytes == 0) return 1;
    MPI_Datatype row;
    if (MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &row) != MPI_SUCCESS) return 0;
    MPI_Type_commit(&row);
    for (int q = 0; q < split->ranks; ++q) {
        displs[q] = (int)first_token(split, q);
        counts[q] = (int)first_token(split, q + 1) - displs[q];
    }
    char *mine = (char *)data + (size_t)displs[rank] * row_bytes;
    int ok = MPI_Gatherv(rank == 0 ? MPI_IN_PLACE : mine, counts[rank], row, data, counts, displs,
                         row, 0, MPI_COMM_WORLD) == MPI_SUCCESS;
    MPI_Type_free(&row);
    return ok;
}

/* The backward's gradient_source (layer_gradients.h) over the ranks. */
typedef struct ep_gradients {
    moevk_ep_layer *layer;
    const token_split *split;
    uint64_t d;
    int rank;
    uint32_t own, count; /* this rank's experts */
} ep_gradients;

static moevk_result ep_backward(void *self, const moevk_layer_backward_info *info) {
    const ep_gradients *g = self;
    uint32_t first = first_token(g->split, g->rank);
    moevk_layer_backward_info mine = *info;
    mine.grad_output =
        moevk_host_tensor((const float *)info->grad_output.host + (size_t)first * g->d);
    mine.grad_hidden = moevk_host_tensor((float *)info->grad_hidden.host + (size_t)first * g->d);
    moevk_result r = moevk_ep_layer_backward(g->layer, &mine);
    if (r != MOEVK_SUCCESS) return r; /* every rank's (the layer agrees them) */
    int ranks = g->split->ranks;
    int *counts = malloc(2 * (size_t)ranks * sizeof *counts), ok = counts != NULL;
    if (ok)
        ok = gather_rows(info->grad_hidden.host, g->d * 4, g->split, g->rank, counts,
                         counts + ranks);
    free(counts);
    return ok ? MOEVK_SUCCESS : MOEVK_ERROR_PEER;
}

/* A routed weight's gradient lives on each expert's rank: each reads its own, rank 0 gathers
 * them (E / R experts a rank, in rank order). The others are summed over the ranks. */
static moevk_result ep_read(void *self, moevk_layer_weight which, uint32_t experts,
                            uint64_t part_elements, float *gradient) {
    const ep_gradients *g = self;
    if (which < MOEVK_WEIGHT_GATE || which > MOEVK_WEIGHT_DOWN_BIAS)
        return moevk_ep_layer_read_gradient(g->layer, which, 0, experts,
                                            moevk_host_tensor(gradient));
    float *mine = gradient + (size_t)g->own * part_elements;
    moevk_result r =
        moevk_ep_layer_read_gradient(g->layer, which, g->own, g->count, moevk_host_tensor(mine));
    int failed = r != MOEVK_SUCCESS, any = failed;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any) return failed ? r : MOEVK_ERROR_PEER;
    MPI_Datatype part;
    if (MPI_Type_contiguous((int)part_elements, MPI_FLOAT, &part) != MPI_SUCCESS)
        return MOEVK_ERROR_PEER;
    MPI_Type_commit(&part);
    int ok = MPI_Gather(g->rank == 0 ? MPI_IN_PLACE : mine, (int)g->count, part, gradient,
                        (int)g->count, part, 0, MPI_COMM_WORLD) == MPI_SUCCESS;
    MPI_Type_free(&part);
    return ok ? MOEVK_SUCCESS : MOEVK_ERROR_PEER;
}

moevk_result layer_forward_expert_parallel(moevk_context *context, const moevk_layer_info *info,
                                           uint32_t exchange_chunks, const layer_weights *weights,
                                           const model_config *config,
                                           const moevk_route_input *input,
                                           const layer_forward_arrays *out,
                                           layer_backward_request *backward, int *writer,
                                           char *error, size_t error_size) {
    int started = 0, rank = 0, ranks = 1;
    MPI_Initialized(&started);
    *writer = 1;
    if (!started && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        snprintf(error, error_size, "MPI_Init failed");
        return MOEVK_ERROR_PEER;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    *writer = rank == 0;
    error[0] = '\0';
    uint64_t T = input->num_tokens, E = config->num_experts, d = info->router->hidden_size;
    const moevk_loss_info *losses = backward ? backward->losses : NULL;
    token_split split = {T, 1, ranks};
    if (losses && losses->sequence_coef != 0.0f && losses->sequence_length > 0)
        split.unit = losses->sequence_length;
    uint32_t first = first_token(&split, rank), mine = first_token(&split, rank + 1) - first;
    moevk_router_info router = *info->router;
    router.max_tokens = mine > 0 ? mine : 1;
    moevk_layer_info layer_info = *info;
    layer_info.router = &router;
    moevk_ep_layer_info ep_info;
    moevk_ep_layer_info_init(&ep_info);
    ep_info.layer = &layer_info;
    ep_info.comm = MPI_COMM_WORLD;
    ep_info.exchange_chunks = exchange_chunks;
    moevk_ep_layer *layer = NULL;
    moevk_result r = moevk_ep_layer_create(context, &ep_info, &layer);
    uint32_t own = 0, count = 0;
    if (r == MOEVK_SUCCESS) r = moevk_ep_layer_experts(layer, NULL, NULL, &own, &count);
    if (r == MOEVK_SUCCESS) {
        /* Weights are each rank's own: agree on them before the forward. */
        r = layer_weights_upload_to(weights, config, set_ep_weights, layer, own, count);
        int failed = r != MOEVK_SUCCESS, any = failed;
        MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (any && !failed) {
            snprintf(error, error_size, "another rank could not set its experts' weights");
            r = MOEVK_ERROR_PEER;
        }
    }
    if (r != MOEVK_SUCCESS && !error[0])
        snprintf(error, error_size, "%s", moevk_context_last_error(context));
    uint32_t k = router.top_k;
    size_t hidden_bytes = router.hidden_type == MOEVK_DTYPE_F32 ? 4 : 2;
    moevk_route_input local = *input;
    local.num_tokens = mine;
    local.hidden = moevk_host_tensor((const char *)input->hidden.host + first * d * hidden_bytes);
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.expert_ids = moevk_host_tensor(out->ids + first * k);
    route.weights = moevk_host_tensor(out->weights + first * k);
    route.slots = moevk_host_tensor(out->slots + first * k);
    route.counts = moevk_host_tensor(out->counts);
    if (router.capacity_mode == MOEVK_CAPACITY_DROPLESS)
        route.offsets = moevk_host_tensor(out->offsets);
    route.stats = out->stats;
    if (out->token_scores) route.token_scores = moevk_host_tensor(out->token_scores + first * 3);
    moevk_layer_output output;
    moevk_layer_output_init(&output);
    output.output = moevk_host_tensor((char *)out->output + first * d * hidden_bytes);
    output.router_logits = moevk_host_tensor(out->logits + first * E);
    output.route = &route;
    if (r == MOEVK_SUCCESS) {
        r = moevk_ep_layer_forward(layer, &local, &output);
        if (r != MOEVK_SUCCESS)
            snprintf(error, error_size, "%s", moevk_context_last_error(context));
    }
    if (r == MOEVK_SUCCESS && backward) {
        ep_gradients g = {layer, &split, d, rank, own, count};
        gradient_source source = {&g, context, rank == 0, ep_backward, ep_read};
        backward->status =
            layer_gradients_write(&source, weights, (uint32_t)E, (uint32_t)d, backward->grad_output,
                                  backward->losses, backward->out_dir);
    }
    moevk_ep_layer_destroy(layer);
    int *counts = malloc(2 * (size_t)ranks * sizeof *counts);
    if (r == MOEVK_SUCCESS && !counts) {
        snprintf(error, error_size, "out of host memory");
        r = MOEVK_ERROR_OUT_OF_HOST_MEMORY; /* the others wait in the gather: mpirun ends them */
    }
    /* Every rank's result is the same here (the layer agrees them): all gather, or none. */
    if (r == MOEVK_SUCCESS) {
        int *displs = counts + ranks;
        int ok = gather_rows(out->output, d * hidden_bytes, &split, rank, counts, displs) &&
                 gather_rows(out->logits, E * 4, &split, rank, counts, displs) &&
                 gather_rows(out->ids, k * 4, &split, rank, counts, displs) &&
                 gather_rows(out->weights, k * 4, &split, rank, counts, displs) &&
                 gather_rows(out->slots, k * 4, &split, rank, counts, displs) &&
                 gather_rows(out->token_scores, 3 * 4, &split, rank, counts, displs);
        if (!ok) {
            snprintf(error, error_size, "MPI_Gatherv failed");
            r = MOEVK_ERROR_PEER;
        }
    }
    free(counts);
    if (!started) MPI_Finalize();
    return r;
}
