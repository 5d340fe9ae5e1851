#version 450
#extension GL_GOOGLE_include_directive : require
// The routed experts' bias gradients, added to what the buffer holds: each column's sum over
// the expert's kept rows, ascending: dL/db_down[e, i] of grad_expert_out, dL/db_up[e, n] and
// (SwiGLU) dL/db_gate[e, n] of the pre-activations' gradients; in the biases' layout (gate
// [E, f], up [E, f], down [E, d]). Grid: any, a grid-stride loop over the E (2f + d) columns.
#include "experts_backward.h"
#define STAGE_BUFFERS GRAD_EXPERT_BIAS_BUFFERS
#define STAGE_PARAMS GRAD_EXPERT_BIAS_PARAMS
#include "common.glsl"

void main() {
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * gl_WorkGroupSize.x;
    uint first = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
                 gl_LocalInvocationID.x;
    uint d = P.hidden_size, f = P.intermediate_size, E = NUM_EXPERTS;
    for (uint i = first; i < E * (2u * f + d); i += stride) {
        // i in the biases' layout: gate's, then up's, then down's.
        uint part = i < E * f ? 0u : (i < 2u * E * f ? 1u : 2u);
        uint within = part == 2u ? i - 2u * E * f : i - part * E * f;
        uint width = part == 2u ? d : f, expert = within / width, col = within % width;
        if (part == 0u && ACTIVATION != ACTIVATION_SWIGLU) continue;
        uint count = expert_info[E + expert];
        uint base = (P.flags & FLAG_DROPLESS) != 0u ? expert_info[2u * E + expert] : expert * P.capacity;
        float sum = 0.0;
        for (uint r = base; r < base + count; ++r) {
            if (part == 2u) sum += grad_expert_out[r * d + col];
            else if (part == 1u) sum += grad_pre[r * f + col];
            else sum += grad_pre[P.grad_pre_stride + r * f + col];
        }
        grad_expert_bias[i] += sum;
    }
}
