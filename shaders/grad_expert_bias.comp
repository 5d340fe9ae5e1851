#version 450
#extension GL_GOOGLE_include_directive : require
// The experts' bias gradients, added to what the buffer holds: each column's sum over an
// expert's rows, ascending: dL/db_down[e, i] of the rows' upstream gradient, dL/db_up[e, n]
// and (SwiGLU) dL/db_gate[e, n] of the pre-activations' gradients; in the biases' layout (gate
// [E, f], up [E, f], down [E, d]). Routed or, built with SHARED_FFN, shared (grad_ffn.glsl).
// Grid: any, a grid-stride loop over the E (2f + d) columns.
#include "experts_backward.h"
#ifndef SHARED_FFN
#define STAGE_BUFFERS GRAD_EXPERT_BIAS_BUFFERS
#define STAGE_PARAMS GRAD_EXPERT_BIAS_PARAMS
#else
#define STAGE_BUFFERS GRAD_SHARED_BIAS_BUFFERS
#define STAGE_PARAMS GRAD_SHARED_BIAS_PARAMS
#endif
#include "common.glsl"
#include "grad_ffn.glsl"

void main() {
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * gl_WorkGroupSize.x;
    uint first = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
                 gl_LocalInvocationID.x;
    uint d = P.hidden_size, f = FFN_F, E = FFN_EXPERTS;
    for (uint i = first; i < E * (2u * f + d); i += stride) {
        // i in the biases' layout: gate's, then up's, then down's.
        uint part = i < E * f ? 0u : (i < 2u * E * f ? 1u : 2u);
        uint within = part == 2u ? i - 2u * E * f : i - part * E * f;
        uint width = part == 2u ? d : f, expert = within / width, col = within % width;
        if (part == 0u && ACTIVATION != ACTIVATION_SWIGLU) continue;
        uint count = expert_row_count(expert), base = expert_first_row(expert);
        float sum = 0.0;
        for (uint r = base; r < base + count; ++r) {
            if (part == 2u) sum += row_dy(r, col);
            else if (part == 1u) sum += PRE_GRADIENT(r * f + col);
            else sum += PRE_GRADIENT(P.grad_pre_stride + r * f + col);
        }
        GRAD_BIAS_VALUES[i] += sum;
    }
}
