/* Recording a route and a combine: each stage bound, pushed and dispatched, with a global
 * barrier between a stage and the next one that reads what it wrote. */
#include "internal.h"

#define COMPUTE VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT
#define TRANSFER VK_PIPELINE_STAGE_TRANSFER_BIT
#define SHADER_RW (VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT)

void record_barrier(moevk_router *router, VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                    VkPipelineStageFlags dst_stage, VkAccessFlags dst_access) {
    VkMemoryBarrier barrier = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                               .srcAccessMask = src_access,
                               .dstAccessMask = dst_access};
    router->context->vk.vkCmdPipelineBarrier(router->recording, src_stage, dst_stage, 0, 1,
                                             &barrier, 0, NULL, 0, NULL);
}

static void compute_to_compute(moevk_router *router) {
    record_barrier(router, COMPUTE, VK_ACCESS_SHADER_WRITE_BIT, COMPUTE, SHADER_RW);
}

/* The same, for a dispatch that also reads its arguments from what the last one wrote. */
static void indirect_barrier(moevk_router *router) {
    record_barrier(router, COMPUTE, VK_ACCESS_SHADER_WRITE_BIT,
                   COMPUTE | VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT,
                   SHADER_RW | VK_ACCESS_INDIRECT_COMMAND_READ_BIT);
}

static void run_stage_2d(moevk_router *router, stage which, const route_params *params,
                         uint32_t groups_x, uint32_t groups_y) {
    const struct VolkDeviceTable *vk = &router->context->vk;
    VkCommandBuffer cmd = router->recording;
    vk->vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, router->pipelines[which]);
    vk->vkCmdPushConstants(cmd, router->context->pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                           sizeof *params, params);
    vk->vkCmdDispatch(cmd, groups_x, groups_y, 1);
}

static void run_stage(moevk_router *router, stage which, const route_params *params,
                      uint32_t groups) {
    run_stage_2d(router, which, params, groups, 1);
}

/* About this many workgroups fill any GPU we know of; more only adds launch work, since every
 * invocation loops over rows. */
#define ROW_STAGE_WORKGROUPS 8192u

/* A 2D grid for row-wise stages: x covers a row's units (at most 64 workgroups), y the rows. */
static void run_rows_stage(moevk_router *router, stage which, const route_params *params,
                           uint64_t rows) {
    const VkPhysicalDeviceLimits *limits = &router->context->limits;
    uint64_t row_bytes = (uint64_t)params->hidden_size * dtype_bytes(router->info.hidden_type);
    uint64_t unit = row_bytes % 16 == 0 ? 16 : 4;
    uint64_t x = (row_bytes / unit + WORKGROUP_SIZE - 1) / WORKGROUP_SIZE;
    uint64_t y = rows;
    if (x > 64) x = 64;
    if (x < 1) x = 1;
    if (y > ROW_STAGE_WORKGROUPS / x) y = ROW_STAGE_WORKGROUPS / x;
    if (y > limits->maxComputeWorkGroupCount[1]) y = limits->maxComputeWorkGroupCount[1];
    if (y > 65535) y = 65535;
    if (y < 1) y = 1;
    run_stage_2d(router, which, params, (uint32_t)x, (uint32_t)y);
}

/* Workgroups for a grid-stride loop over `items`: enough to fill the device, within limits. */
static uint32_t grid_for(const moevk_router *router, uint64_t items) {
    uint64_t groups = (items + WORKGROUP_SIZE - 1) / WORKGROUP_SIZE;
    uint64_t limit = router->context->limits.maxComputeWorkGroupCount[0];
    if (limit > 65535) limit = 65535;
    if (groups > limit) groups = limit;
    return groups ? (uint32_t)groups : 1;
}

static void timestamp(moevk_router *router, enum timestamp_point point) {
    if (!router->timestamps) return;
    router->context->vk.vkCmdWriteTimestamp(router->recording, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT,
                                            router->timestamps, point);
}

static void reset_timestamps(moevk_router *router, uint32_t first, uint32_t count) {
    if (!router->timestamps) return;
    router->context->vk.vkCmdResetQueryPool(router->recording, router->timestamps, first, count);
}

/* Workgroups for a loop over `count` workgroup-sized items (blocks, experts): at most
 * MAX_GROUPS_X, which every device allows and the shaders assume. */
static uint32_t groups_for(uint64_t count) {
    if (count > MAX_GROUPS_X) count = MAX_GROUPS_X;
    return count ? (uint32_t)count : 1;
}

/* The Sinkhorn iteration: its setup, then mode_param iterations of rows, columns and the check,
 * dispatched indirectly from arguments that the setup and each check write (zero workgroups
 * once the factors have converged). */
