/* What a stage module is (one engine/<stage>.c per row of stage_table.h) and what it records
 * with. A stage has one to MAX_STAGE_KERNELS kernels; a kernel is one shader, declared by the
 * stage's header under shaders/ (stage_params.h): the router's buffers it binds and its push
 * constants. The router makes each needed kernel's descriptor set layout, pipeline layout,
 * pipeline and sets from that declaration (engine/stage.c); a stage's record function fills its
 * kernels' parameters from the call's plan and records their dispatches into router->recording,
 * with a barrier after each whose results a later dispatch reads. */
#ifndef MOEVK_STAGE_H
#define MOEVK_STAGE_H

#include "internal.h"
#include "stage_params.h"

/* ---- A kernel's push constants: the C struct of a <KERNEL>_PARAMS list ---- */
#define PARAM_FIELD_U32_(name) uint32_t name;
#define PARAM_FIELD_F32_(name) float name;
/* 8-byte aligned everywhere, as std430 aligns a uvec2: the two sides pad alike. */
#define PARAM_FIELD_ADDRESS_(name) _Alignas(8) VkDeviceAddress name;
#define PARAM_FROM_PLAN_(name) .name = plan->name,
/* Declares `type` with the list's fields, and checks that it fits the 128 bytes of push
 * constants every device takes: for a kernel whose parameters are not the plan's (the
 * optimizer's), which its stage fills itself. */
#define DEFINE_KERNEL_PARAMS(type, LIST)                                                           \
    typedef struct type {                                                                          \
        LIST(PARAM_FIELD_U32_, PARAM_FIELD_F32_, PARAM_FIELD_ADDRESS_)                             \
    } type;                                                                                        \
    _Static_assert(sizeof(type) <= 128, #type ": past the 128 bytes of push constants");
/* Declares `type` with the list's fields (laid out as GLSL lays out the block, but for C's
 * trailing padding, which is pushed and never read), checks that it fits the 128 bytes every
 * device takes, and defines type_from(plan), which fills every field from the same-named field
 * of the plan. */
#define DEFINE_STAGE_PARAMS(type, LIST)                                                            \
    DEFINE_KERNEL_PARAMS(type, LIST)                                                               \
    static inline type type##_from(const route_plan *plan) {                                       \
        return (type){LIST(PARAM_FROM_PLAN_, PARAM_FROM_PLAN_, PARAM_FROM_PLAN_)};                 \
    }

/* ---- A kernel: its shader variants and its interface ---- */
typedef struct stage_kernel {
    const char *name;
    shader_code shaders[VARIANT_COUNT]; /* code NULL where a variant is not built */
    uint8_t buffers[BINDING_COUNT];     /* the BINDING_* it declares, at those binding numbers */
    uint32_t buffer_count;
    uint32_t params_size;
    int reads_down_weights; /* its DTYPE is the layer's down type, not weight_type */
} stage_kernel;

