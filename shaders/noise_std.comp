#version 450
#extension GL_GOOGLE_include_directive : require
// Learned noise std (noisy top-k gating): noise_std[t, e] = softplus(x_t . W_noise[:, e]) +
// epsilon, from the hidden states x [T, d] (hidden_type) and W_noise [d, E] f32; the dot
// product in f32 in index order. epsilon arrives as noise_amount. Grid-stride over T * E.
#include "noise_std.h"
#define STAGE_BUFFERS NOISE_STD_BUFFERS
#define STAGE_PARAMS NOISE_STD_PARAMS
#include "common.glsl"
#include "noise.glsl"
#include "hidden.glsl"
#include "learned_noise.glsl"

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint E = P.num_experts;
    for (uint i = gl_GlobalInvocationID.x; i < P.num_tokens * E; i += stride) {
        float dot_product = learned_noise_preactivation(i / E, i % E);
        // softplus without overflow: max(z, 0) + log(1 + exp(-|z|))
        float softplus = max(dot_product, 0.0) + log(1.0 + exp(-abs(dot_product)));
        noise_std_values[i] = softplus + noise_amount();
    }
}
