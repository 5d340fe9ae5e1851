#version 450
#extension GL_GOOGLE_include_directive : require
// The router projection (logits = x W_g^T), backward, from dL/dlogits [T, E] (the router's
// backward, losses.comp), as products in a fixed order:
//   GRAD_MATRIX_ROUTER         dL/dW_g[e, k] += sum over tokens t ascending of
//                              dL/dlogits[t, e] * x[t, k] (a non-finite x as 0: its row's
//                              dL/dlogits is 0, and adds nothing)
//   GRAD_MATRIX_ROUTER_HIDDEN  dL/dx[t, k] += sum over experts e ascending of
//                              dL/dlogits[t, e] * W_g[e, k], after the experts' part
// Grid: x over the d / FFN_COLUMNS column tiles, y over the E (or T) / FFN_ROWS row tiles.
#include "router_backward.h"
#define STAGE_BUFFERS GRAD_ROUTER_BUFFERS
#define STAGE_PARAMS GRAD_ROUTER_PARAMS
#include "common.glsl"
#include "hidden.glsl"

#include "ffn.glsl"

bool weights_matrix() { return P.grad_matrix == GRAD_MATRIX_ROUTER; }

// Rows: experts (dW_g) or tokens (dL/dx); columns: d; depth: tokens or experts.
float ffn_input(uint row, uint depth) {
    return weights_matrix() ? grad_logits[depth * NUM_EXPERTS + row]
                            : grad_logits[row * NUM_EXPERTS + depth];
}
float ffn_weight(uint unused, uint n, uint depth) {
    return weights_matrix() ? gradient_hidden_element(depth * P.hidden_size + n)
                            : router_weights[depth * P.hidden_size + n];
}
// f32 operands: ffn_tile reads them one by one (DTYPE is F32 for this kernel).
void ffn_weight_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    for (uint i = 0u; i < WEIGHT_CHUNK; ++i) w[i] = ffn_weight(expert, n, k0 + i);
}
void ffn_weight_quad(uint expert, uint n, uint k0, out float w[4]) {
    for (uint i = 0u; i < 4u; ++i) w[i] = ffn_weight(expert, n, k0 + i);
}

void main() {
    uint d = P.hidden_size, rows = weights_matrix() ? NUM_EXPERTS : P.num_tokens;
    uint depth = weights_matrix() ? P.num_tokens : NUM_EXPERTS;
    uint row_begin = gl_WorkGroupID.y * FFN_ROWS, col_begin = gl_WorkGroupID.x * FFN_COLUMNS;
    float acc[FFN_OUTPUTS], unused[FFN_OUTPUTS];
    ffn_tile(0u, row_begin, rows, col_begin, d, depth, acc, unused);
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint row = ffn_out_row(row_begin, i), n = ffn_out_col(col_begin, i);
        if (row >= rows || n >= d) continue;
        if (weights_matrix()) grad_router[row * d + n] += acc[i];
        else grad_hidden[row * d + n] += acc[i];
    }
}
