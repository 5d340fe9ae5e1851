/* The router projection (shaders/router_projection.comp): a route given W_router instead of
 * logits computes them on the device from its hidden states, logits = hidden . W_router^T, before
 * every other stage, a dispatch per TOKEN_CHUNK tokens. */
#include "stage.h"

#include "router_projection.h"
#include "router_projection.spv.h"
#include "router_projection_addresses.spv.h"

DEFINE_STAGE_PARAMS(router_projection_params, ROUTER_PROJECTION_PARAMS)

static const stage_kernel ROUTER_PROJECTION_KERNEL = {
    .name = "router_projection",
    .shaders = {[VARIANT_PLAIN] = SPIRV(router_projection),
                [VARIANT_ADDRESSES] = SPIRV(router_projection_addresses)},
    KERNEL_INTERFACE(ROUTER_PROJECTION_BUFFERS, router_projection_params)};

static int needed(const moevk_router *router) { return router->info.router_projection; }

/* The hidden states are read in their own type. */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->hidden_dtype = router->info.hidden_type;
}

static int runs(const route_call *call) {
    return call->plan->num_tokens > 0 && (call->plan->flags & FLAG_PROJECT_LOGITS);
}

static void record(moevk_router *router, const route_plan *plan) {
    router_projection_params params = router_projection_params_from(plan);
    uint32_t chunks = div_ceil_u32(plan->num_tokens, TOKEN_CHUNK);
    for (uint32_t c = 0; c < chunks; ++c) {
        params.token_chunk = c;
        uint32_t tokens = plan->num_tokens - c * TOKEN_CHUNK;
        record_kernel_2d(router, STAGE_ROUTER_PROJECTION, 0, &params,
                         div_ceil_u32(plan->num_experts, WORKGROUP_SIZE),
                         tokens < TOKEN_CHUNK ? tokens : TOKEN_CHUNK);
    }
    record_compute_barrier(router);
}

/* W_router [E, d]. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (info->router_projection)
        raise_size(&sizes[BINDING_ROUTER_WEIGHTS],
                   (uint64_t)info->hidden_size * info->num_experts * 4);
}

const stage_module router_projection_stage = {.name = "router projection",
                                              .kernels = {&ROUTER_PROJECTION_KERNEL},
                                              .kernel_count = 1,
                                              .size_buffers = size_buffers,
                                              .needed = needed,
                                              .constants = constants,
                                              .runs = runs,
                                              .record = record,
                                              .after = TIMESTAMP_COUNT};
