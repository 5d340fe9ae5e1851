#version 450
#extension GL_GOOGLE_include_directive : require
// The router projection: logits[t, e] = sum over j ascending of hidden[t, j] * W_router[e, j],
// in f32 (precise: no fused multiply-add, so that every device and the CPU reference give the
// same bits), the hidden states in hidden_type, W_router [E, d] f32 (the layout of a model's
// gate weight, `logits = x W_router^T`), the logits f32. One
// invocation per (token, expert): x over the experts, y over the TOKEN_CHUNK tokens of this
// dispatch's chunk (token_chunk), so that no invocation loops past d (see LOOP_BUDGET).
#include "router_projection.h"
#define STAGE_BUFFERS ROUTER_PROJECTION_BUFFERS
#define STAGE_PARAMS ROUTER_PROJECTION_PARAMS
#define STAGE_WRITES_LOGITS
#include "common.glsl"
#include "hidden.glsl"

void main() {
    uint expert = gl_GlobalInvocationID.x;
    uint token = P.token_chunk * TOKEN_CHUNK + gl_WorkGroupID.y;
    if (expert >= P.num_experts || token >= P.num_tokens) return;
    uint d = P.hidden_size, E = P.num_experts;
    precise float sum = 0.0;
    for (uint j = 0u; j < d; ++j) {
        precise float term = hidden_element(token * d + j) * router_weights[expert * d + j];
        sum = sum + term;
    }
    store_logits_word(token * E + expert, floatBitsToUint(sum));
}
