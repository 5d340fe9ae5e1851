#version 450
#extension GL_GOOGLE_include_directive : require
// SINKHORN mode: the balancing factors. Reads the row flags of sequence_mean.comp's phase 0;
// writes the decisions: the header (shift, iterations, last mean change, T', E'), d1 [E] and
// d0 [T] (layout in moevk_shared.h). With K_te = exp(l_te - shift) over the valid rows (l the
// noisy logit; 0 where it is -inf), starting from d1 = 1, repeats
//   d0_t = 1 / (T' * sum_e d1_e K_te + 1e-8),  d1_e = 1 / (E' * sum_t d0_t K_te + 1e-8)
// until mean_e |change of d1_e| < 1e-4 or mode_param iterations. Each phase is a dispatch of its
// own (SINKHORN_PHASE_*): the host records the setup and then mode_param iterations of three
// indirect dispatches, whose arguments the setup and each check write: zero workgroups once the
// iteration has stopped, so that the unused iterations cost next to nothing. Sums over
// the experts run in expert order per row; sums over the tokens in token order within each
// block of 64 rows, then over the blocks in a fixed tree: the same bits every run. No invocation
// loops more than about 2E times (lavapipe's loop limit, LOOP_BUDGET).
#include "sinkhorn.h"
#define STAGE_BUFFERS SINKHORN_BUFFERS
#define STAGE_PARAMS SINKHORN_PARAMS
#include "common.glsl"
#include "noise.glsl"
#include "scores.glsl"
#include "reduce.glsl"

shared float block_d0[SINKHORN_BLOCK_ROWS];
shared bool block_valid[SINKHORN_BLOCK_ROWS];

uint blocks() { return (P.num_tokens + SINKHORN_BLOCK_ROWS - 1u) / SINKHORN_BLOCK_ROWS; }
uint d1_at(uint e) { return DECISION_HEADER + e; }
uint d0_at(uint t) { return DECISION_HEADER + P.num_experts + t; }
uint change_at(uint e) { return DECISION_HEADER + P.num_experts + P.num_tokens + e; }
uint live_at(uint e) { return DECISION_HEADER + 2u * P.num_experts + P.num_tokens + e; }
uint block_at(uint b) { return DECISION_HEADER + 3u * P.num_experts + P.num_tokens + 2u * b; }
uint partial_at(uint b, uint e) { return block_at(blocks()) + b * P.num_experts + e; }

bool stopped() { return decisions[DECISION_DONE] != 0.0; }

// The next iteration's grids (the host's: blocks and experts, at most MAX_GROUPS_X), or none.
void write_iteration_arguments(bool go_on) {
    uint groups[SINKHORN_ITERATION_PHASES] = {min(blocks(), MAX_GROUPS_X),
                                              min(P.num_experts, MAX_GROUPS_X), 1u};
    for (uint i = 0u; i < SINKHORN_ITERATION_PHASES; ++i) {
        decision_words[DECISION_ARGS + 3u * i] = go_on ? groups[i] : 0u;
        decision_words[DECISION_ARGS + 3u * i + 1u] = 1u;
        decision_words[DECISION_ARGS + 3u * i + 2u] = 1u;
    }
}

float noisy_at(uint t, uint e) { return noisy_logit(logit_at(t, e), t, e); }

float kernel(uint t, uint e, float shift) {
    float l = noisy_at(t, e);
    return isinf(l) ? 0.0 : exp(l - shift);
}

// Block b's rows: the largest noisy logit and the count of valid rows, and for each expert
// whether a valid row of the block leaves it unmasked (1.0) or not (0.0).
void setup_rows(uint b) {
    uint lane = gl_LocalInvocationID.x, t = b * SINKHORN_BLOCK_ROWS + lane;
    bool valid = t < P.num_tokens && row_flags[t] == ROW_VALID;
    float top = uintBitsToFloat(0xFF800000u);
    if (valid)
        for (uint e = 0; e < P.num_experts; ++e) top = max(top, noisy_at(t, e));
    block_valid[lane] = valid;
    top = workgroup_tree_reduce(top, true);
    barrier();
    float rows = workgroup_tree_reduce(valid ? 1.0 : 0.0, false);
    if (lane == 0u) {
        decisions[block_at(b)] = top;
        decisions[block_at(b) + 1u] = rows;
    }
    for (uint e = lane; e < P.num_experts; e += gl_WorkGroupSize.x) {
        bool live = false;
        for (uint r = 0; r < SINKHORN_BLOCK_ROWS && !live; ++r)
            live = block_valid[r] && !isinf(noisy_at(b * SINKHORN_BLOCK_ROWS + r, e));
        decisions[partial_at(b, e)] = live ? 1.0 : 0.0;
    }
    barrier(); // the next block rewrites block_valid and the reduction's lanes
}

