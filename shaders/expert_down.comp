#version 450
#extension GL_GOOGLE_include_directive : require
// The routed experts' down projection: for each tile of the map, its rows' intermediate
// [rows, f] times the expert's down projection [d, f], plus its bias, into the expert outputs
// [rows, d] f32, which the layer's combine sums per token. Grid (indirect): x over the
// d / FFN_COLUMNS column tiles, y over the tiles.
#include "experts.h"
#define STAGE_BUFFERS EXPERT_DOWN_BUFFERS
#define STAGE_PARAMS EXPERT_DOWN_PARAMS
#define STAGE_WRITES_EXPERT_OUT
#include "common.glsl"

#include "ffn.glsl"
DEFINE_WEIGHT_READER(down_weight, expert_down_words)
DEFINE_WEIGHT_CHUNK_READER(down_chunk, expert_down_words)
DEFINE_WEIGHT_QUAD_READER(down_quad, expert_down_words)

float ffn_input(uint row, uint k) { return intermediate[row * P.intermediate_size + k]; }
float ffn_weight(uint expert, uint n, uint k) {
    return down_weight((expert * P.hidden_size + n) * P.intermediate_size + k);
}
void ffn_weight_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    down_chunk((expert * P.hidden_size + n) * P.intermediate_size + k0, w);
}
void ffn_weight_quad(uint expert, uint n, uint k0, out float w[4]) {
    down_quad((expert * P.hidden_size + n) * P.intermediate_size + k0, w);
}

void main() {
    uvec4 tile = tile_entries[TILE_ENTRIES / 4u + gl_WorkGroupID.y];
    uint col_begin = gl_WorkGroupID.x * FFN_COLUMNS, d = P.hidden_size, E = NUM_EXPERTS;
    float acc[FFN_OUTPUTS], unused[FFN_OUTPUTS];
    ffn_tile(tile.x, tile.y, tile.z, col_begin, d, P.intermediate_size, acc, unused);
    bool biases = (P.flags & FLAG_FFN_BIASES) != 0u;
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        uint row = ffn_out_row(tile.y, i), n = ffn_out_col(col_begin, i);
        if (row >= tile.z || n >= d) continue;
        float value = acc[i];
        if (biases) value += expert_bias[2u * E * P.intermediate_size + tile.x * d + n];
        expert_out_words[row * d + n] = floatBitsToUint(value);
    }
}
