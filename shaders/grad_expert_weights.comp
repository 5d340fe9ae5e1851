#version 450
#extension GL_GOOGLE_include_directive : require
// The routed experts' weight gradients, each a product over the expert's kept rows r ascending
// (depth: the expert's row count), added to what the gradient buffers hold (the caller zeroes
// them for a fresh gradient):
//   GRAD_MATRIX_DOWN     dW_down[e, i, n] += sum_r grad_expert_out[r, i] * h[r, n]
//   GRAD_MATRIX_GATE_UP  dW_up[e, n, k] += sum_r dL/d(up pre)[r, n] * x[r, k], and SwiGLU's
//                        dW_gate with dL/d(gate pre), x the row's hidden state
// Grid: x over the output's column tiles (f / FFN_COLUMNS), y over its row tiles (d /
// FFN_ROWS) times the experts.
#include "experts_backward.h"
#define STAGE_BUFFERS GRAD_EXPERT_WEIGHTS_BUFFERS
#define STAGE_PARAMS GRAD_EXPERT_WEIGHTS_PARAMS
#include "common.glsl"
#include "hidden.glsl"

#define FFN_DUAL
#include "ffn.glsl"

uint expert_base; // the expert's first row: ffn_tile's depth counts rows from it

bool down_matrix() { return P.grad_matrix == GRAD_MATRIX_DOWN; }

// The product's rows are d's index (i or k), its columns f's (n), its depth the expert's rows.
float ffn_input(uint a, uint r) {
    uint row = expert_base + r;
    if (down_matrix()) return grad_expert_out[row * P.hidden_size + a];
    int token = row_token[row];
    return token < 0 ? 0.0 : hidden_element(uint(token) * P.hidden_size + a);
}
float ffn_weight(uint expert, uint n, uint r) {
    uint row = expert_base + r;
    return down_matrix() ? intermediate[row * P.intermediate_size + n]
                         : grad_pre[row * P.intermediate_size + n];
}
float ffn_weight2(uint expert, uint n, uint r) {
    // SwiGLU's gate, for GRAD_MATRIX_GATE_UP (down's product leaves acc2 unused).
    return down_matrix() ? 0.0
                         : grad_pre[P.grad_pre_stride + (expert_base + r) * P.intermediate_size + n];
}
// f32 operands: ffn_tile reads them one by one (DTYPE is F32 for this kernel).
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
    uint d = P.hidden_size, f = P.intermediate_size;
    uint row_tiles = (d + FFN_ROWS - 1u) / FFN_ROWS;
    uint expert = gl_WorkGroupID.y / row_tiles, a_begin = (gl_WorkGroupID.y % row_tiles) * FFN_ROWS;
    uint b_begin = gl_WorkGroupID.x * FFN_COLUMNS;
    uint count = expert_info[NUM_EXPERTS + expert];
    expert_base = (P.flags & FLAG_DROPLESS) != 0u ? expert_info[2u * NUM_EXPERTS + expert]
                                                  : expert * P.capacity;
    if (count == 0u) return; // nothing to add (uniform over the workgroup)
    float acc[FFN_OUTPUTS], acc2[FFN_OUTPUTS];
    ffn_tile(expert, a_begin, d, b_begin, f, count, acc, acc2);
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint a = ffn_out_row(a_begin, i), n = ffn_out_col(b_begin, i);
        if (a >= d || n >= f) continue;
        if (down_matrix()) {
            grad_expert_down[(expert * d + a) * f + n] += acc[i];
            continue;
        }
        uint at = (expert * f + n) * d + a;
        grad_expert_up[at] += acc[i];
        if (FFN_TWO_MATRICES) grad_expert_gate[at] += acc2[i];
    }
}
