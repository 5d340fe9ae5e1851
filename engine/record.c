/* The stage table (stage_table.h) as modules, and the route: the table's route stages in order,
 * each recorded when the call runs it, around them the fills the stages start from and the
 * profiling timestamps. */
#include "stage.h"

#define COMPUTE VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT
#define SHADER_RW (VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT)

const stage_module *const STAGE_MODULES[STAGE_COUNT] = {
#define STAGE_MODULE_(id, name) [STAGE_##id] = &name##_stage,
    MOEVK_STAGE_TABLE(STAGE_MODULE_)
#undef STAGE_MODULE_
};

/* The stages that decide the slots: the front end of moevk_recording_counts. */
static int in_front_end(stage_id stage) {
    return stage == STAGE_SCORES_TOPK || stage == STAGE_EXPERT_CHOICE || stage == STAGE_SINKHORN ||
           stage == STAGE_BUCKET || stage == STAGE_SCORE_SELECT;
}

void record_route(moevk_router *router, const route_plan *plan, int with_dispatch) {
    const struct VolkDeviceTable *vk = &router->context->vk;
    VkCommandBuffer cmd = router->recording;
    uint32_t dispatches = router->recorded_dispatches, barriers = router->recorded_barriers;
    moevk_recording_counts counts;
    moevk_recording_counts_init(&counts);
    record_reset_timestamps(router, TIMESTAMP_ROUTE_START, TIMESTAMP_ROUTE_END + 1);
    /* moevk uploads its own recordings' noise state before each submission; an application's
     * command buffer carries its route's. */
    if (router->recording_external) {
        uint32_t noise_state[NOISE_STATE_WORDS];
        noise_state_words(plan, noise_state);
        vk->vkCmdUpdateBuffer(cmd, router->buffers[BINDING_NOISE_STATE].buffer, 0,
                              sizeof noise_state, noise_state);
    }
    record_timestamp(router, TIMESTAMP_ROUTE_START);
    /* Rows nobody fills gather from token -1 (zeros); counts start at zero. */
    vk->vkCmdFillBuffer(cmd, router->buffers[BINDING_ROW_TOKEN].buffer, 0, VK_WHOLE_SIZE,
                        0xFFFFFFFFu);
    vk->vkCmdFillBuffer(cmd, router->buffers[BINDING_EXPERT_INFO].buffer, 0, VK_WHOLE_SIZE, 0);
    /* The fused front end's per-block counts, which scores and top-k add to. */
    if (plan->flags & FLAG_FUSED_FRONT_END)
        vk->vkCmdFillBuffer(cmd, router->buffers[BINDING_BLOCK_COUNTS].buffer, 0,
                            (VkDeviceSize)plan->num_blocks * plan->num_experts * 4, 0);
    record_barrier(router, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, COMPUTE,
                   SHADER_RW);
    counts.front_end_barriers = 1;
    route_call call = {plan, with_dispatch};
    for (int s = 0; s < STAGE_COUNT; ++s) {
        const stage_module *module = STAGE_MODULES[s];
        if (!module->runs) continue;
        uint32_t stage_dispatches = router->recorded_dispatches;
        uint32_t stage_barriers = router->recorded_barriers;
        if (module->runs(&call)) module->record(router, plan);
        if (module->after != TIMESTAMP_COUNT) record_timestamp(router, module->after);
        if (in_front_end((stage_id)s)) {
            counts.front_end_dispatches += router->recorded_dispatches - stage_dispatches;
            counts.front_end_barriers += router->recorded_barriers - stage_barriers;
        }
    }
    counts.route_dispatches = router->recorded_dispatches - dispatches;
    counts.route_barriers = router->recorded_barriers - barriers;
    router->route_counts = counts;
    router->route_counted = 1;
}

moevk_result moevk_router_recording_counts(const moevk_router *router,
                                           moevk_recording_counts *counts) {
    if (!router) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = router->context;
    if (!counts)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "counts must not be NULL");
    if (!router->route_counted)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                            "no route was recorded yet (moevk_route, moevk_route_record)");
    SIZED_WRITE(moevk_recording_counts, counts, &router->route_counts);
    return MOEVK_SUCCESS;
}
