#version 450
#extension GL_GOOGLE_include_directive : require
// The rows that SEQUENCE, BATCH and SINKHORN modes decide from.
// Phase 0 (grid-stride over tokens): each token's own row -> row_flags: ROW_NONFINITE (a NaN or
// +inf logit), ROW_MASKED (every logit -inf), else ROW_VALID. scores_topk rewrites the flags.
// Phases 1, 2, ... (grid-stride over sequences x experts, SEQUENCE and BATCH): the mean logits
// decisions[HEADER + b * E + e] = (sum of the valid tokens' logits in token order, f32) times
// the correctly rounded f32 reciprocal of their count: the same bits on every device (with the
// RTE variant), and on the CPU. -inf where the sequence has no valid token. Phase 1 + c walks
// tokens [c * TOKEN_CHUNK, (c + 1) * TOKEN_CHUNK) of each sequence (lavapipe's loop limit:
// LOOP_BUDGET); the running sum waits in the mean's place and the count after the means until
// the sequence's last chunk, so the sum keeps its token order and its bits.
#include "sequence_mean.h"
#define STAGE_BUFFERS SEQUENCE_MEAN_BUFFERS
#define STAGE_PARAMS SEQUENCE_MEAN_PARAMS
#include "common.glsl"
#include "noise.glsl"
#include "scores.glsl"

uint row_validity(uint token) {
    bool masked = true;
    for (uint e = 0; e < P.num_experts; ++e) {
        float logit = logit_at(token, e);
        if (isnan(logit) || (isinf(logit) && logit > 0.0)) return ROW_NONFINITE;
        if (!isinf(logit)) masked = false;
    }
    return masked ? ROW_MASKED : ROW_VALID;
}

// 1 / n rounded to nearest even, by long division in integers (n < 2^31): GLSL's division
// need not be correctly rounded, and the mean must be the same everywhere.
float exact_reciprocal(uint n) {
    uint high = uint(findMSB(n));
    if (n == (1u << high)) return ldexp(1.0, -int(high));
    // q = floor(2^(high + 24) / n), in [2^23, 2^24); r the remainder.
    uint q = 0u, r = 1u;
    for (uint i = 0u; i < high + 24u; ++i) {
        r <<= 1;
        q <<= 1;
        if (r >= n) { r -= n; q |= 1u; }
    }
    if (2u * r > n || (2u * r == n && (q & 1u) != 0u)) ++q;
    return ldexp(float(q), -int(high + 24u));
}

void mean_logit(uint sequence, uint expert, uint chunk, uint sequences) {
    uint first = sequence * P.mode_param;
    uint last = min(first + P.mode_param, P.num_tokens);
    uint begin = first + chunk * TOKEN_CHUNK;
    if (begin >= last) return; // a shorter last sequence ended in an earlier chunk
    uint end = min(begin + TOKEN_CHUNK, last);
    uint mean_at = DECISION_HEADER + sequence * P.num_experts + expert;
    uint count_at = DECISION_HEADER + sequences * P.num_experts + sequence * P.num_experts + expert;
    precise float sum = chunk > 0u ? decisions[mean_at] : 0.0;
    uint count = chunk > 0u ? decision_words[count_at] : 0u;
    for (uint t = begin; t < end; ++t) {
        if (row_flags[t] != ROW_VALID) continue;
        sum += logit_at(t, expert);
        ++count;
    }
    if (end < last) {
        decisions[mean_at] = sum;
        decision_words[count_at] = count;
        return;
    }
    precise float mean = count > 0u ? sum * exact_reciprocal(count) : uintBitsToFloat(0xFF800000u);
    decisions[mean_at] = mean;
}

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (P.phase == 0u) {
        for (uint t = gl_GlobalInvocationID.x; t < P.num_tokens; t += stride)
            row_flags[t] = row_validity(t);
        return;
    }
    uint sequences = (P.num_tokens + P.mode_param - 1u) / P.mode_param;
    for (uint i = gl_GlobalInvocationID.x; i < sequences * P.num_experts; i += stride)
        mean_logit(i / P.num_experts, i % P.num_experts, P.phase - 1u, sequences);
}
