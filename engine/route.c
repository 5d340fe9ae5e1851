/* moevk_route and moevk_combine: check the call, move the data, record, submit, and turn the
 * device's totals into the route's statistics. */
#include <math.h>
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
    uint64_t T = input->num_tokens, E = info->num_experts, d = info->hidden_size;
    uint64_t hidden_bytes = T * d * dtype_bytes(info->hidden_type);
    int has_hidden = input->hidden || input->hidden_buffer;
    if (input->num_tokens > 0 && !input->logits && !input->logits_buffer) REJECT("logits is NULL");
    if (input->logits_buffer && input->logits_buffer->size < T * E * dtype_bytes(info->logits_type))
        REJECT("logits_buffer holds %llu bytes; [T, E] needs %llu",
               (unsigned long long)input->logits_buffer->size,
               (unsigned long long)(T * E * dtype_bytes(info->logits_type)));
    if (has_hidden && info->hidden_size == 0)
        REJECT("hidden states given, but the router's hidden_size is 0");
    if (input->hidden_buffer && input->hidden_buffer->size < hidden_bytes)
        REJECT("hidden_buffer holds %llu bytes; [T, d] needs %llu",
               (unsigned long long)input->hidden_buffer->size, (unsigned long long)hidden_bytes);
    if ((output->dispatched || output->dispatched_buffer) && !has_hidden)
        REJECT("dispatched rows asked for without hidden states");
    uint64_t max_dispatched = router->max_dispatched_rows * d * dtype_bytes(info->hidden_type);
    if (output->dispatched_buffer && output->dispatched_buffer->size < max_dispatched)
        REJECT("dispatched_buffer holds %llu bytes; it needs %llu (max dispatched rows * d)",
               (unsigned long long)output->dispatched_buffer->size,
               (unsigned long long)max_dispatched);
    if (output->offsets && info->capacity_mode != MOEVK_CAPACITY_DROPLESS)
        REJECT("offsets exist only in DROPLESS mode");
    if (input->bias && info->mode != MOEVK_MODE_TOKEN)
        REJECT("a selection bias needs the TOKEN mode");
    if (input->noise_std) {
        if (info->noise != MOEVK_NOISE_GAUSSIAN || info->learned_noise)
            REJECT("noise_std needs GAUSSIAN noise without learned_noise");
        for (uint32_t e = 0; e < info->num_experts; ++e)
            if (!isfinite(input->noise_std[e]) || input->noise_std[e] < 0.0f)
                REJECT("noise_std[%u] is %g; it must be finite and >= 0", e,
                       (double)input->noise_std[e]);
    }
    if (info->learned_noise && !input->inference && input->num_tokens > 0) {
        if (!input->noise_weights) REJECT("learned_noise needs noise_weights [d, E]");
        if (!has_hidden) REJECT("learned_noise needs the hidden states");
    }
    return MOEVK_SUCCESS;
}

void route_fill_stats(const moevk_router *router, const route_plan *params,
                      const uint32_t *expert_info, const float *totals,
                      const float *decision_header, moevk_route_stats *stats) {
    uint32_t E = router->info.num_experts;
    memset(stats, 0, sizeof *stats);
    if (decision_header && params->num_tokens > 0) {
        stats->sinkhorn_iterations = (uint32_t)decision_header[DECISION_ITERATIONS];
        stats->sinkhorn_error = decision_header[DECISION_ERROR];
    }
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
    stats->unrouted_tokens = (uint32_t)totals[E + STAT_UNROUTED];
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
    stats->mean_logsumexp = (double)totals[E + STAT_LSE] / valid;
    stats->entropy = (double)totals[E + STAT_ENTROPY] / valid;
}

