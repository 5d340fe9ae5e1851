/* moevk_route and moevk_combine: check the call, move the data, record, submit, and turn the
 * device's totals into the route's statistics. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

/* The kinds moevk_route and moevk_route_submit take. */
#define RUN_KINDS (TENSOR_NONE | TENSOR_HOST | TENSOR_BUFFER)

/* Checks a run route's input and output and reads its per-expert noise std (into std [E]). */
static moevk_result check_route(const moevk_router *router, const moevk_route_input *input,
                                const moevk_route_output *output, const layer_call *layer,
                                float *std) {
    moevk_context *context = router->context;
    const moevk_router_info *info = &router->info;
    if (input->num_tokens > info->max_tokens)
        REJECT("num_tokens is %u, past the router's max_tokens of %u", input->num_tokens,
               info->max_tokens);
    uint64_t T = input->num_tokens, E = info->num_experts, d = info->hidden_size;
    uint64_t k = router_choices(info), element = dtype_bytes(info->hidden_type);
    const struct {
        const char *name;
        const moevk_tensor *tensor;
        uint64_t bytes;
    } tensors[] = {
        {"logits", &input->logits, T * E * dtype_bytes(info->logits_type)},
        {"bias", &input->bias, E * 4},
        {"hidden", &input->hidden, T * d * element},
        {"noise_std", &input->noise_std, E * 4},
        {"noise_weights", &input->noise_weights, d * E * 4},
        {"router_weights", &input->router_weights, d * E * 4},
        {"expert_ids", &output->expert_ids, T * k * 4},
        {"weights", &output->weights, T * k * 4},
        {"slots", &output->slots, T * k * 4},
        {"counts", &output->counts, E * 4},
        {"counts_before", &output->counts_before, E * 4},
        {"offsets", &output->offsets, (E + 1) * 4},
        {"token_scores", &output->token_scores, T * 3 * 4},
        /* A buffer holds the most rows any route gives; host memory this route's. */
        {"dispatched", &output->dispatched,
         output->dispatched.kind == MOEVK_TENSOR_BUFFER ? router->max_dispatched_rows * d * element
                                                        : 0},
    };
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; ++i) {
        moevk_result r =
            tensor_check(context, tensors[i].name, tensors[i].tensor, RUN_KINDS, tensors[i].bytes);
        if (r != MOEVK_SUCCESS) return r;
    }
    if (layer) {
        if (tensor_given(&input->logits) || tensor_given(&input->router_weights))
            REJECT("a layer computes its logits with its own router weights: logits and "
                   "router_weights must be NONE");
        if (T > 0 && !tensor_given(&input->hidden)) REJECT("hidden is not given");
        moevk_result r = tensor_check(context, "output", layer->output, RUN_KINDS, T * d * element);
        if (r == MOEVK_SUCCESS)
            r = tensor_check(context, "router_logits", layer->router_logits, RUN_KINDS, T * E * 4);
        if (r != MOEVK_SUCCESS) return r;
        if (T > 0 && !layer->route_only && !tensor_given(layer->output))
            REJECT("output is not given");
    } else if (tensor_given(&input->router_weights)) {
        if (!info->router_projection)
            REJECT("router_weights given, but the router was made without router_projection");
        if (tensor_given(&input->logits)) REJECT("give logits or router_weights, not both");
        if (!tensor_given(&input->hidden)) REJECT("router_weights need the hidden states");
    } else if (T > 0 && !tensor_given(&input->logits))
        REJECT("logits is not given");
    if (tensor_given(&input->hidden) && d == 0)
        REJECT("hidden states given, but the router's hidden_size is 0");
    if (tensor_given(&output->dispatched) && !tensor_given(&input->hidden))
        REJECT("dispatched rows asked for without hidden states");
    if (tensor_given(&output->offsets) && info->capacity_mode != MOEVK_CAPACITY_DROPLESS)
        REJECT("offsets exist only in DROPLESS mode");
    if (tensor_given(&input->bias) && info->mode != MOEVK_MODE_TOKEN)
        REJECT("a selection bias needs the TOKEN mode");
    if (tensor_given(&output->token_scores) && info->mode != MOEVK_MODE_TOKEN &&
        info->mode != MOEVK_MODE_EXPERT_CHOICE && info->mode != MOEVK_MODE_SINKHORN)
        REJECT("token_scores need the TOKEN, EXPERT_CHOICE or SINKHORN mode (a routing "
               "distribution per token)");
    moevk_result profile_checked = route_profile_check(router, output);
    if (profile_checked != MOEVK_SUCCESS) return profile_checked;
    if (tensor_given(&input->noise_std)) {
        if (info->noise != MOEVK_NOISE_GAUSSIAN || info->learned_noise)
            REJECT("noise_std needs GAUSSIAN noise without learned_noise");
        /* Checked on the host: a buffer's few values are read first. */
        if (input->noise_std.kind == MOEVK_TENSOR_HOST)
            memcpy(std, input->noise_std.host, E * 4);
        else {
            moevk_result r =
                moevk_buffer_read(input->noise_std.buffer, input->noise_std.offset, std, E * 4);
            if (r != MOEVK_SUCCESS) return r;
        }
        for (uint32_t e = 0; e < info->num_experts; ++e)
            if (!isfinite(std[e]) || std[e] < 0.0f)
                REJECT("noise_std[%u] is %g; it must be finite and >= 0", e, (double)std[e]);
    }
    if (info->learned_noise && !input->inference && input->num_tokens > 0) {
        if (!tensor_given(&input->noise_weights))
            REJECT("learned_noise needs noise_weights [d, E]");
        if (!tensor_given(&input->hidden)) REJECT("learned_noise needs the hidden states");
    }
    return MOEVK_SUCCESS;
}

