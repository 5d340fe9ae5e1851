#version 450
#extension GL_GOOGLE_include_directive : require
// Bucketing outside the fused front end (FLAG_FUSED_FRONT_END), between the counts
// (bucket_count.comp) and the assignment: per expert, an exclusive prefix sum of the block
// counts over blocks.
// Replaces block_counts[b * E + e] with the number of expert e's assignments in blocks before b,
// and writes expert_info: totals[e] (before drops) and kept[e] (after the capacity limit).
// Grid: E workgroups, one per expert.
#include "bucket.h"
#define STAGE_BUFFERS BUCKET_SCAN_BUFFERS
#define STAGE_PARAMS BUCKET_SCAN_PARAMS
#include "common.glsl"
#include "scan.glsl"

void main() {
    uint expert = gl_WorkGroupID.x;
    uint lane = gl_LocalInvocationID.x;
    uint width = gl_WorkGroupSize.x;
    // Each invocation owns a contiguous run of blocks.
    uint per_lane = (P.num_blocks + width - 1u) / width;
    uint first = min(lane * per_lane, P.num_blocks);
    uint last = min(first + per_lane, P.num_blocks);
    uint sum = 0u;
    for (uint b = first; b < last; ++b) sum += block_counts[b * NUM_EXPERTS + expert];
    uint all_blocks;
    uint inclusive = workgroup_inclusive_scan(sum, all_blocks);
    uint running = inclusive - sum;
    for (uint b = first; b < last; ++b) {
        uint count = block_counts[b * NUM_EXPERTS + expert];
        block_counts[b * NUM_EXPERTS + expert] = running;
        running += count;
    }
    if (lane == width - 1u) {
        uint total = inclusive;
        bool limited = (P.flags & FLAG_DROPLESS) == 0u;
        expert_info[expert] = total;
        expert_info[NUM_EXPERTS + expert] = limited ? min(total, P.capacity) : total;
    }
}
