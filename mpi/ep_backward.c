/* The expert-parallel layer's training (moevk_mpi.h): the backward of its last forward — the
 * home half's combine backward on every rank, the rows' gradients to their experts' ranks (the
 * forward's exchange, f32 rows), the experts' backward there, the rows' gradients back, and the
 * home half's dispatch, shared experts and router backward — and its gradients, read where
 * they live: a routed expert's on its rank, the router's and shared experts' summed over the
 * ranks in rank order. */
#include <stdlib.h>
#include <string.h>

#include "ep_internal.h"

#define REJECT(...) return ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

static int tensor_given(const moevk_tensor *tensor) { return tensor->kind != MOEVK_TENSOR_NONE; }

static int host_or_none(const moevk_tensor *tensor) {
    return tensor->kind == MOEVK_TENSOR_NONE || (tensor->kind == MOEVK_TENSOR_HOST && tensor->host);
}

/* This rank's checks before any exchange (its failure is then every rank's). */
static moevk_result check_backward(moevk_ep_layer *layer, const moevk_layer_backward_info *info) {
    if (!info) REJECT("info must not be NULL");
    if (info->struct_size < sizeof *info)
        REJECT("info must be this moevk's whole struct (moevk_layer_backward_info_init)");
    if (!layer->trainable) REJECT("the layer was created without `trainable`");
    if (!layer->has_last) REJECT("a backward needs the layer's forward first");
    const moevk_loss_info *losses = info->losses;
    if (losses && losses->struct_size < sizeof *losses)
        REJECT("losses must be this moevk's whole struct (moevk_loss_info_init)");
    if (losses && losses->load_coef != 0.0f && layer->router.noise != MOEVK_NOISE_GAUSSIAN)
        REJECT("the load loss needs the router's Gaussian noise (a route in training)");
    if (losses && losses->sequence_coef != 0.0f &&
        (losses->sequence_length == 0 || layer->last.T % losses->sequence_length != 0))
        REJECT("rank %d: T = %u: the sequence loss needs each rank's T a multiple of "
               "sequence_length %u (each sequence on one rank)",
               layer->rank, layer->last.T, losses->sequence_length);
    if (losses &&
        (tensor_given(&losses->grad_weights) || tensor_given(&losses->grad_combined) ||
         tensor_given(&losses->grad_noise_std) || tensor_given(&losses->grad_noise_weights)))
        REJECT("a layer's backward gives the losses their dL/dweights: their tensors must be NONE");
    if (info->loss_values && info->loss_values->struct_size < sizeof *info->loss_values)
        REJECT("loss_values must be this moevk's whole struct (moevk_losses_init)");
    uint32_t T = layer->last.T;
    if (T > 0 && (info->grad_output.kind != MOEVK_TENSOR_HOST || !info->grad_output.host))
        REJECT("an expert-parallel layer takes grad_output in host memory");
    if (!host_or_none(&info->grad_hidden) || !host_or_none(&info->grad_weights))
        REJECT("an expert-parallel layer writes grad_hidden and grad_weights to host memory");
    return MOEVK_SUCCESS;
}

/* What the batch's losses need of every rank ([ranks][1 + SETTING_WORDS] after the agreed
 * result): whether the sequence loss is asked for, its sequence length and the rank's
 * sequences; whether the importance and load losses are, whether the rank wants the losses'
 * values (the importance's among them, as one process gives it), and the rank's tokens. */
enum {
    SEQUENCE_ASKED,
    SEQUENCE_LENGTH,
    SEQUENCES,
    IMPORTANCE_ASKED,
    LOAD_ASKED,
    VALUES_WANTED,
    TOKENS,
    SETTING_WORDS
};

/* Rank q's setting `word` in the agreed table. */
static uint32_t setting(const uint32_t *gathered, int q, int word) {
    return gathered[(size_t)q * (1 + SETTING_WORDS) + 1 + (size_t)word];
}

/* The check's result agreed, with the ranks' losses settings: the same on every rank, or every
 * rank's error. */