/* The caller's input and output, as this library's structs (their defaults past the caller's
 * struct_size). */
moevk_result route_read_call(moevk_context *context, const moevk_route_input *input,
                             const moevk_route_output *output, moevk_route_input *full_input,
                             moevk_route_output *full_output) {
    if (!input) REJECT("input must not be NULL");
    moevk_route_input_init(full_input);
    moevk_result r = SIZED_READ(context, moevk_route_input, input, full_input);
    moevk_route_output_init(full_output);
    if (r == MOEVK_SUCCESS && output)
        r = SIZED_READ(context, moevk_route_output, output, full_output);
    return r;
}

void route_copy_counts(const moevk_route_output *output, const uint32_t *expert_info, uint64_t E) {
    if (output->counts.kind == MOEVK_TENSOR_HOST)
        memcpy(output->counts.host, expert_info + E, E * 4);
    if (output->counts_before.kind == MOEVK_TENSOR_HOST)
        memcpy(output->counts_before.host, expert_info, E * 4);
    if (output->offsets.kind == MOEVK_TENSOR_HOST)
        memcpy(output->offsets.host, expert_info + 2 * E, (E + 1) * 4);
}

void route_fill_stats(const moevk_router *router, const route_plan *params,
                      const uint32_t *expert_info, const float *totals,
                      const float *decision_header, moevk_route_stats *stats) {
    uint32_t E = router->info.num_experts;
    moevk_route_stats_init(stats);
    if (decision_header && params->num_tokens > 0) {
        stats->sinkhorn_iterations = (uint32_t)decision_header[DECISION_ITERATIONS];
        stats->sinkhorn_error = decision_header[DECISION_ERROR];
    }
    stats->nonfinite_rows = (uint32_t)totals[E + STAT_NONFINITE];
    stats->masked_rows = (uint32_t)totals[E + STAT_MASKED];
    stats->unrouted_tokens = (uint32_t)totals[E + STAT_UNROUTED];
    uint32_t valid = params->num_tokens - stats->nonfinite_rows - stats->masked_rows;
    double sums[MOEVK_MAX_EXPERTS + 3];
    for (uint32_t e = 0; e < E; ++e) sums[e] = totals[e];
    sums[E] = totals[E + STAT_LSE];
    sums[E + 1] = totals[E + STAT_LSE_SQUARED];
    sums[E + 2] = totals[E + STAT_ENTROPY];
    uint32_t capacity = (params->flags & FLAG_DROPLESS) ? UINT32_MAX : params->capacity;
    route_stats_from_sums(stats, E, expert_info, capacity, valid, sums);
}

