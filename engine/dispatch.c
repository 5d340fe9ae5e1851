/* Dispatch (shaders/dispatch.comp): the kept tokens' hidden states gathered into the experts'
 * rows. Nothing after it in the route reads them, so no barrier follows. */
#include "stage.h"

#include "dispatch.h"
#include "dispatch.spv.h"
#include "dispatch_addresses.spv.h"

DEFINE_STAGE_PARAMS(dispatch_params, DISPATCH_PARAMS)

static const stage_kernel DISPATCH_KERNEL = {
    .name = "dispatch",
    .shaders = {[VARIANT_PLAIN] = SPIRV(dispatch), [VARIANT_ADDRESSES] = SPIRV(dispatch_addresses)},
    KERNEL_INTERFACE(DISPATCH_BUFFERS, dispatch_params)};

static int needed(const moevk_router *router) { return router->info.hidden_size > 0; }

/* Rows move hidden states: the element type is theirs. */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->dtype = router->info.hidden_type;
}

static int runs(const route_call *call) { return call->with_dispatch; }

static void record(moevk_router *router, const route_plan *plan) {
    dispatch_params params = dispatch_params_from(plan);
    record_rows_kernel(router, STAGE_DISPATCH, &params, plan->hidden_size, plan->dispatched_rows);
}

const stage_module dispatch_stage = {.name = "dispatch",
                                     .kernels = {&DISPATCH_KERNEL},
                                     .kernel_count = 1,
                                     .needed = needed,
                                     .constants = constants,
                                     .runs = runs,
                                     .record = record,
                                     .after = TIMESTAMP_AFTER_DISPATCH};
