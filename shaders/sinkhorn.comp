#version 450
#extension GL_GOOGLE_include_directive : require
// SINKHORN mode: the balancing factors, in one workgroup (each iteration needs every row and
// column). Reads the row flags of sequence_mean.comp's phase 0; writes decisions: the header
// (shift, iterations, last mean change), d1 [E], d0 [T]. With K_te = exp(l_te - shift) over the
// valid rows (l the noisy logit; 0 where it is -inf), starting from d1 = 1, repeats
//   d0_t = 1 / (T' * sum_e d1_e K_te + 1e-8),  d1_e = 1 / (E' * sum_t d0_t K_te + 1e-8)
// until mean_e |change of d1_e| < 1e-4 or mode_param iterations. Each invocation sums its rows
// and columns in index order and the lanes reduce in a fixed tree: the same bits every run.
#include "common.glsl"
#include "noise.glsl"
#include "scores.glsl"
#include "reduce.glsl"

// The workgroup's sum (or maximum) of one value per lane, in a fixed order; every lane gets it.
float reduce(float value, bool maximum) {
    memoryBarrierBuffer();
    barrier(); // earlier readers of the lanes are done; buffer writes before this are visible
    return workgroup_tree_reduce(value, maximum);
}

float noisy_at(uint t, uint e) { return noisy_logit(logit_at(t, e), t, e); }

float kernel(uint t, uint e, float shift) {
    float l = noisy_at(t, e);
    return isinf(l) ? 0.0 : exp(l - shift);
}

void main() {
    uint lane = gl_LocalInvocationID.x, width = gl_WorkGroupSize.x;
    uint T = P.num_tokens, E = P.num_experts;
    const uint D1 = DECISION_HEADER, D0 = DECISION_HEADER + E;

    // The largest logit of the valid rows and their count (T').
    float top = uintBitsToFloat(0xFF800000u), rows = 0.0;
    for (uint t = lane; t < T; t += width) {
        if (row_flags[t] != ROW_VALID) continue;
        rows += 1.0;
        for (uint e = 0; e < E; ++e) top = max(top, noisy_at(t, e));
    }
    top = reduce(top, true);
    rows = reduce(rows, false);
    // The experts some valid row does not mask (E'); d1 starts at 1.
    float columns = 0.0;
    for (uint e = lane; e < E; e += width) {
        bool live = false;
        for (uint t = 0; t < T && !live; ++t)
            live = row_flags[t] == ROW_VALID && !isinf(noisy_at(t, e));
        columns += live ? 1.0 : 0.0;
        decisions[D1 + e] = 1.0;
    }
    columns = reduce(columns, false);
    float shift = max(0.0, top - 60.0);

    uint iterations = 0u;
    float change = 0.0;
    while (iterations < P.mode_param) {
        for (uint t = lane; t < T; t += width) {
            if (row_flags[t] != ROW_VALID) continue;
            float sum = 0.0;
            for (uint e = 0; e < E; ++e) sum += decisions[D1 + e] * kernel(t, e, shift);
            decisions[D0 + t] = 1.0 / (rows * sum + 1e-8);
        }
        memoryBarrierBuffer();
        barrier();
        float moved = 0.0;
        for (uint e = lane; e < E; e += width) {
            float sum = 0.0;
            for (uint t = 0; t < T; ++t)
                if (row_flags[t] == ROW_VALID) sum += decisions[D0 + t] * kernel(t, e, shift);
            float d1 = 1.0 / (columns * sum + 1e-8);
            moved += abs(d1 - decisions[D1 + e]);
            decisions[D1 + e] = d1;
        }
        ++iterations;
        change = reduce(moved, false) / float(E);
        if (change < 1e-4) break;
    }
    if (lane == 0u) {
        decisions[DECISION_SHIFT] = shift;
        decisions[DECISION_ITERATIONS] = float(iterations);
        decisions[DECISION_ERROR] = change;
    }
}