static moevk_result agree_check(moevk_ep_layer *layer, moevk_result local,
                                const moevk_layer_backward_info *info, uint32_t *gathered) {
    const moevk_loss_info *losses = info ? info->losses : NULL;
    int ok = local == MOEVK_SUCCESS && losses;
    int asked = ok && losses->sequence_coef != 0.0f;
    uint32_t S = asked ? losses->sequence_length : 0;
    uint32_t table[SETTING_WORDS] = {(uint32_t)asked,
                                     S,
                                     asked ? layer->last.T / S : 0,
                                     ok && losses->importance_coef != 0.0f,
                                     ok && losses->load_coef != 0.0f,
                                     ok && info->loss_values,
                                     layer->last.T};
    moevk_result r =
        ep_agree(layer, local, table, SETTING_WORDS, gathered, "checking the backward");
    for (int q = 1; r == MOEVK_SUCCESS && q < layer->ranks; ++q) {
        uint32_t theirs = setting(gathered, q, SEQUENCE_ASKED),
                 first = setting(gathered, 0, SEQUENCE_ASKED);
        uint32_t length = setting(gathered, q, SEQUENCE_LENGTH);
        if (theirs != first || length != setting(gathered, 0, SEQUENCE_LENGTH))
            r = ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT,
                        "the ranks disagree on the sequence loss: rank %d %s it (sequence_length "
                        "%u), rank 0 %s (%u)",
                        q, theirs ? "asks for" : "does not ask for", length,
                        first ? "does" : "does not", setting(gathered, 0, SEQUENCE_LENGTH));
        for (int word = IMPORTANCE_ASKED; r == MOEVK_SUCCESS && word <= LOAD_ASKED; ++word)
            if (setting(gathered, q, word) != setting(gathered, 0, word))
                r = ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT,
                            "the ranks disagree on the %s loss: rank %d %s it, rank 0 %s",
                            word == LOAD_ASKED ? "load" : "importance", q,
                            setting(gathered, q, word) ? "asks for" : "does not ask for",
                            setting(gathered, 0, word) ? "does" : "does not");
    }
    return r;
}

/* The home half's first step: each sent row's share of dL/doutput into s->returned, and this
 * rank's sequences' totals (for the sequence loss's value) into sequence_totals. */
static moevk_result combine_backward(moevk_ep_layer *layer, forward_state *s,
                                     const moevk_layer_backward_info *info,
                                     const moevk_route_stats *stats, float *sequence_totals,
                                     const float *balance_totals) {
    if (s->T == 0) return MOEVK_SUCCESS;
    /* The losses' gradient over the whole batch's counts, valid rows, sequences and importance
     * and load sums: each token's the one process's. */
    const moevk_loss_info *losses = info->losses;
    uint32_t S = losses && losses->sequence_coef != 0.0f ? losses->sequence_length : 0;
    moevk_parts_batch batch = {losses,
                               s->counts_before,
                               s->total_tokens - stats->nonfinite_rows - stats->masked_rows,
                               S ? s->total_tokens / S : 0,
                               sequence_totals,
                               balance_totals};
    return moevk_parts_home_backward_combine(layer->home, info->grad_output.host, &batch,
                                             info->grad_weights.host, s->returned);
}

/* The sequence loss's value: every rank's sequences' totals gathered in rank order (the
 * batch's sequence order) and summed as one process sums them, in double, in order. */
static moevk_result sequence_value(moevk_ep_layer *layer, const moevk_loss_info *losses,
                                   const uint32_t *settings, const float *totals, double *value) {
    int *counts = calloc((size_t)layer->ranks, sizeof *counts);
    int *displacements = calloc((size_t)layer->ranks, sizeof *displacements);
    uint32_t *per_rank = calloc((size_t)layer->ranks, sizeof *per_rank);
    uint64_t sequences = 0;
    for (int q = 0; per_rank && q < layer->ranks; ++q) {
        per_rank[q] = setting(settings, q, SEQUENCES);
        sequences += per_rank[q];
    }
    float *all = counts && displacements && per_rank ? malloc(sequences * 4 + 4) : NULL;
    moevk_result r = all ? MOEVK_SUCCESS
                         : ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY,
                                   "rank %d: the sequences' totals", layer->rank);
    r = ep_agree_result(layer, r, "the sequence loss");
    if (r == MOEVK_SUCCESS)
        r = ep_gather_rows(layer, per_rank, 1, totals, MPI_FLOAT, all, counts, displacements,
                           "gathering the sequences' totals");
    if (r == MOEVK_SUCCESS && sequences > 0) {
        double sum = 0.0;
        for (uint64_t b = 0; b < sequences; ++b) sum += all[b];
        double S = losses->sequence_length, k = layer->top_k;
        *value = sum * layer->num_experts / (k * S * S * (double)sequences);
    }
    if (!ep_abandon(layer, all)) free(all);
    free(counts);
    free(displacements);
    free(per_rank);
    return r;
}

/* The losses' values, from the whole batch's statistics (one process's within the rounding
 * of the ranks' sums in rank order). */
