/* Expert choice (shaders/expert_choice.comp): each expert takes its top-C tokens (phase 0, a
 * workgroup per expert), then each token's rows are compacted (phase 1, over the tokens). */
#include "stage.h"

#include "expert_choice.h"
#include "expert_choice.spv.h"
#include "expert_choice_addresses.spv.h"

DEFINE_STAGE_PARAMS(expert_choice_params, EXPERT_CHOICE_PARAMS)

static const stage_kernel EXPERT_CHOICE_KERNEL = {
    .name = "expert_choice",
    .shaders = {[VARIANT_PLAIN] = SPIRV(expert_choice),
                [VARIANT_ADDRESSES] = SPIRV(expert_choice_addresses)},
    KERNEL_INTERFACE(EXPERT_CHOICE_BUFFERS, expert_choice_params)};

static int needed(const moevk_router *router) {
    return router->info.mode == MOEVK_MODE_EXPERT_CHOICE;
}

/* On lavapipe an expert's workgroup widens where max_tokens needs it (loop_budget.c). */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->workgroup_size =
        stage_workgroup_size(router->context, &router->info, STAGE_EXPERT_CHOICE);
}

static int runs(const route_call *call) {
    return call->plan->num_tokens > 0 && (call->plan->flags & FLAG_EXPERT_CHOICE);
}

static void record(moevk_router *router, const route_plan *plan) {
    expert_choice_params params = expert_choice_params_from(plan);
    params.phase = 0;
    record_kernel(router, STAGE_EXPERT_CHOICE, 0, &params, plan->num_experts);
    record_compute_barrier(router);
    params.phase = 1;
    record_kernel(router, STAGE_EXPERT_CHOICE, 0, &params, grid_for(router, plan->num_tokens));
    record_compute_barrier(router);
}

/* Each expert's ranking key of each token after the decisions' header (scores_topk writes
 * them), and each token's compacted rows. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (info->mode != MOEVK_MODE_EXPERT_CHOICE) return;
    uint64_t TE = (uint64_t)info->max_tokens * info->num_experts;
    raise_size(&sizes[BINDING_DECISIONS], (DECISION_HEADER + TE) * 4);
    raise_size(&sizes[BINDING_COMPACT_ROWS], TE * 4);
}

const stage_module expert_choice_stage = {.name = "expert choice",
                                          .kernels = {&EXPERT_CHOICE_KERNEL},
                                          .kernel_count = 1,
                                          .size_buffers = size_buffers,
                                          .needed = needed,
                                          .constants = constants,
                                          .runs = runs,
                                          .record = record,
                                          .after = TIMESTAMP_COUNT};