// The workgroup's sum (or maximum) over the blocks of one value per block, in a fixed order.
float over_blocks(uint first_offset, uint stride, bool maximum) {
    float value = maximum ? uintBitsToFloat(0xFF800000u) : 0.0;
    for (uint b = gl_LocalInvocationID.x; b < blocks(); b += gl_WorkGroupSize.x) {
        float v = decisions[first_offset + b * stride];
        value = maximum ? max(value, v) : value + v;
    }
    return workgroup_tree_reduce(value, maximum);
}

void setup_column(uint e) {
    float live = over_blocks(partial_at(0u, e), P.num_experts, true);
    if (gl_LocalInvocationID.x == 0u) {
        decisions[live_at(e)] = live;
        decisions[d1_at(e)] = 1.0;
    }
    barrier();
}

void setup_totals() {
    float top = over_blocks(block_at(0u), 2u, true);
    barrier();
    float rows = over_blocks(block_at(0u) + 1u, 2u, false);
    barrier();
    float live = 0.0;
    for (uint e = gl_LocalInvocationID.x; e < P.num_experts; e += gl_WorkGroupSize.x)
        live += decisions[live_at(e)];
    float columns = workgroup_tree_reduce(live, false);
    if (gl_LocalInvocationID.x == 0u) {
        decisions[DECISION_SHIFT] = max(0.0, top - 60.0);
        decisions[DECISION_ROWS] = rows;
        decisions[DECISION_COLUMNS] = columns;
        decisions[DECISION_ITERATIONS] = 0.0;
        decisions[DECISION_ERROR] = 0.0;
        decisions[DECISION_DONE] = 0.0;
        write_iteration_arguments(true);
    }
}

// d0 of block b's valid rows, then the block's column sums sum_t d0_t K_te in token order.
void rows_phase(uint b) {
    uint lane = gl_LocalInvocationID.x, t = b * SINKHORN_BLOCK_ROWS + lane;
    float shift = decisions[DECISION_SHIFT], rows = decisions[DECISION_ROWS];
    bool valid = t < P.num_tokens && row_flags[t] == ROW_VALID;
    float d0 = 0.0;
    if (valid) {
        float sum = 0.0;
        for (uint e = 0; e < P.num_experts; ++e) sum += decisions[d1_at(e)] * kernel(t, e, shift);
        d0 = 1.0 / (rows * sum + 1e-8);
        decisions[d0_at(t)] = d0;
    }
    block_d0[lane] = d0;
    block_valid[lane] = valid;
    barrier();
    for (uint e = lane; e < P.num_experts; e += gl_WorkGroupSize.x) {
        float sum = 0.0;
        for (uint r = 0; r < SINKHORN_BLOCK_ROWS; ++r)
            if (block_valid[r]) sum += block_d0[r] * kernel(b * SINKHORN_BLOCK_ROWS + r, e, shift);
        decisions[partial_at(b, e)] = sum;
    }
    barrier(); // the next block rewrites the shared rows
}

void column_phase(uint e) {
    float sum = over_blocks(partial_at(0u, e), P.num_experts, false);
    if (gl_LocalInvocationID.x == 0u) {
        float d1 = 1.0 / (decisions[DECISION_COLUMNS] * sum + 1e-8);
        decisions[change_at(e)] = abs(d1 - decisions[d1_at(e)]);
        decisions[d1_at(e)] = d1;
    }
    barrier();
}

void check_phase() {
    float moved = 0.0;
    for (uint e = gl_LocalInvocationID.x; e < P.num_experts; e += gl_WorkGroupSize.x)
        moved += decisions[change_at(e)];
    float change = workgroup_tree_reduce(moved, false) / float(P.num_experts);
    if (gl_LocalInvocationID.x == 0u) {
        float iterations = decisions[DECISION_ITERATIONS] + 1.0;
        decisions[DECISION_ITERATIONS] = iterations;
        decisions[DECISION_ERROR] = change;
        bool done = change < 1e-4 || iterations >= float(P.mode_param);
        decisions[DECISION_DONE] = done ? 1.0 : 0.0;
        write_iteration_arguments(!done);
    }
}

void main() {
    uint phase = P.phase;
    if (phase >= SINKHORN_PHASE_ROWS && stopped()) return;
    uint group = gl_WorkGroupID.x, groups = gl_NumWorkGroups.x;
    if (phase == SINKHORN_PHASE_SETUP_ROWS) {
        for (uint b = group; b < blocks(); b += groups) setup_rows(b);
    } else if (phase == SINKHORN_PHASE_SETUP_COLUMNS) {
        for (uint e = group; e < P.num_experts; e += groups) setup_column(e);
    } else if (phase == SINKHORN_PHASE_SETUP_TOTALS) {
        setup_totals();
    } else if (phase == SINKHORN_PHASE_ROWS) {
        for (uint b = group; b < blocks(); b += groups) rows_phase(b);
    } else if (phase == SINKHORN_PHASE_COLUMNS) {
        for (uint e = group; e < P.num_experts; e += groups) column_phase(e);
    } else {
        check_phase();
    }
}
