#version 450
#extension GL_GOOGLE_include_directive : require
// The tile map of the routed experts' products: each expert's kept rows (kept count from the
// expert info; from row e * C in the capacity layout, from offsets[e] dropless) cut into tiles
// of TILE_ROWS (decode: MATVEC_ROWS), listed expert by expert, and the indirect dispatch arguments of the up and
// down projections (columns of tiles x the tiles), so that the grid follows the route without
// a trip to the host. One workgroup.
#include "experts.h"
#define STAGE_BUFFERS EXPERT_TILES_BUFFERS
#define STAGE_PARAMS EXPERT_TILES_PARAMS
#include "common.glsl"

shared uint first_tile[NUM_EXPERTS + 1]; // the tiles before each expert's

// Decode calls (FLAG_FFN_MATVEC) take tiles of MATVEC_ROWS rows, MATVEC_COLUMNS outputs wide.
bool matvec() { return (P.flags & FLAG_FFN_MATVEC) != 0u; }
uint tile_rows() { return matvec() ? MATVEC_ROWS : TILE_ROWS; }
uint tile_columns() { return matvec() ? MATVEC_COLUMNS : TILE_COLUMNS; }

uint expert_rows(uint e) { return expert_info[NUM_EXPERTS + e]; }
uint expert_base(uint e) {
    return (P.flags & FLAG_DROPLESS) != 0u ? expert_info[2u * NUM_EXPERTS + e] : e * P.capacity;
}

void main() {
    uint lane = gl_LocalInvocationID.x;
    if (lane == 0u) {
        uint tiles = 0u;
        for (uint e = 0u; e < NUM_EXPERTS; ++e) {
            first_tile[e] = tiles;
            tiles += (expert_rows(e) + tile_rows() - 1u) / tile_rows();
        }
        first_tile[NUM_EXPERTS] = tiles;
        uvec3 up = uvec3((P.intermediate_size + tile_columns() - 1u) / tile_columns(), tiles, 1u);
        uvec3 down = uvec3((P.hidden_size + tile_columns() - 1u) / tile_columns(), tiles, 1u);
        // No tiles: no workgroups at all.
        if (tiles == 0u) up = down = uvec3(0u);
        tile_words[TILE_ARGS_UP] = up.x;
        tile_words[TILE_ARGS_UP + 1u] = up.y;
        tile_words[TILE_ARGS_UP + 2u] = up.z;
        tile_words[TILE_ARGS_DOWN] = down.x;
        tile_words[TILE_ARGS_DOWN + 1u] = down.y;
        tile_words[TILE_ARGS_DOWN + 2u] = down.z;
    }
    barrier();
    uint tiles = first_tile[NUM_EXPERTS];
    for (uint t = lane; t < tiles; t += gl_WorkGroupSize.x) {
        // The expert whose tiles hold t: the last e with first_tile[e] <= t.
        uint low = 0u, high = NUM_EXPERTS;
        while (high - low > 1u) {
            uint mid = (low + high) / 2u;
            if (first_tile[mid] <= t) low = mid; else high = mid;
        }
        uint begin = expert_base(low) + (t - first_tile[low]) * tile_rows();
        uint end = min(expert_base(low) + expert_rows(low), begin + tile_rows());
        tile_entries[TILE_ENTRIES / 4u + t] = uvec4(low, begin, end, 0u);
    }
}
