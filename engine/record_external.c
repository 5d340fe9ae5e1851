/* Recording routes and combines into an application's command buffer, on its buffers, and
 * reading the results back once that command buffer has run. */
#include <string.h>

#include "stage.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

#define RECORD_KINDS (TENSOR_NONE | TENSOR_VULKAN)

/* Points the kernels' external sets at the application's buffers (a binding given no buffer
 * goes back to the router's own); checks every tensor before writing any. */
static moevk_result external_bind(moevk_router *router, const external_binding *bindings,
                                  int count) {
    moevk_context *context = router->context;
    VkDescriptorBufferInfo infos[8];
    for (int i = 0; i < count; ++i) {
        const external_binding *b = &bindings[i];
        moevk_result r = tensor_check(context, b->name, b->tensor, RECORD_KINDS, b->needed);
        if (r != MOEVK_SUCCESS) return r;
        const moevk_tensor *t = b->tensor;
        infos[i] =
            t->kind == MOEVK_TENSOR_VULKAN
                ? (VkDescriptorBufferInfo){t->vk_buffer, t->offset,
                                           t->range ? t->range : VK_WHOLE_SIZE}
                : (VkDescriptorBufferInfo){router->buffers[b->binding].buffer, 0, VK_WHOLE_SIZE};
    }
    for (int i = 0; i < count; ++i)
        stages_bind_external(router, (uint32_t)bindings[i].binding, &infos[i]);
    return MOEVK_SUCCESS;
}

/* Orders this recording after earlier work on the queue that used the router's own buffers:
 * buffer barriers on those alone, so that the application's buffers stay the application's to
 * synchronise. */
static void entry_barrier(moevk_router *router, const external_binding *bindings, int count) {
    VkBufferMemoryBarrier barriers[BINDING_COUNT];
    uint32_t n = 0;
    for (int b = 0; b < BINDING_COUNT; ++b) {
        int external = 0;
        for (int i = 0; i < count; ++i)
            external |= bindings[i].binding == b && bindings[i].tensor->kind == MOEVK_TENSOR_VULKAN;
        if (external) continue;
        barriers[n++] = (VkBufferMemoryBarrier){
            .sType = VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER,
            .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                             VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT,
            .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                             VK_ACCESS_TRANSFER_WRITE_BIT,
            .srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
            .dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
            .buffer = router->buffers[b].buffer,
            .offset = 0,
            .size = VK_WHOLE_SIZE};
    }
    VkPipelineStageFlags stages =
        VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    router->context->vk.vkCmdPipelineBarrier(router->recording, stages, stages, 0, 0, NULL, n,
                                             barriers, 0, NULL);
}

moevk_result external_begin(moevk_router *router, VkCommandBuffer command_buffer,
                            const external_binding *bindings, int count) {
    moevk_result r = external_bind(router, bindings, count);
    if (r != MOEVK_SUCCESS) return r;
    router->recording = command_buffer;
    router->recording_external = 1;
    router->bound_kernel = NO_KERNEL_BOUND;
    entry_barrier(router, bindings, count);
    return MOEVK_SUCCESS;
}

/* A recorded route, a layer's when layer is not NULL: then the logits are projected with the
 * layer's router weights (into router_logits when given) and the layer's stages follow,
 * writing its output into the application's buffer. */
