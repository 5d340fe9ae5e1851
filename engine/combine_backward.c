/* The layer's combine and dispatch, backward (shaders/grad_combine.comp, grad_hidden.comp):
 * each kept row's share of dL/doutput and dL/dweights, then dL/dx summed over each token's kept
 * choices in order. Not part of the route: moevk_layer_backward records it
 * (record_combine_backward, record_dispatch_backward). */
#include "stage.h"

#include "combine_backward.h"
#include "grad_combine.spv.h"
#include "grad_hidden.spv.h"

DEFINE_STAGE_PARAMS(grad_combine_params, GRAD_COMBINE_PARAMS)
DEFINE_STAGE_PARAMS(grad_hidden_params, GRAD_HIDDEN_PARAMS)

static const stage_kernel GRAD_COMBINE_KERNEL = {
    .name = "grad_combine",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_combine)},
    KERNEL_INTERFACE(GRAD_COMBINE_BUFFERS, grad_combine_params)};
static const stage_kernel GRAD_HIDDEN_KERNEL = {
    .name = "grad_hidden",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_hidden)},
    KERNEL_INTERFACE(GRAD_HIDDEN_BUFFERS, grad_hidden_params)};

static int needed(const moevk_router *router) { return router->layer.trainable; }

/* grad_combine's tree sums over exactly 64 invocations. */
static void constants(const moevk_router *router, stage_constants *constants) {
    (void)router;
    constants->workgroup_size = WORKGROUP_SIZE;
}

void record_combine_backward(moevk_router *router, const route_plan *plan) {
    uint64_t choices = (uint64_t)plan->num_tokens * plan->choices;
    if (choices == 0) return;
    grad_combine_params params = grad_combine_params_from(plan);
    record_kernel(router, STAGE_COMBINE_BACKWARD, 0, &params, groups_for(choices));
    record_compute_barrier(router);
}

void record_dispatch_backward(moevk_router *router, const route_plan *plan) {
    uint64_t elements = (uint64_t)plan->num_tokens * plan->hidden_size;
    if (elements == 0) return;
    grad_hidden_params params = grad_hidden_params_from(plan);
    record_kernel(router, STAGE_COMBINE_BACKWARD, 1, &params, grid_for(router, elements));
    record_compute_barrier(router);
}

/* dL/doutput and dL/dx [T, d], the rows' shares [rows, d], dL/dweights [T, k]. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    if (!router->layer.trainable) return;
    uint64_t T = router->info.max_tokens, d = router->info.hidden_size;
    uint64_t rows = router->max_dispatched_rows, k = router_choices(&router->info);
    raise_size(&sizes[BINDING_GRAD_OUTPUT], T * d * 4);
    raise_size(&sizes[BINDING_GRAD_HIDDEN], T * d * 4);
    raise_size(&sizes[BINDING_GRAD_EXPERT_OUT], rows * d * 4);
    raise_size(&sizes[BINDING_GRAD_ROWS], rows * d * 4);
    raise_size(&sizes[BINDING_GRAD_WEIGHTS], T * k * 4);
}

const stage_module combine_backward_stage = {.name = "combine backward",
                                             .kernels = {&GRAD_COMBINE_KERNEL, &GRAD_HIDDEN_KERNEL},
                                             .kernel_count = 2,
                                             .size_buffers = size_buffers,
                                             .needed = needed,
                                             .constants = constants,
                                             .after = TIMESTAMP_COUNT};