moevk_result moevk_route_submit(moevk_router *router, const moevk_route_input *input,
                                const moevk_route_output *output) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_result r = router_settle(router); /* one route in flight */
    if (r != MOEVK_SUCCESS) return r;
    r = check_route(router, input, output);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_router_info *info = &router->info;
    uint64_t T = input->num_tokens, E = info->num_experts, k = router_choices(info);
    uint64_t d = info->hidden_size;
    uint64_t hidden_bytes = dtype_bytes(info->hidden_type);
    route_plan params;
    router_plan(router, input->num_tokens, input->step, &params);
    router_plan_noise(router, input->step, input->layer, input->inference, &params);
    if (input->bias) params.flags |= FLAG_HAS_BIAS;
    router->route = ROUTE_NONE;
    router->combine = COMBINE_NONE;

    transfer_plan *plan = &router->pending_plan;
    r = transfer_begin(plan, router);
    if (r != MOEVK_SUCCESS) return r;
    uint64_t logit_bytes = T * E * dtype_bytes(info->logits_type);
    if (input->logits_buffer)
        transfer_device_copy(plan, BINDING_LOGITS, input->logits_buffer, logit_bytes, 1);
    else
        transfer_upload(plan, BINDING_LOGITS, input->logits, logit_bytes);
    if (input->bias) transfer_upload(plan, BINDING_BIAS, input->bias, E * 4);
    /* For the load loss, which divides by the std: the std (or a learned std's epsilon), or
     * every expert's. */
    int std_positive = input->noise_std ? 1 : params.noise_amount > 0.0f;
    for (uint32_t e = 0; input->noise_std && e < E; ++e) std_positive &= input->noise_std[e] > 0;
    router->last_noise_std_positive = std_positive;
    if (input->noise_std && (params.noise_kind == MOEVK_NOISE_GAUSSIAN)) {
        transfer_upload(plan, BINDING_NOISE_STD, input->noise_std, E * 4);
        params.flags |= FLAG_NOISE_STD_PER_EXPERT;
    }
    if ((params.flags & FLAG_NOISE_STD_LEARNED) && T > 0) /* T = 0 needs no weights */
        transfer_upload(plan, BINDING_NOISE_WEIGHTS, input->noise_weights, d * E * 4);
    if (input->hidden_buffer)
        transfer_device_copy(plan, BINDING_HIDDEN, input->hidden_buffer, T * d * hidden_bytes, 1);
    else if (input->hidden)
        transfer_upload(plan, BINDING_HIDDEN, input->hidden, T * d * hidden_bytes);
    transfer_uploads_done(plan);
    record_route(router, &params, input->hidden || input->hidden_buffer);
    if (output->dispatched_buffer)
        transfer_copy_out(plan, BINDING_DISPATCHED, output->dispatched_buffer,
                          (uint64_t)params.dispatched_rows * d * hidden_bytes);
    transfer_download(plan, BINDING_EXPERT_INFO, NULL, (3 * E + 1) * 4);
    transfer_download(plan, BINDING_STAT_TOTALS, NULL, (E + STAT_SCALARS) * 4);
    if (params.flags & FLAG_SINKHORN)
        transfer_download(plan, BINDING_DECISIONS, NULL, DECISION_HEADER * 4);
    if (output->expert_ids)
        transfer_download(plan, BINDING_EXPERT_IDS, output->expert_ids, T * k * 4);
    if (output->weights) transfer_download(plan, BINDING_WEIGHTS, output->weights, T * k * 4);
    if (output->slots) transfer_download(plan, BINDING_SLOTS, output->slots, T * k * 4);
    if (output->dispatched)
        transfer_download(plan, BINDING_DISPATCHED, NULL,
                          (uint64_t)params.dispatched_rows * d * hidden_bytes);
    r = transfer_submit(plan);
    if (r != MOEVK_SUCCESS) return r;
    router->pending = PENDING_ROUTE;
    router->pending_params = params;
    router->pending_output = *output;
    return MOEVK_SUCCESS;
}

moevk_result moevk_router_wait(moevk_router *router, uint64_t timeout_ns) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (router->pending == PENDING_NONE) return MOEVK_SUCCESS;
    moevk_result alive = context_check_alive(router->context);
    if (alive != MOEVK_SUCCESS) {
        router->pending = PENDING_NONE; /* a lost device signals nothing: drop the work */
        return alive;
    }
    transfer_plan *plan = &router->pending_plan;
    moevk_result r = transfer_complete(plan, timeout_ns);
    if (r == MOEVK_NOT_READY) return r;
    pending_call kind = router->pending;
    router->pending = PENDING_NONE;
    if (r != MOEVK_SUCCESS) return r;
    if (kind == PENDING_COMBINE) {
        router->combine = COMBINE_RUN;
        return MOEVK_SUCCESS;
    }
    const moevk_route_output *output = &router->pending_output;
    route_plan params = router->pending_params;
    uint64_t E = router->info.num_experts, d = router->info.hidden_size;
    uint64_t hidden_bytes = dtype_bytes(router->info.hidden_type);
    const uint32_t *expert_info = transfer_downloaded(plan, BINDING_EXPERT_INFO);
    const float *totals = transfer_downloaded(plan, BINDING_STAT_TOTALS);
    moevk_route_stats stats;
    const float *header =
        (params.flags & FLAG_SINKHORN) ? transfer_downloaded(plan, BINDING_DECISIONS) : NULL;
    route_fill_stats(router, &params, expert_info, totals, header, &stats);
    if (output->counts) memcpy(output->counts, expert_info + E, E * 4);
    if (output->counts_before) memcpy(output->counts_before, expert_info, E * 4);
    if (output->offsets) memcpy(output->offsets, expert_info + 2 * E, (E + 1) * 4);
    if (output->dispatched)
        memcpy(output->dispatched, transfer_downloaded(plan, BINDING_DISPATCHED),
               (uint64_t)stats.dispatched_rows * d * hidden_bytes);
    if (output->stats) *output->stats = stats;
    params.dispatched_rows = stats.dispatched_rows;
    router->last = params;
    router->route = ROUTE_RUN;
    router->combine = COMBINE_NONE;
    router->last_assignments = stats.assignments;
    router->last_valid_rows = params.num_tokens - stats.nonfinite_rows - stats.masked_rows;
    return MOEVK_SUCCESS;
}

