/* The expert-parallel layer's forward (moevk_mpi.h): route this rank's tokens (home half),
 * agree on every rank's per-expert counts, give each kept choice its global slot (what one
 * process's bucketing gives it: k-major, then token order across the ranks in rank order),
 * send the kept rows to their experts' ranks, run this rank's experts on what arrives, send the
 * results back and combine. */
#include <stdlib.h>
#include <string.h>

#include "ep_internal.h"

#define REJECT(...) return ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

/* Words of a rank's route table: non-finite and masked rows, counts per choice [k][E], then the
 * float sums (bits) of the statistics, [E] probabilities and 3 scalars. */
static size_t table_words(const moevk_ep_layer *layer) {
    return 2 + (size_t)layer->top_k * layer->num_experts + layer->num_experts + 3;
}

/* Frees a forward's memory, or gives it to the layer where a timed-out request may still
 * write it. */
static void release(moevk_ep_layer *layer, void *memory) {
    if (!ep_abandon(layer, memory)) free(memory);
}

void ep_free_forward(moevk_ep_layer *layer, forward_state *s) {
    void *all[] = {s->ids,      s->weights,  s->slots,         s->rows,       s->tables,
                   s->kept,     s->runs,     s->counts_before, s->send_first, s->send,
                   s->returned, s->received, s->expert_out,    s->grad_rows};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) release(layer, all[i]);
    ep_free_exchange(s->exchange);
    memset(s, 0, sizeof *s);
}

static int host_or_none(const moevk_tensor *tensor) {
    return tensor->kind == MOEVK_TENSOR_NONE || tensor->kind == MOEVK_TENSOR_HOST;
}

/* This rank's checks before any exchange (its failure is then every rank's). */
static moevk_result check_call(moevk_ep_layer *layer, const moevk_route_input *input,
                               const moevk_layer_output *output, const moevk_route_output *route) {
    if (!input || !output) REJECT("input and output must be given");
    if (input->struct_size < sizeof *input || output->struct_size < sizeof *output ||
        (route && route->struct_size < sizeof *route))
        REJECT("input, output and output->route must be this moevk's whole structs "
               "(their _init functions)");
    if (input->num_tokens > layer->max_tokens)
        REJECT("num_tokens %u is past this rank's max_tokens %u", input->num_tokens,
               layer->max_tokens);
    uint32_t S = layer->router.mode == MOEVK_MODE_SEQUENCE ? layer->router.sequence_length : 1;
    if (input->num_tokens % S != 0 && layer->rank != layer->ranks - 1)
        REJECT("rank %d: T = %u: the SEQUENCE mode needs each rank's T a multiple of "
               "sequence_length %u (each sequence on one rank; the last rank's may end short)",
               layer->rank, input->num_tokens, S);
    if (input->num_tokens > 0 && (input->hidden.kind != MOEVK_TENSOR_HOST || !input->hidden.host))
        REJECT("an expert-parallel layer takes input->hidden in host memory");
    if (input->num_tokens > 0 && (output->output.kind != MOEVK_TENSOR_HOST || !output->output.host))
        REJECT("an expert-parallel layer writes output->output to host memory");
    if (!route) return MOEVK_SUCCESS;
    if (route->dispatched.kind != MOEVK_TENSOR_NONE)
        REJECT("an expert-parallel layer has no dispatched rows to give (they live on the "
               "experts' ranks)");
    if (route->profile || route->drift_profile)
        REJECT("an expert-parallel layer takes no profile or drift profile yet");
    if (!host_or_none(&route->expert_ids) || !host_or_none(&route->weights) ||
        !host_or_none(&route->slots) || !host_or_none(&route->counts) ||
        !host_or_none(&route->counts_before) || !host_or_none(&route->offsets))
        REJECT("an expert-parallel layer writes the route's outputs to host memory");
    return MOEVK_SUCCESS;
}

