/* The router projection, backward (shaders/grad_router.comp): from the router's backward's
 * dL/dlogits, dL/dW_g added into its gradient buffer and the projection's share added to
 * dL/dx. Not part of the route: moevk_layer_backward records it (record_router_backward). */
#include "stage.h"

#include "grad_router.spv.h"
#include "router_backward.h"

DEFINE_STAGE_PARAMS(grad_router_params, GRAD_ROUTER_PARAMS)

static const stage_kernel GRAD_ROUTER_KERNEL = {
    .name = "grad_router",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_router)},
    KERNEL_INTERFACE(GRAD_ROUTER_BUFFERS, grad_router_params)};

static int needed(const moevk_router *router) { return router->layer.trainable; }

/* Tiles of FFN_WORKGROUP_SIZE invocations; every operand f32. */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->workgroup_size = FFN_WORKGROUP_SIZE;
    constants->dtype = MOEVK_DTYPE_F32;
    constants->hidden_dtype = router->info.hidden_type;
}

void record_router_backward(moevk_router *router, const route_plan *plan) {
    if (plan->num_tokens == 0) return;
    route_plan both = *plan;
    uint32_t columns = div_ceil_u32(plan->hidden_size, TILE_COLUMNS);
    both.grad_matrix = GRAD_MATRIX_ROUTER;
    grad_router_params weights = grad_router_params_from(&both);
    record_kernel_2d(router, STAGE_ROUTER_BACKWARD, 0, &weights, columns,
                     div_ceil_u32(plan->num_experts, TILE_ROWS));
    both.grad_matrix = GRAD_MATRIX_ROUTER_HIDDEN;
    grad_router_params hidden = grad_router_params_from(&both);
    record_kernel_2d(router, STAGE_ROUTER_BACKWARD, 0, &hidden, columns,
                     div_ceil_u32(plan->num_tokens, TILE_ROWS));
    record_compute_barrier(router);
}

/* dL/dW_g [E, d] f32. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    if (!router->layer.trainable) return;
    raise_size(&sizes[BINDING_GRAD_ROUTER],
               (uint64_t)router->info.num_experts * router->info.hidden_size * 4);
}

const stage_module router_backward_stage = {.name = "router backward",
                                            .kernels = {&GRAD_ROUTER_KERNEL},
                                            .kernel_count = 1,
                                            .size_buffers = size_buffers,
                                            .needed = needed,
                                            .constants = constants,
                                            .after = TIMESTAMP_COUNT};
