/* Bucketing (shaders/bucket_count.comp, bucket_scan.comp, bucket_assign.comp): per-block expert
 * counts, their prefix sums per expert, then every choice's slot and row. In the fused front end
 * (FLAG_FUSED_FRONT_END: few blocks) scores and top-k leave the counts and the assignment sums
 * them itself, so bucketing is the assignment's dispatch alone. */
#include "stage.h"

#include "bucket.h"
#include "bucket_assign.spv.h"
#include "bucket_count.spv.h"
#include "bucket_scan.spv.h"

DEFINE_STAGE_PARAMS(bucket_count_params, BUCKET_COUNT_PARAMS)
DEFINE_STAGE_PARAMS(bucket_scan_params, BUCKET_SCAN_PARAMS)
DEFINE_STAGE_PARAMS(bucket_assign_params, BUCKET_ASSIGN_PARAMS)

enum { BUCKET_COUNT, BUCKET_SCAN, BUCKET_ASSIGN };

static const stage_kernel BUCKET_COUNT_KERNEL = {
    .name = "bucket_count",
    .shaders = {[VARIANT_PLAIN] = SPIRV(bucket_count)},
    KERNEL_INTERFACE(BUCKET_COUNT_BUFFERS, bucket_count_params)};
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
    if (!(plan->flags & FLAG_FUSED_FRONT_END)) {
        bucket_count_params count = bucket_count_params_from(plan);
        record_kernel(router, STAGE_BUCKET, BUCKET_COUNT, &count, plan->num_blocks);
        record_compute_barrier(router);
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

const stage_module bucket_stage = {.name = "bucketing",
                                   .kernels = {[BUCKET_COUNT] = &BUCKET_COUNT_KERNEL,
                                               [BUCKET_SCAN] = &BUCKET_SCAN_KERNEL,
                                               [BUCKET_ASSIGN] = &BUCKET_ASSIGN_KERNEL},
                                   .kernel_count = 3,
                                   .size_buffers = size_buffers,
                                   .needed = needed,
                                   .runs = runs,
                                   .record = record,
                                   .after = TIMESTAMP_COUNT};