static moevk_result allocate(moevk_ep_layer *layer, forward_state *s) {
    size_t choices = (size_t)layer->max_tokens * layer->top_k + 1, E = layer->num_experts;
    size_t R = (size_t)layer->ranks;
    s->ids = malloc(choices * 4);
    s->weights = malloc(choices * 4);
    s->slots = malloc(choices * 4);
    s->rows = malloc(choices * 4);
    s->tables = calloc(R * (1 + table_words(layer)), 4);
    s->kept = calloc(R * E, 4);
    s->counts_before = calloc(3 * E + 1, 4);
    s->send_first = calloc(E + 1, 4);
    s->runs = calloc(2 * layer->top_k * R * E, 4);
    if (!s->ids || !s->weights || !s->slots || !s->rows || !s->tables || !s->kept ||
        !s->counts_before || !s->send_first || !s->runs)
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: the forward's tables",
                       layer->rank);
    s->counts = s->counts_before + E;
    s->offsets = s->counts_before + 2 * E;
    s->run_first = s->runs + layer->top_k * R * E;
    return MOEVK_SUCCESS;
}

/* Routes this rank's tokens on the home half and fills its table; first_token: where they sit
 * in the batch (the noise counter's rows are the batch's, as one process draws them). */
static moevk_result route_tokens(moevk_ep_layer *layer, forward_state *s,
                                 const moevk_route_input *input, const moevk_layer_output *output,
                                 uint32_t first_token, uint32_t *table) {
    uint32_t E = layer->num_experts, k = layer->top_k;
    if (s->T == 0) return MOEVK_SUCCESS;
    moevk_route_output route;
    moevk_route_output_init(&route);
    route.expert_ids = moevk_host_tensor(s->ids);
    route.weights = moevk_host_tensor(s->weights);
    moevk_route_stats_init(&s->stats);
    route.stats = &s->stats;
    if (output->route) route.token_scores = output->route->token_scores;
    moevk_layer_output home = *output;
    home.route = &route;
    float sums[MOEVK_MAX_EXPERTS + 3];
    if ((uint64_t)input->noise_row_offset + first_token + s->T > (uint64_t)UINT32_MAX + 1)
        return ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT,
                       "rank %d: noise_row_offset %u: the batch's last noise row passes 32 bits",
                       layer->rank, input->noise_row_offset);
    moevk_route_input rows = *input; /* check_call: the whole struct */
    /* The noise's rows: tokens, or in the SEQUENCE mode sequences (each rank's whole). */
    uint32_t S = layer->router.mode == MOEVK_MODE_SEQUENCE ? layer->router.sequence_length : 1;
    rows.noise_row_offset = input->noise_row_offset + first_token / S;
    moevk_result r = moevk_parts_route(layer->home, &rows, &home, s->total_tokens, sums, sums + E);
    if (r != MOEVK_SUCCESS) return r;
    table[0] = s->stats.nonfinite_rows;
    table[1] = s->stats.masked_rows;
    uint32_t *per_choice = table + 2;
    for (uint32_t t = 0; t < s->T; ++t)
        for (uint32_t j = 0; j < k; ++j) {
            int32_t e = s->ids[(size_t)t * k + j];
            if (e >= 0) per_choice[(size_t)j * E + (uint32_t)e]++;
        }
    memcpy(table + 2 + (size_t)k * E, sums, (E + 3) * 4);
    return MOEVK_SUCCESS;
}

static const uint32_t *rank_table(const moevk_ep_layer *layer, const forward_state *s, int q) {
    return s->tables + (size_t)q * (1 + table_words(layer)) + 1;
}

/* Every rank's kept rows per expert, the batch's counts, and this rank's choices' global slots,
 * from every rank's table: what one process's bucketing of all ranks' tokens in rank order
 * gives. */
