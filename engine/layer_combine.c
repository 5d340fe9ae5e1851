/* The layer's combine (shaders/layer_combine.comp): each token's kept rows of the experts' f32
 * outputs summed with their weights, plus the shared experts' output, stored in hidden_type.
 * Not part of the route: the layer's forward records it (record_layer_combine). */
#include "stage.h"

#include "layer_combine.h"
#include "layer_combine.spv.h"

DEFINE_STAGE_PARAMS(layer_combine_params, LAYER_COMBINE_PARAMS)

static const stage_kernel LAYER_COMBINE_KERNEL = {
    .name = "layer_combine",
    .shaders = {[VARIANT_PLAIN] = SPIRV(layer_combine)},
    KERNEL_INTERFACE(LAYER_COMBINE_BUFFERS, layer_combine_params)};

static int needed(const moevk_router *router) { return router->layer.active; }

/* The output is stored in the hidden states' type. */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->dtype = router->info.hidden_type;
}

void record_layer_combine(moevk_router *router, const route_plan *plan) {
    uint64_t elements = (uint64_t)plan->num_tokens * plan->hidden_size;
    if (elements == 0) return;
    uint64_t words = router->info.hidden_type == MOEVK_DTYPE_F32 ? elements : (elements + 1) / 2;
    layer_combine_params params = layer_combine_params_from(plan);
    record_kernel(router, STAGE_LAYER_COMBINE, 0, &params, grid_for(router, words));
}

const stage_module layer_combine_stage = {.name = "layer combine",
                                          .kernels = {&LAYER_COMBINE_KERNEL},
                                          .kernel_count = 1,
                                          .needed = needed,
                                          .constants = constants,
                                          .after = TIMESTAMP_COUNT};