static void loss_values(const moevk_loss_info *info, const moevk_route_stats *stats,
                        const double balance[2], double sequence, moevk_losses *values) {
    uint32_t size = values->struct_size;
    moevk_losses_init(values);
    values->struct_size = size;
    values->aux = stats->aux_loss;
    values->z = stats->z_loss;
    values->importance = balance[0];
    values->load = info->load_coef != 0.0f ? balance[1] : 0.0;
    values->entropy = stats->entropy;
    values->sequence = sequence;
    /* One process's sum, term by term. */
    values->total = info->aux_coef * values->aux + info->z_coef * values->z +
                    info->importance_coef * values->importance + info->load_coef * values->load +
                    info->entropy_coef * values->entropy + info->sequence_coef * values->sequence;
}

/* This rank's experts over the rows' gradients that came: dL/d(their rows) into s->grad_rows.
 * Experts that ran nothing still have their gradients zeroed, as one process's layer has. */
static moevk_result experts_backward(moevk_ep_layer *layer, forward_state *s, int accumulate) {
    if (s->received_rows == 0)
        return accumulate ? MOEVK_SUCCESS : moevk_layer_zero_gradients(layer->experts);
    if (!s->grad_rows) s->grad_rows = malloc((size_t)s->received_rows * layer->hidden_size * 4);
    if (!s->grad_rows)
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: %u rows' gradients",
                       layer->rank, s->received_rows);
    return moevk_parts_experts_backward(layer->experts, s->expert_out, accumulate, s->grad_rows);
}

/* The home half's last step, from the returned rows' gradients in s->returned. */
static moevk_result finish_backward(moevk_ep_layer *layer, forward_state *s,
                                    const moevk_layer_backward_info *info) {
    if (s->T == 0)
        return info->accumulate ? MOEVK_SUCCESS : moevk_layer_zero_gradients(layer->home);
    return moevk_parts_home_backward_finish(layer->home, s->returned, info->accumulate,
                                            info->grad_hidden.host);
}

moevk_result moevk_ep_layer_backward(moevk_ep_layer *layer, const moevk_layer_backward_info *info) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (layer->broken)
        return ep_fail(layer, MOEVK_ERROR_PEER,
                       "rank %d: an earlier exchange failed: the layer only takes destroy",
                       layer->rank);
    forward_state *s = &layer->last;
    uint32_t *settings = calloc((size_t)layer->ranks * (1 + SETTING_WORDS), sizeof *settings);
    if (!settings) /* this rank cannot take part: the others time out (PEER) */
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d", layer->rank);
    moevk_result r = check_backward(layer, info);
    /* The sequence loss: this rank's sequences' totals, for its value. */
    const moevk_loss_info *losses = info ? info->losses : NULL;
    uint32_t S =
        r == MOEVK_SUCCESS && losses && losses->sequence_coef != 0.0f ? losses->sequence_length : 0;
    float *sequence_totals = S ? malloc((size_t)(s->T / S) * 4 + 4) : NULL;
    if (S && !sequence_totals)
        r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: the sequences' totals",
                    layer->rank);
    r = agree_check(layer, r, info, settings);
    /* Agreed: every rank's or none. */
    int sequence_loss = r == MOEVK_SUCCESS && setting(settings, 0, SEQUENCE_ASKED);
    /* The importance and load sums: for their gradients, or for the importance's value on any
     * rank that wants the values. */
    int load_loss = r == MOEVK_SUCCESS && setting(settings, 0, LOAD_ASKED);
    int balance_sums = r == MOEVK_SUCCESS && (setting(settings, 0, IMPORTANCE_ASKED) || load_loss);
    for (int q = 0; r == MOEVK_SUCCESS && q < layer->ranks; ++q)
        balance_sums |= (int)setting(settings, q, VALUES_WANTED);
    float *balance_totals = NULL;
    double balance[2] = {0.0, 0.0};
    if (balance_sums) {
        balance_totals = malloc((size_t)layer->num_experts * 2 * sizeof *balance_totals);
        uint32_t *tokens = malloc((size_t)layer->ranks * sizeof *tokens);
        r = balance_totals && tokens ? MOEVK_SUCCESS
                                     : ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY,
                                               "rank %d: the balancing losses' sums", layer->rank);
        r = ep_agree_result(layer, r, "the balancing losses");
        for (int q = 0; r == MOEVK_SUCCESS && q < layer->ranks; ++q)
            tokens[q] = setting(settings, q, TOKENS);
        if (r == MOEVK_SUCCESS)
            r = ep_balance_totals(layer, s, tokens, load_loss ? info->losses : NULL, balance_totals,
                                  balance);
        free(tokens);
    }
    /* Each step's failure is agreed before the next exchange, as in the forward. */
    int exchange = r == MOEVK_SUCCESS && s->total_tokens > 0;
    moevk_route_stats stats;
    moevk_route_stats_init(&stats);
    if (r == MOEVK_SUCCESS) ep_batch_stats(layer, s, &stats);
    if (r == MOEVK_SUCCESS)
        r = ep_agree_result(
            layer, combine_backward(layer, s, info, &stats, sequence_totals, balance_totals),
            "the combine's backward");
    if (r == MOEVK_SUCCESS && exchange) r = ep_exchange_gradients(layer, s, 1);
    if (r == MOEVK_SUCCESS)
        r = ep_agree_result(layer, experts_backward(layer, s, info->accumulate),
                            "the experts' backward");
    if (r == MOEVK_SUCCESS && exchange) r = ep_exchange_gradients(layer, s, 0);
    if (r == MOEVK_SUCCESS)
        r = ep_agree_result(layer, finish_backward(layer, s, info), "the router's backward");
    double sequence = 0.0;
    if (r == MOEVK_SUCCESS && sequence_loss)
        r = sequence_value(layer, info->losses, settings, sequence_totals, &sequence);
    if (r == MOEVK_SUCCESS && info->losses && info->loss_values)
        loss_values(info->losses, &stats, balance, sequence, info->loss_values);
    if (!ep_abandon(layer, settings)) free(settings);
    if (!ep_abandon(layer, sequence_totals)) free(sequence_totals);
    free(balance_totals);
    return r;
}

