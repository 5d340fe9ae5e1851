#version 450
#extension GL_GOOGLE_include_directive : require
// Each token's out-of-distribution scores, token_scores [T, 3]: the energy
// -tau logsumexp(logits / tau) of its own clean logits (higher: less familiar), the entropy of
// its routing distribution (scores_topk.comp's, which the statistics average), and its top-1
// probability in that distribution, as scores_topk.comp measured them. A token whose logits are
// not finite gets NaN for all three; one whose logits are all -inf (masked), +inf, 0, 0. Grid:
// any size, a token per invocation.
#include "token_scores.h"
#define STAGE_BUFFERS TOKEN_SCORES_BUFFERS
#define STAGE_PARAMS TOKEN_SCORES_PARAMS
#include "common.glsl"

void scores_of(uint t) {
    uint flag = row_flags[t];
    float nan = uintBitsToFloat(0x7FC00000u), inf = uintBitsToFloat(0x7F800000u);
    if (flag != ROW_VALID) {
        bool masked = flag == ROW_MASKED;
        token_scores[3u * t] = masked ? inf : nan;
        token_scores[3u * t + 1u] = masked ? 0.0 : nan;
        token_scores[3u * t + 2u] = masked ? 0.0 : nan;
        return;
    }
    vec4 measures = row_measures[t];
    token_scores[3u * t] = measures.z;
    token_scores[3u * t + 1u] = row_stats[t].w;
    token_scores[3u * t + 2u] = measures.x;
}

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint t = gl_GlobalInvocationID.x; t < P.num_tokens; t += stride) scores_of(t);
}
