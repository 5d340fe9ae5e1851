#version 450
#extension GL_GOOGLE_include_directive : require
// The routed experts' up projection: for each tile of the map (expert_tiles.comp), its rows'
// hidden states (gathered through row_token: rows no token fills read as zeros) times the
// expert's up (and, SwiGLU, gate) projection, plus biases, through the activation, into
// intermediate [rows, f] f32. Grid (indirect): x over the f / FFN_COLUMNS column tiles, y over
// the tiles.
#include "experts.h"
#define STAGE_BUFFERS EXPERT_UP_BUFFERS
#define STAGE_PARAMS EXPERT_UP_PARAMS
#include "common.glsl"
#include "hidden.glsl"

#define FFN_DUAL
#include "ffn.glsl"
DEFINE_WEIGHT_READER(up_weight, expert_up_words)
DEFINE_WEIGHT_READER(gate_weight, expert_gate_words)
DEFINE_WEIGHT_CHUNK_READER(up_chunk, expert_up_words)
DEFINE_WEIGHT_CHUNK_READER(gate_chunk, expert_gate_words)
DEFINE_WEIGHT_QUAD_READER(up_quad, expert_up_words)
DEFINE_WEIGHT_QUAD_READER(gate_quad, expert_gate_words)

float ffn_input(uint row, uint k) {
    int token = row_token[row];
    return token < 0 ? 0.0 : hidden_element(uint(token) * P.hidden_size + k);
}
float ffn_weight(uint expert, uint n, uint k) {
    return up_weight((expert * P.intermediate_size + n) * P.hidden_size + k);
}
float ffn_weight2(uint expert, uint n, uint k) {
    return gate_weight((expert * P.intermediate_size + n) * P.hidden_size + k);
}
void ffn_weight_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    up_chunk((expert * P.intermediate_size + n) * P.hidden_size + k0, w);
}
void ffn_weight2_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    gate_chunk((expert * P.intermediate_size + n) * P.hidden_size + k0, w);
}
void ffn_weight_quad(uint expert, uint n, uint k0, out float w[4]) {
    up_quad((expert * P.intermediate_size + n) * P.hidden_size + k0, w);
}
void ffn_weight2_quad(uint expert, uint n, uint k0, out float w[4]) {
    gate_quad((expert * P.intermediate_size + n) * P.hidden_size + k0, w);
}

void main() {
    uvec4 tile = tile_entries[TILE_ENTRIES / 4u + gl_WorkGroupID.y];
    uint col_begin = gl_WorkGroupID.x * FFN_COLUMNS, f = P.intermediate_size, E = NUM_EXPERTS;
    float up[FFN_OUTPUTS], gate[FFN_OUTPUTS];
    ffn_tile(tile.x, tile.y, tile.z, col_begin, f, P.hidden_size, up, gate);
    bool biases = (P.flags & FLAG_FFN_BIASES) != 0u;
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint row = ffn_out_row(tile.y, i), n = ffn_out_col(col_begin, i);
        if (row >= tile.z || n >= f) continue;
        float u = up[i], g = gate[i];
        if (biases) {
            g += expert_bias[tile.x * f + n];
            u += expert_bias[E * f + tile.x * f + n];
        }
        intermediate[row * f + n] = ffn_activate(g, u);
    }
}
