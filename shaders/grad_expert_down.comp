#version 450
#extension GL_GOOGLE_include_directive : require
// The experts' backward through down and the activation: for each tile, dL/dh [rows, f] = the
// rows' upstream gradient [rows, d] (the routed rows' w * dL/doutput; the shared experts' gated
// dL/doutput) times the down projection [d, f] (read down its columns), then at each (row, n)
// the activation's slopes at the pre-activations turn it into dL/d(up pre-activation) and
// (SwiGLU) dL/d(gate pre-activation), written after them (PRE_GRADIENT). Routed or, built
// with SHARED_FFN, shared (grad_ffn.glsl). The pre-activations are the forward's, kept by a
// trainable layer (expert_up.comp, shared_up.comp: FLAG_KEEP_PRE). Grid: x over the f /
// FFN_COLUMNS column tiles, y over the tiles (routed: indirect, the tile map's up arguments).
#include "experts_backward.h"
#ifndef SHARED_FFN
#define STAGE_BUFFERS GRAD_EXPERT_DOWN_BUFFERS
#define STAGE_PARAMS GRAD_EXPERT_DOWN_PARAMS
#else
#define STAGE_BUFFERS GRAD_SHARED_DOWN_BUFFERS
#define STAGE_PARAMS GRAD_SHARED_DOWN_PARAMS
#endif
#include "common.glsl"
#include "grad_ffn.glsl"

#include "ffn.glsl"
#include "activation_slopes.glsl"
DEFINE_WEIGHT_READER(down_weight, DOWN_WORDS)

float ffn_input(uint row, uint k) { return row_dy(row, k); }
// dh[row, n] = sum over i of dy[row, i] * W_down[e, i, n].
float ffn_weight(uint expert, uint n, uint k) {
    return down_weight((expert * P.hidden_size + k) * FFN_F + n);
}
// Training takes f32, f16 and bf16 weights only: no block format reaches these.
void ffn_weight_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    for (uint i = 0u; i < WEIGHT_CHUNK; ++i) w[i] = ffn_weight(expert, n, k0 + i);
}
void ffn_weight_quad(uint expert, uint n, uint k0, out float w[4]) {
    for (uint i = 0u; i < 4u; ++i) w[i] = ffn_weight(expert, n, k0 + i);
}

void main() {
    uvec4 tile = backward_tile();
    uint col_begin = gl_WorkGroupID.x * FFN_COLUMNS, f = FFN_F;
    float dh[FFN_OUTPUTS], unused[FFN_OUTPUTS];
    ffn_tile(tile.x, tile.y, tile.z, col_begin, f, P.hidden_size, dh, unused);
    bool swiglu = ACTIVATION == ACTIVATION_SWIGLU;
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint row = ffn_out_row(tile.y, i), n = ffn_out_col(col_begin, i);
        if (row >= tile.z || n >= f) continue;
        uint at = row * f + n;
        float up = GRAD_PRE_VALUES[at], gate = swiglu ? GRAD_PRE_VALUES[P.grad_pre_stride + at] : 0.0;
        vec2 slopes = activation_slopes(gate, up);
        PRE_GRADIENT(at) = dh[i] * slopes.y;
        if (swiglu) PRE_GRADIENT(P.grad_pre_stride + at) = dh[i] * slopes.x;
    }
}