moevk_result route_record_call(moevk_router *router, VkCommandBuffer command_buffer,
                               const moevk_route_input *caller_input,
                               const moevk_route_output *caller_output, const layer_call *layer) {
    moevk_context *context = router->context;
    if (!command_buffer) REJECT("command_buffer must not be NULL");
    moevk_result waited = router_settle(router);
    if (waited != MOEVK_SUCCESS) return waited;
    moevk_route_input in;
    moevk_route_output out;
    moevk_result r = route_read_call(context, caller_input, caller_output, &in, &out);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_route_input *info = &in;
    const moevk_router_info *options = &router->info;
    if (router->use_addresses)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "this router's buffers pass maxStorageBufferRange; recording binds "
                            "the application's buffers through descriptors, within that range");
    if (info->num_tokens > options->max_tokens)
        REJECT("num_tokens is %u, past the router's max_tokens of %u", info->num_tokens,
               options->max_tokens);
    int projects = layer != NULL || tensor_given(&info->router_weights);
    if (layer) {
        if (tensor_given(&info->logits) || tensor_given(&info->router_weights))
            REJECT("a layer computes its logits with its own router weights: logits and "
                   "router_weights must be NONE");
        if (info->num_tokens > 0 && !tensor_given(&info->hidden)) REJECT("hidden is not given");
        if (info->num_tokens > 0 && !tensor_given(layer->output)) REJECT("output is not given");
    } else {
        if (projects && !options->router_projection)
            REJECT("router_weights given, but the router was made without router_projection");
        if (projects && tensor_given(&info->logits))
            REJECT("give logits or router_weights, not both");
        if (projects && !tensor_given(&info->hidden))
            REJECT("router_weights need the hidden states");
        if (!projects && !tensor_given(&info->logits) && info->num_tokens > 0)
            REJECT("logits is not given");
    }
    const moevk_tensor *host_only[] = {&out.expert_ids,  &out.weights,       &out.slots,
                                       &out.counts,      &out.counts_before, &out.offsets,
                                       &out.token_scores};
    for (size_t i = 0; i < sizeof host_only / sizeof host_only[0]; ++i)
        if (tensor_given(host_only[i]))
            REJECT("a recorded route writes only dispatched; read the rest with moevk_route_read");
    if (out.stats) REJECT("a recorded route's stats are read with moevk_route_read");
    if (out.profile || out.drift_profile)
        REJECT("a routing profile is filled or judged by moevk_route and moevk_route_submit");
    if (tensor_given(&info->noise_std) || tensor_given(&info->noise_weights))
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "noise_std and noise_weights are uploaded: use moevk_route");
    int with_hidden = tensor_given(&info->hidden);
    if (with_hidden && options->hidden_size == 0) REJECT("hidden given, but hidden_size is 0");
    /* A layer's experts gather the hidden states themselves: it dispatches rows only when
     * asked for them. */
    if (with_hidden && !layer && !tensor_given(&out.dispatched))
        REJECT("hidden given without a dispatched tensor");
    if (!with_hidden && tensor_given(&out.dispatched))
        REJECT("dispatched asked for without hidden");
    uint64_t T = info->num_tokens, E = options->num_experts, d = options->hidden_size;
    uint64_t element = dtype_bytes(options->hidden_type);
    route_plan params;
    r = router_check_call(router, info);
    if (r != MOEVK_SUCCESS) return r;
    router_plan(router, info, &params);
    router_plan_noise(router, info, &params);
    if (options->learned_noise && !info->inference)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "learned_noise needs its noise_weights uploaded: use moevk_route");
    if (tensor_given(&info->bias) && options->mode != MOEVK_MODE_TOKEN)
        REJECT("a selection bias needs the TOKEN mode");
    if (tensor_given(&info->bias)) params.flags |= FLAG_HAS_BIAS;
    if (projects) params.flags |= FLAG_PROJECT_LOGITS;
    /* The layer's output is stored a word at a time: a 16-bit output of odd T d also writes
     * the zero half that fills its last word. */
    uint64_t output_bytes = (T * d * element + 3) & ~(uint64_t)3;
    external_binding bindings[] = {
        {BINDING_BIAS, &info->bias, E * 4, "bias"},
        {BINDING_HIDDEN, &info->hidden, T * d * element, "hidden"},
        {BINDING_DISPATCHED, &out.dispatched, (uint64_t)params.dispatched_rows * d * element,
         "dispatched"},
        {BINDING_ROUTER_WEIGHTS, &info->router_weights, d * E * 4, "router_weights"},
        {BINDING_LOGITS, layer ? layer->router_logits : &info->logits,
         T * E * (layer ? 4 : dtype_bytes(options->logits_type)),
         layer ? "router_logits" : "logits"},
        {BINDING_COMBINED, layer ? layer->output : NULL, output_bytes, "output"},
    };
    /* A plain route leaves the combine's output alone (the last binding). */
    r = external_begin(router, command_buffer, bindings, layer ? 6 : 5);
    if (r != MOEVK_SUCCESS) return r;
    record_route(router, &params, layer ? tensor_given(&out.dispatched) : with_hidden);
    if (layer) record_layer(router, &params, 0);
    router->last = params;
    router->route = ROUTE_RECORDED;
    router->combine = COMBINE_NONE;
    router->layer_timed = layer != NULL;
    router->losses_recorded = 0;
    /* For the load loss, which divides by the std: the router's (no per-expert std here). */
    router->last_noise_std_positive = params.noise_amount > 0.0f;
    return MOEVK_SUCCESS;
}

moevk_result moevk_route_record(moevk_router *router, VkCommandBuffer command_buffer,
                                const moevk_route_input *input, const moevk_route_output *output) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    if (router->layer.active) REJECT("this router is a layer's: record it with moevk_layer_record");
    return route_record_call(router, command_buffer, input, output, NULL);
}

