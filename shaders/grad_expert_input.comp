#version 450
#extension GL_GOOGLE_include_directive : require
// The experts' backward into their inputs: for each tile, dL/d(input rows) [rows, d] =
// dL/d(up pre-activations) [rows, f] times W_up [f, d], plus (SwiGLU) dL/d(gate
// pre-activations) times W_gate: one product f + f deep, up's terms first. The routed experts'
// into grad_rows (dL/d(dispatched rows), which grad_hidden.comp sums per token); built with
// SHARED_FFN, the shared experts' added to dL/dx after the routed experts' part (grad_ffn.glsl).
// Grid: x over the d / FFN_COLUMNS column tiles, y over the tiles (routed: indirect, the tile
// map's down arguments).
#include "experts_backward.h"
#ifndef SHARED_FFN
#define STAGE_BUFFERS GRAD_EXPERT_INPUT_BUFFERS
#define STAGE_PARAMS GRAD_EXPERT_INPUT_PARAMS
#else
#define STAGE_BUFFERS GRAD_SHARED_INPUT_BUFFERS
#define STAGE_PARAMS GRAD_SHARED_INPUT_PARAMS
#endif
#include "common.glsl"
#include "grad_ffn.glsl"

#include "ffn.glsl"
DEFINE_WEIGHT_READER(up_weight, UP_WORDS)
DEFINE_WEIGHT_READER(gate_weight, GATE_WORDS)

// Depth k over [0, f) is up's, over [f, 2f) gate's.
float ffn_input(uint row, uint k) {
    uint f = FFN_F;
    return k < f ? PRE_GRADIENT(row * f + k) : PRE_GRADIENT(P.grad_pre_stride + row * f + k - f);
}
float ffn_weight(uint expert, uint n, uint k) {
    uint f = FFN_F;
    return k < f ? up_weight((expert * f + k) * P.hidden_size + n)
                 : gate_weight((expert * f + k - f) * P.hidden_size + n);
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
    uint col_begin = gl_WorkGroupID.x * FFN_COLUMNS, d = P.hidden_size;
    uint depth = (ACTIVATION == ACTIVATION_SWIGLU ? 2u : 1u) * FFN_F;
    float acc[FFN_OUTPUTS], unused[FFN_OUTPUTS];
    ffn_tile(tile.x, tile.y, tile.z, col_begin, d, depth, acc, unused);
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint row = ffn_out_row(tile.y, i), n = ffn_out_col(col_begin, i);
        if (row >= tile.z || n >= d) continue;
#ifdef SHARED_FFN
        grad_hidden[row * d + n] += acc[i];
#else
        grad_rows[row * d + n] = acc[i];
#endif
    }
}
