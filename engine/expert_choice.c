/* Expert choice (shaders/expert_choice.comp): each expert takes its top-C tokens. The phases
 * (CHOICE_PHASE_*) run over (block, expert) pairs or over the experts, each a dispatch behind
 * a barrier: the scratch cleared, four radix rounds of a histogram and a select, the blocks'
 * counts, their scan, the taken tokens, and each token's rows (over the tokens). */
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

static int runs(const route_call *call) {
    return call->plan->num_tokens > 0 && (call->plan->flags & FLAG_EXPERT_CHOICE);
}

static void record_phase(moevk_router *router, expert_choice_params *params, uint32_t phase,
                         uint32_t groups) {
    params->phase = phase;
    record_kernel(router, STAGE_EXPERT_CHOICE, 0, params, groups);
    record_compute_barrier(router);
}

static void record(moevk_router *router, const route_plan *plan) {
    expert_choice_params params = expert_choice_params_from(plan);
    uint64_t E = plan->num_experts;
    uint64_t pairs = div_ceil_u32(plan->num_tokens, CHOICE_BLOCK_TOKENS) * E;
    uint32_t over_pairs = groups_for(pairs), over_experts = grid_for(router, E);
    record_phase(router, &params, CHOICE_PHASE_CLEAR, grid_for(router, CHOICE_EXPERT_WORDS * E));
    for (uint32_t round = 0; round < CHOICE_ROUNDS; ++round) {
        record_phase(router, &params, CHOICE_PHASE_HISTOGRAM + round, over_pairs);
        record_phase(router, &params, CHOICE_PHASE_SELECT + round, over_experts);
    }
    record_phase(router, &params, CHOICE_PHASE_COUNT, over_pairs);
    record_phase(router, &params, CHOICE_PHASE_SCAN, groups_for(E));
    record_phase(router, &params, CHOICE_PHASE_TAKE, over_pairs);
    record_phase(router, &params, CHOICE_PHASE_ROWS, grid_for(router, plan->num_tokens));
}

/* Each expert's ranking key of each token after the decisions' header (scores_topk writes
 * them), then the selection's scratch; each token's compacted rows. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (info->mode != MOEVK_MODE_EXPERT_CHOICE) return;
    uint64_t T = info->max_tokens, E = info->num_experts;
    uint64_t blocks = (T + CHOICE_BLOCK_TOKENS - 1) / CHOICE_BLOCK_TOKENS;
    raise_size(&sizes[BINDING_DECISIONS],
               (DECISION_HEADER + T * E + CHOICE_SCRATCH_WORDS(E, blocks)) * 4);
    raise_size(&sizes[BINDING_COMPACT_ROWS], T * E * 4);
}

const stage_module expert_choice_stage = {.name = "expert choice",
                                          .kernels = {&EXPERT_CHOICE_KERNEL},
                                          .kernel_count = 1,
                                          .size_buffers = size_buffers,
                                          .needed = needed,
                                          .runs = runs,
                                          .record = record,
                                          .after = TIMESTAMP_COUNT};