static void record_sinkhorn(moevk_router *router, const route_params *params) {
    const struct VolkDeviceTable *vk = &router->context->vk;
    uint64_t blocks = div_ceil_u32(params->num_tokens, SINKHORN_BLOCK_ROWS);
    const struct {
        uint32_t phase, groups;
    } setup[] = {{SINKHORN_PHASE_SETUP_ROWS, groups_for(blocks)},
                 {SINKHORN_PHASE_SETUP_COLUMNS, groups_for(params->num_experts)},
                 {SINKHORN_PHASE_SETUP_TOTALS, 1}};
    const uint32_t iteration[SINKHORN_ITERATION_PHASES] = {
        SINKHORN_PHASE_ROWS, SINKHORN_PHASE_COLUMNS, SINKHORN_PHASE_CHECK};
    route_params phase = *params;
    for (size_t i = 0; i < sizeof setup / sizeof setup[0]; ++i) {
        phase.phase = setup[i].phase;
        run_stage(router, STAGE_SINKHORN, &phase, setup[i].groups);
        indirect_barrier(router);
    }
    VkBuffer arguments = router->buffers[BINDING_DECISIONS].buffer;
    for (uint32_t n = 0; n < params->mode_param; ++n) {
        for (uint32_t i = 0; i < SINKHORN_ITERATION_PHASES; ++i) {
            phase.phase = iteration[i];
            vk->vkCmdPushConstants(router->recording, router->context->pipeline_layout,
                                   VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof phase, &phase);
            vk->vkCmdDispatchIndirect(router->recording, arguments,
                                      (DECISION_ARGS + 3 * i) * sizeof(uint32_t));
            if (n + 1 < params->mode_param || i + 1 < SINKHORN_ITERATION_PHASES)
                indirect_barrier(router);
        }
    }
}

/* SEQUENCE, BATCH and SINKHORN modes: the rows' flags, then the sequences' mean logits or the
 * Sinkhorn factors that scores_topk decides from. */
static void record_decisions(moevk_router *router, const route_params *params) {
    int by_sequence = (params->flags & FLAG_SEQUENCE_DECISIONS) != 0;
    int sinkhorn = (params->flags & FLAG_SINKHORN) != 0;
    if (!by_sequence && !sinkhorn) return;
    route_params phase = *params;
    phase.phase = 0;
    run_stage(router, STAGE_SEQUENCE_MEAN, &phase, grid_for(router, params->num_tokens));
    compute_to_compute(router);
    if (by_sequence) {
        uint32_t sequences = div_ceil_u32(params->num_tokens, params->mode_param);
        uint32_t longest =
            params->mode_param < params->num_tokens ? params->mode_param : params->num_tokens;
        uint32_t chunks = div_ceil_u32(longest, TOKEN_CHUNK);
        for (uint32_t c = 0; c < chunks; ++c) {
            if (c > 0) compute_to_compute(router);
            phase.phase = 1 + c;
            run_stage(router, STAGE_SEQUENCE_MEAN, &phase,
                      grid_for(router, (uint64_t)sequences * params->num_experts));
        }
    } else {
        record_sinkhorn(router, params);
    }
    compute_to_compute(router);
}

void record_route(moevk_router *router, const route_params *params, int with_dispatch) {
    const struct VolkDeviceTable *vk = &router->context->vk;
    VkCommandBuffer cmd = router->recording;
    vk->vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE,
                                router->context->pipeline_layout, 0, 1, &router->bound_set, 0,
                                NULL);
    reset_timestamps(router, TIMESTAMP_ROUTE_START, TIMESTAMP_ROUTE_END + 1);
    timestamp(router, TIMESTAMP_ROUTE_START);
    /* Rows nobody fills gather from token -1 (zeros); counts start at zero. */
    vk->vkCmdFillBuffer(cmd, router->buffers[BINDING_ROW_TOKEN].buffer, 0, VK_WHOLE_SIZE,
                        0xFFFFFFFFu);
    vk->vkCmdFillBuffer(cmd, router->buffers[BINDING_EXPERT_INFO].buffer, 0, VK_WHOLE_SIZE, 0);
    record_barrier(router, TRANSFER, VK_ACCESS_TRANSFER_WRITE_BIT, COMPUTE, SHADER_RW);

    if (params->num_tokens > 0) {
        if (params->flags & FLAG_NOISE_STD_LEARNED) {
            run_stage(router, STAGE_NOISE_STD, params,
                      grid_for(router, (uint64_t)params->num_tokens * params->num_experts));
            compute_to_compute(router);
        }
        record_decisions(router, params);
        run_stage(router, STAGE_SCORES_TOPK, params, grid_for(router, params->num_tokens));
        compute_to_compute(router);
        timestamp(router, TIMESTAMP_AFTER_TOPK);
        if (params->flags & FLAG_EXPERT_CHOICE) {
            route_params phase = *params;
            phase.phase = 0;
            run_stage(router, STAGE_EXPERT_CHOICE, &phase, params->num_experts);
            compute_to_compute(router);
            phase.phase = 1;
            run_stage(router, STAGE_EXPERT_CHOICE, &phase, grid_for(router, params->num_tokens));
            compute_to_compute(router);
        } else {
            run_stage(router, STAGE_BUCKET_COUNT, params, params->num_blocks);
            compute_to_compute(router);
            run_stage(router, STAGE_BUCKET_SCAN, params, params->num_experts);
            compute_to_compute(router);
            run_stage(router, STAGE_BUCKET_ASSIGN, params, params->num_blocks);
            compute_to_compute(router);
        }
        if (params->flags & FLAG_DROP_BY_SCORE) {
            run_stage(router, STAGE_SCORE_SELECT, params, params->num_experts);
            compute_to_compute(router);
        }
    } else {
        timestamp(router, TIMESTAMP_AFTER_TOPK);
    }
    timestamp(router, TIMESTAMP_AFTER_BUCKETING);
    if (with_dispatch) {
        run_rows_stage(router, STAGE_DISPATCH, params, params->dispatched_rows);
    }
    timestamp(router, TIMESTAMP_AFTER_DISPATCH);
    route_params partial = *params;
    partial.phase = 0;
    if (params->stat_blocks > 0) {
        run_stage(router, STAGE_STATS, &partial, params->stat_blocks);
        compute_to_compute(router);
    }
    route_params final = *params;
    final.phase = 1;
    run_stage(router, STAGE_STATS, &final, params->num_experts + STAT_SCALARS);
    timestamp(router, TIMESTAMP_ROUTE_END);
}

