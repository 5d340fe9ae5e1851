#version 450
#extension GL_GOOGLE_include_directive : require
// The experts' weight gradients, each a product over an expert's rows r ascending (depth: its
// row count), added to what the gradient buffers hold (the caller zeroes them for a fresh
// gradient):
//   GRAD_MATRIX_DOWN     dW_down[e, i, n] += sum_r dy[r, i] * h[r, n]
//   GRAD_MATRIX_GATE_UP  dW_up[e, n, k] += sum_r dL/d(up pre)[r, n] * x[r, k], and SwiGLU's
//                        dW_gate with dL/d(gate pre), x the row's hidden state
// The routed experts' (their kept rows) or, built with SHARED_FFN, the shared experts' (every
// token): grad_ffn.glsl. Grid: x over the output's column tiles (f / FFN_COLUMNS), y over its
// row tiles (d / FFN_ROWS) times the experts.
#include "experts_backward.h"
#ifndef SHARED_FFN
#define STAGE_BUFFERS GRAD_EXPERT_WEIGHTS_BUFFERS
#define STAGE_PARAMS GRAD_EXPERT_WEIGHTS_PARAMS
#else
#define STAGE_BUFFERS GRAD_SHARED_WEIGHTS_BUFFERS
#define STAGE_PARAMS GRAD_SHARED_WEIGHTS_PARAMS
#endif
#include "common.glsl"
#include "hidden.glsl"
#include "grad_ffn.glsl"

#define FFN_DUAL
#include "ffn.glsl"

uint expert_base; // the expert's first row: ffn_tile's depth counts rows from it

bool down_matrix() { return P.grad_matrix == GRAD_MATRIX_DOWN; }

// The product's rows are d's index (i or k), its columns f's (n), its depth the expert's rows.
float ffn_input(uint a, uint r) {
    uint row = expert_base + r;
    return down_matrix() ? row_dy(row, a) : row_x(row, a);
}
float ffn_weight(uint expert, uint n, uint r) {
    uint row = expert_base + r;
    return down_matrix() ? FFN_H[row * FFN_F + n] : PRE_GRADIENT(row * FFN_F + n);
}
float ffn_weight2(uint expert, uint n, uint r) {
    // SwiGLU's gate, for GRAD_MATRIX_GATE_UP (down's product leaves acc2 unused).
    return down_matrix() ? 0.0 : PRE_GRADIENT(P.grad_pre_stride + (expert_base + r) * FFN_F + n);
}
// f32 operands: ffn_tile reads them one by one (no block format reaches a trainable layer).
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
    uint d = P.hidden_size, f = FFN_F;
    uint row_tiles = (d + FFN_ROWS - 1u) / FFN_ROWS;
    uint expert = gl_WorkGroupID.y / row_tiles, a_begin = (gl_WorkGroupID.y % row_tiles) * FFN_ROWS;
    uint b_begin = gl_WorkGroupID.x * FFN_COLUMNS;
    uint count = expert_row_count(expert);
    expert_base = expert_first_row(expert);
    if (count == 0u) return; // nothing to add (uniform over the workgroup)
    float acc[FFN_OUTPUTS], acc2[FFN_OUTPUTS];
    ffn_tile(expert, a_begin, d, b_begin, f, count, acc, acc2);
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint a = ffn_out_row(a_begin, i), n = ffn_out_col(b_begin, i);
        if (a >= d || n >= f) continue;
        if (down_matrix()) {
            GRAD_DOWN_VALUES[(expert * d + a) * f + n] += acc[i];
            continue;
        }
        uint at = (expert * f + n) * d + a;
        GRAD_UP_VALUES[at] += acc[i];
        if (FFN_TWO_MATRICES) GRAD_GATE_VALUES[at] += acc2[i];
    }
}
