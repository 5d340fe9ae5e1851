/* Recording routes and combines into an application's command buffer, on its buffers, and
 * reading the results back once that command buffer has run. */
#include <string.h>

#include "stage.h"

#define REJECT(...) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, __VA_ARGS__)

typedef struct external_binding {
    int binding;
    moevk_buffer_range range;
    VkDeviceSize needed; /* bytes the stage touches */
    const char *name;
} external_binding;

/* Points the kernels' external sets at the application's buffers (a binding given no buffer
 * goes back to the router's own); checks every range before writing any. */
static moevk_result bind_external(moevk_router *router, const external_binding *bindings,
                                  int count) {
    moevk_context *context = router->context;
    VkDescriptorBufferInfo infos[8];
    for (int i = 0; i < count; ++i) {
        const external_binding *b = &bindings[i];
        infos[i] = (VkDescriptorBufferInfo){router->buffers[b->binding].buffer, 0, VK_WHOLE_SIZE};
        if (!b->range.buffer) continue;
        if (b->range.offset % context->limits.minStorageBufferOffsetAlignment)
            REJECT("%s: offset %llu is not a multiple of minStorageBufferOffsetAlignment (%llu)",
                   b->name, (unsigned long long)b->range.offset,
                   (unsigned long long)context->limits.minStorageBufferOffsetAlignment);
        if (b->range.range && b->range.range < b->needed)
            REJECT("%s: a range of %llu bytes; the stage needs %llu", b->name,
                   (unsigned long long)b->range.range, (unsigned long long)b->needed);
        VkDeviceSize range = b->range.range ? b->range.range : VK_WHOLE_SIZE;
        if (range != VK_WHOLE_SIZE && range > context->limits.maxStorageBufferRange)
            REJECT("%s: a range past maxStorageBufferRange", b->name);
        infos[i] = (VkDescriptorBufferInfo){b->range.buffer, b->range.offset, range};
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
        for (int i = 0; i < count; ++i) external |= bindings[i].binding == b;
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

moevk_result moevk_record_route(moevk_router *router, VkCommandBuffer command_buffer,
                                const moevk_record_info *info) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    const moevk_router_info *options = &router->info;
    if (!command_buffer || !info) REJECT("command_buffer and info must not be NULL");
    moevk_result waited = router_settle(router);
    if (waited != MOEVK_SUCCESS) return waited;
    if (router->use_addresses)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "this router's buffers pass maxStorageBufferRange; recording binds "
                            "the application's buffers through descriptors, within that range");
    if (info->num_tokens > options->max_tokens)
        REJECT("num_tokens is %u, past the router's max_tokens of %u", info->num_tokens,
               options->max_tokens);
    if (!info->logits.buffer && info->num_tokens > 0) REJECT("logits has no buffer");
    int with_hidden = info->hidden.buffer != VK_NULL_HANDLE;
    if (with_hidden && options->hidden_size == 0) REJECT("hidden given, but hidden_size is 0");
    if (with_hidden && !info->dispatched.buffer) REJECT("hidden given without a dispatched buffer");
    uint64_t T = info->num_tokens, E = options->num_experts, d = options->hidden_size;
    uint64_t element = dtype_bytes(options->hidden_type);
    route_plan params;
    router_plan(router, info->num_tokens, info->step, &params);
    router_plan_noise(router, info->step, info->layer, info->inference, &params);
    if (options->learned_noise && !info->inference)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "learned_noise needs its noise_weights uploaded: use moevk_route");
    if (info->bias.buffer && options->mode != MOEVK_MODE_TOKEN)
        REJECT("a selection bias needs the TOKEN mode");
    if (info->bias.buffer) params.flags |= FLAG_HAS_BIAS;
    external_binding bindings[] = {
        {BINDING_LOGITS, info->logits, T * E * dtype_bytes(options->logits_type), "logits"},
        {BINDING_BIAS, info->bias, E * 4, "bias"},
        {BINDING_HIDDEN, info->hidden, T * d * element, "hidden"},
        {BINDING_DISPATCHED, info->dispatched, (uint64_t)params.dispatched_rows * d * element,
         "dispatched"},
    };
    moevk_result r = bind_external(router, bindings, 4);
    if (r != MOEVK_SUCCESS) return r;
    router->recording = command_buffer;
    router->recording_external = 1;
    router->bound_kernel = NO_KERNEL_BOUND;
    entry_barrier(router, bindings, 4);
    record_route(router, &params, with_hidden);
    router->last = params;
    router->route = ROUTE_RECORDED;
    router->combine = COMBINE_NONE;
    return MOEVK_SUCCESS;
}

moevk_result moevk_record_combine(moevk_router *router, VkCommandBuffer command_buffer,
                                  moevk_buffer_range expert_out, moevk_buffer_range combined) {
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
    if (!expert_out.buffer || !combined.buffer) REJECT("expert_out and combined need buffers");
    const route_plan *params = &router->last;
    uint64_t row = (uint64_t)router->info.hidden_size * dtype_bytes(router->info.hidden_type);
    external_binding bindings[] = {
        {BINDING_EXPERT_OUT, expert_out, params->dispatched_rows * row, "expert_out"},
        {BINDING_COMBINED, combined, params->num_tokens * row, "combined"},
    };
    moevk_result r = bind_external(router, bindings, 2);
    if (r != MOEVK_SUCCESS) return r;
    router->recording = command_buffer;
    router->recording_external = 1;
    router->bound_kernel = NO_KERNEL_BOUND;
    entry_barrier(router, bindings, 2);
    record_combine(router, params);
    router->combine = COMBINE_RECORDED;
    return MOEVK_SUCCESS;
}

moevk_result moevk_router_read(moevk_router *router, const moevk_route_output *output) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    if (!output) REJECT("output must not be NULL");
    moevk_result waited = router_settle(router);
    if (waited != MOEVK_SUCCESS) return waited;
    if (router->route == ROUTE_NONE) REJECT("no route has been recorded or run");
    const route_plan *params = &router->last;
    uint64_t E = router->info.num_experts,
             TK = (uint64_t)params->num_tokens * router_choices(&router->info);
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
        {BINDING_EXPERT_IDS, output->expert_ids, TK * 4},
        {BINDING_WEIGHTS, output->weights, TK * 4},
        {BINDING_SLOTS, output->slots, TK * 4},
        {BINDING_DECISIONS, sinkhorn ? header : NULL, sizeof header},
    };
    for (size_t i = 0; i < sizeof copies / sizeof copies[0]; ++i) {
        if (!copies[i].host) continue;
        moevk_result r = gpu_buffer_host_copy(context, &router->buffers[copies[i].binding], 0,
                                              copies[i].host, copies[i].bytes, 0);
        if (r != MOEVK_SUCCESS) return r;
    }
    if (output->counts) memcpy(output->counts, expert_info + E, E * 4);
    if (output->counts_before) memcpy(output->counts_before, expert_info, E * 4);
    if (output->offsets) memcpy(output->offsets, expert_info + 2 * E, (E + 1) * 4);
    if (output->stats)
        route_fill_stats(router, params, expert_info, totals, sinkhorn ? header : NULL,
                         output->stats);
    return MOEVK_SUCCESS;
}
