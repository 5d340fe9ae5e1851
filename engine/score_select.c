/* The score drop policy (shaders/score_select.comp): each overflowing expert keeps its C
 * highest-scoring choices (a workgroup per expert). */
#include "stage.h"

#include "score_select.h"
#include "score_select.spv.h"

DEFINE_STAGE_PARAMS(score_select_params, SCORE_SELECT_PARAMS)

static const stage_kernel SCORE_SELECT_KERNEL = {
    .name = "score_select",
    .shaders = {[VARIANT_PLAIN] = SPIRV(score_select)},
    KERNEL_INTERFACE(SCORE_SELECT_BUFFERS, score_select_params)};

static int needed(const moevk_router *router) {
    return router->info.drop_policy == MOEVK_DROP_SCORE &&
           router->info.capacity_mode != MOEVK_CAPACITY_DROPLESS;
}

/* On lavapipe an expert's workgroup widens where max_tokens needs it (loop_budget.c). */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->workgroup_size =
        stage_workgroup_size(router->context, &router->info, STAGE_SCORE_SELECT);
}

static int runs(const route_call *call) {
    return call->plan->num_tokens > 0 && (call->plan->flags & FLAG_DROP_BY_SCORE);
}

static void record(moevk_router *router, const route_plan *plan) {
    score_select_params params = score_select_params_from(plan);
    record_kernel(router, STAGE_SCORE_SELECT, 0, &params, plan->num_experts);
    record_compute_barrier(router);
}

/* The choices grouped by expert (bucket_assign writes them for this stage). */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (info->drop_policy == MOEVK_DROP_SCORE)
        raise_size(&sizes[BINDING_ORDER], (uint64_t)info->max_tokens * router_choices(info) * 4);
}

const stage_module score_select_stage = {.name = "score select",
                                         .kernels = {&SCORE_SELECT_KERNEL},
                                         .kernel_count = 1,
                                         .size_buffers = size_buffers,
                                         .needed = needed,
                                         .constants = constants,
                                         .runs = runs,
                                         .record = record,
                                         .after = TIMESTAMP_AFTER_BUCKETING};
