/* The Sinkhorn iteration (shaders/sinkhorn.comp): its setup, then mode_param iterations of rows,
 * columns and the check, dispatched indirectly from arguments that the setup and each check
 * write (zero workgroups once the factors have converged). */
#include "recording.h"

void record_sinkhorn(moevk_router *router, const route_params *params) {
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
        record_stage(router, STAGE_SINKHORN, &phase, setup[i].groups);
        record_indirect_barrier(router);
    }
    VkBuffer arguments = router->buffers[BINDING_DECISIONS].buffer;
    for (uint32_t n = 0; n < params->mode_param; ++n) {
        for (uint32_t i = 0; i < SINKHORN_ITERATION_PHASES; ++i) {
            phase.phase = iteration[i];
            record_push(router, &phase);
            vk->vkCmdDispatchIndirect(router->recording, arguments,
                                      (DECISION_ARGS + 3 * i) * sizeof(uint32_t));
            if (n + 1 < params->mode_param || i + 1 < SINKHORN_ITERATION_PHASES)
                record_indirect_barrier(router);
        }
    }
    record_compute_barrier(router);
}
