/* Combine (shaders/combine.comp): each token's kept rows of expert output summed with its
 * weights, in choice order. Not part of the route: moevk_combine* and moevk_record_combine
 * record it (record_combine). */
#include "stage.h"

#include "combine.h"
#include "combine.spv.h"
#include "combine_addresses.spv.h"

DEFINE_STAGE_PARAMS(combine_params, COMBINE_PARAMS)

static const stage_kernel COMBINE_KERNEL = {
    .name = "combine",
    .shaders = {[VARIANT_PLAIN] = SPIRV(combine), [VARIANT_ADDRESSES] = SPIRV(combine_addresses)},
    KERNEL_INTERFACE(COMBINE_BUFFERS, combine_params)};

static int needed(const moevk_router *router) { return router->info.hidden_size > 0; }

/* Rows move hidden states: the element type is theirs. */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->dtype = router->info.hidden_type;
}

void record_combine(moevk_router *router, const route_plan *plan) {
    record_reset_timestamps(router, TIMESTAMP_COMBINE_START, 2);
    record_timestamp(router, TIMESTAMP_COMBINE_START);
    if (plan->num_tokens > 0 && plan->hidden_size > 0) {
        combine_params params = combine_params_from(plan);
        record_rows_kernel(router, STAGE_COMBINE, &params, plan->hidden_size, plan->num_tokens);
    }
    record_timestamp(router, TIMESTAMP_COMBINE_END);
}

const stage_module combine_stage = {.name = "combine",
                                    .kernels = {&COMBINE_KERNEL},
                                    .kernel_count = 1,
                                    .needed = needed,
                                    .constants = constants,
                                    .after = TIMESTAMP_COUNT};
