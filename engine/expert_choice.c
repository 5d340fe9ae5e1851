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

/* The rows phase's grid: a workgroup per 64 tokens on a GPU. A CPU (lavapipe) starts each
 * workgroup of this kernel at about 9 us (its barriers make coroutines of the lanes), which
 * cost 9 ms at T = 65536: there it takes CPU_ROWS_GROUPS, or enough that no lane loops more
 * than ROWS_LANE_LOOPS times over its tokens' E columns (twice), far within the loop limit. */
#define CPU_ROWS_GROUPS 64u
#define ROWS_LANE_LOOPS 8192u
static uint32_t rows_groups(const moevk_router *router, const route_plan *plan) {
    uint32_t groups = grid_for(router, plan->num_tokens);
    if (router->context->info.type != VK_PHYSICAL_DEVICE_TYPE_CPU) return groups;
    uint64_t loops = 2 * (uint64_t)plan->num_tokens * plan->num_experts;
    uint64_t lanes = (loops + ROWS_LANE_LOOPS - 1) / ROWS_LANE_LOOPS;
    uint64_t wanted = (lanes + WORKGROUP_SIZE - 1) / WORKGROUP_SIZE;
    if (wanted < CPU_ROWS_GROUPS) wanted = CPU_ROWS_GROUPS;
    return wanted < groups ? (uint32_t)wanted : groups;
}

static void record(moevk_router *router, const route_plan *plan) {
    expert_choice_params params = expert_choice_params_from(plan);
    uint64_t E = plan->num_experts;
    uint64_t pairs = div_ceil_u32(plan->num_tokens, plan->choice_block_tokens) * E;
    uint32_t over_pairs = groups_for(pairs), over_experts = grid_for(router, E);
    /* A workgroup per expert's words: on lavapipe each workgroup costs about 9 us to start, so
     * a workgroup per 64 words took 9 ms at E = 64 (bench/RESULTS.md). */
    record_phase(router, &params, CHOICE_PHASE_CLEAR, groups_for(E));
    for (uint32_t round = 0; round < CHOICE_ROUNDS; ++round) {
        record_phase(router, &params, CHOICE_PHASE_HISTOGRAM + round, over_pairs);
        record_phase(router, &params, CHOICE_PHASE_SELECT + round, over_experts);
    }
    record_phase(router, &params, CHOICE_PHASE_COUNT, over_pairs);
    record_phase(router, &params, CHOICE_PHASE_SCAN, groups_for(E));
    record_phase(router, &params, CHOICE_PHASE_TAKE, over_pairs);
    record_phase(router, &params, CHOICE_PHASE_ROWS, rows_groups(router, plan));
}

/* Each expert's ranking key of each token after the decisions' header (scores_topk writes
 * them), then the selection's scratch; each token's compacted rows. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    const moevk_router_info *info = &router->info;
    if (info->mode != MOEVK_MODE_EXPERT_CHOICE) return;
    uint64_t T = info->max_tokens, E = info->num_experts;
    uint64_t block = router_choice_block_tokens(router), blocks = (T + block - 1) / block;
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
