/* Bucketing (shaders/bucket_scan.comp, bucket_assign.comp): from the per-block expert counts
 * that scores and top-k leave (scores_topk.comp), their prefix sums per expert, then every
 * choice's slot and row (the prefix sums inside the assignment when the blocks are few:
 * FUSED_SCAN_BLOCKS). */
#include "stage.h"

#include "bucket.h"
#include "bucket_assign.spv.h"
#include "bucket_scan.spv.h"

DEFINE_STAGE_PARAMS(bucket_scan_params, BUCKET_SCAN_PARAMS)
DEFINE_STAGE_PARAMS(bucket_assign_params, BUCKET_ASSIGN_PARAMS)

enum { BUCKET_SCAN, BUCKET_ASSIGN };

static const stage_kernel BUCKET_SCAN_KERNEL = {
    .name = "bucket_scan",
    .shaders = {[VARIANT_PLAIN] = SPIRV(bucket_scan)},
    KERNEL_INTERFACE(BUCKET_SCAN_BUFFERS, bucket_scan_params)};
static const stage_kernel BUCKET_ASSIGN_KERNEL = {
    .name = "bucket_assign",
    .shaders = {[VARIANT_PLAIN] = SPIRV(bucket_assign)},
    KERNEL_INTERFACE(BUCKET_ASSIGN_BUFFERS, bucket_assign_params)};

/* Experts that choose take their slots themselves. */
static int needed(const moevk_router *router) {
    return router->info.mode != MOEVK_MODE_EXPERT_CHOICE;
}

static int runs(const route_call *call) {
    return call->plan->num_tokens > 0 && !(call->plan->flags & FLAG_EXPERT_CHOICE);
}

static void record(moevk_router *router, const route_plan *plan) {
    /* Few blocks: the assignment scans the counts itself (bucket_assign.comp). */
    if (plan->num_blocks > FUSED_SCAN_BLOCKS) {
        bucket_scan_params scan = bucket_scan_params_from(plan);
        record_kernel(router, STAGE_BUCKET, BUCKET_SCAN, &scan, plan->num_experts);
        record_compute_barrier(router);
    }
    bucket_assign_params assign = bucket_assign_params_from(plan);
    record_kernel(router, STAGE_BUCKET, BUCKET_ASSIGN, &assign, plan->num_blocks);
    record_compute_barrier(router);
}

/* Each block's counts per expert, then their offsets. */
static void size_buffers(const moevk_router *router, uint64_t sizes[BINDING_COUNT]) {
    raise_size(&sizes[BINDING_BLOCK_COUNTS],
               (uint64_t)MAX_BUCKET_BLOCKS * router->info.num_experts * 4);
}

const stage_module bucket_stage = {
    .name = "bucketing",
    .kernels = {[BUCKET_SCAN] = &BUCKET_SCAN_KERNEL, [BUCKET_ASSIGN] = &BUCKET_ASSIGN_KERNEL},
    .kernel_count = 2,
    .size_buffers = size_buffers,
    .needed = needed,
    .runs = runs,
    .record = record,
    .after = TIMESTAMP_COUNT};
