/* Bucketing (shaders/bucket_count.comp, bucket_scan.comp, bucket_assign.comp): per-block
 * expert counts, their prefix sums per expert, then every choice's slot and row. */
#include "recording.h"

void record_bucketing(moevk_router *router, const route_params *params) {
    record_stage(router, STAGE_BUCKET_COUNT, params, params->num_blocks);
    record_compute_barrier(router);
    record_stage(router, STAGE_BUCKET_SCAN, params, params->num_experts);
    record_compute_barrier(router);
    record_stage(router, STAGE_BUCKET_ASSIGN, params, params->num_blocks);
    record_compute_barrier(router);
}
