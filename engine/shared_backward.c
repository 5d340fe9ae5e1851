/* The layer's shared experts, backward: the experts' backward kernels built on the shared FFN
 * (shaders/grad_expert_*.comp with SHARED_FFN: every token a row, its upstream gradient the
 * gated dL/doutput), its share of dL/dx added after the routed experts', and the gate's
 * (shaders/grad_shared_gate.comp). Not part of the route: moevk_layer_backward records it
 * (record_shared_backward). */
#include "stage.h"

#include "experts_backward.h"
#include "grad_expert_bias_shared.spv.h"
#include "grad_expert_down_shared.spv.h"
#include "grad_expert_input_shared.spv.h"
#include "grad_expert_weights_shared.spv.h"
#include "grad_shared_gate.spv.h"

DEFINE_STAGE_PARAMS(grad_shared_down_params, GRAD_SHARED_DOWN_PARAMS)
DEFINE_STAGE_PARAMS(grad_shared_input_params, GRAD_SHARED_INPUT_PARAMS)
DEFINE_STAGE_PARAMS(grad_shared_weights_params, GRAD_SHARED_WEIGHTS_PARAMS)
DEFINE_STAGE_PARAMS(grad_shared_bias_params, GRAD_SHARED_BIAS_PARAMS)
DEFINE_STAGE_PARAMS(grad_shared_gate_params, GRAD_SHARED_GATE_PARAMS)

enum { DOWN, INPUT, WEIGHTS, BIAS, GATE };

static const stage_kernel GRAD_SHARED_DOWN_KERNEL = {
    .name = "grad_expert_down_shared",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_expert_down_shared)},
    KERNEL_INTERFACE(GRAD_SHARED_DOWN_BUFFERS, grad_shared_down_params),
    .reads_down_weights = 1};
static const stage_kernel GRAD_SHARED_INPUT_KERNEL = {
    .name = "grad_expert_input_shared",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_expert_input_shared)},
    KERNEL_INTERFACE(GRAD_SHARED_INPUT_BUFFERS, grad_shared_input_params)};
static const stage_kernel GRAD_SHARED_WEIGHTS_KERNEL = {
    .name = "grad_expert_weights_shared",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_expert_weights_shared)},
    KERNEL_INTERFACE(GRAD_SHARED_WEIGHTS_BUFFERS, grad_shared_weights_params)};
static const stage_kernel GRAD_SHARED_BIAS_KERNEL = {
    .name = "grad_expert_bias_shared",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_expert_bias_shared)},
    KERNEL_INTERFACE(GRAD_SHARED_BIAS_BUFFERS, grad_shared_bias_params)};
static const stage_kernel GRAD_SHARED_GATE_KERNEL = {
    .name = "grad_shared_gate",
    .shaders = {[VARIANT_PLAIN] = SPIRV(grad_shared_gate)},
    KERNEL_INTERFACE(GRAD_SHARED_GATE_BUFFERS, grad_shared_gate_params)};

static int needed(const moevk_router *router) {
    return router->layer.trainable && router->layer.shared_intermediate_size > 0;
}

/* The products' tiles take FFN_WORKGROUP_SIZE invocations (the gate's tree too); weights are
 * read in their type. */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->workgroup_size = FFN_WORKGROUP_SIZE;
    constants->dtype = router->layer.weight_type;
    constants->hidden_dtype = router->info.hidden_type;
    constants->activation = router->layer.activation;
}

