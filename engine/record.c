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

void record_route(moevk_router *router, const route_plan *plan, int with_dispatch) {
    const struct VolkDeviceTable *vk = &router->context->vk;
    VkCommandBuffer cmd = router->recording;
    record_reset_timestamps(router, TIMESTAMP_ROUTE_START, TIMESTAMP_ROUTE_END + 1);
    record_timestamp(router, TIMESTAMP_ROUTE_START);
    /* Rows nobody fills gather from token -1 (zeros); counts start at zero. */
    vk->vkCmdFillBuffer(cmd, router->buffers[BINDING_ROW_TOKEN].buffer, 0, VK_WHOLE_SIZE,
                        0xFFFFFFFFu);
    vk->vkCmdFillBuffer(cmd, router->buffers[BINDING_EXPERT_INFO].buffer, 0, VK_WHOLE_SIZE, 0);
    record_barrier(router, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, COMPUTE,
                   SHADER_RW);
    route_call call = {plan, with_dispatch};
    for (int s = 0; s < STAGE_COUNT; ++s) {
        const stage_module *module = STAGE_MODULES[s];
        if (!module->runs) continue;
        if (module->runs(&call)) module->record(router, plan);
        if (module->after != TIMESTAMP_COUNT) record_timestamp(router, module->after);
    }
}
