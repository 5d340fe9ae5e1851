#version 450
#extension GL_GOOGLE_include_directive : require
// Dispatch: gathers token rows into the expert-major buffer. Row r of `dispatched` is
// hidden[row_token[r]], or zeros where row_token[r] is -1 (an unfilled slot or padding).
// Rows are copied bit for bit whatever the dtype, in the widest unit the row length allows.
// Grid: any 2D size; y strides over rows, x over a row's units.
#include "dispatch.h"
#define STAGE_BUFFERS DISPATCH_BUFFERS
#define STAGE_PARAMS DISPATCH_PARAMS
#include "common.glsl"
#include "rows.glsl"


uint source_half(uint row, uint col) {
    int token = row_token[row];
    if (token < 0) return 0u;
    uint index = uint(token) * P.hidden_size + col;
    uint word = hidden_word(index >> 1);
    return (index & 1u) == 0u ? (word & 0xFFFFu) : (word >> 16);
}

void main() {
    uint unit = unit_bytes();
    if (unit != 0u) {
        // Rows along y (one row's token read once), units of a row along x: no division.
        uint per_row = row_bytes() / unit;
        uint column_stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
        for (uint row = gl_WorkGroupID.y; row < P.dispatched_rows; row += gl_NumWorkGroups.y) {
            int token = row_token[row];
            uint destination = row * per_row;
            uint source = uint(max(token, 0)) * per_row;
            for (uint col = gl_GlobalInvocationID.x; col < per_row; col += column_stride) {
                if (unit == 16u)
                    store_dispatched_unit(destination + col, token < 0 ? uvec4(0u) : hidden_unit(source + col));
                else
                    store_dispatched_word(destination + col, token < 0 ? 0u : hidden_word(source + col));
            }
        }
        return;
    }
    // 16-bit elements, odd d: each output word holds two elements, maybe of two rows.
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * gl_WorkGroupSize.x;
    uint first_invocation = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
                            gl_LocalInvocationID.x;
    uint elements = P.dispatched_rows * P.hidden_size;
    uint words = (elements + 1u) / 2u;
    for (uint w = first_invocation; w < words; w += stride) {
        uint first = 2u * w;
        uint low = source_half(first / P.hidden_size, first % P.hidden_size);
        uint high = 0u;
        if (first + 1u < elements)
            high = source_half((first + 1u) / P.hidden_size, (first + 1u) % P.hidden_size);
        store_dispatched_word(w, low | (high << 16));
    }
}
