/* Each token's out-of-distribution scores (shaders/token_scores.comp): energy, entropy and top-1
 * probability, for a route whose output asks for them (FLAG_TOKEN_SCORES), after its scores. */
#include "stage.h"

#include "token_scores.h"
#include "token_scores.spv.h"

DEFINE_STAGE_PARAMS(token_scores_params, TOKEN_SCORES_PARAMS)

static const stage_kernel TOKEN_SCORES_KERNEL = {
    .name = "token_scores",
    .shaders = {[VARIANT_PLAIN] = SPIRV(token_scores)},
    KERNEL_INTERFACE(TOKEN_SCORES_BUFFERS, token_scores_params)};

static int runs(const route_call *call) {
    return call && (call->plan->flags & FLAG_TOKEN_SCORES) && call->plan->num_tokens > 0;
}

static void record(moevk_router *router, const route_plan *plan) {
    token_scores_params params = token_scores_params_from(plan);
    record_kernel(router, STAGE_TOKEN_SCORES, 0, &params, grid_for(router, plan->num_tokens));
    record_compute_barrier(router);
}

static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    raise_size(&sizes[BINDING_TOKEN_SCORES], (uint64_t)router->info.max_tokens * 3 * 4);
}

const stage_module token_scores_stage = {.name = "token scores",
                                         .kernels = {&TOKEN_SCORES_KERNEL},
                                         .kernel_count = 1,
                                         .size_buffers = size_buffers,
                                         .runs = runs,
                                         .record = record,
                                         .after = TIMESTAMP_COUNT};