moevk_result moevk_combine_record(moevk_router *router, VkCommandBuffer command_buffer,
                                  moevk_tensor expert_out, moevk_tensor combined) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    if (!command_buffer) REJECT("command_buffer must not be NULL");
    moevk_result waited = router_settle(router);
    if (waited != MOEVK_SUCCESS) return waited;
    if (router->use_addresses)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "this router's buffers pass maxStorageBufferRange");
    if (router->info.hidden_size == 0) REJECT("combine needs a router with hidden_size > 0");
    if (router->route == ROUTE_NONE) REJECT("combine needs a route first");
    if (!tensor_given(&expert_out) || !tensor_given(&combined))
        REJECT("expert_out and combined must be given");
    const route_plan *params = &router->last;
    uint64_t row = (uint64_t)router->info.hidden_size * dtype_bytes(router->info.hidden_type);
    external_binding bindings[] = {
        {BINDING_EXPERT_OUT, &expert_out, params->dispatched_rows * row, "expert_out"},
        {BINDING_COMBINED, &combined, params->num_tokens * row, "combined"},
    };
    moevk_result r = external_begin(router, command_buffer, bindings, 2);
    if (r != MOEVK_SUCCESS) return r;
    record_combine(router, params);
    router->combine = COMBINE_RECORDED;
    return MOEVK_SUCCESS;
}

moevk_result moevk_route_read(moevk_router *router, const moevk_route_output *caller_output) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    if (!caller_output) REJECT("output must not be NULL");
    moevk_result waited = router_settle(router);
    if (waited != MOEVK_SUCCESS) return waited;
    if (router->route == ROUTE_NONE) REJECT("no route has been recorded or run");
    moevk_route_output out;
    moevk_route_output_init(&out);
    moevk_result r = SIZED_READ(context, moevk_route_output, caller_output, &out);
    if (r != MOEVK_SUCCESS) return r;
    const moevk_route_output *output = &out;
    const route_plan *params = &router->last;
    uint64_t E = router->info.num_experts,
             TK = (uint64_t)params->num_tokens * router_choices(&router->info);
    const struct {
        const char *name;
        const moevk_tensor *tensor;
        uint64_t bytes;
    } tensors[] = {
        {"expert_ids", &output->expert_ids, TK * 4},
        {"weights", &output->weights, TK * 4},
        {"slots", &output->slots, TK * 4},
        {"counts", &output->counts, E * 4},
        {"counts_before", &output->counts_before, E * 4},
        {"offsets", &output->offsets, (E + 1) * 4},
        {"dispatched", &output->dispatched, 0},
    };
    if (tensor_given(&output->token_scores))
        REJECT("token_scores are written by moevk_route and moevk_route_submit, not read back");
    if (output->profile || output->drift_profile)
        REJECT("a routing profile is filled or judged by moevk_route and moevk_route_submit");
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; ++i) {
        unsigned kinds =
            i + 1 < sizeof tensors / sizeof tensors[0] ? TENSOR_NONE | TENSOR_HOST : TENSOR_NONE;
        r = tensor_check(context, tensors[i].name, tensors[i].tensor, kinds, tensors[i].bytes);
        if (r != MOEVK_SUCCESS) return r;
    }
    uint32_t expert_info[3 * MOEVK_MAX_EXPERTS + 1];
    float totals[MOEVK_MAX_EXPERTS + STAT_SCALARS];
    float header[DECISION_HEADER];
    int sinkhorn = (params->flags & FLAG_SINKHORN) != 0;
    struct {
        int binding;
        void *host;
        uint64_t bytes;
    } copies[] = {
        {BINDING_EXPERT_INFO, expert_info, (3 * E + 1) * 4},
        {BINDING_STAT_TOTALS, totals, (E + STAT_SCALARS) * 4},
        {BINDING_EXPERT_IDS, output->expert_ids.host, TK * 4},
        {BINDING_WEIGHTS, output->weights.host, TK * 4},
        {BINDING_SLOTS, output->slots.host, TK * 4},
        {BINDING_DECISIONS, sinkhorn ? header : NULL, sizeof header},
    };
    for (size_t i = 0; i < sizeof copies / sizeof copies[0]; ++i) {
        if (!copies[i].host) continue;
        r = gpu_buffer_host_copy(context, &router->buffers[copies[i].binding], 0, copies[i].host,
                                 copies[i].bytes, 0);
        if (r != MOEVK_SUCCESS) return r;
    }
    route_copy_counts(output, expert_info, E);
    if (output->stats) {
        moevk_route_stats stats;
        route_fill_stats(router, params, expert_info, totals, sinkhorn ? header : NULL, &stats);
        SIZED_WRITE(moevk_route_stats, output->stats, &stats);
    }
    return MOEVK_SUCCESS;
}
