#version 450
#extension GL_GOOGLE_include_directive : require
// The shared experts' gate (Qwen2-MoE: the shared output times s = sigmoid(x . w)), backward:
//   phase 0  dz[t] = <dL/doutput[t], shared_out[t]> (1 - s[t]): the gated output's slope in
//            z = x . w, each invocation its columns ascending, then a tree over the
//            FFN_WORKGROUP_SIZE invocations, whatever the subgroup size; a workgroup per token in
//            turn
//   phase 1  dL/dw[k] += sum over tokens t ascending of dz[t] x[t, k], and dL/dx[t, k] +=
//            dz[t] w[k] after the shared experts' FFN's part; a grid-stride loop over the
//            d + T d entries
#include "experts_backward.h"
#define STAGE_BUFFERS GRAD_SHARED_GATE_BUFFERS
#define STAGE_PARAMS GRAD_SHARED_GATE_PARAMS
#include "common.glsl"
#include "hidden.glsl"

shared float partial[FFN_WORKGROUP_SIZE];

void main() {
    uint lane = gl_LocalInvocationID.x, d = P.hidden_size, T = P.num_tokens;
    uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (P.phase == 0u) {
        for (uint t = group; t < T; t += groups) {
            float sum = 0.0;
            for (uint i = lane; i < d; i += FFN_WORKGROUP_SIZE) sum += grad_output[t * d + i] * shared_out[t * d + i];
            partial[lane] = sum;
            barrier();
            for (uint half_count = FFN_WORKGROUP_SIZE / 2u; half_count > 0u; half_count >>= 1u) {
                if (lane < half_count) partial[lane] += partial[lane + half_count];
                barrier();
            }
            if (lane == 0u) grad_shared_dz[t] = partial[0] * (1.0 - shared_scale[t]);
            barrier();
        }
        return;
    }
    uint stride = groups * gl_WorkGroupSize.x;
    for (uint i = group * gl_WorkGroupSize.x + lane; i < d + T * d; i += stride) {
        if (i < d) {
            float sum = 0.0;
            for (uint t = 0u; t < T; ++t) sum += grad_shared_dz[t] * hidden_element(t * d + i);
            grad_shared_expert_gate[i] += sum;
        } else {
            uint at = i - d;
            grad_hidden[at] += grad_shared_dz[at / d] * shared_gate_weights[at % d];
        }
    }
}
