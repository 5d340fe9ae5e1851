#version 450
#extension GL_GOOGLE_include_directive : require
// Dispatch: gathers token rows into the expert-major buffer. Row r of `dispatched` is
// hidden[row_token[r]], or zeros where row_token[r] is -1 (an unfilled slot or padding).
// Rows are copied bit for bit whatever the dtype. Grid: any 1D size; a grid-stride loop covers
// dispatched_rows * d elements in the widest unit the row length allows.
#include "common.glsl"
#include "rows.glsl"

layout(std430, binding = BINDING_HIDDEN) readonly buffer HiddenVec4 { uvec4 hidden_vec4[]; };
layout(std430, binding = BINDING_DISPATCHED) buffer DispatchedVec4 { uvec4 dispatched_vec4[]; };

uint source_half(uint row, uint col) {
    int token = row_token[row];
    if (token < 0) return 0u;
    uint index = uint(token) * P.hidden_size + col;
    uint word = hidden_words[index >> 1];
    return (index & 1u) == 0u ? (word & 0xFFFFu) : (word >> 16);
}

void main() {
    uint unit = unit_bytes();
    uint stride = grid_invocations();
    if (unit != 0u) {
        uint per_row = row_bytes() / unit;
        uint total = P.dispatched_rows * per_row;
        for (uint u = gl_GlobalInvocationID.x; u < total; u += stride) {
            uint row = u / per_row;
            uint col = u - row * per_row;
            int token = row_token[row];
            uint source = uint(token) * per_row + col;
            if (unit == 16u)
                dispatched_vec4[u] = token < 0 ? uvec4(0u) : hidden_vec4[source];
            else
                dispatched_words[u] = token < 0 ? 0u : hidden_words[source];
        }
        return;
    }
    // 16-bit elements, odd d: each output word holds two elements, maybe of two rows.
    uint elements = P.dispatched_rows * P.hidden_size;
    uint words = (elements + 1u) / 2u;
    for (uint w = gl_GlobalInvocationID.x; w < words; w += stride) {
        uint first = 2u * w;
        uint low = source_half(first / P.hidden_size, first % P.hidden_size);
        uint high = 0u;
        if (first + 1u < elements)
            high = source_half((first + 1u) / P.hidden_size, (first + 1u) % P.hidden_size);
        dispatched_words[w] = low | (high << 16);
    }
}
