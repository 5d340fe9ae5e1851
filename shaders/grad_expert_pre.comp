#version 450
#extension GL_GOOGLE_include_directive : require
// The routed experts' backward, first: each tile's up (and SwiGLU's gate) pre-activations,
// x W_up^T + b (and x W_gate^T + b), recomputed as expert_up.comp computes them, into grad_pre
// (up's from 0, gate's grad_pre_stride on), for the activation's slopes. Grid (indirect, the
// tile map's up arguments): x over the f / FFN_COLUMNS column tiles, y over the tiles.
#include "experts_backward.h"
#define STAGE_BUFFERS GRAD_EXPERT_PRE_BUFFERS
#define STAGE_PARAMS GRAD_EXPERT_PRE_PARAMS
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
        grad_pre[row * f + n] = u;
        if (FFN_TWO_MATRICES) grad_pre[P.grad_pre_stride + row * f + n] = g;
    }
}
