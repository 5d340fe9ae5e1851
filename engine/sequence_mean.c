/* The rows the SEQUENCE, BATCH and SINKHORN modes decide from (shaders/sequence_mean.comp):
 * each row's own validity, then in the sequence modes each sequence's mean logits, a dispatch
 * per TOKEN_CHUNK tokens of the longest sequence (the running sums carry over). */
#include "stage.h"

#include "sequence_mean.h"
#include "sequence_mean.spv.h"
#include "sequence_mean_addresses.spv.h"
#include "sequence_mean_rte.spv.h"
#include "sequence_mean_rte_addresses.spv.h"

DEFINE_STAGE_PARAMS(sequence_mean_params, SEQUENCE_MEAN_PARAMS)

static const stage_kernel SEQUENCE_MEAN_KERNEL = {
    .name = "sequence_mean",
    .shaders = {[VARIANT_PLAIN] = SPIRV(sequence_mean),
                [VARIANT_ADDRESSES] = SPIRV(sequence_mean_addresses),
                [VARIANT_RTE] = SPIRV(sequence_mean_rte),
                [VARIANT_RTE_ADDRESSES] = SPIRV(sequence_mean_rte_addresses)},
    KERNEL_INTERFACE(SEQUENCE_MEAN_BUFFERS, sequence_mean_params)};

/* Expert choice decides from each token's own row. */
static int needed(const moevk_router *router) {
    return router->info.mode != MOEVK_MODE_TOKEN && router->info.mode != MOEVK_MODE_EXPERT_CHOICE;
}

static int runs(const route_call *call) {
    return call->plan->num_tokens > 0 &&
           (call->plan->flags & (FLAG_SEQUENCE_DECISIONS | FLAG_SINKHORN));
}

static void record(moevk_router *router, const route_plan *plan) {
    sequence_mean_params params = sequence_mean_params_from(plan);
    params.phase = 0; /* the row flags */
    record_kernel(router, STAGE_SEQUENCE_MEAN, 0, &params, grid_for(router, plan->num_tokens));
    record_compute_barrier(router);
    if (!(plan->flags & FLAG_SEQUENCE_DECISIONS)) return;
    uint32_t sequences = div_ceil_u32(plan->num_tokens, plan->mode_param);
    uint32_t longest = plan->mode_param < plan->num_tokens ? plan->mode_param : plan->num_tokens;
    uint32_t chunks = div_ceil_u32(longest, TOKEN_CHUNK);
    for (uint32_t c = 0; c < chunks; ++c) {
        params.phase = 1 + c;
        record_kernel(router, STAGE_SEQUENCE_MEAN, 0, &params,
                      grid_for(router, (uint64_t)sequences * plan->num_experts));
        record_compute_barrier(router);
    }
}

/* The sequences' mean logits after the decisions' header (and, for sequences longer than a
 * chunk, their running counts). */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (info->mode != MOEVK_MODE_SEQUENCE && info->mode != MOEVK_MODE_BATCH) return;
    uint64_t T = info->max_tokens, E = info->num_experts;
    uint64_t S = info->mode == MOEVK_MODE_BATCH ? T : info->sequence_length;
    uint64_t means = S ? (T + S - 1) / S * E : E;
    raise_size(&sizes[BINDING_DECISIONS],
               (DECISION_HEADER + (S > TOKEN_CHUNK ? 2 * means : means)) * 4);
}

const stage_module sequence_mean_stage = {.name = "sequence means",
                                          .kernels = {&SEQUENCE_MEAN_KERNEL},
                                          .kernel_count = 1,
                                          .size_buffers = size_buffers,
                                          .needed = needed,
                                          .runs = runs,
                                          .record = record,
                                          .after = TIMESTAMP_COUNT};
