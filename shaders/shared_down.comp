#version 450
#extension GL_GOOGLE_include_directive : require
// The shared experts' down projection: shared_intermediate [T, fs] times the shared FFN's down
// projection [d, fs], plus its bias, times the token's shared-gate scale when gated, into
// shared_out [T, d] f32, which the layer's combine adds. Grid: x over the d / FFN_COLUMNS
// column tiles, y over the T / FFN_ROWS row tiles.
#include "shared_experts.h"
#define STAGE_BUFFERS SHARED_DOWN_BUFFERS
#define STAGE_PARAMS SHARED_DOWN_PARAMS
#include "common.glsl"

#include "ffn.glsl"
DEFINE_WEIGHT_READER(down_weight, shared_down_words)
DEFINE_WEIGHT_CHUNK_READER(down_chunk, shared_down_words)
DEFINE_WEIGHT_QUAD_READER(down_quad, shared_down_words)

float ffn_input(uint row, uint k) { return shared_intermediate[row * P.shared_intermediate_size + k]; }
float ffn_weight(uint expert, uint n, uint k) {
    return down_weight(n * P.shared_intermediate_size + k);
}
void ffn_weight_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    down_chunk(n * P.shared_intermediate_size + k0, w);
}
void ffn_weight_quad(uint expert, uint n, uint k0, out float w[4]) {
    down_quad(n * P.shared_intermediate_size + k0, w);
}

void main() {
    uint row_begin = gl_WorkGroupID.y * FFN_ROWS, row_end = min(row_begin + FFN_ROWS, P.num_tokens);
    uint col_begin = gl_WorkGroupID.x * FFN_COLUMNS, d = P.hidden_size;
    float acc[FFN_OUTPUTS], unused[FFN_OUTPUTS];
    ffn_tile(0u, row_begin, row_end, col_begin, d, P.shared_intermediate_size, acc, unused);
    bool biases = (P.flags & FLAG_FFN_BIASES) != 0u;
    bool gated = (P.flags & FLAG_SHARED_GATE) != 0u;
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint row = ffn_out_row(row_begin, i), n = ffn_out_col(col_begin, i);
        if (row >= row_end || n >= d) continue;
        float value = acc[i];
        if (biases) value += shared_bias[2u * P.shared_intermediate_size + n];
        if (gated) value *= shared_scale[row];
        shared_out[row * d + n] = value;
    }
}
