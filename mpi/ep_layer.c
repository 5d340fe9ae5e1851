/* The expert-parallel layer's life (moevk_mpi.h): creation, where the ranks compare their
 * configurations and every rank makes its two halves (moevk_parts.h), its weights, its end. */
#include <stdlib.h>
#include <string.h>

#include "ep_internal.h"

#define REJECT(...) return ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

static uint64_t float_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    return bits;
}

/* What every rank must agree on, field by field (max_tokens and host_weights may differ:
 * each rank's own tokens, each rank's own memory). */
#define CONFIG_FIELDS(X)                                                                           \
    X("num_experts", r->num_experts)                                                               \
    X("top_k", r->top_k)                                                                           \
    X("hidden_size", r->hidden_size)                                                               \
    X("logits_type", r->logits_type) X("hidden_type", r->hidden_type) X("score", r->score) X(      \
        "temperature", float_bits(r->temperature)) X("renormalize", r->renormalize != 0)           \
        X("scale", float_bits(r->scale)) X("capacity_mode", r->capacity_mode) X(                   \
            "capacity_factor", float_bits(r->capacity_factor)) X("min_capacity", r->min_capacity)  \
            X("capacity", r->capacity) X("pad_multiple", r->pad_multiple > 1                       \
                                                             ? r->pad_multiple                     \
                                                             : 1) X("drop_policy", r->drop_policy) \
                X("noise", r->noise) X("noise_amount", float_bits(r->noise_amount))                \
                    X("noise_seed", r->noise_seed) X("learned_noise", r->learned_noise != 0)       \
                        X("noise_epsilon", float_bits(r->noise_epsilon)) X(                        \
                            "noisy_scores", r->noisy_scores != 0) SCHEDULE(X, noise_schedule)      \
                            SCHEDULE(X, temperature_schedule) SCHEDULE(                            \
                                X, capacity_factor_schedule) X("losses", r->losses != 0)           \
                                X("num_groups", r->num_groups) X("topk_groups", r->topk_groups)    \
                                    X("mode", r->mode) X("sequence_length", r->sequence_length)    \
                                        X("sinkhorn_iterations", r->sinkhorn_iterations) X(        \
                                            "eval_capacity_factor",                                \
                                            float_bits(r->eval_capacity_factor))                   \
                                            X("bias_on_scores", r->bias_on_scores != 0) X(         \
                                                "intermediate_size", l->intermediate_size)         \
                                                X("activation", l->activation) X("weight_type",    \
                                                                                 l->weight_type)   \
                                                    X("down_weight_type",                          \
                                                      l->separate_down_type ? l->down_weight_type  \
                                                                            : l->weight_type)      \
                                                        X("biases", l->biases != 0) X(             \
                                                            "shared_intermediate_size",            \
                                                            l->shared_intermediate_size)           \
                                                            X("shared_gate", l->shared_gate != 0)  \
                                                                X("trainable", l->trainable != 0)  \
                                                                    X("exchange_chunks", chunks)
