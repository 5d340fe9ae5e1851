/* The Sinkhorn iteration (shaders/sinkhorn.comp): its setup, then mode_param iterations of rows,
 * columns and the check, dispatched indirectly from arguments that the setup and each check
 * write (zero workgroups once the factors have converged). */
#include "stage.h"

#include "sinkhorn.h"
#include "sinkhorn.spv.h"
#include "sinkhorn_addresses.spv.h"

DEFINE_STAGE_PARAMS(sinkhorn_params, SINKHORN_PARAMS)

static const stage_kernel SINKHORN_KERNEL = {
    .name = "sinkhorn",
    .shaders = {[VARIANT_PLAIN] = SPIRV(sinkhorn), [VARIANT_ADDRESSES] = SPIRV(sinkhorn_addresses)},
    KERNEL_INTERFACE(SINKHORN_BUFFERS, sinkhorn_params)};

static int needed(const moevk_router *router) { return router->info.mode == MOEVK_MODE_SINKHORN; }

static int runs(const route_call *call) {
    return call->plan->num_tokens > 0 && (call->plan->flags & FLAG_SINKHORN);
}

static void record(moevk_router *router, const route_plan *plan) {
    uint64_t blocks = div_ceil_u32(plan->num_tokens, SINKHORN_BLOCK_ROWS);
    const struct {
        uint32_t phase, groups;
    } setup[] = {{SINKHORN_PHASE_SETUP_ROWS, groups_for(blocks)},
                 {SINKHORN_PHASE_SETUP_COLUMNS, groups_for(plan->num_experts)},
                 {SINKHORN_PHASE_SETUP_TOTALS, 1}};
    const uint32_t iteration[SINKHORN_ITERATION_PHASES] = {
        SINKHORN_PHASE_ROWS, SINKHORN_PHASE_COLUMNS, SINKHORN_PHASE_CHECK};
    sinkhorn_params params = sinkhorn_params_from(plan);
    for (size_t i = 0; i < sizeof setup / sizeof setup[0]; ++i) {
        params.phase = setup[i].phase;
        record_kernel(router, STAGE_SINKHORN, 0, &params, setup[i].groups);
        record_indirect_barrier(router);
    }
    VkBuffer arguments = router->buffers[BINDING_DECISIONS].buffer;
    for (uint32_t n = 0; n < plan->mode_param; ++n) {
        for (uint32_t i = 0; i < SINKHORN_ITERATION_PHASES; ++i) {
            params.phase = iteration[i];
            record_kernel_indirect(router, STAGE_SINKHORN, 0, &params, arguments,
                                   (DECISION_ARGS + 3 * i) * sizeof(uint32_t));
            if (n + 1 < plan->mode_param || i + 1 < SINKHORN_ITERATION_PHASES)
                record_indirect_barrier(router);
        }
    }
    record_compute_barrier(router);
}

/* The factors and the blocks' sums after the decisions' header. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (info->mode != MOEVK_MODE_SINKHORN) return;
    uint64_t T = info->max_tokens, E = info->num_experts;
    uint64_t blocks = (T + SINKHORN_BLOCK_ROWS - 1) / SINKHORN_BLOCK_ROWS;
    raise_size(&sizes[BINDING_DECISIONS],
               (DECISION_HEADER + SINKHORN_SCRATCH_FLOATS(T, E, blocks)) * 4);
}

const stage_module sinkhorn_stage = {.name = "sinkhorn",
                                     .kernels = {&SINKHORN_KERNEL},
                                     .kernel_count = 1,
                                     .size_buffers = size_buffers,
                                     .needed = needed,
                                     .runs = runs,
                                     .record = record,
                                     .after = TIMESTAMP_COUNT};