static void place_choices(moevk_ep_layer *layer, forward_state *s) {
    uint32_t E = layer->num_experts, k = layer->top_k, R = (uint32_t)layer->ranks;
    uint64_t C = s->capacity;
    /* start: the slot the next choice of (j, e) takes, over the ranks in order. */
    uint64_t start[MOEVK_MAX_EXPERTS] = {0};
    uint64_t mine[MOEVK_MAX_TOP_K][MOEVK_MAX_EXPERTS];
    for (uint32_t j = 0; j < k; ++j)
        for (uint32_t q = 0; q < R; ++q) {
            const uint32_t *per_choice = rank_table(layer, s, (int)q) + 2 + (size_t)j * E;
            for (uint32_t e = 0; e < E; ++e) {
                uint64_t n = per_choice[e], first = start[e];
                if (q == (uint32_t)layer->rank) mine[j][e] = first;
                uint64_t keep = first >= C ? 0 : (C - first < n ? C - first : n);
                s->kept[(size_t)q * E + e] += (uint32_t)keep;
                size_t run = ((size_t)j * R + q) * E + e;
                s->runs[run] = (uint32_t)keep;
                s->run_first[run] = keep ? (uint32_t)first : 0;
                start[e] += n;
            }
        }
    uint32_t pad = layer->router.pad_multiple > 1 ? layer->router.pad_multiple : 1;
    for (uint32_t e = 0; e < E; ++e) {
        s->counts_before[e] = (uint32_t)start[e];
        s->counts[e] = (uint32_t)(start[e] < C ? start[e] : C);
        s->offsets[e + 1] = s->offsets[e] + (s->counts_before[e] + pad - 1) / pad * pad;
    }
    for (uint32_t j = 0; j < k; ++j)
        for (uint32_t t = 0; t < s->T; ++t) {
            size_t c = (size_t)t * k + j;
            int32_t e = s->ids[c];
            uint64_t slot = e >= 0 ? mine[j][e]++ : C;
            s->slots[c] = slot < C ? (int32_t)slot : -1;
        }
}

/* This rank's kept rows, expert by expert (each expert's in slot order), and each choice's row
 * among them. */
static moevk_result gather_sends(moevk_ep_layer *layer, forward_state *s, const void *hidden) {
    uint32_t E = layer->num_experts, k = layer->top_k;
    const uint32_t *kept = s->kept + (size_t)layer->rank * E;
    for (uint32_t e = 0; e < E; ++e) s->send_first[e + 1] = s->send_first[e] + kept[e];
    s->sent = s->send_first[E];
    size_t row_bytes = (size_t)layer->hidden_size * layer->hidden_bytes;
    s->send = malloc(s->sent * row_bytes + 1);
    s->returned = malloc((size_t)s->sent * layer->hidden_size * 4 + 1);
    if (!s->send || !s->returned)
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: %u rows to send",
                       layer->rank, s->sent);
    uint32_t filled[MOEVK_MAX_EXPERTS] = {0};
    for (uint32_t j = 0; j < k; ++j)
        for (uint32_t t = 0; t < s->T; ++t) {
            size_t c = (size_t)t * k + j;
            s->rows[c] = -1;
            if (s->slots[c] < 0) continue;
            uint32_t e = (uint32_t)s->ids[c], row = s->send_first[e] + filled[e]++;
            s->rows[c] = (int32_t)row;
            memcpy((char *)s->send + row * row_bytes, (const char *)hidden + t * row_bytes,
                   row_bytes);
        }
    return MOEVK_SUCCESS;
}

/* Room for the rows every rank sends this rank's experts, and their outputs. */
static moevk_result allocate_received(moevk_ep_layer *layer, forward_state *s) {
    uint32_t E = layer->num_experts, L = layer->local_experts;
    s->received_rows = 0;
    for (uint32_t l = 0; l < L; ++l)
        for (int q = 0; q < layer->ranks; ++q)
            s->received_rows += s->kept[(size_t)q * E + layer->first_expert + l];
    size_t d = layer->hidden_size;
    s->received = malloc(s->received_rows * d * layer->hidden_bytes + 1);
    s->expert_out = malloc(s->received_rows * d * 4 + 1);
    if (!s->received || !s->expert_out)
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d: %u rows to receive",
                       layer->rank, s->received_rows);
    return MOEVK_SUCCESS;
}

