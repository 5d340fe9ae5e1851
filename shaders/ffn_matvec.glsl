// The decode form of the FFN's product (ffn.glsl includes it for FFN_MATVEC): at most
// MATVEC_ROWS rows of one expert, MATVEC_COLUMNS outputs n from col_begin per workgroup, each
// output's dot product split among MATVEC_LANES invocations so that a weight row is read once,
// in consecutive k across the lanes. Lane l sums k = l, l + LANES, ... ascending for every row
// (block formats: chunks of WEIGHT_CHUNK consecutive k, chunk l, l + LANES, ...);
// the lanes' partial sums then add in lane order through shared memory: a fixed order, the same
// bits every run. Invocation c * LANES + l computes column c; invocation c * ROWS + r (the first
// COLUMNS * ROWS) holds output (r, c).
#define FFN_ROWS MATVEC_ROWS
#define FFN_COLUMNS MATVEC_COLUMNS
#define FFN_OUTPUTS 1u

shared float matvec_partial[MATVEC_COLUMNS * MATVEC_ROWS * MATVEC_LANES];

// The lanes' partials of this invocation's rows, summed in lane order for its output.
float matvec_reduce(float partial[MATVEC_ROWS]) {
    uint column = gl_LocalInvocationID.x / MATVEC_LANES, lane = gl_LocalInvocationID.x % MATVEC_LANES;
    barrier(); // the previous reduction's reads are done
    for (uint r = 0u; r < MATVEC_ROWS; ++r)
        matvec_partial[(column * MATVEC_ROWS + r) * MATVEC_LANES + lane] = partial[r];
    barrier();
    float sum = 0.0;
    if (gl_LocalInvocationID.x < MATVEC_COLUMNS * MATVEC_ROWS)
        for (uint l = 0u; l < MATVEC_LANES; ++l)
            sum += matvec_partial[gl_LocalInvocationID.x * MATVEC_LANES + l];
    return sum;
}

// depth: the shared dimension K; columns: N, the outputs per row.
void ffn_tile(uint expert, uint row_begin, uint row_end, uint col_begin, uint columns,
              uint depth, inout float acc[FFN_OUTPUTS], inout float acc2[FFN_OUTPUTS]) {
    uint column = gl_LocalInvocationID.x / MATVEC_LANES, lane = gl_LocalInvocationID.x % MATVEC_LANES;
    uint n = col_begin + column, rows = row_end - row_begin;
    float partial[MATVEC_ROWS], partial2[MATVEC_ROWS];
    for (uint r = 0u; r < MATVEC_ROWS; ++r) {
        partial[r] = 0.0;
        partial2[r] = 0.0;
    }
    if (n < columns && DTYPE >= DTYPE_Q8_0) {
        // Block formats: lane l takes the chunks l, l + LANES, ... of WEIGHT_CHUNK weights,
        // each chunk's scales read once; within a chunk k ascends.
        for (uint k0 = lane * WEIGHT_CHUNK; k0 < depth; k0 += MATVEC_LANES * WEIGHT_CHUNK) {
            float w[WEIGHT_CHUNK];
            ffn_weight_chunk(expert, n, k0, w);
#ifdef FFN_DUAL
            float w2[WEIGHT_CHUNK];
            if (FFN_TWO_MATRICES) ffn_weight2_chunk(expert, n, k0, w2);
#endif
            for (uint r = 0u; r < MATVEC_ROWS; ++r) {
                if (r >= rows) break;
                for (uint j = 0u; j < WEIGHT_CHUNK; ++j) {
                    float x = ffn_input(row_begin + r, k0 + j);
                    partial[r] += x * w[j];
#ifdef FFN_DUAL
                    if (FFN_TWO_MATRICES) partial2[r] += x * w2[j];
#endif
                }
            }
        }
    } else if (n < columns)
        for (uint k = lane; k < depth; k += MATVEC_LANES) {
            float w = ffn_weight(expert, n, k);
#ifdef FFN_DUAL
            float w2 = FFN_TWO_MATRICES ? ffn_weight2(expert, n, k) : 0.0;
#endif
            for (uint r = 0u; r < MATVEC_ROWS; ++r) {
                if (r >= rows) break;
                float x = ffn_input(row_begin + r, k);
                partial[r] += x * w;
#ifdef FFN_DUAL
                if (FFN_TWO_MATRICES) partial2[r] += x * w2;
#endif
            }
        }
    acc[0] = matvec_reduce(partial);
    acc2[0] = FFN_TWO_MATRICES ? matvec_reduce(partial2) : 0.0;
}

// The output of this invocation: past row_end for the invocations that hold none.
uint ffn_out_row(uint row_begin, uint i) {
    return gl_LocalInvocationID.x < MATVEC_COLUMNS * MATVEC_ROWS
               ? row_begin + gl_LocalInvocationID.x % MATVEC_ROWS
               : 0xFFFFFFFFu;
}
uint ffn_out_col(uint col_begin, uint i) {
    return col_begin + gl_LocalInvocationID.x / MATVEC_ROWS;
}
