/* Routing statistics (shaders/stats.comp): per-block partial sums, then each total over the
 * blocks in a fixed order. */
#include "stage.h"

#include "stats.h"
#include "stats.spv.h"
#include "stats_addresses.spv.h"

DEFINE_STAGE_PARAMS(stats_params, STATS_PARAMS)

static const stage_kernel STATS_KERNEL = {
    .name = "stats",
    .shaders = {[VARIANT_PLAIN] = SPIRV(stats), [VARIANT_ADDRESSES] = SPIRV(stats_addresses)},
    KERNEL_INTERFACE(STATS_BUFFERS, stats_params)};

/* Every route ends with its statistics, T = 0 included (the totals are then zero). */
static int runs(const route_call *call) { return call != NULL; }

static void record(moevk_router *router, const route_plan *plan) {
    stats_params params = stats_params_from(plan);
    record_blocks_then_totals(router, STAGE_STATS, &params, &params.phase, plan->stat_blocks,
                              plan->num_experts + STAT_SCALARS);
}

static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    uint64_t row = router->info.num_experts + STAT_SCALARS;
    raise_size(&sizes[BINDING_STAT_PARTIALS], router_max_stat_blocks(&router->info) * row * 4);
    raise_size(&sizes[BINDING_STAT_TOTALS], row * 4);
}

const stage_module stats_stage = {.name = "stats",
                                  .kernels = {&STATS_KERNEL},
                                  .kernel_count = 1,
                                  .size_buffers = size_buffers,
                                  .runs = runs,
                                  .record = record,
                                  .after = TIMESTAMP_ROUTE_END};