/* The batch's statistics from every rank's sums, summed in rank order. */
static void fill_stats(moevk_ep_layer *layer, const forward_state *s, uint32_t unrouted,
                       moevk_route_stats *stats) {
    uint32_t E = layer->num_experts, k = layer->top_k;
    moevk_route_stats_init(stats);
    double sums[MOEVK_MAX_EXPERTS + 3] = {0};
    for (int q = 0; q < layer->ranks; ++q) {
        const uint32_t *table = rank_table(layer, s, q);
        stats->nonfinite_rows += table[0];
        stats->masked_rows += table[1];
        for (uint32_t i = 0; i < E + 3; ++i) {
            float value;
            memcpy(&value, table + 2 + (size_t)k * E + i, 4);
            sums[i] += value;
        }
    }
    stats->unrouted_tokens = unrouted;
    uint32_t valid = s->total_tokens - stats->nonfinite_rows - stats->masked_rows;
    /* counts_before, counts and offsets lie one after another, as EXPERT_INFO holds them. */
    moevk_parts_stats_from_sums(stats, E, s->counts_before, s->capacity, valid, sums);
}

void ep_batch_stats(moevk_ep_layer *layer, const forward_state *s, moevk_route_stats *stats) {
    fill_stats(layer, s, 0, stats);
}

/* This rank's route outputs, as one process's forward of all tokens writes them. */
static void write_route(moevk_ep_layer *layer, const forward_state *s, uint32_t unrouted,
                        const moevk_route_output *route) {
    uint32_t E = layer->num_experts;
    size_t choices = (size_t)s->T * layer->top_k;
    if (route->expert_ids.host) memcpy(route->expert_ids.host, s->ids, choices * 4);
    if (route->weights.host) memcpy(route->weights.host, s->weights, choices * 4);
    if (route->slots.host) memcpy(route->slots.host, s->slots, choices * 4);
    if (route->counts.host) memcpy(route->counts.host, s->counts, E * 4);
    if (route->counts_before.host) memcpy(route->counts_before.host, s->counts_before, E * 4);
    if (route->offsets.host && layer->router.capacity_mode == MOEVK_CAPACITY_DROPLESS)
        memcpy(route->offsets.host, s->offsets, ((size_t)E + 1) * 4);
    if (route->stats) fill_stats(layer, s, unrouted, route->stats);
}

/* Valid tokens of this rank whose every choice was dropped. */
static uint32_t unrouted_tokens(const moevk_ep_layer *layer, const forward_state *s) {
    uint32_t unrouted = 0, k = layer->top_k;
    for (uint32_t t = 0; t < s->T; ++t) {
        int routed = 0, kept = 0;
        for (uint32_t j = 0; j < k; ++j) {
            routed |= s->ids[(size_t)t * k + j] >= 0;
            kept |= s->slots[(size_t)t * k + j] >= 0;
        }
        unrouted += routed && !kept;
    }
    return unrouted;
}