void record_shared_backward(moevk_router *router, const route_plan *plan) {
    if (plan->num_tokens == 0 || !(plan->flags & FLAG_SHARED_EXPERT)) return;
    route_plan shared = *plan;
    shared.grad_pre_stride = plan->shared_pre_stride; /* where shared_up.comp kept them */
    uint32_t T = plan->num_tokens, d = plan->hidden_size, fs = plan->shared_intermediate_size;
    uint32_t row_tiles = div_ceil_u32(T, TILE_ROWS);
    grad_shared_down_params down = grad_shared_down_params_from(&shared);
    record_kernel_2d(router, STAGE_SHARED_BACKWARD, DOWN, &down, div_ceil_u32(fs, TILE_COLUMNS),
                     row_tiles);
    record_compute_barrier(router);
    /* These read what the two above wrote and write apart: no barrier between them. */
    grad_shared_input_params input = grad_shared_input_params_from(&shared);
    record_kernel_2d(router, STAGE_SHARED_BACKWARD, INPUT, &input, div_ceil_u32(d, TILE_COLUMNS),
                     row_tiles);
    for (uint32_t matrix = GRAD_MATRIX_DOWN; matrix <= GRAD_MATRIX_GATE_UP; ++matrix) {
        shared.grad_matrix = matrix;
        grad_shared_weights_params weights = grad_shared_weights_params_from(&shared);
        record_kernel_2d(router, STAGE_SHARED_BACKWARD, WEIGHTS, &weights,
                         div_ceil_u32(fs, TILE_COLUMNS), div_ceil_u32(d, TILE_ROWS));
    }
    if (plan->flags & FLAG_FFN_BIASES) {
        grad_shared_bias_params bias = grad_shared_bias_params_from(&shared);
        record_kernel(router, STAGE_SHARED_BACKWARD, BIAS, &bias,
                      grid_for(router, 2 * (uint64_t)fs + d));
    }
    record_compute_barrier(router);
    if (!(plan->flags & FLAG_SHARED_GATE)) return;
    for (uint32_t phase = 0; phase < 2; ++phase) {
        shared.phase = phase;
        grad_shared_gate_params gate = grad_shared_gate_params_from(&shared);
        record_kernel(router, STAGE_SHARED_BACKWARD, GATE, &gate,
                      phase == 0 ? groups_for(T) : grid_for(router, (uint64_t)d + (uint64_t)T * d));
        record_compute_barrier(router);
    }
}

/* The shared pre-activations and their gradients [2, T, fs], the parameters' gradients (f32, in
 * their weights' layouts), the gate's [d] and each token's dL/dz [T]. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const layer_shape *layer = &router->layer;
    if (!layer->trainable || layer->shared_intermediate_size == 0) return;
    uint64_t T = router->info.max_tokens, d = router->info.hidden_size;
    uint64_t fs = layer->shared_intermediate_size;
    int swiglu = layer->activation == MOEVK_ACTIVATION_SWIGLU;
    raise_size(&sizes[BINDING_GRAD_SHARED_PRE], 4 * T * fs * 4); /* as BINDING_GRAD_PRE */
    if (swiglu) raise_size(&sizes[BINDING_GRAD_SHARED_GATE], fs * d * 4);
    raise_size(&sizes[BINDING_GRAD_SHARED_UP], fs * d * 4);
    raise_size(&sizes[BINDING_GRAD_SHARED_DOWN], d * fs * 4);
    if (layer->biases) raise_size(&sizes[BINDING_GRAD_SHARED_BIAS], (2 * fs + d) * 4);
    if (layer->shared_gate) {
        raise_size(&sizes[BINDING_GRAD_SHARED_EXPERT_GATE], d * 4);
        raise_size(&sizes[BINDING_GRAD_SHARED_DZ], T * 4);
    }
}

const stage_module shared_backward_stage = {
    .name = "shared experts backward",
    .kernels = {&GRAD_SHARED_DOWN_KERNEL, &GRAD_SHARED_INPUT_KERNEL, &GRAD_SHARED_WEIGHTS_KERNEL,
                &GRAD_SHARED_BIAS_KERNEL, &GRAD_SHARED_GATE_KERNEL},
    .kernel_count = 5,
    .size_buffers = size_buffers,
    .needed = needed,
    .constants = constants,
    .after = TIMESTAMP_COUNT};
