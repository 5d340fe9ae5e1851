/* moevk_route and moevk_combine: check the call, move the data, record, submit, and turn the
 * device's totals into the route's statistics. */
#include <string.h>

#include "internal.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

static moevk_result check_route(const moevk_router *router, const moevk_route_input *input,
                                const moevk_route_output *output) {
    moevk_context *context = router->context;
    const moevk_router_info *info = &router->info;
    if (!input || !output) REJECT("input and output must not be NULL");
    if (input->num_tokens > info->max_tokens)
        REJECT("num_tokens is %u, past the router's max_tokens of %u", input->num_tokens,
               info->max_tokens);
    if (input->num_tokens > 0 && !input->logits) REJECT("logits is NULL");
    if (input->hidden && info->hidden_size == 0)
        REJECT("hidden states given, but the router's hidden_size is 0");
    if (output->dispatched && !input->hidden) REJECT("dispatched asked for without hidden states");
    if (output->offsets && info->capacity_mode != MOEVK_CAPACITY_DROPLESS)
        REJECT("offsets exist only in DROPLESS mode");
    return MOEVK_SUCCESS;
}

static void fill_stats(const moevk_router *router, const route_params *params,
                       const uint32_t *expert_info, const float *totals, moevk_route_stats *stats) {
    uint32_t E = router->info.num_experts;
    memset(stats, 0, sizeof *stats);
    uint64_t kept = 0;
    for (uint32_t e = 0; e < E; ++e) {
        stats->assignments += expert_info[e];
        kept += expert_info[E + e];
    }
    stats->dropped = stats->assignments - kept;
    stats->drop_fraction = stats->assignments ? (double)stats->dropped / stats->assignments : 0.0;
    stats->capacity = (params->flags & FLAG_DROPLESS) ? 0 : params->capacity;
    stats->dispatched_rows =
        (params->flags & FLAG_DROPLESS) ? expert_info[3 * E] : params->dispatched_rows;
    stats->nonfinite_rows = (uint32_t)totals[E + STAT_NONFINITE];
    stats->masked_rows = (uint32_t)totals[E + STAT_MASKED];
    uint32_t valid = params->num_tokens - stats->nonfinite_rows - stats->masked_rows;
    if (valid == 0) return;
    if (stats->assignments > 0) {
        double sum = 0.0;
        for (uint32_t e = 0; e < E; ++e)
            sum +=
                ((double)expert_info[e] / (double)stats->assignments) * ((double)totals[e] / valid);
        stats->aux_loss = E * sum;
    }
    stats->z_loss = (double)totals[E + STAT_LSE_SQUARED] / valid;
    stats->entropy = (double)totals[E + STAT_ENTROPY] / valid;
}

moevk_result moevk_route(moevk_router *router, const moevk_route_input *input,
                         const moevk_route_output *output) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_result r = check_route(router, input, output);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_router_info *info = &router->info;
    uint64_t T = input->num_tokens, E = info->num_experts, k = info->top_k, d = info->hidden_size;
    uint64_t hidden_bytes = dtype_bytes(info->hidden_type);
    route_params params;
    router_plan(router, input->num_tokens, &params);
    if (input->bias) params.flags |= FLAG_HAS_BIAS;
    router->routed = 0;

    transfer_plan plan;
    r = transfer_begin(&plan, router);
    if (r != MOEVK_SUCCESS) return r;
    transfer_upload(&plan, BINDING_LOGITS, input->logits, T * E * dtype_bytes(info->logits_type));
    if (input->bias) transfer_upload(&plan, BINDING_BIAS, input->bias, E * 4);
    if (input->hidden) transfer_upload(&plan, BINDING_HIDDEN, input->hidden, T * d * hidden_bytes);
    transfer_uploads_done(&plan);
    record_route(router, &params, input->hidden != NULL);

    transfer_download(&plan, BINDING_EXPERT_INFO, NULL, (3 * E + 1) * 4);
    transfer_download(&plan, BINDING_STAT_TOTALS, NULL, (E + STAT_SCALARS) * 4);
    if (output->expert_ids)
        transfer_download(&plan, BINDING_EXPERT_IDS, output->expert_ids, T * k * 4);
    if (output->weights) transfer_download(&plan, BINDING_WEIGHTS, output->weights, T * k * 4);
    if (output->slots) transfer_download(&plan, BINDING_SLOTS, output->slots, T * k * 4);
    if (output->dispatched)
        transfer_download(&plan, BINDING_DISPATCHED, NULL,
                          (uint64_t)params.dispatched_rows * d * hidden_bytes);
    r = transfer_finish(&plan);
    if (r != MOEVK_SUCCESS) return r;

    const uint32_t *expert_info = transfer_downloaded(&plan, BINDING_EXPERT_INFO);
    const float *totals = transfer_downloaded(&plan, BINDING_STAT_TOTALS);
    moevk_route_stats stats;
    fill_stats(router, &params, expert_info, totals, &stats);
    if (output->counts) memcpy(output->counts, expert_info + E, E * 4);
    if (output->counts_before) memcpy(output->counts_before, expert_info, E * 4);
    if (output->offsets) memcpy(output->offsets, expert_info + 2 * E, (E + 1) * 4);
    if (output->dispatched)
        memcpy(output->dispatched, transfer_downloaded(&plan, BINDING_DISPATCHED),
               (uint64_t)stats.dispatched_rows * d * hidden_bytes);
    if (output->stats) *output->stats = stats;
    params.dispatched_rows = stats.dispatched_rows;
    router->last = params;
    router->routed = 1;
    router->combined = 0;
    return MOEVK_SUCCESS;
}

moevk_result moevk_combine(moevk_router *router, const void *expert_out, void *combined) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    if (router->info.hidden_size == 0) REJECT("combine needs a router with hidden_size > 0");
    if (!router->routed) REJECT("combine needs a successful route first");
    const route_params *params = &router->last;
    if (params->num_tokens > 0 && (!combined || (!expert_out && params->dispatched_rows > 0)))
        REJECT("expert_out and combined must not be NULL");
    uint64_t row_bytes = (uint64_t)router->info.hidden_size * dtype_bytes(router->info.hidden_type);
    transfer_plan plan;
    moevk_result r = transfer_begin(&plan, router);
    if (r != MOEVK_SUCCESS) return r;
    transfer_upload(&plan, BINDING_EXPERT_OUT, expert_out, params->dispatched_rows * row_bytes);
    transfer_uploads_done(&plan);
    record_combine(router, params);
    transfer_download(&plan, BINDING_COMBINED, combined, params->num_tokens * row_bytes);
    r = transfer_finish(&plan);
    router->combined = r == MOEVK_SUCCESS;
    return r;
}
