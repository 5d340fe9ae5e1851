#version 450
#extension GL_GOOGLE_include_directive : require
// The layer's dispatch, backward: dL/dx[t] = the sum over t's kept choices j, ascending, of
// dL/d(dispatched row)[rows[t, j]] (the inverse of the gather: no scatter, no atomics). Tokens
// with no kept choice get 0. Grid: any, a grid-stride loop over the [T, d] elements.
#include "combine_backward.h"
#define STAGE_BUFFERS GRAD_HIDDEN_BUFFERS
#define STAGE_PARAMS GRAD_HIDDEN_PARAMS
#include "common.glsl"

void main() {
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * gl_WorkGroupSize.x;
    uint first = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
                 gl_LocalInvocationID.x;
    uint d = P.hidden_size;
    for (uint i = first; i < P.num_tokens * d; i += stride) {
        uint token = i / d, col = i % d;
        float sum = 0.0;
        for (uint j = 0u; j < CHOICES; ++j) {
            int row = rows[token * CHOICES + j];
            if (row >= 0) sum += grad_rows[uint(row) * d + col];
        }
        grad_hidden[i] = sum;
    }
}
