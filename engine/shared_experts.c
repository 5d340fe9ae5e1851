/* The layer's shared experts (shaders/shared_up.comp, shared_down.comp): one dense FFN that
 * every token goes through, its output (gated, Qwen2-MoE) added by the layer's combine. Not
 * part of the route: the layer's forward records it (record_shared_experts). */
#include "stage.h"

#include "shared_down.spv.h"
#include "shared_down_matvec.spv.h"
#include "shared_experts.h"
#include "shared_up.spv.h"
#include "shared_up_matvec.spv.h"

DEFINE_STAGE_PARAMS(shared_up_params, SHARED_UP_PARAMS)
DEFINE_STAGE_PARAMS(shared_down_params, SHARED_DOWN_PARAMS)

static const stage_kernel SHARED_UP_KERNEL = {
    .name = "shared_up",
    .shaders = {[VARIANT_PLAIN] = SPIRV(shared_up)},
    KERNEL_INTERFACE(SHARED_UP_BUFFERS, shared_up_params)};
static const stage_kernel SHARED_DOWN_KERNEL = {
    .name = "shared_down",
    .shaders = {[VARIANT_PLAIN] = SPIRV(shared_down)},
    KERNEL_INTERFACE(SHARED_DOWN_BUFFERS, shared_down_params),
    .reads_down_weights = 1};
/* The decode forms, for calls of at most MATVEC_ROWS tokens. */
static const stage_kernel SHARED_UP_MATVEC_KERNEL = {
    .name = "shared_up_matvec",
    .shaders = {[VARIANT_PLAIN] = SPIRV(shared_up_matvec)},
    KERNEL_INTERFACE(SHARED_UP_BUFFERS, shared_up_params)};
static const stage_kernel SHARED_DOWN_MATVEC_KERNEL = {
    .name = "shared_down_matvec",
    .shaders = {[VARIANT_PLAIN] = SPIRV(shared_down_matvec)},
    KERNEL_INTERFACE(SHARED_DOWN_BUFFERS, shared_down_params),
    .reads_down_weights = 1};

static int needed(const moevk_router *router) {
    return router->layer.active && router->layer.shared_intermediate_size > 0;
}

static void constants(const moevk_router *router, stage_constants *constants) {
    constants->workgroup_size = FFN_WORKGROUP_SIZE;
    constants->dtype = router->layer.weight_type;
    constants->hidden_dtype = router->info.hidden_type;
    constants->activation = router->layer.activation;
}

void record_shared_experts(moevk_router *router, const route_plan *plan) {
    if (plan->num_tokens == 0 || !(plan->flags & FLAG_SHARED_EXPERT)) return;
    int matvec = (plan->flags & FLAG_FFN_MATVEC) != 0;
    uint32_t rows = matvec ? MATVEC_ROWS : TILE_ROWS,
             columns = matvec ? MATVEC_COLUMNS : TILE_COLUMNS;
    uint32_t row_tiles = div_ceil_u32(plan->num_tokens, rows);
    shared_up_params up = shared_up_params_from(plan);
    record_kernel_2d(router, STAGE_SHARED_EXPERTS, matvec ? 2 : 0, &up,
                     div_ceil_u32(plan->shared_intermediate_size, columns), row_tiles);
    record_compute_barrier(router);
    shared_down_params down = shared_down_params_from(plan);
    record_kernel_2d(router, STAGE_SHARED_EXPERTS, matvec ? 3 : 1, &down,
                     div_ceil_u32(plan->hidden_size, columns), row_tiles);
    record_compute_barrier(router);
}

/* The weights [fs, d] and [d, fs], the biases, the gate's weights, each token's activation
 * [T, fs] f32, its output [T, d] f32 and its gate's scale [T]. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const layer_shape *layer = &router->layer;
    if (!layer->active || layer->shared_intermediate_size == 0) return;
    uint64_t T = router->info.max_tokens, d = router->info.hidden_size;
    uint64_t f = layer->shared_intermediate_size;
    uint64_t matrix = weight_buffer_bytes(layer->weight_type, f * d);
    if (layer->activation == MOEVK_ACTIVATION_SWIGLU)
        raise_size(&sizes[BINDING_SHARED_GATE], matrix);
    raise_size(&sizes[BINDING_SHARED_UP], matrix);
    raise_size(&sizes[BINDING_SHARED_DOWN], weight_buffer_bytes(layer->down_type, d * f));
    if (layer->biases) raise_size(&sizes[BINDING_SHARED_BIAS], (2 * f + d) * 4);
    if (layer->shared_gate) {
        raise_size(&sizes[BINDING_SHARED_GATE_WEIGHTS], d * 4);
        raise_size(&sizes[BINDING_SHARED_SCALE], T * 4);
    }
    raise_size(&sizes[BINDING_SHARED_INTERMEDIATE], T * f * 4);
    raise_size(&sizes[BINDING_SHARED_OUT], T * d * 4);
}

const stage_module shared_experts_stage = {.name = "shared experts",
                                           .kernels = {&SHARED_UP_KERNEL, &SHARED_DOWN_KERNEL,
                                                       &SHARED_UP_MATVEC_KERNEL,
                                                       &SHARED_DOWN_MATVEC_KERNEL},
                                           .kernel_count = 4,
                                           .size_buffers = size_buffers,
                                           .needed = needed,
                                           .constants = constants,
                                           .after = TIMESTAMP_COUNT};