void route_stats_from_sums(moevk_route_stats *stats, uint32_t E, const uint32_t *expert_info,
                           uint32_t capacity, uint32_t valid, const double *sums) {
    const uint32_t *counts_before = expert_info;
    uint64_t kept = 0;
    for (uint32_t e = 0; e < E; ++e) {
        stats->assignments += expert_info[e];
        kept += expert_info[E + e];
    }
    stats->dropped = stats->assignments - kept;
    stats->drop_fraction = stats->assignments ? (double)stats->dropped / stats->assignments : 0.0;
    int dropless = capacity == UINT32_MAX;
    stats->capacity = dropless ? 0 : capacity;
    stats->dispatched_rows = dropless ? expert_info[3 * E] : capacity * E;
    if (valid == 0) return;
    if (stats->assignments > 0) {
        double sum = 0.0;
        for (uint32_t e = 0; e < E; ++e)
            sum += ((double)counts_before[e] / (double)stats->assignments) * (sums[e] / valid);
        stats->aux_loss = E * sum;
    }
    stats->mean_logsumexp = sums[E] / valid;
    stats->z_loss = sums[E + 1] / valid;
    stats->entropy = sums[E + 2] / valid;
}

moevk_result moevk_route_submit(moevk_router *router, const moevk_route_input *caller_input,
                                const moevk_route_output *caller_output) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    if (!caller_output) REJECT("output must not be NULL");
    if (router->layer.active) REJECT("this router is a layer's: run it with moevk_layer_forward");
    return route_submit(router, caller_input, caller_output, NULL);
}