/* The SPIR-V array shaders/meson.build embeds for a kernel variant (<symbol>_spv). */
#define SPIRV(symbol)                                                                              \
    { #symbol, symbol##_spv, sizeof symbol##_spv }
#define KERNEL_BUFFER_(name) BINDING_##name,
/* A kernel's buffers and push-constant size from its header's lists. */
#define KERNEL_INTERFACE(BUFFERS, params_type)                                                     \
    .buffers = {BUFFERS(KERNEL_BUFFER_)},                                                          \
    .buffer_count = sizeof((const uint8_t[]){BUFFERS(KERNEL_BUFFER_)}),                            \
    .params_size = sizeof(params_type)

/* ---- A stage module ---- */
/* What decides which of the route's stages a call runs. */
typedef struct route_call {
    const route_plan *plan;
    int with_dispatch; /* hidden states were given */
} route_call;

typedef struct stage_module {
    const char *name;
    const stage_kernel *kernels[MAX_STAGE_KERNELS];
    uint32_t kernel_count;
    /* Sizes the buffers the stage owns (BINDING_*: its scratch and its own inputs) for the
     * router's max_tokens, raising sizes[] (NULL: it owns none). Called for every router. */
    void (*size_buffers)(const moevk_router *router, uint64_t sizes[BINDING_COUNT]);
    /* Whether a router needs the stage's pipelines (NULL: every router). */
    int (*needed)(const moevk_router *router);
    /* Adjusts the specialization constants engine/stage.c derives from the router's options
     * (NULL: none). */
    void (*constants)(const moevk_router *router, stage_constants *constants);
    /* A stage of the route: whether a call runs it (NULL: not part of the route) ... */
    int (*runs)(const route_call *call);
    /* ... and its recording for the call. */
    void (*record)(moevk_router *router, const route_plan *plan);
    /* The profiling timestamp written once its turn in the route has come (TIMESTAMP_COUNT:
     * none), whether or not it ran, so that every query of a profiling router is written. */
    enum timestamp_point after;
} stage_module;

/* For size_buffers: a buffer holds at least `bytes`. */
static inline void raise_size(uint64_t *size, uint64_t bytes) {
    if (bytes > *size) *size = bytes;
}

#define STAGE_EXTERN_(id, name) extern const stage_module name##_stage;
MOEVK_STAGE_TABLE(STAGE_EXTERN_)
#undef STAGE_EXTERN_
/* The modules by stage_id (engine/record.c). */
extern const stage_module *const STAGE_MODULES[STAGE_COUNT];

/* ---- engine/stage.c: the kernels' Vulkan objects ---- */
/* The descriptor pool and every needed kernel's layouts, pipeline and sets (own and external),
 * the own sets pointing at the router's buffers. */
moevk_result stages_create(moevk_router *router);
void stages_destroy(moevk_router *router);
/* Whether the router made a stage's pipelines. */
int stage_is_needed(const moevk_router *router, stage_id stage);
/* Points the external sets of every kernel that binds `binding` at info (the others keep the
 * router's buffer). */
void stages_bind_external(moevk_router *router, uint32_t binding,
                          const VkDescriptorBufferInfo *info);

/* ---- engine/recording.c: recording helpers ---- */
/* A global barrier: compute writes before, compute reads and writes after. */
void record_compute_barrier(moevk_router *router);
/* The same, for a dispatch that also reads its arguments from what the last one wrote. */
void record_indirect_barrier(moevk_router *router);
/* Binds a kernel's pipeline and set, pushes its parameters and dispatches. */
void record_kernel_2d(moevk_router *router, stage_id stage, uint32_t kernel, const void *params,
                      uint32_t groups_x, uint32_t groups_y);
#define record_kernel(router, stage, kernel, params, groups)                                       \
    record_kernel_2d(router, stage, kernel, params, groups, 1)
/* The same, dispatching with the arguments at `offset` of `arguments`. */
void record_kernel_indirect(moevk_router *router, stage_id stage, uint32_t kernel,
                            const void *params, VkBuffer arguments, VkDeviceSize offset);
/* A row-wise kernel over [rows, d]: x covers a row's units (at most 64 workgroups), y the rows. */
void record_rows_kernel(moevk_router *router, stage_id stage, const void *params,
                        uint32_t hidden_size, uint64_t rows);
/* Workgroups for a grid-stride loop over `items`: enough to fill the device, within limits. */
uint32_t grid_for(const moevk_router *router, uint64_t items);
/* Workgroups for a loop over `count` workgroup-sized items (blocks, experts): at most
 * MAX_GROUPS_X, which every device allows and the shaders assume. */
uint32_t groups_for(uint64_t count);
/* A two-phase reduction kernel: phase 0 over the statistics blocks, a barrier, then phase 1 with
 * `totals` workgroups. `phase` points at the phase field of *params, which this sets. */
void record_blocks_then_totals(moevk_router *router, stage_id stage, void *params, uint32_t *phase,
                               uint32_t stat_blocks, uint32_t totals);
void record_timestamp(moevk_router *router, enum timestamp_point point);
/* The layer's stage modules (experts.c, shared_experts.c, layer_combine.c). */
void record_experts(moevk_router *router, const route_plan *params);
void record_shared_experts(moevk_router *router, const route_plan *params);
void record_layer_combine(moevk_router *router, const route_plan *params);
/* The layer's backward (combine_backward.c, experts_backward.c, shared_backward.c,
 * router_backward.c). */
void record_combine_backward(moevk_router *router, const route_plan *plan);
void record_experts_backward(moevk_router *router, const route_plan *plan);
void record_dispatch_backward(moevk_router *router, const route_plan *plan);
void record_shared_backward(moevk_router *router, const route_plan *plan);
void record_router_backward(moevk_router *router, const route_plan *plan);
/* Zeros the parameters' gradients in the recording, before the kernels add to them
 * (layer_train.c). */
void record_zero_gradients(moevk_router *router);
/* The optimizer (optimizer.c): each parameter's place in the master weights and moments, and
 * one phase (OPT_PHASE_*) over every parameter; step is the update's (NULL for the others). */
typedef struct optimizer_parameter {
    uint64_t count, offset; /* elements, and where they start in BINDING_OPT_MASTER */
    moevk_dtype type;       /* how the layer stores it */
} optimizer_parameter;
typedef struct optimizer_step {
    uint32_t adamw;
    float learning_rate, beta1, beta2, epsilon, weight_decay, grad_scale;
    float step_size, correction2_sqrt, keep; /* AdamW's scalars, from the host in double */
} optimizer_step;
void optimizer_parameters(const moevk_router *router, optimizer_parameter out[OPT_PARAMS]);
uint64_t optimizer_partial_count(const moevk_router *router);
void record_optimizer(moevk_router *router, uint32_t phase, const optimizer_step *step);
void record_reset_timestamps(moevk_router *router, uint32_t first, uint32_t count);

#endif