#define SCHEDULE(X, s)                                                                             \
    X(#s ".kind", r->s.kind)                                                                       \
    X(#s ".start", float_bits(r->s.start))                                                         \
    X(#s ".end", float_bits(r->s.end)) X(#s ".steps", r->s.steps)

#define NAME(name, value) name,
static const char *const FIELD_NAMES[] = {CONFIG_FIELDS(NAME)};
#undef NAME
enum { FIELDS = sizeof FIELD_NAMES / sizeof FIELD_NAMES[0] };
/* The table each rank sends: the fields (two words each), then its max_tokens. */
enum { CONFIG_WORDS = 2 * FIELDS + 1 };

static void config_table(const moevk_layer_info *l, uint32_t chunks, uint32_t table[CONFIG_WORDS]) {
    const moevk_router_info *r = l->router;
    uint64_t values[] = {
#define VALUE(name, value) (uint64_t)(value),
        CONFIG_FIELDS(VALUE)
#undef VALUE
    };
    for (int i = 0; i < FIELDS; ++i) {
        table[2 * i] = (uint32_t)values[i];
        table[2 * i + 1] = (uint32_t)(values[i] >> 32);
    }
    table[2 * FIELDS] = r->max_tokens;
}

/* The first field a rank disagrees with rank 0 on, as every rank sees it (the same message
 * everywhere). */
static moevk_result compare_configs(moevk_ep_layer *layer, const uint32_t *gathered) {
    const uint32_t *first = gathered + 1;
    for (int q = 1; q < layer->ranks; ++q) {
        const uint32_t *other = gathered + (size_t)q * (1 + CONFIG_WORDS) + 1;
        for (int i = 0; i < FIELDS; ++i) {
            uint64_t mine = first[2 * i] | (uint64_t)first[2 * i + 1] << 32;
            uint64_t theirs = other[2 * i] | (uint64_t)other[2 * i + 1] << 32;
            if (mine != theirs)
                REJECT("the ranks disagree on %s: rank %d has %llu, rank 0 has %llu (as bits "
                       "where a float)",
                       FIELD_NAMES[i], q, (unsigned long long)theirs, (unsigned long long)mine);
        }
    }
    return MOEVK_SUCCESS;
}

/* What this increment of the expert-parallel layer does not do (the same on every rank: the
 * configurations agree). */
static moevk_result check_supported(moevk_ep_layer *layer, const moevk_layer_info *info) {
    const moevk_router_info *router = info->router;
    if (router->num_experts % (uint32_t)layer->ranks)
        REJECT("%u experts do not split evenly over %d ranks: E must be a multiple of R",
               router->num_experts, layer->ranks);
    if (router->mode != MOEVK_MODE_TOKEN && router->mode != MOEVK_MODE_SEQUENCE)
        return ep_fail(layer, MOEVK_ERROR_UNSUPPORTED,
                       "an expert-parallel layer routes in the TOKEN and SEQUENCE modes only "
                       "(mode %d: its decisions need the whole batch)",
                       (int)router->mode);
    return MOEVK_SUCCESS;
}

/* This rank's halves: the home layer over its own tokens, the experts layer over the most
 * rows all ranks can send it (each token at most min(k, E / R) of them). */
static moevk_result create_halves(moevk_ep_layer *layer, const moevk_layer_info *info,
                                  const uint32_t *gathered) {
    uint64_t rows = 0;
    uint32_t per_token = layer->top_k < layer->local_experts ? layer->top_k : layer->local_experts;
    for (int q = 0; q < layer->ranks; ++q)
        rows += (uint64_t)gathered[(size_t)q * (1 + CONFIG_WORDS) + CONFIG_WORDS] * per_token;
    if (rows > UINT32_MAX)
        return ep_fail(layer, MOEVK_ERROR_TOO_LARGE,
                       "the ranks' max_tokens give %llu expert rows, past 2^32",
                       (unsigned long long)rows);
    moevk_result r = moevk_parts_layer_create(layer->context, info, MOEVK_PARTS_HOME, &layer->home);
    if (r != MOEVK_SUCCESS) return r;
    moevk_router_info router = *info->router;
    router.num_experts = layer->local_experts;
    router.max_tokens = rows > 0 ? (uint32_t)rows : 1;
    moevk_layer_info experts = *info;
    experts.router = &router;
    experts.shared_intermediate_size = 0;
    experts.shared_gate = 0;
    return moevk_parts_layer_create(layer->context, &experts, MOEVK_PARTS_EXPERTS, &layer->experts);
}

moevk_result moevk_ep_layer_create(moevk_context *context, const moevk_ep_layer_info *caller_info,
                                   moevk_ep_layer **out) {
    if (!out || !context || !caller_info) return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    moevk_ep_layer_info info;
    moevk_ep_layer_info_init(&info);
    size_t size = caller_info->struct_size < sizeof info ? caller_info->struct_size : sizeof info;
    if (size < offsetof(moevk_ep_layer_info, timeout_seconds))
        return moevk_parts_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                                "moevk_ep_layer_info.struct_size is too small");
    memcpy(&info, caller_info, size);
    moevk_ep_layer *layer = calloc(1, sizeof *layer);
    if (!layer) return moevk_parts_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "ep layer");
    layer->context = context;
    layer->comm = MPI_COMM_NULL;
    layer->abandoned = MPI_REQUEST_NULL;
    moevk_result r = MOEVK_SUCCESS;
    /* A communicator of its own, whose errors come back as results. */
    if (info.comm == MPI_COMM_NULL || MPI_Comm_dup(info.comm, &layer->comm) != MPI_SUCCESS) {
        free(layer);
        return moevk_parts_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                                "comm is not a communicator MPI can duplicate");
    }
    MPI_Comm_set_errhandler(layer->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(layer->comm, &layer->rank);
    MPI_Comm_size(layer->comm, &layer->ranks);
    layer->timeout_seconds = info.timeout_seconds > 0 ? info.timeout_seconds : 600.0;
    const moevk_layer_info *given = info.layer;
    uint32_t table[CONFIG_WORDS] = {0};
    uint32_t chunks = info.exchange_chunks; /* 0: automatic */
    for (int i = 0; i < EP_PENDING; ++i) layer->pending[i] = MPI_REQUEST_NULL;
    if (chunks > MOEVK_EP_MAX_CHUNKS || info.reserved)
        r = ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT,
                    "exchange_chunks %u is past MOEVK_EP_MAX_CHUNKS (%d), or reserved is not zero",
                    info.exchange_chunks, MOEVK_EP_MAX_CHUNKS);
    else if (!given || !given->router)
        r = ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT, "info->layer and its router are required");
    else if (given->struct_size < sizeof *given ||
             given->router->struct_size < sizeof layer->router)
        r = ep_fail(layer, MOEVK_ERROR_INVALID_ARGUMENT,
                    "the layer's and router's infos must be this moevk's whole structs "
                    "(moevk_layer_info_init, moevk_router_info_init)");
    else
        config_table(given, chunks, table);
    uint32_t *gathered = calloc((size_t)layer->ranks * (1 + CONFIG_WORDS), 4);
    if (!gathered) {
        MPI_Comm_free(&layer->comm);
        free(layer);
        return moevk_parts_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "ep layer");
    }
    r = ep_agree(layer, r, table, CONFIG_WORDS, gathered, "comparing the ranks' layers");
    if (r == MOEVK_SUCCESS) r = compare_configs(layer, gathered);
    if (r == MOEVK_SUCCESS) {
        layer->router = *given->router;
        layer->num_experts = given->router->num_experts;
        layer->top_k = given->router->top_k;
        layer->hidden_size = given->router->hidden_size;
        layer->hidden_bytes = given->router->hidden_type == MOEVK_DTYPE_F32 ? 4 : 2;
        layer->max_tokens = given->router->max_tokens;
        layer->chunks = chunks;
        layer->trainable = given->trainable != 0;
        r = check_supported(layer, given);
    }
    if (r == MOEVK_SUCCESS) {
        layer->local_experts = layer->num_experts / (uint32_t)layer->ranks;
        layer->first_expert = (uint32_t)layer->rank * layer->local_experts;
        /* Every rank makes its halves; a rank's failure (its device's memory) is all ranks'. */
        r = ep_agree(layer, create_halves(layer, given, gathered), NULL, 0, gathered,
                     "creating the ranks' layers");
    }
    if (!ep_abandon(layer, gathered)) free(gathered);
    if (r != MOEVK_SUCCESS) {
        moevk_ep_layer_destroy(layer);
        return r;
    }
    *out = layer;
    return MOEVK_SUCCESS;
}

