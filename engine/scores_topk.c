/* Scores and top-k (shaders/scores_topk.comp): every token's routing scores, row statistics
 * and its top-k experts (in expert choice, each (token, expert)'s ranking key instead), by an
 * invocation per token or a subgroup per token. */
#include "stage.h"

#include "scores_topk.h"
#include "scores_topk.spv.h"
#include "scores_topk_addresses.spv.h"
#include "scores_topk_rte.spv.h"
#include "scores_topk_rte_addresses.spv.h"
#include "scores_topk_subgroups.spv.h"
#include "scores_topk_subgroups_addresses.spv.h"
#include "scores_topk_subgroups_rte.spv.h"
#include "scores_topk_subgroups_rte_addresses.spv.h"

DEFINE_STAGE_PARAMS(scores_topk_params, SCORES_TOPK_PARAMS)

static const stage_kernel SCORES_TOPK_KERNEL = {
    .name = "scores_topk",
    .shaders = {[VARIANT_PLAIN] = SPIRV(scores_topk),
                [VARIANT_ADDRESSES] = SPIRV(scores_topk_addresses),
                [VARIANT_RTE] = SPIRV(scores_topk_rte),
                [VARIANT_RTE_ADDRESSES] = SPIRV(scores_topk_rte_addresses),
                [VARIANT_SUBGROUPS] = SPIRV(scores_topk_subgroups),
                [VARIANT_SUBGROUPS_ADDRESSES] = SPIRV(scores_topk_subgroups_addresses),
                [VARIANT_SUBGROUPS_RTE] = SPIRV(scores_topk_subgroups_rte),
                [VARIANT_SUBGROUPS_RTE_ADDRESSES] = SPIRV(scores_topk_subgroups_rte_addresses)},
    KERNEL_INTERFACE(SCORES_TOPK_BUFFERS, scores_topk_params)};

static int runs(const route_call *call) { return call->plan->num_tokens > 0; }

/* The subgroup variant where the router runs a subgroup per token (router->selection_lanes). */
static void constants(const moevk_router *router, stage_constants *constants) {
    constants->subgroup_lanes = router->selection_lanes;
}

static void record(moevk_router *router, const route_plan *plan) {
    scores_topk_params params = scores_topk_params_from(plan);
    /* A subgroup per token takes that many invocations per token. */
    uint64_t lanes = router->selection_lanes ? router->selection_lanes : 1;
    record_kernel(router, STAGE_SCORES_TOPK, 0, &params,
                  grid_for(router, (uint64_t)plan->num_tokens * lanes));
    record_compute_barrier(router);
}

const stage_module scores_topk_stage = {.name = "scores and top-k",
                                        .kernels = {&SCORES_TOPK_KERNEL},
                                        .kernel_count = 1,
                                        .constants = constants,
                                        .runs = runs,
                                        .record = record,
                                        .after = TIMESTAMP_AFTER_TOPK};
