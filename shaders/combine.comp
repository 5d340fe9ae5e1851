#version 450
#extension GL_GOOGLE_include_directive : require
// Combine: combined[t] = sum over j ascending of weights[t, j] * expert_out[rows[t, j]], over
// the kept choices (rows >= 0), accumulated in f32 whatever the storage type; a token with no
// kept choice gets zeros. Grid: any 1D size; a grid-stride loop covers T * d elements.
#include "common.glsl"
#include "rows.glsl"

layout(std430, binding = BINDING_EXPERT_OUT) readonly buffer ExpertOutVec4 { uvec4 expert_out_vec4[]; };
layout(std430, binding = BINDING_COMBINED) buffer CombinedVec4 { uvec4 combined_vec4[]; };

// Sum for one element of one token.
float combine_element(uint token, uint col) {
    float acc = 0.0;
    for (uint j = 0u; j < TOP_K; ++j) {
        int row = rows[token * TOP_K + j];
        if (row < 0) continue;
        uint index = uint(row) * P.hidden_size + col;
        acc += weights[token * TOP_K + j] * ELEMENT_OF(expert_out_words, index);
    }
    return acc;
}

void combine_vec4_unit(uint u, uint per_row) {
    uint token = u / per_row;
    uint col = u - token * per_row;
    vec4 acc_low = vec4(0.0), acc_high = vec4(0.0);
    for (uint j = 0u; j < TOP_K; ++j) {
        int row = rows[token * TOP_K + j];
        if (row < 0) continue;
        float w = weights[token * TOP_K + j];
        uvec4 v = expert_out_vec4[uint(row) * per_row + col];
        if (DTYPE == DTYPE_F32) {
            acc_low += w * uintBitsToFloat(v);
        } else {
            for (uint i = 0u; i < 4u; ++i) {
                acc_low[i] += w * decode_element(v[i], 0u, DTYPE);
                acc_high[i] += w * decode_element(v[i], 1u, DTYPE);
            }
        }
    }
    uvec4 result;
    if (DTYPE == DTYPE_F32) {
        result = floatBitsToUint(acc_low);
    } else {
        for (uint i = 0u; i < 4u; ++i)
            result[i] = encode_half(acc_low[i], DTYPE) | (encode_half(acc_high[i], DTYPE) << 16);
    }
    combined_vec4[u] = result;
}

void main() {
    uint stride = grid_invocations();
    uint unit = unit_bytes();
    if (unit == 16u) {
        uint per_row = row_bytes() / 16u;
        uint total = P.num_tokens * per_row;
        for (uint u = gl_GlobalInvocationID.x; u < total; u += stride) combine_vec4_unit(u, per_row);
        return;
    }
    uint elements = P.num_tokens * P.hidden_size;
    if (DTYPE == DTYPE_F32) {
        for (uint i = gl_GlobalInvocationID.x; i < elements; i += stride)
            combined_words[i] = floatBitsToUint(combine_element(i / P.hidden_size, i % P.hidden_size));
        return;
    }
    // 16-bit: one output word = two elements, maybe of two tokens when d is odd.
    uint words = (elements + 1u) / 2u;
    for (uint w = gl_GlobalInvocationID.x; w < words; w += stride) {
        uint first = 2u * w;
        uint low = encode_half(combine_element(first / P.hidden_size, first % P.hidden_size), DTYPE);
        uint high = 0u;
        if (first + 1u < elements)
            high = encode_half(combine_element((first + 1u) / P.hidden_size, (first + 1u) % P.hidden_size), DTYPE);
        combined_words[w] = low | (high << 16);
    }
}
