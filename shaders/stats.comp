#version 450
#extension GL_GOOGLE_include_directive : require
// Routing statistics, reduced in a fixed order so that they are the same on every run.
// Phase 0 (grid: stat_blocks workgroups): block b sums over its rows_per_stat_block rows the
// routing probability of every expert and the row scalars (logsumexp and its square, entropy, non-finite and
// masked rows, valid rows with no kept choice) into stat_partials[b, E + STAT_SCALARS]. Only
// valid rows count.
// Phase 1 (grid: E + STAT_SCALARS workgroups, one per total): sums one column of the partials
// over blocks, strided over the lanes, then a shared-memory tree: a fixed order, and no long
// chain of dependent loads.
#include "stats.h"
#define STAGE_BUFFERS STATS_BUFFERS
#define STAGE_PARAMS STATS_PARAMS
#include "common.glsl"
#include "noise.glsl"
#include "scores.glsl"
#define REDUCE_ROWS STAT_SCALARS
#include "reduce.glsl"

void partial_sums() {
    uint block = gl_WorkGroupID.x;
    uint lane = gl_LocalInvocationID.x;
    uint width = P.num_experts + STAT_SCALARS;
    uint begin = block * P.rows_per_stat_block;
    uint end = min(begin + P.rows_per_stat_block, P.num_tokens);
    for (uint e = lane; e < P.num_experts; e += gl_WorkGroupSize.x) {
        float sum = 0.0;
        for (uint t = begin; t < end; ++t)
            if (row_flags[t] == ROW_VALID) sum += probability(t, e, row_stats[t]);
        stat_partials[block * width + e] = sum;
    }
    float lse = 0.0, lse_squared = 0.0, entropy = 0.0, nonfinite = 0.0, masked = 0.0, unrouted = 0.0;
    for (uint t = begin + lane; t < end; t += gl_WorkGroupSize.x) {
        uint flag = row_flags[t];
        if (flag == ROW_VALID) {
            vec4 stats = row_stats[t];
            lse_squared += stats.z * stats.z;
            lse += stats.z;
            entropy += stats.w;
            bool kept = false;
            for (uint j = 0u; j < P.choices && !kept; ++j) kept = slots[t * P.choices + j] >= 0;
            unrouted += kept ? 0.0 : 1.0;
        }
        nonfinite += flag == ROW_NONFINITE ? 1.0 : 0.0;
        masked += flag == ROW_MASKED ? 1.0 : 0.0;
    }
    reduce_lanes[STAT_LSE_SQUARED][lane] = lse_squared;
    reduce_lanes[STAT_ENTROPY][lane] = entropy;
    reduce_lanes[STAT_NONFINITE][lane] = nonfinite;
    reduce_lanes[STAT_MASKED][lane] = masked;
    reduce_lanes[STAT_UNROUTED][lane] = unrouted;
    reduce_lanes[STAT_LSE][lane] = lse;
    workgroup_tree_rows(STAT_SCALARS, false);
    if (lane < STAT_SCALARS) stat_partials[block * width + P.num_experts + lane] = reduce_lanes[lane][0];
}

void final_sums() {
    uint width = P.num_experts + STAT_SCALARS;
    uint column = gl_WorkGroupID.x;
    uint lane = gl_LocalInvocationID.x;
    float sum = 0.0;
    for (uint b = lane; b < P.stat_blocks; b += gl_WorkGroupSize.x) sum += stat_partials[b * width + column];
    float total = workgroup_tree_sum(sum);
    if (lane == 0u) stat_totals[column] = total;
}

void main() {
    if (P.phase == 0u) partial_sums(); else final_sums();
}