void moevk_ep_layer_destroy(moevk_ep_layer *layer) {
    if (!layer) return;
    moevk_layer_destroy(layer->experts);
    moevk_layer_destroy(layer->home);
    layer->experts = layer->home = NULL;
    if (layer->has_last) ep_free_forward(layer, &layer->last);
    /* MPI frees the communicator when its pending requests end. */
    if (layer->comm != MPI_COMM_NULL) MPI_Comm_free(&layer->comm);
    int done = 0, indices[EP_PENDING];
    if (layer->abandoned != MPI_REQUEST_NULL) MPI_Test(&layer->abandoned, &done, MPI_STATUS_IGNORE);
    MPI_Testsome(EP_PENDING, layer->pending, &done, indices, MPI_STATUSES_IGNORE);
    /* A request a peer never answered may still write its memory (and the layer's message):
     * that much stays with MPI. */
    if (ep_requests_outstanding(layer)) return;
    for (int i = 0; i < layer->abandoned_count; ++i) free(layer->abandoned_memory[i]);
    free(layer);
}

moevk_result moevk_ep_layer_experts(const moevk_ep_layer *layer, uint32_t *rank, uint32_t *ranks,
                                    uint32_t *first, uint32_t *count) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (rank) *rank = (uint32_t)layer->rank;
    if (ranks) *ranks = (uint32_t)layer->ranks;
    if (first) *first = layer->first_expert;
    if (count) *count = layer->local_experts;
    return MOEVK_SUCCESS;
}

moevk_result ep_weight_half(moevk_ep_layer *layer, moevk_layer_weight which, uint32_t *first,
                            uint32_t count, moevk_layer **half) {
    int routed = which >= MOEVK_WEIGHT_GATE && which <= MOEVK_WEIGHT_DOWN_BIAS;
    *half = routed ? layer->experts : layer->home;
    if (!routed) return MOEVK_SUCCESS;
    uint32_t own = layer->first_expert, end = own + layer->local_experts;
    if (*first < own || *first > end || count > end - *first)
        REJECT("experts [%u, %u) are not all rank %d's: it owns [%u, %u)", *first, *first + count,
               layer->rank, own, end);
    *first -= own;
    return MOEVK_SUCCESS;
}

moevk_result moevk_ep_layer_set_weights(moevk_ep_layer *layer, moevk_layer_weight which,
                                        uint32_t first, uint32_t count, moevk_tensor source) {
    if (!layer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_layer *half = NULL;
    moevk_result r = ep_weight_half(layer, which, &first, count, &half);
    return r == MOEVK_SUCCESS ? moevk_layer_set_weights(half, which, first, count, source) : r;
}

moevk_result moevk_ep_layer_timings(const moevk_ep_layer *layer, moevk_ep_timings *timings) {
    if (!layer || !timings || timings->struct_size < sizeof(uint32_t))
        return MOEVK_ERROR_INVALID_ARGUMENT;
    uint32_t size = timings->struct_size;
    memcpy(timings, &layer->timings, size < sizeof *timings ? size : sizeof *timings);
    timings->struct_size = size;
    return MOEVK_SUCCESS;
}
