/* Recording helpers every stage module uses: barriers, dispatches of a stage's pipeline with
 * its push constants, grids within the device's limits, and profiling timestamps. */
#include "stage.h"

#define COMPUTE VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT
#define SHADER_RW (VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT)

void record_barrier(moevk_router *router, VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                    VkPipelineStageFlags dst_stage, VkAccessFlags dst_access) {
    ++router->recorded_barriers;
    VkMemoryBarrier barrier = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                               .srcAccessMask = src_access,
                               .dstAccessMask = dst_access};
    router->context->vk.vkCmdPipelineBarrier(router->recording, src_stage, dst_stage, 0, 1,
                                             &barrier, 0, NULL, 0, NULL);
}

void record_compute_barrier(moevk_router *router) {
    record_barrier(router, COMPUTE, VK_ACCESS_SHADER_WRITE_BIT, COMPUTE, SHADER_RW);
}

void record_indirect_barrier(moevk_router *router) {
    record_barrier(router, COMPUTE, VK_ACCESS_SHADER_WRITE_BIT,
                   COMPUTE | VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT,
                   SHADER_RW | VK_ACCESS_INDIRECT_COMMAND_READ_BIT);
}

static void bind_kernel(moevk_router *router, stage_id stage, uint32_t kernel, const void *params) {
    const struct VolkDeviceTable *vk = &router->context->vk;
    const kernel_state *state = &router->kernels[stage][kernel];
    VkCommandBuffer cmd = router->recording;
    int which = (int)stage * MAX_STAGE_KERNELS + (int)kernel;
    if (router->bound_kernel != which) {
        VkDescriptorSet set = router->recording_external ? state->external_set : state->own_set;
        vk->vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, state->pipeline);
        vk->vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, state->layout, 0, 1, &set,
                                    0, NULL);
        router->bound_kernel = which;
    }
    uint32_t size = STAGE_MODULES[stage]->kernels[kernel]->params_size;
    if (size > 0)
        vk->vkCmdPushConstants(cmd, state->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, size, params);
}

void record_kernel_2d(moevk_router *router, stage_id stage, uint32_t kernel, const void *params,
                      uint32_t groups_x, uint32_t groups_y) {
    bind_kernel(router, stage, kernel, params);
    ++router->recorded_dispatches;
    router->context->vk.vkCmdDispatch(router->recording, groups_x, groups_y, 1);
}

void record_kernel_indirect(moevk_router *router, stage_id stage, uint32_t kernel,
                            const void *params, VkBuffer arguments, VkDeviceSize offset) {
    bind_kernel(router, stage, kernel, params);
    ++router->recorded_dispatches;
    router->context->vk.vkCmdDispatchIndirect(router->recording, arguments, offset);
}

/* About this many workgroups fill any GPU we know of; more only adds launch work, since every
 * invocation loops over rows. */
#define ROW_STAGE_WORKGROUPS 8192u

void record_rows_kernel(moevk_router *router, stage_id stage, const void *params,
                        uint32_t hidden_size, uint64_t rows) {
    const VkPhysicalDeviceLimits *limits = &router->context->limits;
    uint64_t row_bytes = (uint64_t)hidden_size * dtype_bytes(router->info.hidden_type);
    uint64_t unit = row_bytes % 16 == 0 ? 16 : 4;
    uint64_t x = (row_bytes / unit + WORKGROUP_SIZE - 1) / WORKGROUP_SIZE;
    uint64_t y = rows;
    if (x > 64) x = 64;
    if (x < 1) x = 1;
    if (y > ROW_STAGE_WORKGROUPS / x) y = ROW_STAGE_WORKGROUPS / x;
    if (y > limits->maxComputeWorkGroupCount[1]) y = limits->maxComputeWorkGroupCount[1];
    if (y > 65535) y = 65535;
    if (y < 1) y = 1;
    record_kernel_2d(router, stage, 0, params, (uint32_t)x, (uint32_t)y);
}

uint32_t grid_for(const moevk_router *router, uint64_t items) {
    uint64_t groups = (items + WORKGROUP_SIZE - 1) / WORKGROUP_SIZE;
    uint64_t limit = router->context->limits.maxComputeWorkGroupCount[0];
    if (limit > 65535) limit = 65535;
    if (groups > limit) groups = limit;
    return groups ? (uint32_t)groups : 1;
}

uint32_t groups_for(uint64_t count) {
    if (count > MAX_GROUPS_X) count = MAX_GROUPS_X;
    return count ? (uint32_t)count : 1;
}

void record_blocks_then_totals(moevk_router *router, stage_id stage, void *params, uint32_t *phase,
                               uint32_t stat_blocks, uint32_t totals) {
    *phase = 0;
    if (stat_blocks > 0) {
        record_kernel(router, stage, 0, params, stat_blocks);
        record_compute_barrier(router);
    }
    *phase = 1;
    record_kernel(router, stage, 0, params, totals);
}

void record_timestamp(moevk_router *router, enum timestamp_point point) {
    if (!router->timestamps) return;
    router->context->vk.vkCmdWriteTimestamp(router->recording, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT,
                                            router->timestamps, point);
}

void record_reset_timestamps(moevk_router *router, uint32_t first, uint32_t count) {
    if (!router->timestamps) return;
    router->context->vk.vkCmdResetQueryPool(router->recording, router->timestamps, first, count);
}
