#version 450
#extension GL_GOOGLE_include_directive : require
// The shared experts' up projection: every token's hidden state times the shared FFN's up (and,
// SwiGLU, gate) projection [fs, d], plus biases, through the activation, into
// shared_intermediate [T, fs] f32; with the shared gate (Qwen2-MoE), the first column of tiles
// also writes each token's scale sigmoid(x . w) (the dot product in index order). Grid: x over
// the fs / FFN_COLUMNS column tiles, y over the T / FFN_ROWS row tiles.
#include "shared_experts.h"
#define STAGE_BUFFERS SHARED_UP_BUFFERS
#define STAGE_PARAMS SHARED_UP_PARAMS
#include "common.glsl"
#include "hidden.glsl"

#define FFN_DUAL
#include "ffn.glsl"
DEFINE_WEIGHT_READER(up_weight, shared_up_words)
DEFINE_WEIGHT_READER(gate_weight, shared_gate_words)
DEFINE_WEIGHT_CHUNK_READER(up_chunk, shared_up_words)
DEFINE_WEIGHT_CHUNK_READER(gate_chunk, shared_gate_words)
DEFINE_WEIGHT_QUAD_READER(up_quad, shared_up_words)
DEFINE_WEIGHT_QUAD_READER(gate_quad, shared_gate_words)

float ffn_input(uint row, uint k) { return hidden_element(row * P.hidden_size + k); }
float ffn_weight(uint expert, uint n, uint k) {
    return up_weight(n * P.hidden_size + k);
}
float ffn_weight2(uint expert, uint n, uint k) {
    return gate_weight(n * P.hidden_size + k);
}
void ffn_weight_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    up_chunk(n * P.hidden_size + k0, w);
}
void ffn_weight2_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    gate_chunk(n * P.hidden_size + k0, w);
}
void ffn_weight_quad(uint expert, uint n, uint k0, out float w[4]) {
    up_quad(n * P.hidden_size + k0, w);
}
void ffn_weight2_quad(uint expert, uint n, uint k0, out float w[4]) {
    gate_quad(n * P.hidden_size + k0, w);
}

void main() {
    uint row_begin = gl_WorkGroupID.y * FFN_ROWS, row_end = min(row_begin + FFN_ROWS, P.num_tokens);
    uint col_begin = gl_WorkGroupID.x * FFN_COLUMNS, f = P.shared_intermediate_size;
    float up[FFN_OUTPUTS], gate[FFN_OUTPUTS];
    ffn_tile(0u, row_begin, row_end, col_begin, f, P.hidden_size, up, gate);
    bool biases = (P.flags & FLAG_FFN_BIASES) != 0u;
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint row = ffn_out_row(row_begin, i), n = ffn_out_col(col_begin, i);
        if (row >= row_end || n >= f) continue;
        float u = up[i], g = gate[i];
        if (biases) {
            g += shared_bias[n];
            u += shared_bias[f + n];
        }
        shared_intermediate[row * f + n] = ffn_activate(g, u);
        // A trainable layer keeps them for its backward's activation slopes.
        if ((P.flags & FLAG_KEEP_PRE) != 0u) {
            grad_shared_pre[row * f + n] = u;
            if (FFN_TWO_MATRICES) grad_shared_pre[P.shared_pre_stride + row * f + n] = g;
        }
    }
    uint row = row_begin + gl_LocalInvocationID.x;
    if ((P.flags & FLAG_SHARED_GATE) != 0u && gl_WorkGroupID.x == 0u &&
        gl_LocalInvocationID.x < FFN_ROWS && row < row_end) {
        float sum = 0.0;
        for (uint k = 0u; k < P.hidden_size; ++k)
            sum += hidden_element(row * P.hidden_size + k) * shared_gate_weights[k];
        shared_scale[row] = 1.0 / (1.0 + exp(-sum));
    }
}
