#version 450
#extension GL_GOOGLE_include_directive : require
// Bucketing's counts outside the fused front end (FLAG_FUSED_FRONT_END: there scores_topk.comp
// counts): per-block expert counts.
// Assignments are numbered k-major (a = rank * T + token); block b holds assignments
// [b * block_size, (b + 1) * block_size). Writes block_counts[b * E + e] = how many of the
// block's assignments chose expert e. Shared-memory atomics only count, so the result does not
// depend on their order. Grid: num_blocks workgroups.
#include "bucket.h"
#define STAGE_BUFFERS BUCKET_COUNT_BUFFERS
#define STAGE_PARAMS BUCKET_COUNT_PARAMS
#include "common.glsl"
#include "assignments.glsl"

shared uint histogram[NUM_EXPERTS];

void main() {
    uint block = gl_WorkGroupID.x;
    uint lane = gl_LocalInvocationID.x;
    for (uint e = lane; e < NUM_EXPERTS; e += gl_WorkGroupSize.x) histogram[e] = 0u;
    barrier();

    uint total = P.num_tokens * P.choices;
    uint begin = block * P.block_size;
    uint end = min(begin + P.block_size, total);
    for (uint a = begin + lane; a < end; a += gl_WorkGroupSize.x) {
        int expert = expert_ids[assignment_to_choice(a)];
        if (expert >= 0) atomicAdd(histogram[expert], 1u);
    }
    barrier();
    for (uint e = lane; e < NUM_EXPERTS; e += gl_WorkGroupSize.x)
        block_counts[block * NUM_EXPERTS + e] = histogram[e];
}
