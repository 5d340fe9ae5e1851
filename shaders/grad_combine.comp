#version 450
#extension GL_GOOGLE_include_directive : require
// The layer's combine, backward: for each choice (t, j) kept in row r, the row's share of
// dL/doutput, grad_expert_out[r] = w[t, j] * dL/doutput[t] (every row has one owner: a gather,
// no sum), and dL/dw[t, j] = <dL/doutput[t], expert_out[r]> summed in a fixed order (each
// invocation its columns ascending, then a tree over the workgroup's invocations, whatever the
// subgroup size); 0 for a dropped choice. Grid: any, one workgroup per choice in turn.
#include "combine_backward.h"
#define STAGE_BUFFERS GRAD_COMBINE_BUFFERS
#define STAGE_PARAMS GRAD_COMBINE_PARAMS
#include "common.glsl"

shared float partial[64];

void main() {
    uint lane = gl_LocalInvocationID.x, d = P.hidden_size;
    uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    uint first = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    for (uint c = first; c < P.num_tokens * CHOICES; c += groups) {
        uint token = c / CHOICES;
        int row = rows[c];
        float sum = 0.0;
        if (row >= 0) {
            float weight = weights[c];
            for (uint i = lane; i < d; i += 64u) {
                float dy = grad_output[token * d + i];
                grad_expert_out[uint(row) * d + i] = weight * dy;
                sum += dy * uintBitsToFloat(expert_out_words[uint(row) * d + i]);
            }
        }
        partial[lane] = sum;
        barrier();
        for (uint half_count = 32u; half_count > 0u; half_count >>= 1u) {
            if (lane < half_count) partial[lane] += partial[lane + half_count];
            barrier();
        }
        if (lane == 0u) grad_weights[c] = partial[0];
        barrier();
    }
}
