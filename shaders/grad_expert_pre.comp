#version 450
#extension GL_GOOGLE_include_directive : require
// The experts' backward, first: each tile's up (and SwiGLU's gate) pre-activations,
// x W_up^T + b (and x W_gate^T + b), recomputed as the forward computes them, into the
// pre-activations' buffer (up's from 0, gate's grad_pre_stride on), for the activation's slopes.
// The routed experts' (grid, indirect from the tile map's up arguments: x over the f /
// FFN_COLUMNS column tiles, y over the tiles) or, built with SHARED_FFN, the shared experts'
// (y over the T / FFN_ROWS token tiles): grad_ffn.glsl.
#include "experts_backward.h"
#ifndef SHARED_FFN
#define STAGE_BUFFERS GRAD_EXPERT_PRE_BUFFERS
#define STAGE_PARAMS GRAD_EXPERT_PRE_PARAMS
#else
#define STAGE_BUFFERS GRAD_SHARED_PRE_BUFFERS
#define STAGE_PARAMS GRAD_SHARED_PRE_PARAMS
#endif
#include "common.glsl"
#include "hidden.glsl"
#include "grad_ffn.glsl"

#define FFN_DUAL
#include "ffn.glsl"
DEFINE_WEIGHT_READER(up_weight, UP_WORDS)
DEFINE_WEIGHT_READER(gate_weight, GATE_WORDS)

float ffn_input(uint row, uint k) { return row_x(row, k); }
float ffn_weight(uint expert, uint n, uint k) {
    return up_weight((expert * FFN_F + n) * P.hidden_size + k);
}
float ffn_weight2(uint expert, uint n, uint k) {
    return gate_weight((expert * FFN_F + n) * P.hidden_size + k);
}
// Training takes f32, f16 and bf16 weights only: no block format reaches these.
void ffn_weight_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    for (uint i = 0u; i < WEIGHT_CHUNK; ++i) w[i] = ffn_weight(expert, n, k0 + i);
}
void ffn_weight2_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    for (uint i = 0u; i < WEIGHT_CHUNK; ++i) w[i] = ffn_weight2(expert, n, k0 + i);
}
void ffn_weight_quad(uint expert, uint n, uint k0, out float w[4]) {
    for (uint i = 0u; i < 4u; ++i) w[i] = ffn_weight(expert, n, k0 + i);
}
void ffn_weight2_quad(uint expert, uint n, uint k0, out float w[4]) {
    for (uint i = 0u; i < 4u; ++i) w[i] = ffn_weight2(expert, n, k0 + i);
}

void main() {
    uvec4 tile = backward_tile();
    uint col_begin = gl_WorkGroupID.x * FFN_COLUMNS, f = FFN_F;
    float up[FFN_OUTPUTS], gate[FFN_OUTPUTS];
    ffn_tile(tile.x, tile.y, tile.z, col_begin, f, P.hidden_size, up, gate);
    bool biases = (P.flags & FLAG_FFN_BIASES) != 0u;
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint row = ffn_out_row(tile.y, i), n = ffn_out_col(col_begin, i);
        if (row >= tile.z || n >= f) continue;
        float u = up[i], g = gate[i];
        if (biases) {
            g += FFN_BIAS[tile.x * f + n];
            u += FFN_BIAS[FFN_EXPERTS * f + tile.x * f + n];
        }
        GRAD_PRE_VALUES[row * f + n] = u;
        if (FFN_TWO_MATRICES) GRAD_PRE_VALUES[P.grad_pre_stride + row * f + n] = g;
    }
}