moevk_result route_submit(moevk_router *router, const moevk_route_input *caller_input,
                          const moevk_route_output *caller_output, const layer_call *layer) {
    moevk_context *context = router->context;
    moevk_result r = router_settle(router); /* one route in flight */
    if (r != MOEVK_SUCCESS) return r;
    moevk_route_input in;
    moevk_route_output out;
    r = route_read_call(context, caller_input, caller_output, &in, &out);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_route_input *input = &in;
    const moevk_route_output *output = &out;
    float std[MOEVK_MAX_EXPERTS];
    r = check_route(router, input, output, layer, std);
    if (r == MOEVK_SUCCESS) r = router_check_call(router, input);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_router_info *info = &router->info;
    uint64_t T = input->num_tokens, E = info->num_experts, k = router_choices(info);
    uint64_t d = info->hidden_size;
    uint64_t hidden_bytes = dtype_bytes(info->hidden_type);
    route_plan params;
    router_plan(router, input, &params);
    router_plan_noise(router, input, &params);
    if (tensor_given(&input->bias)) params.flags |= FLAG_HAS_BIAS;
    if (tensor_given(&output->token_scores)) params.flags |= FLAG_TOKEN_SCORES;
    /* An expert-parallel layer's home half: the global T decides. */
    if (layer && layer->ffn_tokens) router_plan_ffn_form(&params, layer->ffn_tokens);
    router->route = ROUTE_NONE;
    router->combine = COMBINE_NONE;
    router->layer_timed = layer != NULL;

    /* A layer's router weights are in place already. */
    if (tensor_given(&input->router_weights) || layer) params.flags |= FLAG_PROJECT_LOGITS;
    /* For the load loss, which divides by the std: the std (or a learned std's epsilon), or
     * every expert's. */
    int per_expert_std = tensor_given(&input->noise_std);
    int std_positive = per_expert_std ? 1 : params.noise_amount > 0.0f;
    for (uint32_t e = 0; per_expert_std && e < E; ++e) std_positive &= std[e] > 0;
    router->last_noise_std_positive = std_positive;
    if (per_expert_std && (params.noise_kind == MOEVK_NOISE_GAUSSIAN))
        params.flags |= FLAG_NOISE_STD_PER_EXPERT;
    /* A layer's experts gather the hidden states themselves: it dispatches rows only when
     * asked for them. */
    int with_dispatch = layer ? tensor_given(&output->dispatched) : tensor_given(&input->hidden);
    /* A profiled route uploads the profile's header each call: recorded each call. */
    int keyed = !output->profile && !output->drift_profile;
    route_key key;
    route_key_of(&key, &params, with_dispatch, input, output, layer);
    int replay = keyed && route_key_recorded(router, &key);
    router->route_key_valid = replay;

    transfer_plan *plan = &router->pending_plan;
    r = transfer_begin_on(plan, router, router->route_commands,
                          replay ? TRANSFER_REPLAY : TRANSFER_KEPT);
    if (r != MOEVK_SUCCESS) return r;
    tensor_upload(plan, BINDING_LOGITS, &input->logits, T * E * dtype_bytes(info->logits_type));
    tensor_upload(plan, BINDING_ROUTER_WEIGHTS, &input->router_weights, d * E * 4);
    tensor_upload(plan, BINDING_BIAS, &input->bias, E * 4);
    if (params.flags & FLAG_NOISE_STD_PER_EXPERT)
        transfer_upload(plan, BINDING_NOISE_STD, std, E * 4);
    if ((params.flags & FLAG_NOISE_STD_LEARNED) && T > 0) /* T = 0 needs no weights */
        tensor_upload(plan, BINDING_NOISE_WEIGHTS, &input->noise_weights, d * E * 4);
    tensor_upload(plan, BINDING_HIDDEN, &input->hidden, T * d * hidden_bytes);
    uint32_t noise_state[NOISE_STATE_WORDS];
    noise_state_words(&params, noise_state);
    transfer_upload(plan, BINDING_NOISE_STATE, noise_state, sizeof noise_state);
    route_profile_plan(router, output, &params, plan);
    transfer_uploads_done(plan);
    if (!replay) record_route(router, &params, with_dispatch);
    if (params.flags & FLAG_TOKEN_SCORES)
        tensor_download(plan, BINDING_TOKEN_SCORES, 0, &output->token_scores, T * 3 * 4);
    if (layer) {
        if (!replay) record_layer(router, &params, layer->route_only);
        if (!layer->route_only)
            tensor_download(plan, BINDING_COMBINED, 0, layer->output, T * d * hidden_bytes);
        tensor_download(plan, BINDING_LOGITS, 0, layer->router_logits, T * E * 4);
    }
    /* Device outputs: copied on the device. */
    uint64_t rows_bytes = (uint64_t)params.dispatched_rows * d * hidden_bytes;
    if (output->dispatched.kind == MOEVK_TENSOR_BUFFER)
        tensor_download(plan, BINDING_DISPATCHED, 0, &output->dispatched, rows_bytes);
    const struct {
        int binding;
        VkDeviceSize offset;
        const moevk_tensor *tensor;
        VkDeviceSize bytes;
    } device_outputs[] = {
        {BINDING_EXPERT_IDS, 0, &output->expert_ids, T * k * 4},
        {BINDING_WEIGHTS, 0, &output->weights, T * k * 4},
        {BINDING_SLOTS, 0, &output->slots, T * k * 4},
        {BINDING_EXPERT_INFO, E * 4, &output->counts, E * 4},
        {BINDING_EXPERT_INFO, 0, &output->counts_before, E * 4},
        {BINDING_EXPERT_INFO, 2 * E * 4, &output->offsets, (E + 1) * 4},
    };
    for (size_t i = 0; i < sizeof device_outputs / sizeof device_outputs[0]; ++i)
        if (device_outputs[i].tensor->kind == MOEVK_TENSOR_BUFFER)
            tensor_download(plan, device_outputs[i].binding, device_outputs[i].offset,
                            device_outputs[i].tensor, device_outputs[i].bytes);
    /* Host outputs: downloaded, and copied out by moevk_router_wait. */
    transfer_download(plan, BINDING_EXPERT_INFO, NULL, (3 * E + 1) * 4);
    transfer_download(plan, BINDING_STAT_TOTALS, NULL, (E + STAT_SCALARS) * 4);
    if (params.flags & FLAG_SINKHORN)
        transfer_download(plan, BINDING_DECISIONS, NULL, DECISION_HEADER * 4);
    route_profile_download(router, output, &params, plan);
    for (int i = 0; i < 3; ++i)
        if (device_outputs[i].tensor->kind == MOEVK_TENSOR_HOST)
            tensor_download(plan, device_outputs[i].binding, 0, device_outputs[i].tensor,
                            device_outputs[i].bytes);
    if (output->dispatched.kind == MOEVK_TENSOR_HOST)
        transfer_download(plan, BINDING_DISPATCHED, NULL, rows_bytes);
    r = transfer_submit(plan);
    if (r != MOEVK_SUCCESS) return r;
    /* Kept for the next call of this key: every later call reads it before recording. */
    router->route_key = key;
    router->route_key_valid = keyed;
    router->last_route_replayed = replay;
    router->pending = PENDING_ROUTE;
    router->pending_params = params;
    router->pending_output = out;
    router->pending_stats = caller_output ? caller_output->stats : NULL;
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
    if (kind == PENDING_BACKWARD) return MOEVK_SUCCESS; /* its host outputs are copied out */
    if (kind == PENDING_LOSSES) {
        losses_complete(router);
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
    route_profile_complete(router, output, &params, expert_info, &stats);
    stats.resubmitted = router->last_route_replayed;
    route_copy_counts(output, expert_info, E);
    if (output->dispatched.kind == MOEVK_TENSOR_HOST)
        memcpy(output->dispatched.host, transfer_downloaded(plan, BINDING_DISPATCHED),
               (uint64_t)stats.dispatched_rows * d * hidden_bytes);
    if (router->pending_stats) SIZED_WRITE(moevk_route_stats, router->pending_stats, &stats);
    params.dispatched_rows = stats.dispatched_rows;
    router->last = params;
    router->route = ROUTE_RUN;
    router->combine = COMBINE_NONE;
    router->losses_recorded = 0;
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
static moevk_result combine(moevk_router *router, moevk_tensor expert_out, moevk_tensor combined,
                            int wait) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    moevk_result r = router_settle(router); /* the route it combines */
    if (r != MOEVK_SUCCESS) return r;
    if (router->info.hidden_size == 0) REJECT("combine needs a router with hidden_size > 0");
    if (router->route == ROUTE_NONE) REJECT("combine needs a successful route first");
    const route_plan *params = &router->last;
    uint64_t row_bytes = (uint64_t)router->info.hidden_size * dtype_bytes(router->info.hidden_type);
    uint64_t in_bytes = params->dispatched_rows * row_bytes,
             out_bytes = params->num_tokens * row_bytes;
    r = tensor_check(context, "expert_out", &expert_out, RUN_KINDS, in_bytes);
    if (r == MOEVK_SUCCESS) r = tensor_check(context, "combined", &combined, RUN_KINDS, out_bytes);
    if (r != MOEVK_SUCCESS) return r;
    if (params->num_tokens > 0 &&
        (!tensor_given(&combined) || (!tensor_given(&expert_out) && in_bytes > 0)))
        REJECT("expert_out and combined must be given");
    transfer_plan *plan = &router->pending_plan;
    r = transfer_begin(plan, router);
    if (r != MOEVK_SUCCESS) return r;
    tensor_upload(plan, BINDING_EXPERT_OUT, &expert_out, in_bytes);
    transfer_uploads_done(plan);
    record_combine(router, params);
    tensor_download(plan, BINDING_COMBINED, 0, &combined, out_bytes);
    router->combine = COMBINE_NONE;
    r = transfer_submit(plan);
    if (r != MOEVK_SUCCESS) return r;
    router->pending = PENDING_COMBINE;
    return wait ? moevk_router_wait(router, UINT64_MAX) : MOEVK_SUCCESS;
}

moevk_result moevk_combine(moevk_router *router, moevk_tensor expert_out, moevk_tensor combined) {
    return combine(router, expert_out, combined, 1);
}

moevk_result moevk_combine_submit(moevk_router *router, moevk_tensor expert_out,
                                  moevk_tensor combined) {
    return combine(router, expert_out, combined, 0);
}
