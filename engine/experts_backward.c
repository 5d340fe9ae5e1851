/* The layer's routed experts, backward (shaders/grad_expert_*.comp), over the tile map of the
 * forward's rows (expert_tiles.comp, made again in 64-row tiles): dL/dh through down and the
 * activation's slopes at the pre-activations the trainable layer's forward kept (expert_up.comp,
 * FLAG_KEEP_PRE), dL/d(dispatched rows) through up and gate, and the weights' and biases'
 * gradients added into their buffers, each a product over the expert's rows in a fixed order. Not
 * part of the route: moevk_layer_backward records it (record_experts_backward). */
#include "stage.h"

#include "experts.h"
#include "experts_backward.h"
#include "grad_expert_bias.spv.h"
#include "grad_expert_down.spv.h"
#include "grad_expert_input.spv.h"
#include "grad_expert_weights.spv.h"

DEFINE_STAGE_PARAMS(grad_expert_down_params, GRAD_EXPERT_DOWN_PARAMS)
DEFINE_STAGE_PARAMS(grad_expert_input_params, GRAD_EXPERT_INPUT_PARAMS)
DEFINE_STAGE_PARAMS(grad_expert_weights_params, GRAD_EXPERT_WEIGHTS_PARAMS)
DEFINE_STAGE_PARAMS(grad_expert_bias_params, GRAD_EXPERT_BIAS_PARAMS)
DEFINE_STAGE_PARAMS(expert_tiles_params, EXPERT_TILES_PARAMS)

enum { DOWN, INPUT, WEIGHTS, BIAS };

static const stage_kernel GRAD_EXPERT_DOWN_KERNEL = {
    .name = "grad_expert_down",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_expert_down)},
    KERNEL_INTERFACE(GRAD_EXPERT_DOWN_BUFFERS, grad_expert_down_params),
    .reads_down_weights = 1};
static const stage_kernel GRAD_EXPERT_INPUT_KERNEL = {
    .name = "grad_expert_input",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_expert_input)},
    KERNEL_INTERFACE(GRAD_EXPERT_INPUT_BUFFERS, grad_expert_input_params)};
static const stage_kernel GRAD_EXPERT_WEIGHTS_KERNEL = {
    .name = "grad_expert_weights",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_expert_weights)},
    KERNEL_INTERFACE(GRAD_EXPERT_WEIGHTS_BUFFERS, grad_expert_weights_params)};
static const stage_kernel GRAD_EXPERT_BIAS_KERNEL = {
    .name = "grad_expert_bias",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_expert_bias)},
    KERNEL_INTERFACE(GRAD_EXPERT_BIAS_BUFFERS, grad_expert_bias_params)};

/* An expert-parallel layer's home half has no routed experts to train (layer_parts.c). */
static int needed(const moevk_router *router) {
    return router->layer.trainable && router->layer.parts != PARTS_HOME;
}

/* The products' tiles take FFN_WORKGROUP_SIZE invocations; weights are read in their type. */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->workgroup_size = FFN_WORKGROUP_SIZE;
    constants->dtype = router->layer.weight_type;
    constants->hidden_dtype = router->info.hidden_type;
    constants->activation = router->layer.activation;
}

void record_experts_backward(moevk_router *router, const route_plan *plan) {
    if (plan->num_tokens == 0) return;
    /* The tile map in 64-row tiles (a decode forward made it in MATVEC_ROWS tiles). */
    route_plan tiled = *plan;
    tiled.flags &= ~(uint32_t)FLAG_FFN_MATVEC;
    VkBuffer tiles = router->buffers[BINDING_TILES].buffer;
    expert_tiles_params tile_params = expert_tiles_params_from(&tiled);
    record_kernel(router, STAGE_EXPERTS, 0, &tile_params, 1);
    record_indirect_barrier(router);
    grad_expert_down_params down = grad_expert_down_params_from(&tiled);
    record_kernel_indirect(router, STAGE_EXPERTS_BACKWARD, DOWN, &down, tiles, TILE_ARGS_UP * 4);
    record_compute_barrier(router);
    /* These read what the two above wrote and write apart: no barrier between them. */
    grad_expert_input_params input = grad_expert_input_params_from(&tiled);
    record_kernel_indirect(router, STAGE_EXPERTS_BACKWARD, INPUT, &input, tiles,
                           TILE_ARGS_DOWN * 4);
    uint32_t d = plan->hidden_size, f = plan->intermediate_size, E = plan->num_experts;
    uint32_t row_tiles = div_ceil_u32(d, TILE_ROWS), column_tiles = div_ceil_u32(f, TILE_COLUMNS);
    for (uint32_t matrix = GRAD_MATRIX_DOWN; matrix <= GRAD_MATRIX_GATE_UP; ++matrix) {
        tiled.grad_matrix = matrix;
        grad_expert_weights_params weights = grad_expert_weights_params_from(&tiled);
        record_kernel_2d(router, STAGE_EXPERTS_BACKWARD, WEIGHTS, &weights, column_tiles,
                         row_tiles * E);
    }
    if (plan->flags & FLAG_FFN_BIASES) {
        grad_expert_bias_params bias = grad_expert_bias_params_from(&tiled);
        record_kernel(router, STAGE_EXPERTS_BACKWARD, BIAS, &bias,
                      grid_for(router, (uint64_t)E * (2 * f + d)));
    }
    record_compute_barrier(router);
}

/* The pre-activations and their gradients [2, rows, f], the parameters' gradients (f32, in
 * their weights' layouts). */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const layer_shape *layer = &router->layer;
    if (!needed(router)) return;
    uint64_t E = router->info.num_experts, d = router->info.hidden_size;
    uint64_t f = layer->intermediate_size, rows = router->max_dispatched_rows;
    int swiglu = layer->activation == MOEVK_ACTIVATION_SWIGLU;
    /* The forward's pre-activations (up's, gate's), then their gradients (the same). */
    raise_size(&sizes[BINDING_GRAD_PRE], 4 * rows * f * 4);
    if (swiglu) raise_size(&sizes[BINDING_GRAD_EXPERT_GATE], E * f * d * 4);
    raise_size(&sizes[BINDING_GRAD_EXPERT_UP], E * f * d * 4);
    raise_size(&sizes[BINDING_GRAD_EXPERT_DOWN], E * d * f * 4);
    if (layer->biases) raise_size(&sizes[BINDING_GRAD_EXPERT_BIAS], (2 * E * f + E * d) * 4);
}

const stage_module experts_backward_stage = {
    .name = "experts backward",
    .kernels = {&GRAD_EXPERT_DOWN_KERNEL, &GRAD_EXPERT_INPUT_KERNEL, &GRAD_EXPERT_WEIGHTS_KERNEL,
                &GRAD_EXPERT_BIAS_KERNEL},
    .kernel_count = 4,
    .size_buffers = size_buffers,
    .needed = needed,
    .constants = constants,
    .after = TIMESTAMP_COUNT};