moevk_result router_settle(moevk_router *router) {
    moevk_result r = moevk_router_wait(router, UINT64_MAX);
    return r == MOEVK_SUCCESS ? context_check_alive(router->context) : r;
}

VkFence moevk_router_fence(const moevk_router *router) {
    return router ? router->fence : VK_NULL_HANDLE;
}

moevk_result moevk_route(moevk_router *router, const moevk_route_input *input,
                         const moevk_route_output *output) {
    moevk_result r = moevk_route_submit(router, input, output);
    return r == MOEVK_SUCCESS ? moevk_router_wait(router, UINT64_MAX) : r;
}

/* Combine with its input and output on the host or in buffers. */
static moevk_result combine(moevk_router *router, const void *expert_out,
                            moevk_buffer *expert_out_buffer, void *combined,
                            moevk_buffer *combined_buffer, int wait) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    moevk_result waited = router_settle(router); /* the route it combines */
    if (waited != MOEVK_SUCCESS) return waited;
    if (router->info.hidden_size == 0) REJECT("combine needs a router with hidden_size > 0");
    if (router->route == ROUTE_NONE) REJECT("combine needs a successful route first");
    const route_plan *params = &router->last;
    uint64_t row_bytes = (uint64_t)router->info.hidden_size * dtype_bytes(router->info.hidden_type);
    uint64_t in_bytes = params->dispatched_rows * row_bytes,
             out_bytes = params->num_tokens * row_bytes;
    if (params->num_tokens > 0 &&
        ((!combined && !combined_buffer) || (!expert_out && !expert_out_buffer && in_bytes > 0)))
        REJECT("expert_out and combined must not be NULL");
    if (expert_out_buffer && expert_out_buffer->size < in_bytes)
        REJECT("the expert_out buffer holds %llu bytes; [dispatched rows, d] needs %llu",
               (unsigned long long)expert_out_buffer->size, (unsigned long long)in_bytes);
    if (combined_buffer && combined_buffer->size < out_bytes)
        REJECT("the combined buffer holds %llu bytes; [T, d] needs %llu",
               (unsigned long long)combined_buffer->size, (unsigned long long)out_bytes);
    transfer_plan *plan = &router->pending_plan;
    moevk_result r = transfer_begin(plan, router);
    if (r != MOEVK_SUCCESS) return r;
    if (expert_out_buffer)
        transfer_device_copy(plan, BINDING_EXPERT_OUT, expert_out_buffer, in_bytes, 1);
    else
        transfer_upload(plan, BINDING_EXPERT_OUT, expert_out, in_bytes);
    transfer_uploads_done(plan);
    record_combine(router, params);
    if (combined_buffer)
        transfer_copy_out(plan, BINDING_COMBINED, combined_buffer, out_bytes);
    else
        transfer_download(plan, BINDING_COMBINED, combined, out_bytes);
    router->combine = COMBINE_NONE;
    r = transfer_submit(plan);
    if (r != MOEVK_SUCCESS) return r;
    router->pending = PENDING_COMBINE;
    return wait ? moevk_router_wait(router, UINT64_MAX) : MOEVK_SUCCESS;
}

moevk_result moevk_combine(moevk_router *router, const void *expert_out, void *combined) {
    return combine(router, expert_out, NULL, combined, NULL, 1);
}

moevk_result moevk_combine_submit(moevk_router *router, const void *expert_out, void *combined) {
    return combine(router, expert_out, NULL, combined, NULL, 0);
}

moevk_result moevk_combine_buffers(moevk_router *router, moevk_buffer *expert_out,
                                   moevk_buffer *combined) {
    if (router && (!expert_out || !combined))
        return context_fail(router->context, MOEVK_ERROR_INVALID_ARGUMENT,
                            "expert_out and combined buffers must not be NULL");
    return combine(router, NULL, expert_out, NULL, combined, 1);
}