moevk_result moevk_ep_layer_forward(moevk_ep_layer *layer, const moevk_route_input *input,
                                    const moevk_layer_output *output) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (layer->broken)
        return ep_fail(layer, MOEVK_ERROR_PEER,
                       "rank %d: an earlier exchange failed: the layer only takes destroy",
                       layer->rank);
    /* A new forward: the last one's state (kept for a backward) goes. */
    if (layer->has_last) ep_free_forward(layer, &layer->last);
    layer->has_last = 0;
    forward_state s;
    memset(&s, 0, sizeof s);
    moevk_ep_timings *t = &layer->timings;
    moevk_ep_timings_init(t);
    t->chunks = layer->chunks ? layer->chunks : 1; /* the exchange says which, if there is one */
    double start = MPI_Wtime();
    const moevk_route_output *route = output ? output->route : NULL;
    moevk_result r = check_call(layer, input, output, route);
    if (r == MOEVK_SUCCESS) r = allocate(layer, &s);
    s.T = r == MOEVK_SUCCESS ? input->num_tokens : 0;
    /* Every rank's T: the batch, and where this rank's tokens sit in it. Without even this
     * much memory a rank cannot take part: the others time out (PEER). */
    uint32_t *agreed = calloc((size_t)layer->ranks * 2, 4);
    if (!agreed) {
        ep_free_forward(layer, &s);
        return ep_fail(layer, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "rank %d", layer->rank);
    }
    r = ep_agree(layer, r, &s.T, 1, agreed, "gathering the ranks' token counts");
    uint32_t first_token = 0; /* this rank's, in the batch */
    for (int q = 0; r == MOEVK_SUCCESS && q < layer->ranks; ++q) {
        if (q == layer->rank) first_token = s.total_tokens;
        s.total_tokens += agreed[2 * q + 1];
    }
    if (r == MOEVK_SUCCESS)
        s.capacity = moevk_parts_capacity(&layer->router, input, s.total_tokens);
    /* Each step's failures are agreed before the next exchange: every rank takes the same
     * branches, so none waits for a rank that gave up. */
    uint32_t unrouted = 0;
    if (r == MOEVK_SUCCESS && s.total_tokens > 0) {
        size_t words = table_words(layer);
        uint32_t *table = s.tables + (size_t)layer->rank * (1 + words) + 1;
        r = route_tokens(layer, &s, input, output, first_token, table);
        r = ep_agree(layer, r, table, words, s.tables, "gathering the ranks' routes");
        int by_score = layer->router.drop_policy == MOEVK_DROP_SCORE &&
                       layer->router.capacity_mode != MOEVK_CAPACITY_DROPLESS;
        if (r == MOEVK_SUCCESS && by_score) {
            /* (NULL: this rank's failure, agreed there.) */
            uint32_t *tokens = malloc((size_t)layer->ranks * sizeof *tokens);
            for (int q = 0; tokens && q < layer->ranks; ++q) tokens[q] = agreed[2 * q + 1];
            r = ep_place_by_score(layer, &s, tokens);
            free(tokens);
        } else if (r == MOEVK_SUCCESS) {
            place_choices(layer, &s);
        }
        if (r == MOEVK_SUCCESS) {
            moevk_result local = gather_sends(layer, &s, input->hidden.host);
            if (local == MOEVK_SUCCESS) local = allocate_received(layer, &s);
            if (local == MOEVK_SUCCESS) local = ep_plan_exchange(layer, &s, &s.exchange);
            r = ep_agree(layer, local, NULL, 0, agreed, "planning the exchange");
        }
        t->route_seconds = MPI_Wtime() - start;
        if (r == MOEVK_SUCCESS)
            r = ep_agree(layer, ep_exchange_and_run(layer, &s), NULL, 0, agreed,
                         "running the experts");
        double combine_start = MPI_Wtime();
        if (r == MOEVK_SUCCESS) {
            moevk_result local = MOEVK_SUCCESS;
            if (s.T > 0)
                local = moevk_parts_combine(layer->home, s.rows, s.returned, s.sent,
                                            output->output.host);
            unrouted = unrouted_tokens(layer, &s);
            r = ep_agree(layer, local, &unrouted, 1, agreed, "combining");
            unrouted = 0;
            for (int q = 0; r == MOEVK_SUCCESS && q < layer->ranks; ++q)
                unrouted += agreed[2 * q + 1];
        }
        t->combine_seconds = MPI_Wtime() - combine_start;
    }
    if (r == MOEVK_SUCCESS && route) write_route(layer, &s, unrouted, route);
    t->forward_seconds = MPI_Wtime() - start;
    release(layer, agreed);
    if (r == MOEVK_SUCCESS && layer->trainable) {
        layer->last = s; /* what moevk_ep_layer_backward goes back through */
        layer->has_last = 1;
    } else {
        ep_free_forward(layer, &s);
    }
    return r;
}