void record_combine(moevk_router *router, const route_params *params) {
    const struct VolkDeviceTable *vk = &router->context->vk;
    vk->vkCmdBindDescriptorSets(router->recording, VK_PIPELINE_BIND_POINT_COMPUTE,
                                router->context->pipeline_layout, 0, 1, &router->bound_set, 0,
                                NULL);
    reset_timestamps(router, TIMESTAMP_COMBINE_START, 2);
    timestamp(router, TIMESTAMP_COMBINE_START);
    if (params->num_tokens > 0 && params->hidden_size > 0)
        run_rows_stage(router, STAGE_COMBINE, params, params->num_tokens);
    timestamp(router, TIMESTAMP_COMBINE_END);
}

void record_expert_loss(moevk_router *router, const route_params *params) {
    router->context->vk.vkCmdBindDescriptorSets(router->recording, VK_PIPELINE_BIND_POINT_COMPUTE,
                                                router->context->pipeline_layout, 0, 1,
                                                &router->bound_set, 0, NULL);
    route_params phase = *params;
    phase.phase = 0;
    if (params->stat_blocks > 0) {
        run_stage(router, STAGE_EXPERT_LOSS, &phase, params->stat_blocks);
        compute_to_compute(router);
    }
    phase.phase = 1;
    run_stage(router, STAGE_EXPERT_LOSS, &phase, params->num_experts);
}

void record_losses(moevk_router *router, const route_params *params, const loss_phases *phases) {
    const struct VolkDeviceTable *vk = &router->context->vk;
    vk->vkCmdBindDescriptorSets(router->recording, VK_PIPELINE_BIND_POINT_COMPUTE,
                                router->context->pipeline_layout, 0, 1, &router->bound_set, 0,
                                NULL);
    if (params->num_tokens == 0) return;
    uint32_t sequences = params->num_tokens / params->loss.sequence_length;
    uint32_t sequence_groups = sequences < MAX_GROUPS_X ? sequences : MAX_GROUPS_X;
    /* Each phase that runs, with its grid and how many dispatches (the noise's reduction walks
     * TOKEN_CHUNK tokens in each); a barrier between any two. */
    const struct {
        int runs;
        uint32_t phase, groups, dispatches;
    } plan[] = {
        {phases->thresholds, LOSS_PHASE_THRESHOLDS, grid_for(router, params->num_tokens), 1},
        {1, LOSS_PHASE_PARTIALS, params->stat_blocks, 1},
        {1, LOSS_PHASE_COLUMNS, 2 * params->num_experts, 1},
        {phases->cv2_slopes, LOSS_PHASE_CV2_SLOPES, 1, 1},
        {phases->sequences, LOSS_PHASE_SEQUENCES, sequence_groups, 1},
        {phases->sequences, LOSS_PHASE_SEQUENCE_TOKENS, grid_for(router, params->num_tokens), 1},
        {phases->sequences, LOSS_PHASE_SEQUENCE_TOTALS, sequence_groups, 1},
        {phases->weights_backward, LOSS_PHASE_WEIGHTS_BACKWARD,
         grid_for(router, (uint64_t)params->num_tokens * params->top_k), 1},
        {phases->logits_backward, LOSS_PHASE_LOGITS_BACKWARD, grid_for(router, params->num_tokens),
         1},
        {phases->noise_slope, LOSS_PHASE_NOISE_SLOPE,
         grid_for(router, (uint64_t)params->num_tokens * params->num_experts), 1},
        {phases->noise_reduce, LOSS_PHASE_NOISE_REDUCE,
         grid_for(router, (uint64_t)params->hidden_size * params->num_experts),
         div_ceil_u32(params->num_tokens, TOKEN_CHUNK)},
    };
    route_params phase = *params;
    int first = 1;
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; ++i) {
        if (!plan[i].runs) continue;
        for (uint32_t c = 0; c < plan[i].dispatches; ++c) {
            if (!first) compute_to_compute(router);
            first = 0;
            phase.phase = plan[i].phase;
            phase.loss.token_chunk = c;
            run_stage(router, STAGE_LOSSES, &phase, plan[i].groups);
        }
    }
}
