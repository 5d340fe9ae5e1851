#version 450
#extension GL_GOOGLE_include_directive : require
// Per-expert loss of the last route: sums of a caller's per-token loss (expert_loss_values[0,
// T)) over each expert's kept choices, in a fixed order. Phase 0 (grid: stat_blocks): block b,
// one lane per expert, its block's rows in order -> the partials [blocks, E] after the sums.
// Phase 1 (grid: E workgroups): the column over blocks, strided over lanes, then a
// shared-memory tree -> expert_loss_values[T + e]. (Layout: moevk_shared.h, BINDING_EXPERT_LOSS.)
#include "expert_loss.h"
#define STAGE_BUFFERS EXPERT_LOSS_BUFFERS
#define STAGE_PARAMS EXPERT_LOSS_PARAMS
#include "common.glsl"
#include "reduce.glsl"

uint partial_at(uint block, uint expert) {
    return P.num_tokens + P.num_experts + block * P.num_experts + expert;
}

void partial_sums() {
    uint block = gl_WorkGroupID.x;
    uint begin = block * P.rows_per_stat_block;
    uint end = min(begin + P.rows_per_stat_block, P.num_tokens);
    // Expert choice's columns are the experts: only column e can hold e (and the loop over E
    // columns would pass the loop budget).
    bool by_column = (P.flags & FLAG_EXPERT_CHOICE) != 0u;
    for (uint e = gl_LocalInvocationID.x; e < P.num_experts; e += gl_WorkGroupSize.x) {
        float sum = 0.0;
        for (uint t = begin; t < end; ++t)
            for (uint j = by_column ? e : 0u; j < (by_column ? e + 1u : P.choices); ++j) {
                uint choice = t * P.choices + j;
                if (expert_ids[choice] == int(e) && slots[choice] >= 0) sum += expert_loss_values[t];
            }
        expert_loss_values[partial_at(block, e)] = sum;
    }
}

void final_sums() {
    uint expert = gl_WorkGroupID.x, lane = gl_LocalInvocationID.x;
    float sum = 0.0;
    for (uint b = lane; b < P.stat_blocks; b += gl_WorkGroupSize.x)
        sum += expert_loss_values[partial_at(b, expert)];
    float total = workgroup_tree_sum(sum);
    if (lane == 0u) expert_loss_values[P.num_tokens + expert] = total;
}

void main() {
    if (P.phase == 0u) partial_sums(); else final_sums();
}
