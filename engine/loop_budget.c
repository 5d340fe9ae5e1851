/* lavapipe's loop limit: Mesa's gallivm ends every loop of an invocation once its loops have run
 * 65535 iterations in all, and the shader goes on with wrong values. Every stage keeps its
 * loops within LOOP_BUDGET up to the sizes moevk is tested at; two still grow with T per
 * invocation, so on lavapipe a router whose max_tokens would take one past the limit is
 * refused at creation with the bound, rather than routing wrong. GPUs have no such limit. The
 * counts below agree with what lavapipe does: with 64-wide workgroups, the score policy with
 * every token on one expert went wrong between 250000 and 290000 tokens (counted: 270000).
 * Expert choice no longer grows with T per invocation (its workgroups take blocks of at most
 * CHOICE_MAX_BLOCK_TOKENS tokens, a few thousand iterations per lane; its scan over an expert's
 * blocks stays far within the limit up to the modes' 2^30 tokens). */
#include <string.h>

#include "internal.h"

/* 65535, less a margin for the few loops the counts leave out. */
#define LAVAPIPE_LOOP_LIMIT 60000u

int device_has_loop_limit(const moevk_device_info *info) {
    return strcmp(info->driver_name, "llvmpipe") == 0;
}

/* Loop iterations of one invocation, counted from the shaders' loops, over items strided by a
 * workgroup of `width` invocations. */
static uint64_t per_lane(uint64_t items, uint64_t width) { return (items + width - 1) / width; }

typedef struct loop_context {
    const moevk_router_info *info;
    uint32_t wide; /* the score select's workgroup size */
} loop_context;
typedef uint64_t (*loop_count)(const loop_context *c, uint64_t T);

/* The steps of a workgroup scan (scan.glsl): log2 of the width. */
static uint64_t scan_steps(uint64_t width) {
    uint64_t steps = 0;
    while ((1ull << steps) < width) ++steps;
    return steps;
}

/* score_select.comp: an overflowing expert's workgroup walks up to T choices in eight radix
 * passes (each zeroing 256 digits first) and once more in chunks with a scan each, plus lane
 * 0's digit searches. */
static uint64_t score_select_loops(const loop_context *c, uint64_t T) {
    return 8 * (per_lane(T, c->wide) + per_lane(256, c->wide)) +
           per_lane(T, c->wide) * (1 + scan_steps(c->wide)) + 8 * 256;
}

/* bucket_assign.comp: a block's chunks of 64 assignments, each compared with the lanes before
 * (blocks as router_plan cuts them: at most 1024, at least 256 assignments). */
static uint64_t bucket_loops(const loop_context *c, uint64_t T) {
    uint64_t block = (T * c->info->top_k + 1023) / 1024;
    block = (block + WORKGROUP_SIZE - 1) / WORKGROUP_SIZE * WORKGROUP_SIZE;
    if (block < 256) block = 256;
    return per_lane(block, WORKGROUP_SIZE) * (WORKGROUP_SIZE + 8) +
           4 * per_lane(c->info->num_experts, WORKGROUP_SIZE) + 16;
}

/* The largest T whose loops stay within the limit (they grow with T). */
static uint64_t largest_tokens(loop_count loops, const loop_context *c) {
    uint64_t low = 0, high = (uint64_t)1 << 32;
    while (low + 1 < high) {
        uint64_t mid = low + (high - low) / 2;
        if (loops(c, mid) <= LAVAPIPE_LOOP_LIMIT)
            low = mid;
        else
            high = mid;
    }
    return low;
}

/* The widest workgroup the device allows, a power of two up to WIDE_WORKGROUP_SIZE. */
static uint32_t widest_workgroup(const moevk_context *context) {
    uint32_t allowed = context->limits.maxComputeWorkGroupSize[0];
    if (allowed > context->limits.maxComputeWorkGroupInvocations)
        allowed = context->limits.maxComputeWorkGroupInvocations;
    uint32_t size = WIDE_WORKGROUP_SIZE;
    while (size > WORKGROUP_SIZE && size > allowed) size /= 2;
    return size;
}

uint32_t stage_workgroup_size(const moevk_context *context, const moevk_router_info *info,
                              stage_id which) {
    if (which != STAGE_SCORE_SELECT) return WORKGROUP_SIZE;
    if (!device_has_loop_limit(&context->info)) return WORKGROUP_SIZE;
    loop_context narrow = {info, WORKGROUP_SIZE};
    return score_select_loops(&narrow, info->max_tokens) <= LAVAPIPE_LOOP_LIMIT
               ? WORKGROUP_SIZE
               : widest_workgroup(context);
}

moevk_result router_check_loop_budget(moevk_context *context, const moevk_router_info *info) {
    if (!device_has_loop_limit(&context->info)) return MOEVK_SUCCESS;
    loop_context c = {info, widest_workgroup(context)};
    int choice = info->mode == MOEVK_MODE_EXPERT_CHOICE;
    int by_score = !choice && info->drop_policy == MOEVK_DROP_SCORE &&
                   info->capacity_mode != MOEVK_CAPACITY_DROPLESS;
    const struct {
        int runs;
        const char *stage;
        loop_count loops;
    } stages[] = {{by_score, "the score drop policy", score_select_loops},
                  {!choice, "bucketing", bucket_loops}};
    /* The router projection's invocation loops over d. */
    if (info->router_projection && info->hidden_size > LOOP_BUDGET)
        return context_fail(context, MOEVK_ERROR_TOO_LARGE,
                            "hidden_size is %u; on lavapipe the router projection takes at most "
                            "%u (Mesa ends a shader's loops after 65535 iterations)",
                            info->hidden_size, LOOP_BUDGET);
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; ++i) {
        if (!stages[i].runs || stages[i].loops(&c, info->max_tokens) <= LAVAPIPE_LOOP_LIMIT)
            continue;
        return context_fail(context, MOEVK_ERROR_TOO_LARGE,
                            "max_tokens is %u; on lavapipe %s handles at most %llu tokens here "
                            "(Mesa ends a shader's loops after 65535 iterations)",
                            info->max_tokens, stages[i].stage,
                            (unsigned long long)largest_tokens(stages[i].loops, &c));
    }
    return MOEVK_SUCCESS;
}