static int routed_weight(moevk_layer_weight which) {
    return which >= MOEVK_WEIGHT_GATE && which <= MOEVK_WEIGHT_DOWN_BIAS;
}

/* The router's or shared experts' gradient: every rank's part gathered, summed in rank order. */
moevk_result ep_summed_gradient(moevk_ep_layer *layer, moevk_layer_weight which, uint32_t first,
                                uint32_t count, float *destination) {
    uint64_t bytes = 0;
    moevk_result r = moevk_parts_gradient_bytes(layer->home, which, first, count, &bytes);
    if (r == MOEVK_SUCCESS && bytes * (uint64_t)layer->ranks > 0x7fffffff)
        r = ep_fail(layer, MOEVK_ERROR_TOO_LARGE, "rank %d: %llu bytes a rank pass MPI's int",
                    layer->rank, (unsigned long long)bytes);
    float *all = r == MOEVK_SUCCESS ? malloc(bytes * (uint64_t)layer->ranks + 4) : NULL;
    if (r == MOEVK_SUCCESS && !all)
        r = ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: gradients", layer->rank);
    size_t n = (size_t)bytes / 4;
    if (r == MOEVK_SUCCESS)
        r = moevk_layer_read_gradient(layer->home, which, first, count,
                                      moevk_host_tensor(all + (size_t)layer->rank * n));
    r = ep_agree_result(layer, r, "reading the gradients");
    if (r == MOEVK_SUCCESS) {
        MPI_Request request;
        int started = MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, (int)bytes, MPI_BYTE,
                                     layer->comm, &request);
        r = ep_wait(layer, started, &request, "gathering the gradients");
    }
    if (r == MOEVK_SUCCESS) {
        for (size_t i = 0; i < n; ++i) {
            float sum = all[i];
            for (int q = 1; q < layer->ranks; ++q) sum += all[(size_t)q * n + i];
            destination[i] = sum;
        }
    }
    if (!ep_abandon(layer, all)) free(all);
    return r;
}

moevk_result moevk_ep_layer_read_gradient(moevk_ep_layer *layer, moevk_layer_weight which,
                                          uint32_t first, uint32_t count,
                                          moevk_tensor destination) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (routed_weight(which)) {
        moevk_layer *half = NULL;
        moevk_result r = ep_weight_half(layer, which, &first, count, &half);
        return r == MOEVK_SUCCESS
                   ? moevk_layer_read_gradient(half, which, first, count, destination)
                   : r;
    }
    if (layer->broken)
        return ep_fail(layer, MOEVK_ERROR_PEER,
                       "rank %d: an earlier exchange failed: the layer only takes destroy",
                       layer->rank);
    moevk_result r = MOEVK_SUCCESS;
    if (destination.kind != MOEVK_TENSOR_HOST || !destination.host)
        r = ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT,
                    "the router's and shared experts' gradients are read into host memory");
    /* Still collective: the others wait for this rank's answer. */
    if (r != MOEVK_SUCCESS) return ep_agree_result(layer, r, "reading the gradients");
    return ep_summed_gradient(layer, which, first, count, destination.host);
}

moevk_result moevk_ep_layer_zero_gradients(moevk_ep_layer *layer) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_result r = moevk_layer_zero_gradients(layer->home);
    return r != MOEVK_SUCCESS ? r : moevk_layer_zero_gradients(layer->experts);
}
