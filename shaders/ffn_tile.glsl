// The prefill form of the FFN's product (ffn.glsl includes it): for the rows [row_begin,
// row_end) of one expert and the FFN_COLUMNS (TILE_COLUMNS) outputs n from col_begin,
// acc[row, n] = sum over k ascending of ffn_input(row, k) * ffn_weight(expert, n, k) (and acc2
// with ffn_weight2), in f32, one accumulator per output. Tiles of TILE_DEPTH columns of both
// operands pass through shared memory; outside the matrices they read as zero.
// FFN_WORKGROUP_SIZE invocations, each owning FFN_THREAD_ROWS x FFN_THREAD_COLUMNS outputs:
// rows thread_y + 16 i, columns thread_x + 16 j.
#define FFN_ROWS TILE_ROWS
#define FFN_COLUMNS TILE_COLUMNS
#define FFN_LANES 16u // invocations along each side of a tile
#define FFN_OUTPUTS (FFN_THREAD_ROWS * FFN_THREAD_COLUMNS)

shared float tile_input[TILE_DEPTH][TILE_ROWS];
shared float tile_weight[TILE_DEPTH][TILE_COLUMNS];
#ifdef FFN_DUAL
shared float tile_weight2[TILE_DEPTH][TILE_COLUMNS];
#endif

uint ffn_thread_x() { return gl_LocalInvocationID.x % FFN_LANES; }
uint ffn_thread_y() { return gl_LocalInvocationID.x / FFN_LANES; }

// depth: the shared dimension K; columns: N, the outputs per row.
void ffn_tile(uint expert, uint row_begin, uint row_end, uint col_begin, uint columns,
              uint depth, inout float acc[FFN_OUTPUTS], inout float acc2[FFN_OUTPUTS]) {
    for (uint i = 0u; i < FFN_OUTPUTS; ++i) {
        acc[i] = 0.0;
        acc2[i] = 0.0;
    }
    // What this invocation loads of each tile: 4 consecutive k of one row (or one column).
    uint load_line = gl_LocalInvocationID.x / 4u, load_k = (gl_LocalInvocationID.x % 4u) * 4u;
    uint row = row_begin + load_line, col = col_begin + load_line;
    bool row_in = row < row_end, col_in = col < columns;
    uint tx = ffn_thread_x(), ty = ffn_thread_y();
    for (uint k0 = 0u; k0 < depth; k0 += TILE_DEPTH) {
        // Block formats read the 4 weights at once, their block's scales once; depth is whole
        // blocks, so the 4 are all inside the matrix or all past it.
        bool quads = DTYPE >= DTYPE_Q8_0, quad_in = col_in && k0 + load_k < depth;
        float w4[4], w4_2[4];
        if (quads && quad_in) ffn_weight_quad(expert, col, k0 + load_k, w4);
#ifdef FFN_DUAL
        if (quads && quad_in && FFN_TWO_MATRICES) ffn_weight2_quad(expert, col, k0 + load_k, w4_2);
#endif
        for (uint q = 0u; q < 4u; ++q) {
            uint k = k0 + load_k + q;
            bool k_in = k < depth;
            tile_input[load_k + q][load_line] = row_in && k_in ? ffn_input(row, k) : 0.0;
            tile_weight[load_k + q][load_line] =
                col_in && k_in ? (quads ? w4[q] : ffn_weight(expert, col, k)) : 0.0;
#ifdef FFN_DUAL
            if (FFN_TWO_MATRICES)
                tile_weight2[load_k + q][load_line] =
                    col_in && k_in ? (quads ? w4_2[q] : ffn_weight2(expert, col, k)) : 0.0;
#endif
        }
        barrier();
        for (uint kk = 0u; kk < TILE_DEPTH; ++kk) {
            float a[FFN_THREAD_ROWS], w[FFN_THREAD_COLUMNS];
            for (uint i = 0u; i < FFN_THREAD_ROWS; ++i) a[i] = tile_input[kk][ty + FFN_LANES * i];
            for (uint j = 0u; j < FFN_THREAD_COLUMNS; ++j) w[j] = tile_weight[kk][tx + FFN_LANES * j];
            for (uint i = 0u; i < FFN_THREAD_ROWS; ++i)
                for (uint j = 0u; j < FFN_THREAD_COLUMNS; ++j)
                    acc[i * FFN_THREAD_COLUMNS + j] += a[i] * w[j];
#ifdef FFN_DUAL
            if (FFN_TWO_MATRICES) {
                for (uint j = 0u; j < FFN_THREAD_COLUMNS; ++j) w[j] = tile_weight2[kk][tx + FFN_LANES * j];
                for (uint i = 0u; i < FFN_THREAD_ROWS; ++i)
                    for (uint j = 0u; j < FFN_THREAD_COLUMNS; ++j)
                        acc2[i * FFN_THREAD_COLUMNS + j] += a[i] * w[j];
            }
#endif
        }
        barrier();
    }
}

// The output rows and columns of an invocation's accumulator i.
uint ffn_out_row(uint row_begin, uint i) { return row_begin + ffn_thread_y() + FFN_LANES * (i / FFN_THREAD_COLUMNS); }
uint ffn_out_col(uint col_begin, uint i) { return col_begin + ffn_thread_x() + FFN_LANES * (i % FFN_THREAD_COLUMNS); }

