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

#include "expert_up_operands.glsl"

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
        // A trainable layer keeps them for its backward's activation slopes.
        if ((P.flags & FLAG_KEEP_PRE) != 0u) {
            grad_pre[row * f + n] = u;
            if (FFN_TWO_MATRICES) grad_pre[P.grad_pre_stride + row * f + n] = g;
        }
    }
}
