/* Scores and top-k (shaders/scores_topk.comp): every token's routing scores, row statistics
 * and its top-k experts (in expert choice, each (token, expert)'s ranking key instead). */
#include "stage.h"

#include "scores_topk.h"
#include "scores_topk.spv.h"
#include "scores_topk_addresses.spv.h"
#include "scores_topk_rte.spv.h"
#include "scores_topk_rte_addresses.spv.h"

DEFINE_STAGE_PARAMS(scores_topk_params, SCORES_TOPK_PARAMS)

static const stage_kernel SCORES_TOPK_KERNEL = {
    .name = "scores_topk",
    .shaders = {[VARIANT_PLAIN] = SPIRV(scores_topk),
                [VARIANT_ADDRESSES] = SPIRV(scores_topk_addresses),
                [VARIANT_RTE] = SPIRV(scores_topk_rte),
                [VARIANT_RTE_ADDRESSES] = SPIRV(scores_topk_rte_addresses)},
    KERNEL_INTERFACE(SCORES_TOPK_BUFFERS, scores_topk_params)};

static int runs(const route_call *call) { return call->plan->num_tokens > 0; }

static void record(moevk_router *router, const route_plan *plan) {
    scores_topk_params params = scores_topk_params_from(plan);
    record_kernel(router, STAGE_SCORES_TOPK, 0, &params, grid_for(router, plan->num_tokens));
    record_compute_barrier(router);
}

const stage_module scores_topk_stage = {.name = "scores and top-k",
                                        .kernels = {&SCORES_TOPK_KERNEL},
                                        .kernel_count = 1,
                                        .runs = runs,
                                        .record = record,
                                        .after = TIMESTAMP_AFTER_TOPK};
