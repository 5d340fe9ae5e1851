/* The layer's routed experts (shaders/expert_tiles.comp, expert_up.comp, expert_down.comp): the
 * route's kept rows cut into tiles per expert on the device, then each tile's up projection
 * (with the activation) and down projection, dispatched indirectly from the tile map, so that
 * the grid follows the route without a trip to the host. Calls of at most MATVEC_ROWS tokens
 * (decode) run the products' matrix-vector forms, which read each chosen weight once. Not part of
 * the route: the layer's forward records it (record_experts). */
#include "stage.h"

#include "experts.h"
#include "expert_down.spv.h"
#include "expert_down_matvec.spv.h"
#include "expert_tiles.spv.h"
#include "expert_up.spv.h"
#include "expert_up_matvec.spv.h"

DEFINE_STAGE_PARAMS(expert_tiles_params, EXPERT_TILES_PARAMS)
DEFINE_STAGE_PARAMS(expert_up_params, EXPERT_UP_PARAMS)
DEFINE_STAGE_PARAMS(expert_down_params, EXPERT_DOWN_PARAMS)

static const stage_kernel EXPERT_TILES_KERNEL = {
    .name = "expert_tiles",
    .shaders = {[VARIANT_PLAIN] = SPIRV(expert_tiles)},
    KERNEL_INTERFACE(EXPERT_TILES_BUFFERS, expert_tiles_params)};
static const stage_kernel EXPERT_UP_KERNEL = {
    .name = "expert_up",
    .shaders = {[VARIANT_PLAIN] = SPIRV(expert_up)},
    KERNEL_INTERFACE(EXPERT_UP_BUFFERS, expert_up_params)};
static const stage_kernel EXPERT_DOWN_KERNEL = {
    .name = "expert_down",
    .shaders = {[VARIANT_PLAIN] = SPIRV(expert_down)},
    KERNEL_INTERFACE(EXPERT_DOWN_BUFFERS, expert_down_params),
    .reads_down_weights = 1};
/* The decode forms (shaders/ffn_matvec.glsl), for calls of at most MATVEC_ROWS tokens. */
static const stage_kernel EXPERT_UP_MATVEC_KERNEL = {
    .name = "expert_up_matvec",
    .shaders = {[VARIANT_PLAIN] = SPIRV(expert_up_matvec)},
    KERNEL_INTERFACE(EXPERT_UP_BUFFERS, expert_up_params)};
static const stage_kernel EXPERT_DOWN_MATVEC_KERNEL = {
    .name = "expert_down_matvec",
    .shaders = {[VARIANT_PLAIN] = SPIRV(expert_down_matvec)},
    KERNEL_INTERFACE(EXPERT_DOWN_BUFFERS, expert_down_params),
    .reads_down_weights = 1};

/* An expert-parallel layer's home half has no routed experts of its own (layer_parts.c). */
static int needed(const moevk_router *router) {
    return router->layer.active && router->layer.parts != PARTS_HOME;
}

/* The products' tiles take FFN_WORKGROUP_SIZE invocations; weights are read in their type. */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->workgroup_size = FFN_WORKGROUP_SIZE;
    constants->dtype = router->layer.weight_type;
    constants->hidden_dtype = router->info.hidden_type;
    constants->activation = router->layer.activation;
}

void record_experts(moevk_router *router, const route_plan *plan) {
    if (plan->num_tokens == 0) return;
    VkBuffer tiles = router->buffers[BINDING_TILES].buffer;
    expert_tiles_params tile_params = expert_tiles_params_from(plan);
    record_kernel(router, STAGE_EXPERTS, 0, &tile_params, 1);
    record_indirect_barrier(router);
    int matvec = (plan->flags & FLAG_FFN_MATVEC) != 0;
    expert_up_params up = expert_up_params_from(plan);
    record_kernel_indirect(router, STAGE_EXPERTS, matvec ? 3 : 1, &up, tiles, TILE_ARGS_UP * 4);
    record_compute_barrier(router);
    expert_down_params down = expert_down_params_from(plan);
    record_kernel_indirect(router, STAGE_EXPERTS, matvec ? 4 : 2, &down, tiles, TILE_ARGS_DOWN * 4);
    record_compute_barrier(router);
}

uint64_t layer_max_tiles(const moevk_router *router) {
    return router->max_dispatched_rows / TILE_ROWS + router->info.num_experts;
}

/* The weights [E, f, d] and [E, d, f] in the layer's type, the biases, each row's activation
 * [rows, f] f32, the tile map, and the expert outputs [rows, d] as f32. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const layer_shape *layer = &router->layer;
    if (!layer->active) return;
    uint64_t E = router->info.num_experts, d = router->info.hidden_size;
    uint64_t f = layer->intermediate_size, rows = router->max_dispatched_rows;
    /* A home half keeps only the rows its experts' ranks send back, for its combine. */
    if (layer->parts == PARTS_HOME) {
        raise_size(&sizes[BINDING_EXPERT_OUT], rows * d * 4);
        return;
    }
    uint64_t matrix = weight_buffer_bytes(layer->weight_type, E * f * d);
    if (layer->activation == MOEVK_ACTIVATION_SWIGLU)
        raise_size(&sizes[BINDING_EXPERT_GATE], matrix);
    raise_size(&sizes[BINDING_EXPERT_UP], matrix);
    raise_size(&sizes[BINDING_EXPERT_DOWN], weight_buffer_bytes(layer->down_type, E * d * f));
    if (layer->biases) raise_size(&sizes[BINDING_EXPERT_BIAS], (2 * E * f + E * d) * 4);
    raise_size(&sizes[BINDING_INTERMEDIATE], rows * f * 4);
    raise_size(&sizes[BINDING_TILES], (TILE_ENTRIES + 4 * layer_max_tiles(router)) * 4);
    raise_size(&sizes[BINDING_EXPERT_OUT], rows * d * 4);
}

const stage_module experts_stage = {.name = "experts",
                                    .kernels = {&EXPERT_TILES_KERNEL, &EXPERT_UP_KERNEL,
                                                &EXPERT_DOWN_KERNEL, &EXPERT_UP_MATVEC_KERNEL,
                                                &EXPERT_DOWN_MATVEC_KERNEL},
                                    .kernel_count = 5,
                                    .size_buffers = size_buffers,
                                    .needed = needed,
                                    .constants = constants,
                                    .after = TIMESTAMP_COUNT};
