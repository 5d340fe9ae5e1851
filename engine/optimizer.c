/* The optimizer's step over a layer's parameters (shaders/optimizer.comp): the master weights
 * widened from the stored ones, the gradients' squares summed per block for the global norm,
 * and the SGD or AdamW update, one parameter per dispatch. Not part of the route:
 * moevk_layer_optimizer_step records it (layer_optimizer.c). */
#include "stage.h"

#include "optimizer.h"
#include "optimizer.spv.h"

DEFINE_KERNEL_PARAMS(optimizer_params, OPTIMIZER_PARAMS)

static const stage_kernel OPTIMIZER_KERNEL = {
    .name = "optimizer",
    .shaders = {[VARIANT_PLAIN] = SPIRV(optimizer)},
    KERNEL_INTERFACE(OPTIMIZER_BUFFERS, optimizer_params)};

static int needed(const moevk_router *router) { return router->layer.trainable; }

/* The norm's tree sums over exactly 64 invocations. */
static void constants(const moevk_router *router, stage_constants *constants) {
    (void)router;
    constants->workgroup_size = WORKGROUP_SIZE;
}

void optimizer_parameters(const moevk_router *router, optimizer_parameter out[OPT_PARAMS]) {
    const layer_shape *layer = &router->layer;
    uint64_t E = router->info.num_experts, d = router->info.hidden_size;
    uint64_t f = layer->intermediate_size, fs = layer->shared_intermediate_size;
    int swiglu = layer->activation == MOEVK_ACTIVATION_SWIGLU, biases = layer->biases;
    const uint64_t counts[OPT_PARAMS] = {E * d,
                                         swiglu ? E * f * d : 0,
                                         E * f * d,
                                         E * d * f,
                                         biases ? 2 * E * f + E * d : 0,
                                         swiglu ? fs * d : 0,
                                         fs * d,
                                         d * fs,
                                         biases && fs ? 2 * fs + d : 0,
                                         layer->shared_gate ? d : 0};
    moevk_dtype wt = layer->weight_type, dt = layer->down_type, f32 = MOEVK_DTYPE_F32;
    const moevk_dtype types[OPT_PARAMS] = {f32, wt, wt, dt, f32, wt, wt, dt, f32, f32};
    uint64_t offset = 0;
    for (uint32_t p = 0; p < OPT_PARAMS; ++p) {
        out[p] = (optimizer_parameter){.count = counts[p], .offset = offset, .type = types[p]};
        offset += counts[p];
    }
}

void record_optimizer(moevk_router *router, uint32_t phase, const optimizer_step *step) {
    optimizer_parameter parameters[OPT_PARAMS];
    optimizer_parameters(router, parameters);
    uint64_t partial_offset = 0;
    for (uint32_t p = 0; p < OPT_PARAMS; ++p) {
        const optimizer_parameter *param = &parameters[p];
        uint64_t blocks = (param->count + OPT_BLOCK - 1) / OPT_BLOCK;
        optimizer_params params = {.phase = phase,
                                   .opt_param = p,
                                   .opt_dtype = param->type,
                                   .opt_count = (uint32_t)param->count,
                                   .opt_offset = (uint32_t)param->offset,
                                   .opt_partial_offset = (uint32_t)partial_offset};
        partial_offset += blocks;
        if (param->count == 0) continue;
        if (step) {
            params.opt_adamw = step->adamw;
            params.learning_rate = step->learning_rate;
            params.beta1 = step->beta1;
            params.beta2 = step->beta2;
            params.epsilon = step->epsilon;
            params.weight_decay = step->weight_decay;
            params.grad_scale = step->grad_scale;
            params.step_size = step->step_size;
            params.correction2_sqrt = step->correction2_sqrt;
            params.keep = step->keep;
        }
        uint64_t words = param->type == MOEVK_DTYPE_F32 ? param->count : (param->count + 1) / 2;
        uint32_t groups = phase == OPT_PHASE_NORM ? groups_for(blocks) : grid_for(router, words);
        record_kernel(router, STAGE_OPTIMIZER, 0, &params, groups);
    }
    record_compute_barrier(router);
}

uint64_t optimizer_partial_count(const moevk_router *router) {
    optimizer_parameter parameters[OPT_PARAMS];
    optimizer_parameters(router, parameters);
    uint64_t blocks = 0;
    for (uint32_t p = 0; p < OPT_PARAMS; ++p)
        blocks += (parameters[p].count + OPT_BLOCK - 1) / OPT_BLOCK;
    return blocks;
}

/* The master weights and moments [every parameter] f32, the norm's partial sums. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    if (!router->layer.trainable) return;
    optimizer_parameter parameters[OPT_PARAMS];
    optimizer_parameters(router, parameters);
    uint64_t total = parameters[OPT_PARAMS - 1].offset + parameters[OPT_PARAMS - 1].count;
    raise_size(&sizes[BINDING_OPT_MASTER], total * 4);
    raise_size(&sizes[BINDING_OPT_M], total * 4);
    raise_size(&sizes[BINDING_OPT_V], total * 4);
    raise_size(&sizes[BINDING_OPT_PARTIALS], optimizer_partial_count(router) * 4);
}

const stage_module optimizer_stage = {.name = "optimizer",
                                      .kernels = {&OPTIMIZER_KERNEL},
                                      .kernel_count = 1,
                                      .size_buffers = size_buffers,
                                      .needed = needed,
                                      .constants = constants,
                                      .after = TIMESTAMP_COUNT};
